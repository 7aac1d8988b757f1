//! Growing and rebalancing online: `add-shard`, `migrate`, `pause`,
//! `resume`, `abort` and `export` (the state and its phases are described
//! in [`crate::zk::migration`]).
//!
//! `migrate LO-HI --to SHARD` plans the move, writes the migration znode
//! (`prepare`), waits until every live proxy acknowledged it, switches to
//! `moving`, runs the [`mover`] until the source holds no key of the range,
//! and commits: the two shards' ranges and the phase `committed` in one
//! ZooKeeper transaction. Each shard keeps one contiguous range, so the
//! range must be at an edge of the source's and next to the target's (or
//! the target owns nothing yet). Running the command again continues a
//! migration from the phase it reached.

mod barrier;
mod big_key;
pub mod control;
pub(crate) mod fence;
pub mod mover;
pub mod rebalance;
mod stream_copy;

use super::output::Output;
use super::target::{connect, Target};
use super::znodes::read_shard_znodes;
use super::AdminError;
use crate::zk::layout::{child_path, parse_range, ShardData};
use crate::zk::migration::{control_root, migration_path, MigrationState, Phase};
use crate::zk::view::ShardView;
use barrier::{barrier, ended_meanwhile, CALLED_OFF_MEANWHILE, SESSION_ENDED};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zookeeper_client as zk;

/// How `migrate` runs.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    pub range: String,
    pub to: String,
    pub dry_run: bool,
    /// Keys per second, 0 = as fast as the mover goes; `None`: as
    /// recorded for a migration being continued, else 0.
    pub rate: Option<u64>,
    /// How long to wait for every proxy's acknowledgement.
    pub barrier_timeout: Duration,
}

/// One shard as read for planning, with its znode's version.
#[derive(Debug, Clone)]
pub(crate) struct Shard {
    pub view: ShardView,
    /// The znode's data as read (its master record must survive).
    pub data: Vec<u8>,
    pub version: i32,
}

fn zk_error(target: &Target, path: &str, e: zk::Error) -> AdminError {
    AdminError::zk_path(&target.hosts, path, e)
}

fn failed(reason: impl Into<String>) -> AdminError {
    AdminError::Migrate(reason.into())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads every shard under the cluster root.
pub(crate) async fn read_shards(
    client: &zk::Client,
    target: &Target,
) -> Result<Vec<Shard>, AdminError> {
    let root = &target.cluster_root;
    let znodes = read_shard_znodes(client, target)
        .await?
        .ok_or_else(|| zk_error(target, root, zk::Error::NoNode))?;
    let mut shards = Vec::new();
    for znode in znodes {
        let view = ShardView::from_znodes(&znode.path, &znode.data, &znode.members, None)
            .map_err(|e| failed(e.to_string()))?;
        shards.push(Shard {
            view,
            data: znode.data,
            version: znode.version,
        });
    }
    shards.sort_by(|a, b| a.view.name.cmp(&b.view.name));
    Ok(shards)
}

/// True when the shard named `name` has a master (its watchdogs run).
pub(crate) fn has_master(shards: &[Shard], name: &str) -> bool {
    shards
        .iter()
        .any(|s| s.view.name == name && s.view.master.is_some())
}

/// The slot space: the highest slot owned plus one.
pub(crate) fn slot_space(shards: &[Shard]) -> u32 {
    shards
        .iter()
        .filter(|s| !s.view.empty)
        .map(|s| s.view.hi + 1)
        .max()
        .unwrap_or(0)
}

/// `add-shard NAME`: a shard that owns no range yet; its watchdogs register
/// its Redis as for any shard, and `migrate` gives it ranges.
pub async fn add_shard(target: &Target, name: &str) -> Result<String, AdminError> {
    if name.is_empty() || name.contains('/') || name == "migration" {
        return Err(AdminError::Refused(
            "add-shard",
            format!("bad shard name {name:?}"),
        ));
    }
    let client = connect(&target.hosts, target.zk_auth.as_ref()).await?;
    let path = child_path(&target.cluster_root, name);
    let data = ShardData {
        weight: String::new(),
        ..ShardData::new(0, 0)
    };
    let mode = zk::CreateMode::Persistent.with_acls(crate::zk::acls(target.zk_auth.as_ref()));
    match client.create(&path, &data.to_json(), &mode).await {
        Ok(_) => Ok(format!(
            "created {path} with no range; start its watchdogs with --shard {name}, then \
             `migrate LO-HI --to {name}`\n"
        )),
        Err(zk::Error::NodeExists) => Err(AdminError::Refused(
            "add-shard",
            format!("{path} exists already"),
        )),
        Err(e) => Err(zk_error(target, &path, e)),
    }
}

/// What a migration changes: the shards' ranges after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub lo: u32,
    pub hi: u32,
    pub source: String,
    pub target: String,
    /// `None`: the source is left with no range.
    pub source_after: Option<(u32, u32)>,
    pub target_after: (u32, u32),
}

