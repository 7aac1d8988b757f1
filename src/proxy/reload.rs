//! Hot reload (SIGHUP): re-read the pool file and apply what can change
//! under running clients: servers, weights, ranges, hashing, distribution,
//! timeouts and the other server connection settings. Client connections
//! stay open; new requests use the new routing. What only a restart can
//! change (listen addresses, pools added or removed, client-facing settings,
//! ZooKeeper keys) is reported, and an invalid file changes nothing.

use crate::config::{Config, ConfigError, PoolConfig};
use crate::proxy::pool::Pool;
use crate::proxy::router::{file_shards, RouteSettings};
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
    let table = pool.router.reconfigure(RouteSettings::of(new), servers);
    tracing::info!(pool = %pool.name, version = table.version, shards = table.shards.len(),
        source = table.source, "pool file reloaded");
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
    check("zookeeper keys", old.zookeeper != new.zookeeper);
    // The listener's TLS acceptor is built once, at start.
    check("tls_cert, tls_key, tls_ca", old.tls != new.tls);
}
