//! The rebalance planner: from the shards' ranges and their weights, the
//! ranges each shard should own and the single moves that get there, each
//! one valid under [`super::plan`]'s rules at the moment it runs. Pure: the
//! `rebalance` command ([`crate::admin::rebalance`]) reads ZooKeeper and
//! runs the moves.
//!
//! The shards are laid along the slot space in the order of their ranges,
//! the empty ones after them by name. Shard `i` then owns
//! `[c[i], c[i+1])` of boundaries `0 = c[0] <= ... <= c[n] = slots` (an
//! empty shard is a zero-width range), and so does the wanted layout, with
//! boundaries proportional to the cumulative weights. A move shifts one
//! boundary between two neighbours in one go: the slots between the old
//! and the new boundary change sides. That is always at one edge of the
//! giver's range and next to the taker's (or the taker is empty), as
//! `plan` wants, provided the giver still owns them all: a boundary that
//! must travel past its neighbour's other boundary waits until that one
//! moved first (a shard shrinking from both sides, a shard filled from
//! a neighbour before it passes slots on).

use std::collections::BTreeMap;

/// A shard as the planner sees it: its name and range, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    /// Inclusive `(lo, hi)`; `None` for a shard with no range.
    pub range: Option<(u32, u32)>,
}

/// One migration: slots `lo..=hi` from `source` to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub lo: u32,
    pub hi: u32,
    pub source: String,
    pub target: String,
}

impl Move {
    pub fn range(&self) -> String {
        format!("{}-{}", self.lo, self.hi)
    }
}

/// What a rebalance does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// Shard names in slot order (empty ones last), with their weights and
    /// ranges before and after.
    pub shards: Vec<(String, u32)>,
    pub before: Vec<Option<(u32, u32)>>,
    pub after: Vec<Option<(u32, u32)>>,
    /// In the order they must run; empty when already balanced.
    pub moves: Vec<Move>,
}

/// Parses `--weight SHARD=N` options against the known shard names; every
/// shard not named weighs 1.
///
/// # Errors
/// A malformed option, a weight that is not a whole number, an unknown or
/// repeated shard, or every weight 0.
pub fn parse_weights(specs: &[String], names: &[String]) -> Result<BTreeMap<String, u32>, String> {
    let mut weights: BTreeMap<String, u32> = names.iter().map(|n| (n.clone(), 1)).collect();
    let mut seen = Vec::new();
    for spec in specs {
        let (name, weight) = spec
            .split_once('=')
            .ok_or_else(|| format!("--weight {spec:?}: expected SHARD=N, e.g. redis-0001=2"))?;
        let weight: u32 = weight.trim().parse().map_err(|e: std::num::ParseIntError| {
            if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
                format!("--weight {spec:?}: the weight {weight:?} is too large (at most {})", u32::MAX)
            } else {
                format!("--weight {spec:?}: the weight {weight:?} is not a whole number (0 or more)")
            }
        })?;
        let Some(slot) = weights.get_mut(name) else {
            return Err(format!(
                "--weight {spec:?}: there is no shard named {name:?} (shards: {})",
                names.join(", ")
            ));
        };
        if seen.contains(&name) {
            return Err(format!("--weight: {name} is given twice"));
        }
        seen.push(name);
        *slot = weight;
    }
    if weights.values().all(|&w| w == 0) {
        return Err("every weight is 0: at least one shard must own the slots".into());
    }
    Ok(weights)
}

