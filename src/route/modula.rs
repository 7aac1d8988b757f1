//! Slot tables: twemproxy's `modula` distribution and the range form, which
//! are the same thing. `slot = hash mod S`, and each node owns a contiguous
//! run of slots.

use super::{twemproxy_order, Node};

/// A slot space `[0, size)` cut into contiguous runs, each owned by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    /// `S`: the number of slots (u64, so `max HI + 1` cannot overflow).
    size: u64,
    /// `(last slot of the run, owning node)`, sorted by slot.
    runs: Vec<(u64, usize)>,
    /// How many nodes the table was built over (a zero-weight node owns no
    /// run but still counts).
    nodes: usize,
}

impl Slots {
    /// twemproxy's modula: nodes in name order, each owning `weight`
    /// consecutive slots, `S = sum of weights`. twemproxy lays out one
    /// continuum entry per unit of weight and picks entry `hash % S`; runs
    /// are the same table without the memory.
    pub fn modula(nodes: &[Node]) -> Slots {
        let mut runs = Vec::with_capacity(nodes.len());
        let mut size = 0u64;
        for index in twemproxy_order(nodes) {
            let weight = u64::from(nodes[index].weight);
            if weight > 0 {
                size += weight;
                runs.push((size - 1, index));
            }
        }
        Slots {
            size,
            runs,
            nodes: nodes.len(),
        }
    }

    /// The range form: node `i` owns slots `lo..=hi` of `ranges[i]`, and
    /// `S = max(hi) + 1`. The ranges are assumed to tile `[0, S)`.
    pub fn ranges(ranges: &[(u32, u32)]) -> Slots {
        let mut runs: Vec<(u64, usize)> = ranges
            .iter()
            .enumerate()
            .map(|(index, &(_, hi))| (u64::from(hi), index))
            .collect();
        runs.sort_unstable();
        let size = runs.last().map_or(0, |&(hi, _)| hi + 1);
        Slots {
            size,
            runs,
            nodes: ranges.len(),
        }
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes
    }

    /// The node owning `hash`'s slot.
    /// The slot `hash` falls on.
    /// The size of the slot space.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The runs, in slot order: (first slot, last slot, node).
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64, usize)> + '_ {
        let mut first = 0;
        self.runs.iter().map(move |&(last, node)| {
            let run = (first, last, node);
            first = last + 1;
            run
        })
    }

    pub fn slot(&self, hash: u32) -> u32 {
        (u64::from(hash) % self.size) as u32
    }

    pub fn pick(&self, hash: u32) -> usize {
        let slot = u64::from(hash) % self.size;
        let run = self.runs.partition_point(|&(last, _)| last < slot);
        self.runs[run].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashKind;
    use crate::route::tests::nodes;

    /// Owner of md5(`key:i`) recorded from nutcracker 0.5.0 with the same
    /// servers: name order is "b", "zeta", "alpha-server" (shorter first).
    #[test]
    fn weighted_modula_matches_nutcracker() {
        let slots = Slots::modula(&nodes(&[("zeta", 1), ("alpha-server", 3), ("b", 2)]));
        let expected = "20011120020211121121211101222222111121111110112121211211211221111111101000112210\
                        10111122110012111211101111012110121211011100211112011102212210001221211221222111\
                        2211001121111010120120112211111222111220";
        for (i, want) in expected.bytes().enumerate() {
            let key = format!("key:{i}");
            let got = slots.pick(HashKind::Md5.hash(key.as_bytes()));
            assert_eq!(got, usize::from(want - b'0'), "{key}");
        }
    }

    #[test]
    fn modula_lays_weights_out_in_name_order() {
        // Order: "b" (slots 0..2), "aa" (slot 2), "ccc" (slots 3..6); S = 6.
        let slots = Slots::modula(&nodes(&[("ccc", 3), ("aa", 1), ("b", 2)]));
        let owners: Vec<usize> = (0..12).map(|hash| slots.pick(hash)).collect();
        assert_eq!(owners, [2, 2, 1, 0, 0, 0, 2, 2, 1, 0, 0, 0]);
    }

    #[test]
    fn ranges_own_their_slots_in_any_listing_order() {
        let slots = Slots::ranges(&[(2048, 4095), (0, 1023), (1024, 2047)]);
        assert_eq!(slots.pick(0), 1);
        assert_eq!(slots.pick(1023), 1);
        assert_eq!(slots.pick(1024), 2);
        assert_eq!(slots.pick(2047), 2);
        assert_eq!(slots.pick(2048), 0);
        assert_eq!(slots.pick(4095), 0);
        assert_eq!(slots.pick(4096), 1, "slot = hash mod 4096");
        assert_eq!(slots.pick(4096 + 3000), 0);
    }

    #[test]
    fn range_ending_at_u32_max_covers_every_hash() {
        let slots = Slots::ranges(&[(0, 0x7fff_ffff), (0x8000_0000, u32::MAX)]);
        assert_eq!(slots.pick(0x7fff_ffff), 0);
        assert_eq!(slots.pick(0x8000_0000), 1);
        assert_eq!(slots.pick(u32::MAX), 1);
    }

    #[test]
    fn len_counts_every_node() {
        assert_eq!(Slots::modula(&nodes(&[("a", 1), ("b", 2)])).len(), 2);
        assert_eq!(Slots::ranges(&[(0, 9), (10, 19), (20, 29)]).len(), 3);
    }
}