/// Checks that moving `lo..=hi` to `to` keeps every shard's range
/// contiguous, and says what the ranges become.
pub(crate) fn plan(shards: &[Shard], lo: u32, hi: u32, to: &str) -> Result<Plan, String> {
    let target = shards
        .iter()
        .find(|s| s.view.name == to)
        .ok_or_else(|| format!("no shard named {to}"))?;
    let slots = slot_space(shards);
    if hi >= slots {
        return Err(format!(
            "slots {lo}-{hi} go past the slot space: the shards own slots 0-{}",
            slots.saturating_sub(1)
        ));
    }
    let source = shards
        .iter()
        .find(|s| !s.view.empty && s.view.lo <= lo && hi <= s.view.hi)
        .ok_or_else(|| format!("slots {lo}-{hi} are not all on one shard"))?;
    let (s, t) = (&source.view, &target.view);
    if s.name == t.name {
        return Err(format!("slots {lo}-{hi} are on {to} already"));
    }
    let source_after = match (lo == s.lo, hi == s.hi) {
        (true, true) => None,
        (true, false) => Some((hi + 1, s.hi)),
        (false, true) => Some((s.lo, lo - 1)),
        (false, false) => {
            return Err(format!(
                "slots {lo}-{hi} are inside {}'s range {}-{}: move a range at one of its ends, so that each shard keeps one range",
                s.name, s.lo, s.hi
            ))
        }
    };
    let target_after = if t.empty {
        (lo, hi)
    } else if t.hi.checked_add(1) == Some(lo) {
        (t.lo, hi)
    } else if hi.checked_add(1) == Some(t.lo) {
        (lo, t.hi)
    } else {
        return Err(format!(
            "{}'s range {}-{} does not border slots {lo}-{hi}: each shard keeps one range",
            t.name, t.lo, t.hi
        ));
    };
    Ok(Plan {
        lo,
        hi,
        source: s.name.clone(),
        target: t.name.clone(),
        source_after,
        target_after,
    })
}

/// Reads the migration znode: its state and version, if there is one.
pub(crate) async fn read_state(
    client: &zk::Client,
    target: &Target,
) -> Result<Option<(MigrationState, i32)>, AdminError> {
    let read = read_state_stat(client, target).await?;
    Ok(read.map(|(state, stat)| (state, stat.version)))
}

/// [`read_state`] with the znode's stat: an ephemeral owner tells a
/// prepare that ends with its run's session from one that stays.
pub(crate) async fn read_state_stat(
    client: &zk::Client,
    target: &Target,
) -> Result<Option<(MigrationState, zk::Stat)>, AdminError> {
    let path = migration_path(&target.cluster_root).ok_or_else(|| {
        failed("the cluster root cannot be the ZooKeeper root (control znodes go beside it)")
    })?;
    match client.get_data(&path).await {
        Ok((data, stat)) => {
            let state = MigrationState::parse(&data).map_err(|e| failed(format!("{path}: {e}")))?;
            Ok(Some((state, stat)))
        }
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(zk_error(target, &path, e)),
    }
}