/// The wanted layout and the moves to it.
///
/// # Errors
/// The current ranges do not tile `0..slots` with one range per shard,
/// every weight is 0, or there are fewer slots than shards to give them to.
pub fn balance(
    owners: &[Owner],
    weights: &BTreeMap<String, u32>,
    slots: u32,
) -> Result<Balance, String> {
    let mut order: Vec<&Owner> = owners.iter().collect();
    // Owners of ranges in slot order, then the empty ones by name.
    order.sort_by(|a, b| match (a.range, b.range) {
        (Some(x), Some(y)) => x.0.cmp(&y.0),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
    let mut current = vec![0u32];
    for owner in &order {
        let start = *current.last().expect("non-empty");
        let end = match owner.range {
            Some((lo, hi)) if lo == start && hi >= lo => hi + 1,
            Some((lo, hi)) => {
                return Err(format!(
                    "the ranges do not tile the slot space: {} owns {lo}-{hi} where slot {start} was expected next",
                    owner.name
                ))
            }
            None => start,
        };
        current.push(end);
    }
    if *current.last().expect("non-empty") != slots {
        return Err(format!(
            "the ranges do not tile the slot space 0-{}",
            slots.saturating_sub(1)
        ));
    }
    let weight_of = |o: &Owner| weights.get(&o.name).copied().unwrap_or(1);
    let total: u128 = order.iter().map(|o| u128::from(weight_of(o))).sum();
    if total == 0 {
        return Err("every weight is 0: at least one shard must own the slots".into());
    }
    // Boundaries at the cumulative weights' share of the slot space,
    // rounded down; the last is the end of the space.
    let mut wanted = vec![0u32];
    let mut cumulative = 0u128;
    for owner in &order {
        cumulative += u128::from(weight_of(owner));
        let boundary = u128::from(slots) * cumulative / total;
        wanted.push(u32::try_from(boundary).expect("at most slots"));
    }
    for (i, owner) in order.iter().enumerate() {
        if weight_of(owner) > 0 && wanted[i] == wanted[i + 1] {
            return Err(format!(
                "{} slots are too few to give {} a share at weight {}",
                slots,
                owner.name,
                weight_of(owner)
            ));
        }
    }
    let moves = moves(&order, &mut current.clone(), &wanted)?;
    let ranges = |b: &[u32]| -> Vec<Option<(u32, u32)>> {
        b.windows(2)
            .map(|w| (w[0] < w[1]).then(|| (w[0], w[1] - 1)))
            .collect()
    };
    Ok(Balance {
        shards: order
            .iter()
            .map(|o| (o.name.clone(), weight_of(o)))
            .collect(),
        before: ranges(&current),
        after: ranges(&wanted),
        moves,
    })
}

/// Shifts the boundaries in `current` to `wanted` one at a time, each only
/// when the giver owns every slot it passes on.
fn moves(order: &[&Owner], current: &mut [u32], wanted: &[u32]) -> Result<Vec<Move>, String> {
    let n = order.len();
    let mut out = Vec::new();
    while current != wanted {
        // (boundary, whether running it empties a shard that should keep
        // slots). Such a move is valid but would put that shard last on a
        // rerun, changing the layout the rest of the plan aims at: taken
        // only if nothing else can run (never, by the argument below).
        let mut candidates = Vec::new();
        for j in 1..n {
            let (c, d) = (current[j], wanted[j]);
            if c == d {
                continue;
            }
            // d < c: shard j-1 gives [d, c) to shard j; d > c: shard j
            // gives [c, d) to shard j-1.
            let (feasible, empties) = if d < c {
                (
                    d >= current[j - 1],
                    d == current[j - 1] && wanted[j - 1] < wanted[j],
                )
            } else {
                (
                    d <= current[j + 1],
                    d == current[j + 1] && wanted[j] < wanted[j + 1],
                )
            };
            if feasible {
                candidates.push((j, empties));
            }
        }
        // Why a clean move always exists: take a boundary that must move
        // down. If its giver owns too little, or would be emptied although
        // it should keep slots, then the boundary below must move down too.
        // Following them down ends at the first boundary at the latest,
        // whose giver starts at slot 0; so some boundary on the way moves
        // down without emptying anyone who keeps slots. Likewise upwards.
        let Some(&(j, _)) = candidates
            .iter()
            .find(|(_, empties)| !empties)
            .or(candidates.first())
        else {
            return Err("no move can run (the plan is stuck): this is a bug".into());
        };
        let (c, d) = (current[j], wanted[j]);
        let step = if d < c {
            Move {
                lo: d,
                hi: c - 1,
                source: order[j - 1].name.clone(),
                target: order[j].name.clone(),
            }
        } else {
            Move {
                lo: c,
                hi: d - 1,
                source: order[j].name.clone(),
                target: order[j - 1].name.clone(),
            }
        };
        out.push(step);
        current[j] = d;
    }
    Ok(out)
}

/// Keys a move carries: for each shard, its DBSIZE spread evenly over the
/// range it owns now, times the slots of the move that are in that range
/// now (a later move may carry slots an earlier one brought). `None` if a
/// shard whose slots it carries did not tell its size. `sizes`: each
/// shard's range and DBSIZE.
pub fn estimate(step: &Move, sizes: &[((u32, u32), Option<u64>)]) -> Option<u64> {
    let mut keys = 0f64;
    for &((lo, hi), size) in sizes {
        let overlap_lo = lo.max(step.lo);
        let overlap_hi = hi.min(step.hi);
        if overlap_lo > overlap_hi {
            continue;
        }
        let share = f64::from(overlap_hi - overlap_lo + 1) / f64::from(hi - lo + 1);
        keys += size? as f64 * share;
    }
    Some(keys.round() as u64)
}

#[cfg(test)]
#[path = "rebalance_tests.rs"]
mod tests;
