//! The planner against many layouts; every plan is replayed through the
//! real `migrate` planning rules ([`crate::admin::migrate::plan`]), so a
//! move that `migrate` would refuse fails the test.

use super::*;
use crate::admin::migrate::{plan, Shard};
use crate::zk::layout::ShardData;
use crate::zk::view::ShardView;

fn owner(name: &str, range: Option<(u32, u32)>) -> Owner {
    Owner {
        name: name.into(),
        range,
    }
}

fn weights(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

fn shard(o: &Owner) -> Shard {
    let data = ShardData {
        weight: o
            .range
            .map_or(String::new(), |(lo, hi)| format!("{lo}-{hi}")),
        ..ShardData::new(0, 0)
    }
    .to_json();
    let view = ShardView::from_znodes(&format!("/r/c/{}", o.name), &data, &[], None).unwrap();
    Shard {
        view,
        data,
        version: 0,
    }
}

/// Runs the moves one by one through `plan`, as `rebalance` runs them
/// through `migrate`; the ranges at the end.
fn replay(owners: &[Owner], moves: &[Move]) -> Vec<Owner> {
    let mut now = owners.to_vec();
    for m in moves {
        let shards: Vec<Shard> = now.iter().map(shard).collect();
        let p = plan(&shards, m.lo, m.hi, &m.target)
            .unwrap_or_else(|e| panic!("{m:?} refused on {now:?}: {e}"));
        assert_eq!(p.source, m.source, "{m:?}");
        for o in &mut now {
            if o.name == p.source {
                o.range = p.source_after;
            } else if o.name == p.target {
                o.range = Some(p.target_after);
            }
        }
    }
    now
}

/// Plans, replays, and checks the end state is the plan's `after`;
/// returns the plan.
fn check(owners: &[Owner], w: &BTreeMap<String, u32>, slots: u32) -> Balance {
    let b = balance(owners, w, slots).unwrap();
    let end = replay(owners, &b.moves);
    for (i, (name, _)) in b.shards.iter().enumerate() {
        let got = end.iter().find(|o| &o.name == name).unwrap().range;
        assert_eq!(got, b.after[i], "{name} after {:?}", b.moves);
    }
    // A rebalance started from the end state has nothing left to do.
    assert!(balance(&end, w, slots).unwrap().moves.is_empty());
    b
}

fn mv(lo: u32, hi: u32, source: &str, target: &str) -> Move {
    Move {
        lo,
        hi,
        source: source.into(),
        target: target.into(),
    }
}

#[test]
fn two_shards_and_a_new_one_become_three_equal_thirds() {
    let owners = [
        owner("redis-0000", Some((0, 2047))),
        owner("redis-0001", Some((2048, 4095))),
        owner("redis-0002", None),
    ];
    let w = weights(&[("redis-0000", 1), ("redis-0001", 1), ("redis-0002", 1)]);
    let b = check(&owners, &w, 4096);
    assert_eq!(
        b.after,
        vec![Some((0, 1364)), Some((1365, 2729)), Some((2730, 4095))]
    );
    assert_eq!(
        b.moves,
        vec![
            mv(1365, 2047, "redis-0000", "redis-0001"),
            mv(2730, 4095, "redis-0001", "redis-0002"),
        ]
    );
}

#[test]
fn unequal_weights_give_proportional_ranges() {
    let owners = [owner("a", Some((0, 4095))), owner("b", None)];
    let b = check(&owners, &weights(&[("a", 1), ("b", 3)]), 4096);
    assert_eq!(b.after, vec![Some((0, 1023)), Some((1024, 4095))]);
    assert_eq!(b.moves, vec![mv(1024, 4095, "a", "b")]);

    let owners = [
        owner("a", Some((0, 999))),
        owner("b", Some((1000, 1999))),
        owner("c", Some((2000, 2999))),
    ];
    let b = check(&owners, &weights(&[("a", 2), ("b", 1), ("c", 3)]), 3000);
    assert_eq!(
        b.after,
        vec![Some((0, 999)), Some((1000, 1499)), Some((1500, 2999))]
    );
    assert_eq!(b.moves, vec![mv(1500, 1999, "b", "c")]);
}

#[test]
fn an_already_balanced_cluster_needs_no_move() {
    let owners = [
        owner("x", Some((0, 1364))),
        owner("y", Some((1365, 2729))),
        owner("z", Some((2730, 4095))),
    ];
    let b = check(&owners, &weights(&[]), 4096);
    assert!(b.moves.is_empty());
    assert_eq!(b.before, b.after);
}

#[test]
fn empty_shards_go_last_by_name_wherever_they_are_listed() {
    // redis-0000 is empty although it sorts first by name.
    let owners = [
        owner("redis-0000", None),
        owner("redis-0002", Some((2048, 4095))),
        owner("redis-0001", Some((0, 2047))),
    ];
    let b = check(&owners, &weights(&[]), 4096);
    let names: Vec<&str> = b.shards.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["redis-0001", "redis-0002", "redis-0000"]);
    assert_eq!(b.after[2], Some((2730, 4095)));
    // Two new shards at once: the first is filled from its neighbour and
    // passes on the second's share after.
    let owners = [
        owner("a", Some((0, 4095))),
        owner("c", None),
        owner("b", None),
    ];
    let b = check(&owners, &weights(&[]), 4096);
    assert_eq!(
        b.moves,
        vec![mv(1365, 4095, "a", "b"), mv(2730, 4095, "b", "c")]
    );
}

