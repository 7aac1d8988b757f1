//! Counters of one pool, updated on the request path with relaxed atomics
//! and read by INFO, the stats port and the metrics endpoint.
//!
//! The counters every request touches (requests, calls per command, the
//! latency histogram) are kept once per worker thread, each set on cache
//! lines of its own, and summed when read: threads never write to a line
//! another thread writes, so counting costs no cache-line traffic between
//! cores. The rest change per connection or per error and are plain shared
//! atomics.

use crate::command::{self, Command};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

    /// Requests received from clients.
    pub fn requests(&self) -> u64 {
        self.commands.requests()
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
/// [`LATENCY_BUCKETS`] in microseconds: a latency is placed by integer
/// compares.
const LATENCY_BUCKETS_MICROS: [u64; 13] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Sets of per-request counters: one per worker thread, up to this many
/// (more threads share them, still exactly, since every update is atomic).
const SLOTS: usize = 16;

/// The slot the current thread counts in, assigned on its first request.
fn slot_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SLOT.with(|slot| {
        let mut i = slot.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
            slot.set(i);
        }
        i
    })
}

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

/// One thread's counters; aligned so that no two threads' counters share
/// a cache line (the calls are a separate allocation per slot).
#[repr(align(128))]
#[derive(Debug)]
struct Slot {
    requests: AtomicU64,
    latency_micros: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    calls: Box<[AtomicU64]>,
}

/// Requests received, requests per top-level command (in the command
/// table's order), and one latency histogram over all requests, from
/// arrival to the reply.
#[derive(Debug)]
pub struct CommandStats {
    slots: Box<[Slot]>,
}

impl CommandStats {
    fn new() -> CommandStats {
        let slot = || Slot {
            requests: AtomicU64::new(0),
            latency_micros: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            calls: command::commands()
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
        };
        CommandStats {
            slots: (0..SLOTS).map(|_| slot()).collect(),
        }
    }

    fn slot(&self) -> &Slot {
        &self.slots[slot_index()]
    }

    /// Counts one request received.
    pub fn count_request(&self) {
        self.slot().requests.fetch_add(1, Ordering::Relaxed);
    }

    fn requests(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.requests.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts one request of `cmd` that took `latency`.
    pub fn record(&self, cmd: &Command, latency: Duration) {
        let slot = self.slot();
        if let Some(i) = table_index(cmd) {
            slot.calls[i].fetch_add(1, Ordering::Relaxed);
        }
        // Compared in nanoseconds: 100.5 us is over the 100 us bound.
        let nanos = latency.as_nanos();
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&le| nanos <= u128::from(le) * 1000)
            .unwrap_or(LATENCY_BUCKETS.len());
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        slot.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        slot.latency_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// (command name, calls) for every command called at least once.
    pub fn calls(&self) -> Vec<(&'static str, u64)> {
        command::commands()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let n = self
                    .slots
                    .iter()
                    .map(|s| s.calls[i].load(Ordering::Relaxed));
                (c.name, n.sum())
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Cumulative counts per bucket (Prometheus `le` semantics, the last
    /// one is `+Inf`), and the sum of latencies in seconds.
    pub fn histogram(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let cumulative = (0..=LATENCY_BUCKETS.len())
            .map(|b| {
                total += self
                    .slots
                    .iter()
                    .map(|s| s.buckets[b].load(Ordering::Relaxed))
                    .sum::<u64>();
                total
            })
            .collect();
        let micros: u64 = self
            .slots
            .iter()
            .map(|s| s.latency_micros.load(Ordering::Relaxed))
            .sum();
        (cumulative, micros as f64 / 1e6)
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
        // Just over a bound: the next bucket, as Prometheus' `le` says.
        stats.record(get, Duration::from_nanos(100_500));
        stats.record(get, Duration::from_millis(3));
        // From another thread: counted in another slot, summed alike.
        std::thread::scope(|scope| {
            scope.spawn(|| stats.record(setname, Duration::from_secs(2)));
        });
        assert_eq!(stats.calls(), vec![("client", 1), ("get", 3)]);
        let (buckets, sum) = stats.histogram();
        assert_eq!(buckets[0], 1, "50 us is in the first bucket");
        assert_eq!(buckets[1], 2, "100.5 us is in the second");
        assert_eq!(buckets[5], 3, "3 ms is under 5 ms");
        assert_eq!(
            buckets[LATENCY_BUCKETS.len() - 1],
            3,
            "2 s is slower than 1 s"
        );
        assert_eq!(*buckets.last().unwrap(), 4);
        assert!((sum - 2.003150).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn the_integer_bounds_are_the_published_ones() {
        for (micros, secs) in LATENCY_BUCKETS_MICROS.iter().zip(LATENCY_BUCKETS) {
            assert_eq!(*micros as f64 / 1e6, secs);
        }
    }

    #[test]
    fn requests_from_every_thread_are_summed() {
        let stats = CommandStats::new();
        std::thread::scope(|scope| {
            for _ in 0..20 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        stats.count_request();
                    }
                });
            }
        });
        assert_eq!(stats.requests(), 20_000);
    }
}
