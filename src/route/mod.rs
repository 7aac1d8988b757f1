//! Key distribution: which server owns a key hash (twemproxy's `modula`,
//! `ketama`, `random`, and the range form), and the hash-tag rule.

mod ketama;
mod modula;
mod random;

/// A key distribution, named as in twemproxy's `distribution:` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistributionKind {
    Ketama,
    Modula,
    Random,
}

impl DistributionKind {
    /// The distribution called `name` in a pool file, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ketama" => Some(DistributionKind::Ketama),
            "modula" => Some(DistributionKind::Modula),
            "random" => Some(DistributionKind::Random),
            _ => None,
        }
    }

    /// The name of this distribution in a pool file.
    pub fn name(self) -> &'static str {
        match self {
            DistributionKind::Ketama => "ketama",
            DistributionKind::Modula => "modula",
            DistributionKind::Random => "random",
        }
    }
}

/// One server as the distribution sees it (in the pool file's order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// twemproxy's server name, which orders the servers and names the
    /// ketama points: the `name` after the last space of a
    /// `host:port:weight name` entry when given; otherwise `host:port`
    /// exactly as written (e.g. `127.0.0.1:6379`, the host not resolved),
    /// or only `host` when the port is 11211 (libmemcached compatibility).
    /// twemproxy's ketama breaks on names longer than about 80 bytes (it
    /// hashes past a fixed 86-byte buffer), so such names cannot match it.
    pub name: String,
    /// The server's weight (twemproxy rejects 0).
    pub weight: u32,
}

/// Positions owned by one node: (first, last, node); slots, or the hashes
/// of a ketama arc (see [`Distribution::position_runs`]).
pub type SlotRun = (u64, u64, usize);

/// Where keys go. Immutable; built once per routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// Consistent hashing on twemproxy's ketama ring.
    Ketama(ketama::Ring),
    /// `hash mod S` onto contiguous slot runs: `modula` and the range form.
    Slots(modula::Slots),
    /// A random node per request; holds the number of nodes.
    Random(usize),
}

impl Distribution {
    /// twemproxy's ketama over `nodes`.
    pub fn ketama(nodes: &[Node]) -> Distribution {
        Distribution::Ketama(ketama::Ring::new(nodes))
    }

    /// twemproxy's modula over `nodes`: servers sorted by name (see
    /// [`twemproxy_order`]), server `i` owning `[sum(w<i), sum(w<=i))` of
    /// `S = sum(w)`.
    pub fn modula(nodes: &[Node]) -> Distribution {
        Distribution::Slots(modula::Slots::modula(nodes))
    }

    /// twemproxy's random over `nodes`; weights are ignored, as in
    /// twemproxy.
    pub fn random(nodes: &[Node]) -> Distribution {
        Distribution::Random(nodes.len())
    }

    /// Range form: node `i` owns slots `lo..=hi`; `slot = hash % (max hi + 1)`.
    /// The ranges are validated by the config (they tile `[0, S)` exactly);
    /// here they are assumed valid.
    pub fn ranges(ranges: &[(u32, u32)]) -> Distribution {
        Distribution::Slots(modula::Slots::ranges(ranges))
    }

    /// Index (into the nodes or ranges slice as given, i.e. pool-file order)
    /// of the node that owns `hash`.
    ///
    /// # Panics
    /// When the distribution has no nodes.
    pub fn pick(&self, hash: u32) -> usize {
        match self {
            Distribution::Ketama(ring) => ring.pick(hash),
            Distribution::Slots(slots) => slots.pick(hash),
            Distribution::Random(n) => random::pick(*n),
        }
    }

    /// Where a key of hash `hash` sits among the [`Self::position_runs`]:
    /// its slot in the modula and range forms, the hash itself on a ketama
    /// ring; none with random.
    pub fn position(&self, hash: u32) -> Option<u32> {
        match self {
            Distribution::Ketama(_) => Some(hash),
            Distribution::Slots(slots) => Some(slots.slot(hash)),
            Distribution::Random(_) => None,
        }
    }

    /// The space of positions, its size and the runs of it each node owns,
    /// in order: the slots in the modula and range forms, the ring's arcs
    /// of the hash space with ketama. Two distributions of the same kind
    /// and size send a position's keys to the nodes its runs name.
    pub fn position_runs(&self) -> Option<(u64, Vec<SlotRun>)> {
        match self {
            Distribution::Ketama(ring) => Some((1 << 32, ring.arcs())),
            Distribution::Slots(slots) => Some((slots.size(), slots.runs().collect())),
            Distribution::Random(_) => None,
        }
    }