/// `migrate LO-HI --to SHARD`.
pub async fn migrate(
    target: &Target,
    options: &MigrateOptions,
    out: &mut Output,
) -> Result<(), AdminError> {
    let (lo, hi) = parse_range(&options.range).map_err(|e| failed(e.to_string()))?;
    let client = connect(&target.hosts, target.zk_auth.as_ref()).await?;
    let shards = read_shards(&client, target).await?;
    let existing = read_state(&client, target).await?;
    let (state, version) = match existing {
        Some((state, version)) => {
            if state.range != options.range || state.target != options.to {
                return Err(failed(format!(
                    "another migration is in progress: {} from {} to {} ({}); finish or abort it first",
                    state.range, state.source, state.target, state.phase.as_str()
                )));
            }
            let _ = writeln!(
                out,
                "continuing migration {} of {} from {} to {} at phase {}",
                state.id,
                state.range,
                state.source,
                state.target,
                state.phase.as_str()
            );
            let (mut state, mut version) = (state, version);
            // A rate given now replaces the recorded one (review: a move
            // started at 1 key/s, and its move back after an abort, could
            // never go faster). Recorded at once: the mover's progress
            // updates start from what ZooKeeper holds (review: the new
            // rate, kept in memory only, was replaced by the old one at
            // the first update).
            if let Some(rate) = options.rate.filter(|&rate| rate != state.rate) {
                let _ = writeln!(
                    out,
                    "rate: {} (was {})",
                    rate_text(rate),
                    rate_text(state.rate)
                );
                state.rate = rate;
                if !options.dry_run {
                    version = write_state(&client, target, &state, version).await?;
                }
            }
            (state, version)
        }
        None => {
            let plan = plan(&shards, lo, hi, &options.to).map_err(failed)?;
            if options.dry_run {
                let text =
                    mover::dry_run(target, &shards, &plan, options.rate.unwrap_or(0)).await?;
                let _ = write!(out, "{text}");
                return Ok(());
            }
            for name in [&plan.source, &plan.target] {
                if !has_master(&shards, name) {
                    return Err(failed(format!(
                        "{name} has no master: start its watchdogs first"
                    )));
                }
            }
            // Kept in the state so that `status` can tell an ETA.
            let estimate = mover::estimate_keys(target, &shards, &plan).await;
            let state = MigrationState {
                id: format!("m{}-{}", now(), std::process::id()),
                range: options.range.clone(),
                source: plan.source.clone(),
                target: plan.target.clone(),
                phase: Phase::Prepare,
                paused: false,
                rate: options.rate.unwrap_or(0),
                moved: 0,
                started: now(),
                updated: now(),
                estimate,
            };
            let version = create_state(&client, target, &state).await?;
            let _ = writeln!(
                out,
                "migration {}: slots {} from {} to {}",
                state.id, state.range, state.source, state.target
            );
            (state, version)
        }
    };
    if options.dry_run {
        let _ = writeln!(out, "(dry run: nothing changed)");
        return Ok(());
    }
    let fence = fence::Fence::new(&state.id);
    let id = state.id.clone();
    // Stopped by SIGTERM or SIGINT: a migration still in prepare holds
    // every request of its range (TRYAGAIN after 5 s) until someone runs
    // migrate again or aborts; nothing has moved yet, so it is called off.
    let driven = tokio::select! {
        driven = drive(&client, target, state, version, options, &fence, out) => driven,
        () = crate::logging::stop_signal() => {
            return Err(interrupted(&client, target, &id, &fence).await);
        }
    };
    // What was printed before the failure stays on the screen, and a
    // ZooKeeper failure says where that leaves the migration (review: a
    // ZooKeeper timeout printed the error alone).
    match driven {
        Err(e @ AdminError::ZooKeeper { .. }) => Err(failed(format!(
            "{e}; {}",
            where_it_stands(target, &id, options).await
        ))),
        driven => driven,
    }
}

