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
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

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
    /// Requests, and parts of split ones, answered with the proxy's error
    /// because their server gave no reply (unreachable, timed out, its
    /// connection lost): twemproxy's `forward_error`. The proxy's own
    /// refusals (NOAUTH, an unknown command) are not forwarding errors.
    pub forward_errors: AtomicU64,
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
    /// Recent requests and client bytes per second (INFO's
    /// `instantaneous_*`), sampled by the pool's [`Rates::sample`] task.
    pub rates: Rates,
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
            forward_errors: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            fragments: AtomicU64::new(0),
            server_ejects: AtomicU64::new(0),
            commands: CommandStats::new(),
            rates: Rates::default(),
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

    /// Takes one sample of the rates (see [`Rates`]).
    pub fn sample_rates(&self) {
        let totals = [
            self.requests(),
            self.commands.net_input(),
            self.commands.net_output(),
        ];
        self.rates.sample(Instant::now(), totals);
    }
}

/// How many samples the rates average, one per [`RATE_SAMPLE_EVERY`]: the
/// last 1.6 s, as Redis's `instantaneous_ops_per_sec` does.
const RATE_SAMPLES: usize = 16;
pub const RATE_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Requests, client input bytes and client output bytes per second,
/// averaged over the last [`RATE_SAMPLES`] samples. Each sample divides
/// what the totals grew by the time actually elapsed, so a late tick does
/// not skew it.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<RateSamples>,
}

#[derive(Debug, Default)]
struct RateSamples {
    last: Option<(Instant, [u64; 3])>,
    per_sec: [[f64; 3]; RATE_SAMPLES],
    next: usize,
    taken: usize,
}

impl Rates {
    fn sample(&self, now: Instant, totals: [u64; 3]) {
        let mut s = self.samples.lock().expect("rates lock");
        if let Some((then, before)) = s.last {
            let secs = now.saturating_duration_since(then).as_secs_f64();
            if secs <= 0.0 {
                return;
            }
            let next = s.next;
            for (i, rate) in s.per_sec[next].iter_mut().enumerate() {
                *rate = totals[i].saturating_sub(before[i]) as f64 / secs;
            }
            s.next = (next + 1) % RATE_SAMPLES;
            s.taken = (s.taken + 1).min(RATE_SAMPLES);
        }
        s.last = Some((now, totals));
    }

    /// (requests/s, input bytes/s, output bytes/s); zeros before two
    /// samples were taken.
    pub fn current(&self) -> [f64; 3] {
        let s = self.samples.lock().expect("rates lock");
        let mut mean = [0.0; 3];
        if s.taken == 0 {
            return mean;
        }
        // The samples not taken yet are zeros: summing all is summing the
        // taken ones.
        for sample in &s.per_sec {
            for (m, v) in mean.iter_mut().zip(sample) {
                *m += v;
            }
        }
        mean.map(|m| m / s.taken as f64)
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
    /// Bytes read from and written to clients.
    net_input: AtomicU64,
    net_output: AtomicU64,
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
            net_input: AtomicU64::new(0),
            net_output: AtomicU64::new(0),
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
        self.sum(|s| &s.requests)
    }

    /// Counts bytes read from a client.
    pub fn count_input(&self, bytes: usize) {
        self.slot()
            .net_input
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts bytes written to a client.
    pub fn count_output(&self, bytes: usize) {
        self.slot()
            .net_output
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes read from clients (INFO's `total_net_input_bytes`).
    pub fn net_input(&self) -> u64 {
        self.sum(|s| &s.net_input)
    }

    /// Bytes written to clients (INFO's `total_net_output_bytes`).
    pub fn net_output(&self) -> u64 {
        self.sum(|s| &s.net_output)
    }

    fn sum(&self, counter: impl Fn(&Slot) -> &AtomicU64) -> u64 {
        self.slots
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
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
        let micros = self.sum(|s| &s.latency_micros);
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

    #[test]
    fn rates_are_the_mean_of_the_samples_over_the_time_elapsed() {
        let rates = Rates::default();
        let start = Instant::now();
        assert_eq!(rates.current(), [0.0; 3]);
        rates.sample(start, [0, 0, 0]);
        assert_eq!(rates.current(), [0.0; 3], "one sample is no rate yet");
        // 100 requests in 100 ms, then 300 in a tick that came 200 ms late.
        rates.sample(start + Duration::from_millis(100), [100, 1000, 2000]);
        rates.sample(start + Duration::from_millis(400), [400, 1000, 8000]);
        let [ops, input, output] = rates.current();
        assert!((ops - 1000.0).abs() < 1e-6, "{ops}");
        assert!((input - 5000.0).abs() < 1e-6, "{input}");
        assert!((output - 20000.0).abs() < 1e-6, "{output}");
        // Only the last 16 samples count: an idle 1.6 s brings it to 0.
        for i in 1..=RATE_SAMPLES as u64 {
            rates.sample(
                start + Duration::from_millis(400 + 100 * i),
                [400, 1000, 8000],
            );
        }
        assert_eq!(rates.current(), [0.0; 3]);
    }
}
