//! twemproxy's `ketama` consistent-hash ring (libmemcached compatible).

use super::{twemproxy_order, Node, SlotRun};

/// twemproxy's `KETAMA_POINTS_PER_SERVER`: points of an average-weight node.
const POINTS_PER_SERVER: f32 = 160.0;
/// Each MD5 digest of a point name yields four points.
const POINTS_PER_HASH: u32 = 4;

/// The ring: points sorted by value, each owned by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// `(point value, owning node)`, sorted by value.
    points: Vec<(u32, usize)>,
    /// How many nodes the ring was built over.
    nodes: usize,
}

impl Ring {
    /// Builds the ring as twemproxy's `ketama_update` does with every server
    /// live: node `i` gets `floor(weight_i / total * 40 * n) * 4` points,
    /// hashed from `"<name>-<k>"`.
    pub fn new(nodes: &[Node]) -> Ring {
        // twemproxy sums weights in a uint32_t.
        let total = nodes
            .iter()
            .fold(0u32, |sum, node| sum.wrapping_add(node.weight));
        let mut points = Vec::new();
        for index in twemproxy_order(nodes) {
            let node = &nodes[index];
            for k in 0..point_count(node.weight, total, nodes.len()) / POINTS_PER_HASH {
                let digest = crate::hash::md5::digest(format!("{}-{}", node.name, k).as_bytes());
                for quarter in digest.chunks_exact(4) {
                    let value =
                        u32::from_le_bytes([quarter[0], quarter[1], quarter[2], quarter[3]]);
                    points.push((value, index));
                }
            }
        }
        // Stable, so equal values keep name order, as glibc's merge-sort
        // qsort does in twemproxy; equal values are vanishingly rare anyway.
        points.sort_by_key(|&(value, _)| value);
        Ring {
            points,
            nodes: nodes.len(),
        }
    }

    /// The number of nodes the ring was built over.
    pub fn len(&self) -> usize {
        self.nodes
    }

    /// The owner of the first point at or after `hash`, wrapping to the
    /// first point.
    pub fn pick(&self, hash: u32) -> usize {
        let at = self.points.partition_point(|&(value, _)| value < hash);
        self.points.get(at).unwrap_or(&self.points[0]).1
    }

    /// The arcs of the hash space each node owns, in hash order, as
    /// `(first hash, last hash, node)`: a hash goes to the first point at
    /// or after it, and past the last point round to the first point.
    pub fn arcs(&self) -> Vec<SlotRun> {
        let mut arcs: Vec<SlotRun> = Vec::new();
        let mut add = |first: u64, last: u64, node: usize| {
            // A point equal to the one before it owns nothing.
            if first > last {
                return;
            }
            match arcs.last_mut() {
                Some(arc) if arc.2 == node => arc.1 = last,
                _ => arcs.push((first, last, node)),
            }
        };
        let mut first = 0;
        for &(value, node) in &self.points {
            add(first, u64::from(value), node);
            first = u64::from(value) + 1;
        }
        if let Some(&(_, node)) = self.points.first() {
            add(first, u64::from(u32::MAX), node);
        }
        arcs
    }
}