/// Where a migration whose run lost ZooKeeper stands, read on a session of
/// its own: another run may have taken it over and finished it meanwhile
/// (review: a run stopped for the length of another's whole move said it
/// "stays where it was" of a migration long committed and gone).
async fn where_it_stands(target: &Target, id: &str, options: &MigrateOptions) -> String {
    let again = format!(
        "run `migrate {} --to {}` again to continue it, or `abort`",
        options.range, options.to
    );
    let read = match connect(&target.hosts, target.zk_auth.as_ref()).await {
        Ok(client) => read_state(&client, target).await,
        Err(e) => Err(e),
    };
    match read {
        Ok(Some((state, _))) if state.id == id => format!(
            "the migration stays where it was (phase {}): {again}",
            state.phase.as_str()
        ),
        Ok(Some((state, _))) => format!(
            "another run took this migration over and ended it meanwhile; migration {} ({} \
             from {} to {}, phase {}) is in progress now",
            state.id,
            state.range,
            state.source,
            state.target,
            state.phase.as_str()
        ),
        Ok(None) => "another run took this migration over and ended it meanwhile, or it was \
             aborted: see `shardproxy-admin status` for where the range is"
            .to_string(),
        Err(_) => format!("the migration stays where it was: {again}"),
    }
}

/// What `migrate` leaves when a signal stops it: a migration in prepare
/// is called off; one moving stays so (the proxies serve the range through
/// the lane), and this run's fence goes.
async fn interrupted(
    client: &zk::Client,
    target: &Target,
    id: &str,
    fence: &fence::Fence,
) -> AdminError {
    let state = match read_state(client, target).await {
        Ok(Some((state, version))) if state.id == id => (state, version),
        Ok(_) => return failed("interrupted; the migration had ended or was replaced"),
        Err(e) => {
            return failed(format!(
                "interrupted; the migration's state is unknown: {e}"
            ))
        }
    };
    match state {
        (state, _) if state.phase == Phase::Prepare && !state.turned_around() => {
            match call_off(client, target, id).await {
                Ok(CallOff::Done | CallOff::Gone) => failed(
                    "interrupted before any key moved: the migration was called off, and the \
                     range is served from its shard as before",
                ),
                Ok(went) => failed(format!("interrupted; {}", went.said())),
                Err(e) => failed(format!(
                    "interrupted in phase prepare, and calling the migration off failed ({e}): \
                     it holds the range's requests until this run's ZooKeeper session ends"
                )),
            }
        }
        (state, _) if state.phase == Phase::Prepare => failed(
            "interrupted in phase prepare of a migration turned around by abort: it stays, since \
             the keys it moved must go back, and the proxies hold the range's requests until \
             migrate runs again",
        ),
        (state, _) => {
            mover::release_fence(client, target, &state, fence).await;
            failed(format!(
                "interrupted in phase {}: the proxies serve the range through the migration \
                 lane meanwhile; run migrate again to finish it, or abort",
                state.phase.as_str()
            ))
        }
    }
}

/// Creates the migration znode in phase prepare, EPHEMERAL: it lives only
/// as long as this run's ZooKeeper session. The proxies hold the range's
/// requests while it exists, so a run killed (-9) or cut off while it
/// waits for them releases the range once its session expires, instead of
/// holding it until someone reruns or aborts; nothing has moved yet. The
/// switch to `moving` makes it persistent ([`begin_moving`]), which an
/// expired session can no longer do.
async fn create_state(
    client: &zk::Client,
    target: &Target,
    state: &MigrationState,
) -> Result<i32, AdminError> {
    let control = control_root(&target.cluster_root).expect("checked by read_state");
    let path = migration_path(&target.cluster_root).expect("checked by read_state");
    let acls = crate::zk::acls(target.zk_auth.as_ref());
    client
        .mkdir(&control, &zk::CreateMode::Persistent.with_acls(acls))
        .await
        .map_err(|e| zk_error(target, &control, e))?;
    let mode = zk::CreateMode::Ephemeral.with_acls(acls);
    match client.create(&path, &state.to_json(), &mode).await {
        Ok(_) => Ok(0),
        Err(zk::Error::NodeExists) => Err(failed("another migration started meanwhile")),
        Err(e) => Err(zk_error(target, &path, e)),
    }
}

