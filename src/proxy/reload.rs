//! Hot reload (SIGHUP): re-read the pool file and apply what can change
//! under running clients: servers, weights, ranges, hashing, distribution,
//! timeouts and the other server connection settings. Client connections
//! stay open; new requests use the new routing. What only a restart can
//! change (listen addresses, pools added or removed, client-facing settings,
//! ZooKeeper keys) is reported, and an invalid file changes nothing.

use crate::config::{Config, ConfigError, PoolConfig};
use crate::proxy::pool::Pool;
use crate::proxy::router::{file_shards, RouteSettings, RoutingTable};
use crate::route::Distribution;
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
        restart_only_changes(&pool.config(), new, &mut report.need_restart);
        apply(pool, new);
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
/// fallback.
fn apply(pool: &Pool, new: &PoolConfig) {
    let specs = file_shards(new);
    pool.set_config(new.clone(), specs.clone());
    let servers = (pool.router.source() != "zookeeper").then_some((specs.as_slice(), "file"));
    let old = pool.router.load();
    let table = pool.router.reconfigure(RouteSettings::of(new), servers);
    release_blocked_on_moved_keys(&old, &table);
    tracing::info!(pool = %pool.name, version = table.version, shards = table.shards.len(),
        source = table.source, "pool file reloaded");
}

/// A client blocked on a key the new table sends to another server (BLPOP
/// with no timeout) would wait for ever: pushes now go to the new server.
/// Each old server that lost keys ends its blocked commands on them with
/// `-TRYAGAIN`, as when a range starts moving away
/// ([`crate::proxy::backend::Backend::range_moving`]): those on the slots
/// it lost, or every one where keys cannot be told apart by slot (ketama,
/// a new hash) and the placement changed.
fn release_blocked_on_moved_keys(old: &RoutingTable, new: &RoutingTable) {
    let id: Arc<str> = Arc::from(format!("reload-{}", new.version));
    let same_hash = old.hash == new.hash && old.hash_tag == new.hash_tag;
    let slots = match (old.distribution.slot_count(), new.distribution.slot_count()) {
        (Some(a), Some(b)) if a == b && same_hash => Some(a),
        _ => None,
    };
    // By old server: the first and last slot it lost.
    let mut lost: HashMap<&str, (u32, u32)> = HashMap::new();
    match slots {
        Some(count) => {
            for slot in 0..count as u32 {
                let before = &old.shards[old.distribution.pick(slot)].backend.addr;
                let after = &new.shards[new.distribution.pick(slot)].backend.addr;
                if before != after {
                    let span = lost.entry(before).or_insert((slot, slot));
                    span.1 = slot;
                }
            }
        }
        None => {
            let servers = |t: &RoutingTable| -> Vec<Arc<str>> {
                t.shards.iter().map(|s| s.backend.addr.clone()).collect()
            };
            let moved =
                !same_hash || old.distribution != new.distribution || servers(old) != servers(new);
            if moved && !matches!(old.distribution, Distribution::Random(_)) {
                for shard in &old.shards {
                    lost.insert(&shard.backend.addr, (0, u32::MAX));
                }
            }
        }
    }
    for shard in &old.shards {
        if let Some(&(lo, hi)) = lost.get(&*shard.backend.addr) {
            shard.backend.range_moving(&id, lo, hi);
        }
    }
}

fn restart_only_changes(old: &PoolConfig, new: &PoolConfig, out: &mut Vec<String>) {
    let mut check = |key: &str, changed: bool| {
        if changed {
            out.push(format!(
                "pool '{}': '{key}' changed: needs a restart",
                new.name
            ));
        }
    };
    check("listen", old.listen != new.listen);
    check("backlog", old.backlog != new.backlog);
    check("reuseport", old.reuseport != new.reuseport);
    check("redis_auth (for clients)", old.redis_auth != new.redis_auth);
    check("users", old.users != new.users);
    check(
        "client_connections",
        old.client_connections != new.client_connections,
    );
    check(
        "max_request_size",
        old.max_request_size != new.max_request_size,
    );
    // Both are fixed when the pool starts: each session's window, and the
    // cap every session shares.
    check(
        "client_output_limit",
        old.client_output_limit != new.client_output_limit,
    );
    check(
        "max_dedicated_connections",
        old.max_dedicated_connections != new.max_dedicated_connections,
    );
    check("zookeeper keys", old.zookeeper != new.zookeeper);
    // The listener's TLS acceptor is built once, at start.
    check("tls_cert, tls_key, tls_ca", old.tls != new.tls);
}