#[test]
fn weight_zero_drains_a_shard_to_its_neighbours() {
    let owners = [
        owner("a", Some((0, 1364))),
        owner("b", Some((1365, 2729))),
        owner("c", Some((2730, 4095))),
    ];
    let b = check(&owners, &weights(&[("b", 0)]), 4096);
    assert_eq!(b.after, vec![Some((0, 2047)), None, Some((2048, 4095))]);
    assert_eq!(
        b.moves,
        vec![mv(1365, 2047, "b", "a"), mv(2048, 2729, "b", "c")]
    );
    // The last shard drained into the one before it.
    let b = check(&owners, &weights(&[("c", 0)]), 4096);
    assert_eq!(b.after, vec![Some((0, 2047)), Some((2048, 4095)), None]);
    // An empty shard at weight 0 stays empty and changes nothing.
    let owners = [owner("a", Some((0, 4095))), owner("b", None)];
    let b = check(&owners, &weights(&[("b", 0)]), 4096);
    assert!(b.moves.is_empty());
}

#[test]
fn a_shard_shrinking_from_both_sides_gives_in_the_order_that_keeps_it_whole() {
    // b owns almost everything; a and c must each take a share from it.
    let owners = [
        owner("a", Some((0, 99))),
        owner("b", Some((100, 3999))),
        owner("c", Some((4000, 4095))),
    ];
    let b = check(&owners, &weights(&[]), 4096);
    assert_eq!(
        b.moves,
        vec![mv(100, 1364, "b", "a"), mv(2730, 3999, "b", "c")]
    );
    // Boundaries that must pass each other: everything is on the last
    // shard, so the middle one must be filled before it passes slots on.
    let owners = [
        owner("a", Some((0, 9))),
        owner("b", Some((10, 19))),
        owner("c", Some((20, 4095))),
    ];
    let b = check(&owners, &weights(&[]), 4096);
    assert_eq!(
        b.moves,
        vec![mv(20, 2729, "c", "b"), mv(10, 1364, "b", "a")]
    );
    // And the other way round.
    let owners = [
        owner("a", Some((0, 4075))),
        owner("b", Some((4076, 4085))),
        owner("c", Some((4086, 4095))),
    ];
    let b = check(&owners, &weights(&[]), 4096);
    assert_eq!(
        b.moves,
        vec![mv(1365, 4075, "a", "b"), mv(2730, 4085, "b", "c")]
    );
}