/// Phase `moving`, in one transaction that replaces the znode read at
/// `version` (ephemeral in a fresh migration's prepare) with a persistent
/// one: from here the proxies move keys, so the migration must outlive
/// this run. If this run's session expired meanwhile, the proxies may have
/// let the range go (the ephemeral znode vanished) and the transaction
/// fails: nothing moves. A `pause` or `resume` meanwhile is kept; the new
/// version.
async fn begin_moving(
    client: &zk::Client,
    target: &Target,
    state: &mut MigrationState,
    mut version: i32,
) -> Result<i32, AdminError> {
    let path = migration_path(&target.cluster_root).expect("checked by read_state");
    let mode = zk::CreateMode::Persistent.with_acls(crate::zk::acls(target.zk_auth.as_ref()));
    loop {
        // The new znode's version goes past every version the prepare
        // had: a run or an `abort` that read the prepare and deletes at
        // its version can never delete the moving migration instead.
        if version >= MAX_PREPARE_EDITS {
            return Err(failed(format!(
                "the migration in prepare was edited {version} times (pause, resume): abort it \
                 and run migrate again"
            )));
        }
        let mut multi = client.new_multi_writer();
        let json = state.to_json();
        let mut added = multi
            .add_delete(&path, Some(version))
            .and_then(|()| multi.add_create(&path, &json, &mode));
        for edit in 0..=version {
            added = added.and_then(|()| multi.add_set_data(&path, &json, Some(edit)));
        }
        added.map_err(|e| zk_error(target, &path, e))?;
        let source = match multi.commit().await {
            Ok(_) => return Ok(version + 1),
            Err(zk::MultiWriteError::OperationFailed { source, .. })
            | Err(zk::MultiWriteError::RequestFailed { source }) => source,
        };
        if crate::zk::is_session_over(&source) {
            return Err(failed(SESSION_ENDED));
        }
        if !matches!(source, zk::Error::BadVersion | zk::Error::NoNode) {
            return Err(failed(format!(
                "switching to phase moving failed ({source}); nothing moved: run migrate again"
            )));
        }
        // Changed meanwhile: go on if it is still this migration's prepare
        // (paused or resumed), keeping what changed.
        match read_state(client, target).await? {
            Some((current, read)) if current.id == state.id && current.phase == Phase::Prepare => {
                state.paused = current.paused;
                state.rate = current.rate;
                version = read;
            }
            Some((current, _)) if current.id == state.id => {
                return Err(failed(CallOff::Went(current.phase).said()))
            }
            _ => return Err(failed(CALLED_OFF_MEANWHILE)),
        }
    }
}

/// Versions of a prepare znode past which [`begin_moving`] gives up (each
/// costs it one operation in its transaction).
const MAX_PREPARE_EDITS: i32 = 100;

/// What came of calling off a migration in prepare.
pub(crate) enum CallOff {
    /// Its znode is deleted: nothing moved, the proxies serve the range
    /// from its shard.
    Done,
    /// It had ended already (called off, or with its run's session).
    Gone,
    /// Another run took it to this phase meanwhile.
    Went(Phase),
}

/// Calls off migration `id` while it is in phase prepare, before any key
/// moved: deletes its znode at the version read, reading again if a
/// `pause` or `resume` changed it.
pub(crate) async fn call_off(
    client: &zk::Client,
    target: &Target,
    id: &str,
) -> Result<CallOff, AdminError> {
    let path = migration_path(&target.cluster_root).expect("checked by read_state");
    loop {
        let (state, version) = match read_state(client, target).await? {
            Some((state, version)) if state.id == id => (state, version),
            _ => return Ok(CallOff::Gone),
        };
        if state.phase != Phase::Prepare {
            return Ok(CallOff::Went(state.phase));
        }
        match client.delete(&path, Some(version)).await {
            Ok(()) => return Ok(CallOff::Done),
            Err(zk::Error::NoNode) => return Ok(CallOff::Gone),
            Err(zk::Error::BadVersion) => continue,
            Err(e) => return Err(zk_error(target, &path, e)),
        }
    }
}

