//! Hot reload (SIGHUP): re-read the pool file and apply what can change
//! under running clients: servers, weights, ranges, hashing, distribution,
//! timeouts and the other server connection settings. Client connections
//! stay open; new requests use the new routing. What only a restart can
//! change (listen addresses, pools added or removed, client-facing settings,
//! ZooKeeper keys) is reported, and an invalid file changes nothing.

use crate::config::{Config, ConfigError, PoolConfig};
use crate::proxy::pool::Pool;
use crate::proxy::router::{file_shards, RouteSettings, RoutingTable};
use crate::route::SlotRun;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Pools whose routing was rebuilt from the new file.
    pub applied: Vec<String>,
    /// Changes that need a restart to take effect, one line each.
    pub need_restart: Vec<String>,
    /// Changes applied that an operator should know of, one line each.
    pub warnings: Vec<String>,
}

/// Re-reads `path` and applies it to the running `pools`.
///
/// # Errors
/// The file is invalid; nothing was changed.
pub fn reload(pools: &[Arc<Pool>], path: &Path) -> Result<ReloadReport, ConfigError> {
    let config = Config::load(path)?;
    let mut report = ReloadReport::default();
    for new in &config.pools {
        let Some(pool) = pools.iter().find(|p| p.name == new.name) else {
            report
                .need_restart
                .push(format!("pool '{}' is new: a restart starts it", new.name));
            continue;
        };
        let before = pool.config();
        let mut new = new.clone();
        hashing_changes(&before, &mut new, &mut report);
        let mut running = new.clone();
        restart_only_changes(&before, &mut running, &mut report.need_restart);
        apply(pool, &new, running);
        report.applied.push(new.name.clone());
    }
    for pool in pools {
        if !config.pools.iter().any(|p| p.name == pool.name) {
            report.need_restart.push(format!(
                "pool '{}' is gone from the file: it keeps running until a restart",
                pool.name
            ));
        }
    }
    Ok(report)
}

/// Rebuilds the pool's routing with the new settings. When ZooKeeper drives
/// the routing, its servers stay; the file's servers become the new
/// fallback. `running` is the file as it now runs, for the next reload to
/// compare with: `new` but for what only a restart applies.
fn apply(pool: &Pool, new: &PoolConfig, running: PoolConfig) {
    let specs = file_shards(new);
    if let (Some(listening), Some(tls)) = (&pool.tls, &running.tls) {
        if **listening.load() != *tls {
            listening.store(Arc::new(tls.clone()));
            tracing::info!(pool = %pool.name, cert = %tls.cert,
                "TLS certificate, key and CA reloaded: new client connections use them");
        }
    }
    pool.set_config(running, specs.clone());
    let old = pool.router.load();
    pool.router.reconfigure(RouteSettings::of(new), &specs);
    crate::proxy::cluster::reapply(pool);
    let table = pool.router.load_full();
    release_blocked_on_moved_keys(&old, &table);
    tracing::info!(pool = %pool.name, version = table.version, shards = table.shards.len(),
        source = table.source, "pool file reloaded");
}

/// A client blocked on a key the new table sends to another server (BLPOP
/// with no timeout) would wait for ever: pushes now go to the new server.
/// Each old server that lost keys ends its blocked commands on them with
/// `-TRYAGAIN`, as when a range starts moving away
/// ([`crate::proxy::backend::Backend::ranges_moving`]): those on the
/// positions it lost (slot runs, or arcs of a ketama ring), or every one
/// where a new hash or kind of distribution moved keys anywhere, or keys
/// have no position (random), if the placement changed, or the database
/// (`redis_db`) changed.
fn release_blocked_on_moved_keys(old: &RoutingTable, new: &RoutingTable) {
    let id: Arc<str> = Arc::from(format!("reload-{}", new.version));
    let comparable = old.hash == new.hash
        && old.hash_tag == new.hash_tag
        && std::mem::discriminant(&old.distribution) == std::mem::discriminant(&new.distribution);
    let mut lost: HashMap<Arc<str>, Vec<(u32, u32)>> = HashMap::new();
    // A new `redis_db` moves every key: pushes now go to another database.
    let db = |table: &RoutingTable| table.shards.first().map(|s| s.backend.settings().db);
    let db_changed = db(old) != db(new);
    match (
        old.distribution.position_runs(),
        new.distribution.position_runs(),
    ) {
        _ if db_changed => {
            for shard in &old.shards {
                lost.insert(shard.backend.addr.clone(), vec![(0, u32::MAX)]);
            }
        }
        (Some((size, before)), Some((new_size, after))) if size == new_size && comparable => {
            for (lo, hi, from, to) in overlaps(&before, &after) {
                let (from, to) = (&old.shards[from].backend.addr, &new.shards[to].backend.addr);
                if from != to {
                    lost.entry(from.clone())
                        .or_default()
                        .push((lo as u32, hi as u32));
                }
            }
        }
        _ => {
            if old.placement() != new.placement() {
                for shard in &old.shards {
                    lost.insert(shard.backend.addr.clone(), vec![(0, u32::MAX)]);
                }
            }
        }
    }
    for shard in &old.shards {
        if let Some(ranges) = lost.remove(&shard.backend.addr) {
            shard.backend.ranges_moving(&id, ranges);
        }
    }
}