#[test]
fn many_random_layouts_all_plan_into_valid_moves() {
    // A small linear congruential generator: no dependency, repeatable.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u32| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) % u64::from(n)) as u32
    };
    for _ in 0..500 {
        let slots = 16 + next(5000);
        let full = 1 + next(5);
        let empty = next(3);
        let mut cuts: Vec<u32> = (1..full).map(|_| 1 + next(slots - 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut owners = Vec::new();
        let mut lo = 0;
        for (i, cut) in cuts.iter().chain(std::iter::once(&slots)).enumerate() {
            owners.push(owner(&format!("s{i}"), Some((lo, cut - 1))));
            lo = *cut;
        }
        for i in 0..empty {
            owners.push(owner(&format!("e{i}"), None));
        }
        let mut w = BTreeMap::new();
        for o in &owners {
            w.insert(o.name.clone(), next(4));
        }
        if w.values().all(|&x| x == 0) {
            w.insert("s0".into(), 1);
        }
        let b = check(&owners, &w, slots);
        assert!(b.moves.len() < owners.len(), "{b:?}");
        // Nobody that keeps a share is emptied on the way.
        let mut now = owners.clone();
        for m in &b.moves {
            now = replay(&now, std::slice::from_ref(m));
            for (name, weight) in &b.shards {
                let range = now.iter().find(|o| &o.name == name).unwrap().range;
                let had = owners.iter().find(|o| &o.name == name).unwrap().range;
                if *weight > 0 && had.is_some() {
                    assert!(range.is_some(), "{name} emptied by {m:?} in {b:?}");
                }
            }
        }
    }
}

#[test]
fn layouts_that_do_not_tile_are_refused() {
    let w = weights(&[]);
    let gap = [owner("a", Some((0, 9))), owner("b", Some((20, 29)))];
    assert!(balance(&gap, &w, 30).unwrap_err().contains("do not tile"));
    let overlap = [owner("a", Some((0, 19))), owner("b", Some((10, 29)))];
    assert!(balance(&overlap, &w, 30)
        .unwrap_err()
        .contains("do not tile"));
    let few = [owner("a", Some((0, 1))), owner("b", None), owner("c", None)];
    assert!(balance(&few, &w, 2).unwrap_err().contains("too few"));
}

#[test]
fn weights_are_checked_before_anything_runs() {
    let names: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    let parse = |specs: &[&str]| {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        parse_weights(&specs, &names)
    };
    assert_eq!(parse(&[]).unwrap(), weights(&[("a", 1), ("b", 1)]));
    assert_eq!(parse(&["b=3"]).unwrap(), weights(&[("a", 1), ("b", 3)]));
    assert!(parse(&["c=1"])
        .unwrap_err()
        .contains("no shard named \"c\""));
    assert!(parse(&["a=x"]).unwrap_err().contains("not a whole number"));
    assert!(parse(&["a=-1"]).unwrap_err().contains("not a whole number"));
    assert!(parse(&["a=4294967296"]).unwrap_err().contains("too large"));
    assert!(parse(&["a"]).unwrap_err().contains("expected SHARD=N"));
    assert!(parse(&["a=0", "b=0"])
        .unwrap_err()
        .contains("every weight is 0"));
    assert!(parse(&["a=1", "a=2"]).unwrap_err().contains("twice"));
}

#[test]
fn key_estimates_follow_where_the_slots_are_now() {
    let sizes = [((0, 99), Some(1000)), ((100, 199), Some(10))];
    assert_eq!(estimate(&mv(50, 99, "a", "b"), &sizes), Some(500));
    // Across two shards' ranges: 50 slots of each.
    assert_eq!(estimate(&mv(50, 149, "a", "b"), &sizes), Some(505));
    // A shard that did not answer makes the estimate unknown only if the
    // move carries its slots.
    let sizes = [((0, 99), Some(1000)), ((100, 199), None)];
    assert_eq!(estimate(&mv(0, 9, "a", "b"), &sizes), Some(100));
    assert_eq!(estimate(&mv(90, 109, "a", "b"), &sizes), None);
}