impl CallOff {
    /// What it means for the user, after "nothing was moved and ".
    fn said(self) -> String {
        match self {
            CallOff::Done => "the migration was called off".to_string(),
            CallOff::Gone => "the migration had ended already (abort, or its run's session)".to_string(),
            CallOff::Went(phase) => format!(
                "another shardproxy-admin run took the migration to phase {} meanwhile; it drives it",
                phase.as_str()
            ),
        }
    }
}

/// Writes `state` over the version read; the new version.
pub(crate) async fn write_state(
    client: &zk::Client,
    target: &Target,
    state: &MigrationState,
    version: i32,
) -> Result<i32, AdminError> {
    let path = migration_path(&target.cluster_root).expect("checked by read_state");
    match client.set_data(&path, &state.to_json(), Some(version)).await {
        Ok(stat) => Ok(stat.version),
        Err(zk::Error::BadVersion) | Err(zk::Error::NoNode) => Err(failed(
            "the migration was changed by someone else (pause, resume or abort): run migrate again to continue",
        )),
        Err(e) => Err(zk_error(target, &path, e)),
    }
}

/// A rate as `--rate` takes it, for the output.
fn rate_text(rate: u64) -> String {
    if rate == 0 {
        "unlimited".to_string()
    } else {
        format!("{rate} keys/s")
    }
}

/// Runs the migration from its phase to the end.
async fn drive(
    client: &zk::Client,
    target: &Target,
    mut state: MigrationState,
    mut version: i32,
    options: &MigrateOptions,
    fence: &fence::Fence,
    out: &mut Output,
) -> Result<(), AdminError> {
    if state.phase == Phase::Prepare {
        let waited = barrier(client, target, &state, options.barrier_timeout).await;
        if let Err(missing) = waited {
            if client.state().is_terminated() {
                return Err(failed(SESSION_ENDED));
            }
            if missing.is_empty() {
                return Err(failed(ended_meanwhile(client, target, &state.id).await));
            }
            if state.turned_around() {
                // Keys moved before the abort still have to go back.
                return Err(failed(format!(
                    "these proxies did not acknowledge the migration within {} ms: {}; it stays \
                     in phase prepare, since the keys it moved before it was turned around must \
                     go back: run migrate again once they answer",
                    options.barrier_timeout.as_millis(),
                    missing.join(", ")
                )));
            }
            // Nothing moved yet: calling it off is safe.
            let called_off = match call_off(client, target, &state.id).await {
                Ok(done) => done.said(),
                Err(e) => format!(
                    "the migration could not be called off ({e}): it stays in phase prepare, \
                     holding the range's requests until this run's ZooKeeper session ends"
                ),
            };
            return Err(failed(format!(
                "these proxies did not acknowledge the migration within {} ms: {}; nothing was moved and {called_off}",
                options.barrier_timeout.as_millis(),
                missing.join(", ")
            )));
        }
        state.phase = Phase::Moving;
        state.updated = now();
        version = begin_moving(client, target, &mut state, version).await?;
        tracing::info!(migration = %state.id, range = %state.range, source = %state.source,
            target = %state.target, "phase moving: every proxy acknowledged");
        let _ = writeln!(out, "every proxy acknowledged; moving keys");
    }
    if state.phase == Phase::Moving {
        let ran = mover::run(client, target, &mut state, &mut version, fence, out).await;
        let (moved, secs) = match ran {
            Ok(ran) => ran,
            Err(e) => {
                mover::release_fence(client, target, &state, fence).await;
                return Err(e);
            }
        };
        let _ = writeln!(
            out,
            "moved {moved} keys in {secs:.1} s ({:.0} keys/s)",
            moved as f64 / secs.max(0.001)
        );
        version = commit(client, target, &mut state, version).await?;
        let _ = writeln!(
            out,
            "committed: slots {} now on {}",
            state.range, state.target
        );
    }
    // Committed: proxies stop using the lane once their table gives the
    // range to the target; then the migration znode goes.
    let _ = barrier(client, target, &state, options.barrier_timeout).await;
    let leftovers = mover::leftovers(client, target, &state).await?;
    mover::release_fence(client, target, &state, fence).await;
    let path = migration_path(&target.cluster_root).expect("checked");
    match client.delete(&path, Some(version)).await {
        Ok(()) | Err(zk::Error::NoNode) => {}
        Err(e) => return Err(zk_error(target, &path, e)),
    }
    if leftovers > 0 {
        let _ = writeln!(
            out,
            "warning: {} still holds {leftovers} keys of slots {} (written there after the move by a client that bypassed the proxies?); they were left in place",
            state.source, state.range
        );
    }
    let _ = writeln!(out, "migration {} done", state.id);
    Ok(())
}

