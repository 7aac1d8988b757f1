//! Counters of one pool, updated on the request path with relaxed atomics
//! and read by INFO, the stats port and the metrics endpoint.

use crate::command::{self, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Counters of one pool.
#[derive(Debug)]
pub struct PoolStats {
    pub started: SystemTime,
    /// Client connections accepted since start.
    pub connections_received: AtomicU64,
    /// Client connections open now.
    pub connected_clients: AtomicU64,
    /// Clients waiting for a blocking command's reply (INFO's
    /// `blocked_clients`).
    pub blocked_clients: AtomicU64,
    /// Connections refused because of `client_connections`.
    pub rejected_connections: AtomicU64,
    /// Requests received from clients.
    pub requests: AtomicU64,
    /// Error replies the proxy built (backend failures, refusals, ...).
    pub errors: AtomicU64,
    /// Client connections closed after a protocol error.
    pub protocol_errors: AtomicU64,
    /// Failed AUTH and HELLO ... AUTH attempts.
    pub auth_failures: AtomicU64,
    /// Client connections closed because their TLS handshake failed (a
    /// plain-TCP client, a missing or untrusted client certificate).
    pub tls_handshake_failures: AtomicU64,
    /// Sub-requests sent for split commands (twemproxy's `fragments`).
    pub fragments: AtomicU64,
    /// Times a server was ejected (auto_eject_hosts).
    pub server_ejects: AtomicU64,
    /// Requests per command and their latency.
    pub commands: CommandStats,
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            started: SystemTime::now(),
            connections_received: AtomicU64::new(0),
            connected_clients: AtomicU64::new(0),
            blocked_clients: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            fragments: AtomicU64::new(0),
            server_ejects: AtomicU64::new(0),
            commands: CommandStats::new(),
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

/// Upper bounds (seconds) of the request latency histogram's buckets; the
/// last bucket counts everything slower.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The position of `cmd`'s top-level command in the command table. A
/// top-level entry is found by its address in the table, without comparing
/// names (this runs for every request); a subcommand by its container's
/// name.
fn table_index(cmd: &Command) -> Option<usize> {
    let table = command::commands();
    let offset = (cmd as *const Command as usize).wrapping_sub(table.as_ptr() as usize);
    let i = offset / std::mem::size_of::<Command>();
    if i < table.len() && std::ptr::eq(&table[i], cmd) {
        return Some(i);
    }
    let container = cmd.name.split('|').next().unwrap_or(cmd.name);
    table.binary_search_by(|c| c.name.cmp(container)).ok()
}

/// Requests per top-level command (in the command table's order) and one
/// latency histogram over all requests, from arrival to the reply.
#[derive(Debug)]
pub struct CommandStats {
    calls: Vec<AtomicU64>,
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_micros: AtomicU64,
}

impl CommandStats {
    fn new() -> CommandStats {
        CommandStats {
            calls: command::commands()
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_micros: AtomicU64::new(0),
        }
    }

    /// Counts one request of `cmd` that took `latency`.
    pub fn record(&self, cmd: &Command, latency: Duration) {
        if let Some(i) = table_index(cmd) {
            self.calls[i].fetch_add(1, Ordering::Relaxed);
        }
        let secs = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// (command name, calls) for every command called at least once.
    pub fn calls(&self) -> Vec<(&'static str, u64)> {
        command::commands()
            .iter()
            .zip(&self.calls)
            .map(|(c, n)| (c.name, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Cumulative counts per bucket (Prometheus `le` semantics, the last
    /// one is `+Inf`), and the sum of latencies in seconds.
    pub fn histogram(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        let sum = self.latency_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_latency_are_counted() {
        let stats = CommandStats::new();
        let get = command::lookup(b"get").unwrap();
        let setname = command::lookup_args(&[
            bytes::Bytes::from_static(b"client"),
            bytes::Bytes::from_static(b"setname"),
        ])
        .unwrap();
        stats.record(get, Duration::from_micros(50));
        stats.record(get, Duration::from_millis(3));
        stats.record(setname, Duration::from_secs(2));
        assert_eq!(stats.calls(), vec![("client", 1), ("get", 2)]);
        let (buckets, sum) = stats.histogram();
        assert_eq!(buckets[0], 1, "50 us is in the first bucket");
        assert_eq!(buckets[5], 2, "3 ms is under 5 ms");
        assert_eq!(
            buckets[LATENCY_BUCKETS.len() - 1],
            2,
            "2 s is slower than 1 s"
        );
        assert_eq!(*buckets.last().unwrap(), 3);
        assert!((sum - 2.00305).abs() < 1e-9, "{sum}");
    }
}
