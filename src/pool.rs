//! The run-time state of one pool: its settings, routing and counters,
//! shared by every client session of the pool.

use crate::backend::{BackendRegistry, BackendSettings};
use crate::config::{PoolConfig, ZooKeeperConfig};
use crate::router::{file_shards, Router, ShardSpec};
use crate::stats::PoolStats;
use crate::zk::ZkStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One pool, as its client sessions see it.
pub struct Pool {
    pub name: String,
    pub listen: String,
    pub redis_auth: Option<String>,
    pub max_request_size: usize,
    pub client_connections: u32,
    pub router: Router,
    pub stats: PoolStats,
    /// The pool file's servers: the routing before ZooKeeper answers, and
    /// the fallback for a shard that has never had a master.
    pub file_shards: Vec<ShardSpec>,
    pub zookeeper: Option<ZooKeeperConfig>,
    /// What the ZooKeeper tasks are doing, for INFO.
    pub zk_status: Arc<ZkStatus>,
    next_client_id: AtomicU64,
}

impl Pool {
    /// Builds the pool's backends and first routing table from the file.
    /// Must run inside a tokio runtime.
    pub fn new(config: &PoolConfig) -> Pool {
        let settings = BackendSettings {
            timeout: config.timeout,
            auth: config.redis_auth.clone(),
            db: config.redis_db,
            connections: config.server_connections as usize,
            preconnect: config.preconnect,
            tcpkeepalive: config.tcpkeepalive,
            failure_limit: config.server_failure_limit,
            retry_timeout: config.server_retry_timeout,
        };
        Pool {
            name: config.name.clone(),
            listen: config.listen.clone(),
            redis_auth: config.redis_auth.clone(),
            max_request_size: config.max_request_size,
            client_connections: config.client_connections,
            router: Router::new(config, BackendRegistry::new(settings)),
            stats: PoolStats::default(),
            file_shards: file_shards(config),
            zookeeper: config.zookeeper.clone(),
            zk_status: Arc::new(ZkStatus::new()),
            next_client_id: AtomicU64::new(1),
        }
    }

    /// A new client id, unique within the pool (CLIENT ID).
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}