/// Where two cuts of one slot space into runs (first, last, node) meet:
/// each stretch of slots with the node it had and the node it has, in
/// slot order, walking the runs rather than the slots.
fn overlaps(before: &[SlotRun], after: &[SlotRun]) -> Vec<(u64, u64, usize, usize)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < before.len() && j < after.len() {
        let (a, b) = (before[i], after[j]);
        let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
        if lo <= hi {
            out.push((lo, hi, a.2, b.2));
        }
        if a.1 <= b.1 {
            i += 1;
        }
        if b.1 <= a.1 {
            j += 1;
        }
    }
    out
}

/// Reports each setting of `new` that only a restart applies and that
/// differs from what runs, and puts the running value back in `new`: the
/// pool then records what runs, so the next reload compares with that (a
/// change reverted is no longer reported, one reloaded twice still is;
/// both were the other way round). `redis_auth` is both: the backends'
/// password follows the file at once, the clients' at a restart.
fn restart_only_changes(running: &PoolConfig, new: &mut PoolConfig, out: &mut Vec<String>) {
    let name = new.name.clone();
    let mut report =
        |key: &str| out.push(format!("pool '{name}': '{key}' changed: needs a restart"));
    macro_rules! keep_running {
        ($key:expr, $field:ident) => {
            if running.$field != new.$field {
                report($key);
                new.$field = running.$field.clone();
            }
        };
    }
    // A unix socket's mode is fixed when it is bound, as its path is.
    if running.listen == new.listen && running.listen_unix != new.listen_unix {
        report("listen (the unix socket's mode)");
    }
    new.listen_unix = running.listen_unix.clone();
    keep_running!("listen", listen);
    keep_running!("backlog", backlog);
    keep_running!("reuseport", reuseport);
    keep_running!("redis_auth (for clients)", redis_auth);
    keep_running!("users", users);
    keep_running!("client_connections", client_connections);
    keep_running!("max_request_size", max_request_size);
    // Both are fixed when the pool starts: each session's window, and the
    // cap every session shares.
    keep_running!("client_output_limit", client_output_limit);
    keep_running!("max_dedicated_connections", max_dedicated_connections);
    keep_running!("max_subscriber_connections", max_subscriber_connections);
    keep_running!("zookeeper keys", zookeeper);
    // Whether the listener speaks TLS is fixed at start; its certificate,
    // key and CA are not (see `apply`).
    if running.tls.is_some() != new.tls.is_some() {
        report("tls_cert, tls_key, tls_ca");
        new.tls = running.tls.clone();
    }
}

/// A new `hash`, `hash_tag` or `distribution` sends keys elsewhere, and
/// the keys already stored stay where they were (review: applied with
/// nothing said). A pool that routes from ZooKeeper keeps the running
/// one: its fleet must hash alike, or proxies write a key where the others
/// never look. A pool file's pool applies it, with a warning.
fn hashing_changes(running: &PoolConfig, new: &mut PoolConfig, report: &mut ReloadReport) {
    let mut changed = Vec::new();
    if running.hash != new.hash {
        changed.push("hash");
    }
    if running.hash_tag != new.hash_tag {
        changed.push("hash_tag");
    }
    if running.distribution != new.distribution {
        changed.push("distribution");
    }
    // In range form the slot space is the ranges' end: a file cut short
    // (a reload caught mid-write) leaves a smaller one, and nearly every
    // key hashes to another slot (review: applied with nothing said).
    if let (Some(before), Some(after)) = (running.slot_space(), new.slot_space()) {
        if before != after && running.zookeeper.is_none() {
            report.warnings.push(format!(
                "pool '{}': the slot space changed from {before} to {after} slots: nearly every \
                 key now hashes to another slot and server, and those already stored stay where \
                 they were (replace the pool file in one step, with a rename)",
                new.name
            ));
        }
    }
    if changed.is_empty() {
        return;
    }
    let (name, keys) = (&new.name, changed.join("', '"));
    if running.zookeeper.is_some() {
        report.need_restart.push(format!(
            "pool '{name}': '{keys}' changed: not applied to a pool that routes from \
             ZooKeeper, whose proxies must all place keys alike; restart every proxy of the \
             fleet with the new value (stored keys do not move)"
        ));
        new.hash = running.hash;
        new.hash_tag = running.hash_tag;
        new.distribution = running.distribution;
    } else {
        report.warnings.push(format!(
            "pool '{name}': '{keys}' changed: keys now go to other servers, and those \
             already stored stay where they were"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn overlapping_runs_pair_each_stretch_with_both_owners() {
        let before = [(0, 4095, 0)];
        let after = [(0, 1023, 1), (1024, 3071, 0), (3072, 4095, 1)];
        assert_eq!(
            overlaps(&before, &after),
            vec![(0, 1023, 0, 1), (1024, 3071, 0, 0), (3072, 4095, 0, 1)]
        );
        assert_eq!(
            overlaps(&after, &before),
            vec![(0, 1023, 1, 0), (1024, 3071, 0, 0), (3072, 4095, 1, 0)]
        );
    }
}
