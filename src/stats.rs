//! Counters of one pool, updated on the request path with relaxed atomics
//! and read by INFO (and later the stats port).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Counters of one pool.
#[derive(Debug)]
pub struct PoolStats {
    pub started: SystemTime,
    /// Client connections accepted since start.
    pub connections_received: AtomicU64,
    /// Client connections open now.
    pub connected_clients: AtomicU64,
    /// Connections refused because of `client_connections`.
    pub rejected_connections: AtomicU64,
    /// Requests received from clients.
    pub requests: AtomicU64,
    /// Error replies the proxy built (backend failures, refusals, ...).
    pub errors: AtomicU64,
    /// Client connections closed after a protocol error.
    pub protocol_errors: AtomicU64,
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            started: SystemTime::now(),
            connections_received: AtomicU64::new(0),
            connected_clients: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
        }
    }
}

impl PoolStats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().map(|d| d.as_secs()).unwrap_or(0)
    }
}
