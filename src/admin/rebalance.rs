//! `rebalance`: moves ranges between neighbouring shards until each owns
//! the share of the slot space its weight asks for. The planner is
//! [`super::migrate::rebalance`]; every move runs through `migrate`
//! itself (barrier, mover, commit), one after another.
//!
//! Crash-safe by construction: nothing is stored about the rebalance as a
//! whole. A migration left running by a killed `rebalance` is continued
//! first, as `migrate` continues it, and the plan is made again from the
//! shards' ranges in ZooKeeper before every move.

use super::migrate::rebalance::{balance, estimate, parse_weights, Balance, Owner};
use super::migrate::{
    self, has_master, mover, read_shards, read_state, slot_space, MigrateOptions, Shard,
};
use super::output::Output;
use super::target::{connect, Target};
use super::AdminError;
use std::fmt::Write as _;
use std::time::Duration;

/// How `rebalance` runs.
#[derive(Debug, Clone)]
pub struct RebalanceOptions {
    /// `SHARD=N` as typed; shards not named weigh 1.
    pub weights: Vec<String>,
    pub dry_run: bool,
    /// Keys per second for each move's mover; 0 = unlimited; `None`: a
    /// migration being continued keeps its rate, new moves are unlimited.
    pub rate: Option<u64>,
    pub barrier_timeout: Duration,
}

fn failed(reason: impl Into<String>) -> AdminError {
    AdminError::Rebalance(reason.into())
}

fn owners(shards: &[Shard]) -> Vec<Owner> {
    shards
        .iter()
        .map(|s| Owner {
            name: s.view.name.clone(),
            range: (!s.view.empty).then_some((s.view.lo, s.view.hi)),
        })
        .collect()
}

fn show(range: Option<(u32, u32)>) -> String {
    range.map_or("(none)".to_string(), |(lo, hi)| format!("{lo}-{hi}"))
}

/// The plan from the shards as they are in ZooKeeper now.
fn plan_now(shards: &[Shard], options: &RebalanceOptions) -> Result<Balance, AdminError> {
    let names: Vec<String> = shards.iter().map(|s| s.view.name.clone()).collect();
    let weights = parse_weights(&options.weights, &names).map_err(failed)?;
    balance(&owners(shards), &weights, slot_space(shards)).map_err(failed)
}

/// `rebalance [--weight SHARD=N ...] [--dry-run] [--rate N]`.
pub async fn rebalance(
    target: &Target,
    options: &RebalanceOptions,
    out: &mut Output,
) -> Result<(), AdminError> {
    let client = connect(&target.hosts, target.zk_auth.as_ref()).await?;
    let shards = read_shards(&client, target).await?;
    // Bad weights are refused before anything, a running migration
    // included, is touched.
    let first = plan_now(&shards, options)?;
    let running = read_state(&client, target).await?.map(|(state, _)| state);
    let masterless = without_master(&shards, &first);
    if options.dry_run {
        let rate = options.rate.unwrap_or(0);
        let text = dry_run(target, &shards, &first, running.as_ref(), rate).await?;
        let _ = write!(out, "{text}");
        for name in &masterless {
            let _ = writeln!(
                out,
                "warning: {name} has no master: start its watchdogs before rebalancing"
            );
        }
        return Ok(());
    }
    // Checked before any move (review: two moves were made, then the
    // third failed, the output of the first two lost).
    if let Some(name) = masterless.first() {
        return Err(failed(format!(
            "{name} has no master: start its watchdogs first; nothing was moved"
        )));
    }
    // Each move ends one boundary's trip, so a plan has fewer moves than
    // shards; the bound only stops a loop if the shards keep changing
    // under us.
    let mut done = 0usize;
    if let Some(state) = running {
        let _ = writeln!(
            out,
            "a migration is in progress (slots {} from {} to {}): continuing it first",
            state.range, state.source, state.target
        );
        run_move(target, &state.range, &state.target, options, out).await?;
        // Counted as one of the rebalance's moves: usually it was.
        done = 1;
    }
    let limit = 2 * shards.len() + 2;
    loop {
        let shards = read_shards(&client, target).await?;
        let plan = plan_now(&shards, options)?;
        let Some(next) = plan.moves.first() else {
            if done == 0 {
                let _ = writeln!(out, "already balanced: nothing to move");
            } else {
                let moves = if done == 1 { "move" } else { "moves" };
                let _ = writeln!(out, "balanced after {done} {moves}:");
            }
            for ((name, weight), range) in plan.shards.iter().zip(&plan.after) {
                let _ = writeln!(out, "  {name} (weight {weight}): {}", show(*range));
            }
            return Ok(());
        };
        if done == limit {
            return Err(failed(format!(
                "still not balanced after {done} moves: the shards change under rebalance?"
            )));
        }
        done += 1;
        let _ = writeln!(
            out,
            "move {done} of {}: slots {} from {} to {}",
            done + plan.moves.len() - 1,
            next.range(),
            next.source,
            next.target
        );
        run_move(target, &next.range(), &next.target, options, out).await?;
    }
}