    /// The slot `hash` falls on, in the modula and range forms.
    pub fn slot(&self, hash: u32) -> Option<u32> {
        match self {
            Distribution::Slots(slots) => Some(slots.slot(hash)),
            _ => None,
        }
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        match self {
            Distribution::Ketama(ring) => ring.len(),
            Distribution::Slots(slots) => slots.len(),
            Distribution::Random(n) => *n,
        }
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The order twemproxy keeps a pool's servers in, as indices into `nodes`:
/// its config check sorts them by name with `string_compare`, which puts
/// shorter names first and compares equal-length names bytewise. So
/// `"b:1"` sorts before `"a:10"`.
pub fn twemproxy_order(nodes: &[Node]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (nodes[a].name.as_bytes(), nodes[b].name.as_bytes());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    });
    order
}

/// The part of the key that is hashed: with `tag = Some([open, close])`,
/// the bytes between the first `open` and the next `close` after it, when
/// that is non-empty; else the whole key (twemproxy's `hash_tag` rule).
pub fn hashable_key(key: &[u8], tag: Option<[u8; 2]>) -> &[u8] {
    let Some([open, close]) = tag else {
        return key;
    };
    let Some(start) = key.iter().position(|&b| b == open) else {
        return key;
    };
    let after = &key[start + 1..];
    match after.iter().position(|&b| b == close) {
        Some(end) if end > 0 => &after[..end],
        _ => key,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Nodes from (name, weight) pairs.
    pub(crate) fn nodes(list: &[(&str, u32)]) -> Vec<Node> {
        list.iter()
            .map(|&(name, weight)| Node {
                name: name.to_string(),
                weight,
            })
            .collect()
    }

    const TAG: Option<[u8; 2]> = Some(*b"{}");

    #[test]
    fn without_a_tag_the_whole_key_is_hashed() {
        assert_eq!(hashable_key(b"{user1}.a", None), b"{user1}.a");
    }

    #[test]
    fn tag_selects_the_text_between_open_and_next_close() {
        assert_eq!(hashable_key(b"{user1}.a", TAG), b"user1");
        assert_eq!(hashable_key(b"x{a}y{b}", TAG), b"a");
        assert_eq!(hashable_key(b"}{x}", TAG), b"x");
        assert_eq!(hashable_key(b"{{x}}", TAG), b"{x");
    }

    #[test]
    fn empty_tag_hashes_the_whole_key() {
        assert_eq!(hashable_key(b"{}x", TAG), b"{}x");
    }

    #[test]
    fn unclosed_tag_hashes_the_whole_key() {
        assert_eq!(hashable_key(b"{open", TAG), b"{open");
        assert_eq!(hashable_key(b"close}", TAG), b"close}");
    }

    #[test]
    fn tag_with_equal_open_and_close_uses_the_next_one() {
        assert_eq!(hashable_key(b"a:b:c", Some(*b"::")), b"b");
    }

    #[test]
    fn servers_sort_shorter_name_first_then_bytewise() {
        let list = nodes(&[
            ("zeta", 1),
            ("127.0.0.1:6379", 1),
            ("b", 1),
            ("alpha-server", 1),
            ("a", 1),
        ]);
        assert_eq!(twemproxy_order(&list), [4, 2, 0, 3, 1]);
    }

    #[test]
    fn distribution_names_round_trip() {
        for kind in [
            DistributionKind::Ketama,
            DistributionKind::Modula,
            DistributionKind::Random,
        ] {
            assert_eq!(DistributionKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(DistributionKind::from_name("consistent"), None);
    }

    #[test]
    fn random_ignores_the_hash_and_reaches_every_node() {
        let random = Distribution::random(&nodes(&[("a", 1), ("b", 100), ("c", 1)]));
        let mut seen = [0; 3];
        for _ in 0..3000 {
            seen[random.pick(42)] += 1;
        }
        assert!(
            seen.iter().all(|&n| n > 800),
            "uniform, weights ignored: {seen:?}"
        );
    }

    #[test]
    fn pick_indexes_the_nodes_as_given() {
        // modula name order is b, a; index refers to the slice as given.
        let modula = Distribution::modula(&nodes(&[("aa", 1), ("b", 1)]));
        assert_eq!(modula.pick(0), 1);
        assert_eq!(modula.pick(1), 0);
    }

    #[test]
    fn len_is_the_node_count() {
        let list = nodes(&[("a", 1), ("b", 2), ("c", 3)]);
        assert_eq!(Distribution::ketama(&list).len(), 3);
        assert_eq!(Distribution::modula(&list).len(), 3);
        assert_eq!(Distribution::random(&list).len(), 3);
        assert_eq!(Distribution::ranges(&[(0, 1), (2, 3)]).len(), 2);
        assert!(Distribution::random(&[]).is_empty());
    }
}