/// A node's number of points, computed in C `float` arithmetic exactly as
/// twemproxy does, so rounding matches for every weight pattern.
fn point_count(weight: u32, total: u32, live: usize) -> u32 {
    let pct = weight as f32 / total as f32;
    let scaled = pct * POINTS_PER_SERVER / POINTS_PER_HASH as f32 * live as f32;
    // twemproxy adds a `double` epsilon, then casts back to float.
    let nudged = (f64::from(scaled) + 0.000_000_000_1) as f32;
    (nudged.floor() * POINTS_PER_HASH as f32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashKind;
    use crate::route::tests::nodes;

    /// Asserts the owner of md5(`key:i`) is `expected[i]` (a digit string
    /// recorded from nutcracker 0.5.0 with the same servers).
    fn assert_nutcracker(ring: &Ring, expected: &str) {
        for (i, want) in expected.bytes().enumerate() {
            let key = format!("key:{i}");
            let got = ring.pick(HashKind::Md5.hash(key.as_bytes()));
            assert_eq!(got, usize::from(want - b'0'), "{key}");
        }
    }

    #[test]
    fn named_weighted_ring_matches_nutcracker() {
        let ring = Ring::new(&nodes(&[("zeta", 1), ("alpha-server", 3), ("b", 2)]));
        assert_nutcracker(
            &ring,
            "21122101210112011101121121202002120120211120011112112222211111221220022121112212\
             22011111112122120011110122222120022112211122102210212011022210200212011110102210\
             1121011022112001211020112111021112011100",
        );
    }

    #[test]
    fn skewed_weights_round_points_like_nutcracker() {
        let list = [
            ("node-1", 1),
            ("node-2", 2),
            ("node-3", 3),
            ("node-4", 4),
            ("node-5", 100),
        ];
        let ring = Ring::new(&nodes(&list));
        assert_nutcracker(
            &ring,
            "44444444444444343444434244444404444444444444444443444444444444444444444444444444\
             44441444244444424044444444443444444444133444444444444444444444444442444444244444\
             2403444444444444443444444444444444444444",
        );
    }

    /// An unnamed server on port 11211 is named by its host alone.
    #[test]
    fn port_11211_server_named_by_host_matches_nutcracker() {
        let ring = Ring::new(&nodes(&[("127.0.0.1", 1), ("x1", 1), ("x2", 1)]));
        assert_nutcracker(
            &ring,
            "00202000122221010020211010102000110101112122010110100110210000020122222220012202\
             00121011010001112002021021221222201110200021212001020111222111211021212122012001\
             0120221011202011100101021222210011002012",
        );
    }

    #[test]
    fn points_are_proportional_to_weight() {
        assert_eq!(point_count(1, 6, 3), 80);
        assert_eq!(point_count(3, 6, 3), 240);
        assert_eq!(point_count(2, 6, 3), 160);
        assert_eq!(point_count(1, 3, 3), 160);
        // floor(1/110 * 40 * 5) = 1 hash of 4 points.
        assert_eq!(point_count(1, 110, 5), 4);
    }

    #[test]
    fn hash_past_the_last_point_wraps_to_the_first() {
        let ring = Ring::new(&nodes(&[("a", 1), ("b", 1)]));
        let (first_value, first_owner) = ring.points[0];
        let last = ring.points[ring.points.len() - 1].0;
        assert!(last < u32::MAX);
        assert_eq!(ring.pick(u32::MAX), first_owner);
        assert_eq!(ring.pick(first_value), first_owner);
        assert_eq!(ring.pick(0), first_owner);
    }

    #[test]
    fn arcs_give_each_hash_to_its_pick() {
        let ring = Ring::new(&nodes(&[("a", 1), ("b", 2), ("c", 1)]));
        let arcs = ring.arcs();
        assert_eq!(
            (arcs[0].0, arcs[arcs.len() - 1].1),
            (0, u64::from(u32::MAX))
        );
        for pair in arcs.windows(2) {
            assert_eq!(pair[0].1 + 1, pair[1].0);
            assert_ne!(pair[0].2, pair[1].2, "neighbours of one node are merged");
        }
        let owner = |hash: u32| {
            let at = arcs.partition_point(|arc| arc.1 < u64::from(hash));
            arcs[at].2
        };
        let mut hash = 0u32;
        for _ in 0..100_000 {
            assert_eq!(owner(hash), ring.pick(hash), "{hash}");
            hash = hash.wrapping_mul(2_654_435_761).wrapping_add(12_345);
        }
        for &(value, _) in &ring.points {
            for near in [value.wrapping_sub(1), value, value.wrapping_add(1)] {
                assert_eq!(owner(near), ring.pick(near), "{near}");
            }
        }
        assert_eq!(owner(u32::MAX), ring.pick(u32::MAX));
    }

    #[test]
    fn hash_goes_to_the_first_point_at_or_after_it() {
        let ring = Ring::new(&nodes(&[("a", 1), ("b", 1), ("c", 1)]));
        for pair in ring.points.windows(2) {
            let (lower, upper) = (pair[0], pair[1]);
            if lower.0 < upper.0 {
                assert_eq!(ring.pick(lower.0 + 1), upper.1);
                assert_eq!(ring.pick(upper.0), upper.1);
            }
        }
    }
}
