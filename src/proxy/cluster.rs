//! Routing from ZooKeeper: turns each cluster view the watch hands over into
//! a routing table (each shard's range to its master) and swaps it in, and
//! runs the proxy's registration. The pool file's servers route until
//! ZooKeeper answers; after that ZooKeeper overrides them.

use crate::proxy::migration::MigrationSpec;
use crate::proxy::pool::Pool;
use crate::proxy::router::{RoutingTable, ShardSpec, ZOOKEEPER};
use crate::proxy::stats_server::Monitoring;
use crate::proxy::zk::{self, ClusterView, ProxyData};
use crate::zk::view::ShardView;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Spawns the ZooKeeper tasks of `pool` (registration and cluster watch,
/// each when its path is configured) into `tasks`. They stop when
/// `shutdown` turns true; the registration then closes its session so the
/// proxy's znode vanishes at once.
pub fn spawn(
    pool: &Arc<Pool>,
    monitoring: &Monitoring,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    let Some(config) = &pool.zookeeper else {
        return;
    };
    if let Some(path) = &config.proxy_path {
        let data = ProxyData {
            listen: pool.listen.clone(),
            pool: pool.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            stats: monitoring.stats_addr.clone(),
            metrics: monitoring.metrics_addr.clone(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_string())
                .unwrap_or_default(),
        };
        tasks.spawn(zk::run_registration(
            config.hosts.clone(),
            config.auth.clone(),
            path.clone(),
            data,
            pool.zk_status.clone(),
            shutdown.clone(),
        ));
    }
    if let (Some(root), Some(proxy_path)) = (&config.redis_path, &config.proxy_path) {
        tasks.spawn(crate::proxy::migration::acks::run(
            Arc::downgrade(pool),
            config.hosts.clone(),
            config.auth.clone(),
            root.clone(),
            proxy_path.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(root) = &config.redis_path {
        let target = Arc::downgrade(pool);
        let on_change: zk::OnChange = Arc::new(move |view: ClusterView| match target.upgrade() {
            Some(pool) => apply(&pool, &view),
            None => Ok(()),
        });
        tasks.spawn(zk::watch_cluster(
            config.hosts.clone(),
            config.auth.clone(),
            root.clone(),
            file_slots(pool),
            on_change,
            pool.zk_status.clone(),
            shutdown.clone(),
        ));
    }
}

/// Routes the view's ranges to their masters. A shard that never had a
/// master (no watchdog registered yet) keeps the pool file's server for its
/// range if the file has one; otherwise the view is not applied.
///
/// # Errors
/// Why the view was not applied (the current routing stays).
pub fn apply(pool: &Pool, view: &ClusterView) -> Result<(), String> {
    let mut applied = pool.applied_view.lock().expect("applied view lock");
    install(pool, view)?;
    let rests_on_file = view
        .shards
        .iter()
        .any(|shard| shard.unowned || shard.master.is_none());
    *applied = rests_on_file.then(|| view.clone());
    Ok(())
}

/// After a reload of the pool file: the view last applied is built again
/// when part of its routing came from the file (a stand-in for unreadable
/// slots, a shard with no master), so that the new file's servers take
/// their place (review: a file mended by the operator was ignored until a
/// restart or ZooKeeper's next change).
pub fn reapply(pool: &Pool) {
    let applied = pool.applied_view.lock().expect("applied view lock");
    if let Some(view) = applied.as_ref() {
        if let Err(reason) = install(pool, view) {
            tracing::warn!(pool = %pool.name, reason = %reason,
                "ZooKeeper's view not built again with the reloaded pool file");
        }
    }
}

fn install(pool: &Pool, view: &ClusterView) -> Result<(), String> {
    same_slot_space(pool, view)?;
    let specs = shard_specs(pool, view)?;
    let old = pool.router.load_full();
    let table = pool.router.install(&specs, ZOOKEEPER, migration_spec(view));
    if table.version == old.version {
        return Ok(());
    }
    demote_replaced_masters(&old, &table, view);
    if let Some(m) = table.active_migration() {
        m.source.ranges_moving(&m.id, vec![(m.lo, m.hi)]);
    }
    for shard in view.shards.iter().filter(|s| s.no_members) {
        tracing::warn!(pool = %pool.name, shard = %shard.name, master = ?shard.master,
            "shard has no members; routing to its last known master");
    }
    tracing::info!(pool = %pool.name, version = table.version, shards = specs.len(),
        "routing table from ZooKeeper installed");
    Ok(())
}

/// Fences the masters the new table replaced: each backend that served a
/// shard before and serves none now is demoted, its queued requests going
/// to its shard's new master. A backend named again is reinstated. A shard
/// a migration emptied keeps its master, which is not fenced: what it
/// still owes (the last moves on access) is answered normally.
fn demote_replaced_masters(old: &RoutingTable, new: &RoutingTable, view: &ClusterView) {
    for shard in &new.shards {
        shard.backend.reinstate();
    }
    for before in &old.shards {
        // By address: a reload of the settings builds new backends for the
        // same servers, and they share one demotion.
        let still_used = new
            .shards
            .iter()
            .any(|s| s.backend.addr == before.backend.addr);
        let emptied = view.shard(before.name).is_some_and(|shard| {
            shard.empty && shard.master.as_deref() == Some(&*before.backend.addr)
        });
        if still_used || emptied || before.backend.is_demoted() {
            continue;
        }
        // The same shard by name, else the one now holding its first slot.
        let successor = new
            .shards
            .iter()
            .find(|s| s.name == before.name)
            .or_else(|| {
                let (lo, _) = before.range?;
                new.shards
                    .iter()
                    .find(|s| s.range.is_some_and(|(a, b)| a <= lo && lo <= b))
            });
        tracing::warn!(shard = %before.name, old_master = %before.backend.addr,
            new_master = %successor.map_or("none", |s| &*s.backend.addr),
            "master replaced: answering what the old one owes with an error");
        before.backend.demote(successor.map(|s| &s.backend));
    }
}

/// The view's migration, with its target's master (empty when the target
/// has none: the range's requests then get `-TRYAGAIN`).
fn migration_spec(view: &ClusterView) -> Option<MigrationSpec> {
    let state = view.migration.as_ref()?;
    let (lo, hi) = state.slots().ok()?;
    let master = |name: &str| {
        view.shard(name)
            .and_then(|s| s.master.clone())
            .unwrap_or_default()
    };
    Some(MigrationSpec {
        id: state.id.clone(),
        lo,
        hi,
        source: state.source.clone(),
        target: state.target.clone(),
        source_addr: master(&state.source),
        source_replicas: view
            .shard(&state.source)
            .map_or(0, |s| s.members.len().saturating_sub(1)),
        target_addr: master(&state.target),
        phase: state.phase,
    })
}

fn shard_specs(pool: &Pool, view: &ClusterView) -> Result<Vec<ShardSpec>, String> {
    let file_agrees = file_agrees(pool, view);
    // Stand-ins not named after a shard go last: the first shard takes the
    // keyless scripts, and it must be a shard of the other proxies' tables.
    let (named, stand_ins): (Vec<&ShardView>, Vec<&ShardView>) = view
        .shards
        .iter()
        .partition(|shard| !shard.is_unnamed_stand_in());
    named
        .into_iter()
        .chain(stand_ins)
        .filter(|shard| !shard.empty)
        .map(|shard| {
            if shard.unowned {
                return Ok(unowned_spec(pool, shard, file_agrees));
            }
            let addr = match &shard.master {
                Some(master) => master.clone(),
                None => file_server_for(pool, shard.lo).ok_or_else(|| {
                    format!(
                        "shard {} ({}-{}) has no master and the pool file has no server for slot {}",
                        shard.name, shard.lo, shard.hi, shard.lo
                    )
                })?,
            };
            Ok(ShardSpec {
                name: shard.name.clone(),
                addr,
                weight: shard.hi - shard.lo + 1,
                range: Some((shard.lo, shard.hi)),
                // A master from the pool file is not the watchdogs'.
                run_id: shard.master.as_ref().and(shard.master_run_id.clone()),
                unplaced: None,
            })
        })
        .collect()
}

/// Slots no readable shard owns ([`crate::zk::view::ShardView::unowned`]):
/// when the file's ranges are ZooKeeper's (`file_agrees`), the master of
/// the unreadable shard's line if the stand-in took its place, else the
/// pool file's server for exactly that range; otherwise a stand-in that
/// answers their keys with an error. A file older than the last move
/// would put that move's keys on their old shard, where no other proxy
/// looks for them.
fn unowned_spec(pool: &Pool, shard: &ShardView, file_agrees: bool) -> ShardSpec {
    let range = Some((shard.lo, shard.hi));
    let from_file = pool
        .file_shards()
        .into_iter()
        .find(|s| file_agrees && s.range == range);
    if let Some(server) = from_file {
        // In the place of one unreadable shard, whose line can be read:
        // its master, as the other proxies route it, failovers included.
        if let Some(head) = shard.members.first() {
            tracing::warn!(pool = %pool.name, lo = shard.lo, hi = shard.hi, master = %head.addr,
                "slots no readable shard owns, the pool file's ranges are ZooKeeper's: routing \
                 them to the master of the unreadable shard's line");
            return ShardSpec {
                name: shard.name.clone(),
                addr: head.addr.clone(),
                weight: shard.hi - shard.lo + 1,
                range,
                run_id: None,
                unplaced: None,
            };
        }
        tracing::warn!(pool = %pool.name, lo = shard.lo, hi = shard.hi, server = %server.addr,
            "slots no readable shard owns: routing them by the pool file, whose ranges are ZooKeeper's");
        return ShardSpec {
            name: shard.name.clone(),
            weight: shard.hi - shard.lo + 1,
            ..server
        };
    }
    tracing::warn!(pool = %pool.name, lo = shard.lo, hi = shard.hi,
        "slots no readable shard owns, and the pool file's ranges are not ZooKeeper's: answering their keys with an error");
    ShardSpec {
        name: shard.name.clone(),
        addr: shard.name.clone(),
        weight: shard.hi - shard.lo + 1,
        range,
        run_id: None,
        unplaced: Some(
            "no shard whose data in ZooKeeper can be read owns these slots, and the pool \
             file's ranges are not ZooKeeper's: where their keys are is unknown until the \
             shard's data is mended (shardproxy-admin status names the shard)"
                .to_string(),
        ),
    }
}

/// True when every range a readable shard owns is one of the pool file's
/// ranges: the file is as new as ZooKeeper's layout, as far as can be
/// told, and its server for the rest of the slots is the best guess.
fn file_agrees(pool: &Pool, view: &ClusterView) -> bool {
    let file = pool.file_shards();
    view.shards
        .iter()
        .filter(|shard| !shard.empty && !shard.unowned)
        .all(|shard| file.iter().any(|s| s.range == Some((shard.lo, shard.hi))))
}

/// A new slot space S moves every key (slot = hash mod S): the last shard's
/// znode deleted, or its range mistyped. Compared with the last view this
/// proxy applied, not with its pool file (whose servers may be listed by
/// weight); refused for as long as the proxy runs. A restarted one takes
/// the new S unless its file has ranges and the shards within them tile
/// its S (the watch then leaves the others out). Its first view must not
/// be narrower than a file with ranges either: the shards of a cluster
/// being made one by one, or one whose last shard's data is unreadable,
/// would otherwise fix S for as long as it runs (review: a proxy started
/// before the cluster's znodes took the first shard's 0-2047 and refused
/// the whole cluster after).
fn same_slot_space(pool: &Pool, view: &ClusterView) -> Result<(), String> {
    match pool.zk_status.snapshot().view {
        Some(old) if old.slots != view.slots => Err(format!(
            "the shards' ranges now cover slots 0-{} instead of 0-{}: every key would move; \
             a shard's znode is missing or its range is wrong (to take a new slot space, \
             restart the proxy with a pool file whose ranges cover it)",
            view.slots.saturating_sub(1),
            old.slots.saturating_sub(1)
        )),
        Some(_) => Ok(()),
        None => match file_slots(pool) {
            Some(file) if view.slots < file => Err(format!(
                "the shards' ranges cover slots 0-{} of the pool file's 0-{}: every key would \
                 move; routing by the pool file until the others' znodes are there (to take a \
                 smaller slot space, restart the proxy with a pool file whose ranges cover it)",
                view.slots.saturating_sub(1),
                file - 1
            )),
            _ => Ok(()),
        },
    }
}

/// The pool file's slot space when its servers have ranges (the weight
/// form's servers take ZooKeeper's ranges whatever their weights).
fn file_slots(pool: &Pool) -> Option<u32> {
    pool.config().slot_space()
}

/// The file's range server that holds `slot`.
fn file_server_for(pool: &Pool, slot: u32) -> Option<String> {
    pool.file_shards()
        .into_iter()
        .find(|s| s.range.is_some_and(|(lo, hi)| lo <= slot && slot <= hi))
        .map(|s| s.addr)
}
