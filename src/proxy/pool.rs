//! The run-time state of one pool: its settings, routing and counters,
//! shared by every client session of the pool.

use crate::command::REDIS_VERSION;
use crate::config::{PoolConfig, ZooKeeperConfig};
use crate::proxy::acl::Users;
use crate::proxy::backend::reply::{client_frame, error_frame, Dropped};
use crate::proxy::backend::{BackendError, Reply};
use crate::proxy::conn_cap::ConnCap;
use crate::proxy::dedicated::DedicatedLimit;
use crate::proxy::router::{file_shards, Router, ShardSpec};
use crate::proxy::stats::PoolStats;
use crate::proxy::zk::{ClusterView, ZkStatus};
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One pool, as its client sessions see it.
pub struct Pool {
    pub name: String,
    pub listen: String,
    /// The listener speaks TLS only (`tls_cert`), or not, as at start; the
    /// certificate and CA are swapped by a reload, for new connections.
    pub tls: Option<ArcSwap<crate::tls::ListenTls>>,
    pub redis_auth: Option<String>,
    /// Client users (`users`, `redis_auth`), fixed at start.
    pub users: Users,
    pub max_request_size: usize,
    pub client_output_limit: usize,
    pub client_connections: u32,
    /// The dedicated backend connections clients hold (blocking commands,
    /// transactions), and their cap.
    pub dedicated: DedicatedLimit,
    /// The subscriber connections clients hold, and their cap.
    pub subscribers: ConnCap,
    pub router: Router,
    pub stats: PoolStats,
    // A short sync lock: the pool file as last loaded, and its servers (the
    // routing before ZooKeeper answers, and the fallback for a shard that
    // has never had a master). Replaced by a reload.
    file: Mutex<(PoolConfig, Vec<ShardSpec>)>,
    pub zookeeper: Option<ZooKeeperConfig>,
    /// The ZooKeeper view the routing was last built from, when part of
    /// it came from the pool file (a stand-in, a shard with no master):
    /// a reload builds it again with the new file. Locked while a view is
    /// applied, so that a reload never puts back a view older than one
    /// the watch applied meanwhile.
    pub applied_view: Mutex<Option<ClusterView>>,
    /// What the ZooKeeper tasks are doing, for INFO.
    pub zk_status: Arc<ZkStatus>,
    next_client_id: AtomicU64,
}

impl Pool {
    /// Builds the pool's backends and first routing table from the file.
    /// Must run inside a tokio runtime.
    pub fn new(config: &PoolConfig) -> Pool {
        Pool {
            name: config.name.clone(),
            listen: config.listen.clone(),
            tls: config.tls.clone().map(ArcSwap::from_pointee),
            redis_auth: config.redis_auth.clone(),
            users: Users::new(config),
            max_request_size: config.max_request_size,
            client_output_limit: config.client_output_limit,
            client_connections: config.client_connections,
            dedicated: DedicatedLimit::new(config.max_dedicated_connections),
            subscribers: ConnCap::new(config.max_subscriber_connections),
            router: Router::new(config),
            stats: PoolStats::default(),
            file: Mutex::new((config.clone(), file_shards(config))),
            zookeeper: config.zookeeper.clone(),
            applied_view: Mutex::new(None),
            zk_status: Arc::new(ZkStatus::new()),
            next_client_id: AtomicU64::new(1),
        }
    }

    /// The pool's settings as they run: the file as last loaded, but with
    /// the values it started with for what only a restart applies.
    pub fn config(&self) -> PoolConfig {
        self.file.lock().expect("pool file lock").0.clone()
    }

    /// The pool file's servers as last loaded.
    pub fn file_shards(&self) -> Vec<ShardSpec> {
        self.file.lock().expect("pool file lock").1.clone()
    }

    /// Records a reloaded pool file (see [`Pool::config`]).
    pub fn set_config(&self, config: PoolConfig, shards: Vec<ShardSpec>) {
        *self.file.lock().expect("pool file lock") = (config, shards);
    }

    /// The Redis version the proxy reports (INFO's `redis_version`,
    /// HELLO's `version`): the lowest its servers run, as their shared
    /// connections read it, so that a client choosing what to send by the
    /// version uses only what every shard has; the command table's version
    /// until a connection has read one.
    pub fn redis_version(&self) -> String {
        let table = self.router.load();
        let known = table
            .shards
            .iter()
            .filter_map(|shard| shard.backend.stats.server_version());
        lowest_version(known).map_or_else(|| REDIS_VERSION.to_string(), |v| v.to_string())
    }

    /// A new client id, unique within the pool (CLIENT ID).
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The frame a client gets for a backend's reply ([`client_frame`]).
    /// A timeout while this proxy is cut off from ZooKeeper says so: the
    /// watchdogs then pause their masters' writes, which is most likely
    /// what the request waited for (review: the error named only the
    /// Redis, which was healthy).
    pub fn client_frame(&self, reply: Result<Reply, Dropped>, shard: &str) -> Bytes {
        if let Ok(Err(timeout @ BackendError::Timeout { .. })) = &reply {
            if let Some(note) = self.zk_status.outage_note() {
                return error_frame(shard, &format!("{timeout}{note}"));
            }
        }
        client_frame(reply, shard)
    }
}

/// The lowest of `versions` (`7.0.15` < `7.2.4` < `10.0.1`), leaving out
/// any that is not dot-separated numbers.
fn lowest_version(versions: impl Iterator<Item = Arc<str>>) -> Option<Arc<str>> {
    let numbers = |v: &str| -> Option<Vec<u64>> { v.split('.').map(|n| n.parse().ok()).collect() };
    versions
        .filter_map(|v| Some((numbers(&v)?, v)))
        .min()
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::lowest_version;
    use std::sync::Arc;

    #[test]
    fn the_lowest_version_compares_numbers() {
        let versions = ["7.2.4", "10.0.1", "7.0.15", "junk", "7.0.9x"];
        let lowest = lowest_version(versions.into_iter().map(Arc::from));
        assert_eq!(lowest.as_deref(), Some("7.0.15"));
        assert_eq!(lowest_version(std::iter::empty()), None);
    }
}