/// How many times the commit reads the shards again when a watchdog
/// rewrote one meanwhile.
const COMMIT_ATTEMPTS: u32 = 20;

/// The shards' new ranges and the phase `committed`, in one transaction.
///
/// A master's watchdog rewrites its shard's znode now and then (its
/// record's offset moves as the range's keys arrive): a commit that finds
/// a shard's version changed reads the shards again and retries, keeping
/// what the watchdog wrote (CI: the local cluster's migrate failed on it).
/// A changed migration znode still fails: someone else acted on the move.
async fn commit(
    client: &zk::Client,
    target: &Target,
    state: &mut MigrationState,
    version: i32,
) -> Result<i32, AdminError> {
    let mut attempt = 1;
    loop {
        match try_commit(client, target, state, version).await? {
            Ok(version) => return Ok(version),
            Err(zk::MultiWriteError::OperationFailed {
                index: 0 | 1,
                source: zk::Error::BadVersion,
            }) if attempt < COMMIT_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(migration = %state.id, attempt,
                    "a shard's znode changed before the commit; reading the shards again");
            }
            Err(e) => {
                return Err(failed(format!(
                    "the commit failed ({e}); nothing was committed: run migrate again"
                )))
            }
        }
    }
}

/// One attempt of [`commit`]: the outer error is final, the inner one is
/// the transaction's.
async fn try_commit(
    client: &zk::Client,
    target: &Target,
    state: &mut MigrationState,
    version: i32,
) -> Result<Result<i32, zk::MultiWriteError>, AdminError> {
    let (lo, hi) = state.slots().map_err(failed)?;
    let shards = read_shards(client, target).await?;
    let root = &target.cluster_root;
    let path = migration_path(root).expect("checked");
    let owned = shards.iter().any(|s| {
        s.view.name == state.target && !s.view.empty && s.view.lo <= lo && hi <= s.view.hi
    });
    if owned {
        // A migration turned around by `abort`: the range never left.
        state.phase = Phase::Committed;
        state.updated = now();
        return write_state(client, target, state, version).await.map(Ok);
    }
    let plan = plan(&shards, lo, hi, &state.target)
        .map_err(|e| failed(format!("the shards changed during the migration: {e}")))?;
    let find = |name: &str| {
        shards
            .iter()
            .find(|s| s.view.name == name)
            .expect("planned")
    };
    let (source, dest) = (find(&plan.source), find(&plan.target));
    // Only the range changes: the master record the watchdogs keep stays.
    let data = |range: Option<(u32, u32)>, shard: &Shard| {
        let mut data = ShardData::parse(&shard.data).unwrap_or(ShardData::new(0, 0));
        data.weight = range.map_or_else(String::new, |(lo, hi)| format!("{lo}-{hi}"));
        data.to_json()
    };
    state.phase = Phase::Committed;
    state.updated = now();
    let mut multi = client.new_multi_writer();
    let added = multi
        .add_set_data(
            &child_path(root, &plan.source),
            &data(plan.source_after, source),
            Some(source.version),
        )
        .and_then(|()| {
            multi.add_set_data(
                &child_path(root, &plan.target),
                &data(Some(plan.target_after), dest),
                Some(dest.version),
            )
        })
        .and_then(|()| multi.add_set_data(&path, &state.to_json(), Some(version)));
    added.map_err(|e| zk_error(target, root, e))?;
    Ok(multi.commit().await.map(|results| {
        tracing::info!(migration = %state.id, range = %state.range, source = %state.source,
            target = %state.target, "committed");
        match results.last() {
            Some(zk::MultiWriteResult::SetData { stat }) => stat.version,
            _ => version + 1,
        }
    }))
}