/// The shards a plan moves slots from or to that have no master.
fn without_master(shards: &[Shard], plan: &Balance) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in plan.moves.iter().flat_map(|m| [&m.source, &m.target]) {
        if !has_master(shards, name) && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// One move through `migrate` (which continues the migration if it is the
/// one in progress), its lines indented.
async fn run_move(
    target: &Target,
    range: &str,
    to: &str,
    options: &RebalanceOptions,
    out: &mut Output,
) -> Result<(), AdminError> {
    let migrate_options = MigrateOptions {
        range: range.to_string(),
        to: to.to_string(),
        dry_run: false,
        rate: options.rate,
        barrier_timeout: options.barrier_timeout,
    };
    out.indent = "  ";
    let moved = migrate::migrate(target, &migrate_options, out).await;
    out.indent = "";
    moved
}

/// The plan, each move's key and time estimate, and the ranges before and
/// after; changes nothing.
async fn dry_run(
    target: &Target,
    shards: &[Shard],
    plan: &Balance,
    running: Option<&crate::zk::migration::MigrationState>,
    rate: u64,
) -> Result<String, AdminError> {
    let mut out = String::new();
    if let Some(state) = running {
        // The plan below is from the ranges as they are, before that
        // migration commits; rebalance makes it again once it has.
        let _ = writeln!(
            out,
            "a migration is in progress (slots {} from {} to {}, phase {}): rebalance continues it first, then plans again from the ranges it leaves",
            state.range,
            state.source,
            state.target,
            state.phase.as_str()
        );
    }
    let mut sizes = Vec::new();
    for shard in shards.iter().filter(|s| !s.view.empty) {
        let size = mover::dbsize(target, shard).await;
        sizes.push(((shard.view.lo, shard.view.hi), size));
    }
    if plan.moves.is_empty() {
        let _ = writeln!(out, "already balanced: nothing to move");
    } else {
        let _ = writeln!(
            out,
            "rebalance plan: {} moves, in this order",
            plan.moves.len()
        );
    }
    let mut total = Some(0u64);
    for (i, step) in plan.moves.iter().enumerate() {
        let keys = estimate(step, &sizes);
        total = total.zip(keys).map(|(a, b)| a + b);
        let _ = writeln!(
            out,
            "  {}. slots {} from {} to {}: {}",
            i + 1,
            step.range(),
            step.source,
            step.target,
            keys_and_time(keys, rate)
        );
    }
    let _ = writeln!(out, "ranges (weight: before -> after):");
    for (i, (name, weight)) in plan.shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {name} ({weight}): {} -> {}",
            show(plan.before[i]),
            show(plan.after[i])
        );
    }
    if !plan.moves.is_empty() {
        let _ = writeln!(out, "in all: {}", keys_and_time(total, rate));
    }
    out.push_str("(dry run: nothing changed)\n");
    Ok(out)
}

fn keys_and_time(keys: Option<u64>, rate: u64) -> String {
    match keys {
        Some(keys) => {
            let (secs, per_second) = mover::estimate_secs(keys, rate);
            format!("about {keys} keys, about {secs:.1} s at {per_second} keys/s")
        }
        None => "key count unknown (a source's master did not answer DBSIZE)".to_string(),
    }
}
