//! The process's file descriptors, shared by clients and server
//! connections. Run out of them, the proxy could neither accept a client
//! (it waited in the backlog with no answer: redis-cli hung) nor open a
//! server connection for the clients it had (their requests failed with
//! `Too many open files`); idle clients alone could do both (review: 140
//! idle connections under a limit of 128). So, as Redis does with
//! `maxclients`:
//! - the soft limit is raised to the hard one at start;
//! - clients are refused with `-ERR max number of clients reached` past
//!   the limit less a reserve kept for server connections and the rest;
//! - one descriptor is held spare, so that a client that still finds none
//!   left (the server connections took them) is accepted on it, told the
//!   same error and closed, instead of waiting unanswered.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Descriptors kept from clients at least: listeners, ZooKeeper, the log,
/// the spare, a few dedicated server connections.
const MIN_RESERVE: u64 = 32;
/// Each worker thread's own: its event loop (epoll, its wake-up), more.
const PER_WORKER: u64 = 8;
/// And at least this share of the limit (an eighth): each server
/// connection a client's request opens (blocking commands, transactions,
/// subscriptions) takes one too.
const RESERVE_SHARE: u64 = 8;
/// The soft limit is raised no higher: a hard limit of "unlimited" must
/// not size anything.
const HIGHEST_LIMIT: u64 = 1 << 20;

/// Raised when an accept fails for want of file descriptors, or the
/// client cap is reached: sessions whose client closed its connection
/// while replies were owed (a stalled backend, no `timeout`) let go of
/// their sockets, as Redis drops a client at once when it closes. Their
/// requests still run on the backends.
static DESCRIPTORS_SHORT: Notify = Notify::const_new();

/// Resolves the next time the proxy runs out of file descriptors or
/// reaches its client cap.
pub fn descriptors_short() -> &'static Notify {
    &DESCRIPTORS_SHORT
}

/// Clients the process may hold at once; 0 until [`set_up`] ran (no cap).
static CLIENT_CAP: AtomicU64 = AtomicU64::new(0);
/// Descriptors kept from clients (the limit less the cap); 0 until
/// [`set_up`] ran.
static KEPT_FROM_CLIENTS: AtomicU64 = AtomicU64::new(0);
/// Clients held now, every pool and worker together.
static CLIENTS: AtomicU64 = AtomicU64::new(0);
static SPARE: Mutex<Option<File>> = Mutex::new(None);

/// What [`set_up`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The soft limit before, and after the raise.
    pub was: u64,
    pub now: u64,
    /// Clients at most.
    pub client_cap: u64,
}

/// Raises the soft limit to the hard one, sets the client cap from it and
/// opens the spare descriptor. Call once, at start, with the shared server
/// connections the workers will open (every worker its own to each
/// server: `workers` x servers x `server_connections`) and the workers.
pub fn set_up(shared_connections: u64, workers: u64) -> Limits {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let was = limit.current.unwrap_or(HIGHEST_LIMIT).min(HIGHEST_LIMIT);
    let hard = limit.maximum.unwrap_or(HIGHEST_LIMIT).min(HIGHEST_LIMIT);
    let mut now = was;
    if hard > was {
        let raised = Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            now = hard;
        }
    }
    let client_cap = client_cap(now, shared_connections + workers * PER_WORKER);
    CLIENT_CAP.store(client_cap, Ordering::Relaxed);
    KEPT_FROM_CLIENTS.store(now.saturating_sub(client_cap), Ordering::Relaxed);
    restore_spare();
    Limits {
        was,
        now,
        client_cap,
    }
}

/// Clients at most under a limit of `descriptors`, of which `fixed` go to
/// the workers and their shared server connections (review: with 32
/// workers under 1,024, the reserve went to them, and 467 of 860 clients'
/// GETs failed with `Too many open files`).
fn client_cap(descriptors: u64, fixed: u64) -> u64 {
    let reserve = (descriptors / RESERVE_SHARE).max(MIN_RESERVE + fixed);
    descriptors.saturating_sub(reserve).max(1)
}

/// The most clients a pool with `client_connections: configured` takes
/// (INFO's `maxclients`): the lower of that and the process's cap; 0 for
/// no limit at all.
pub fn max_clients(configured: u32) -> u64 {
    let cap = CLIENT_CAP.load(Ordering::Relaxed);
    match (u64::from(configured), cap) {
        (0, cap) => cap,
        (configured, 0) => configured,
        (configured, cap) => configured.min(cap),
    }
}

/// Descriptors kept from clients for the rest (server connections);
/// unbounded until [`set_up`] ran.
pub fn kept_from_clients() -> usize {
    match KEPT_FROM_CLIENTS.load(Ordering::Relaxed) {
        0 => usize::MAX,
        kept => usize::try_from(kept).unwrap_or(usize::MAX),
    }
}

/// Whether the process holds as many clients as its descriptors allow.
pub fn clients_full() -> bool {
    let cap = CLIENT_CAP.load(Ordering::Relaxed);
    cap != 0 && CLIENTS.load(Ordering::Relaxed) >= cap
}

/// An accept loop's view of the cap being reached.
#[derive(Default)]
pub struct Full {
    /// When sessions were last asked to make room.
    asked: Option<Instant>,
    /// When refusing at the cap was last logged.
    told: Option<Instant>,
}

impl Full {
    /// At the cap: sessions whose clients left while replies were owed
    /// give their sockets back first, as when descriptors run out (a
    /// stalled backend's clients that gave up must not keep the others
    /// out). Asked at most every [`ASK_EVERY`], so that a flood of clients
    /// at the cap is refused without a pause each.
    pub async fn make_room(&mut self) {
        if self.asked.is_some_and(|at| at.elapsed() < ASK_EVERY) {
            return;
        }
        self.asked = Some(Instant::now());
        DESCRIPTORS_SHORT.notify_waiters();
        tokio::time::sleep(LET_GO_WAIT).await;
    }

    /// Whether the process is still at the cap; logged every
    /// [`TELL_EVERY`] at most.
    pub fn refuses(&mut self) -> bool {
        if !clients_full() {
            return false;
        }
        if self.told.is_none_or(|at| at.elapsed() >= TELL_EVERY) {
            self.told = Some(Instant::now());
            tracing::warn!(
                max_clients = CLIENT_CAP.load(Ordering::Relaxed),
                "max number of clients reached: new clients are refused (raise the open files \
                 limit, ulimit -n or LimitNOFILE, to take more)"
            );
        }
        true
    }
}

const ASK_EVERY: Duration = Duration::from_millis(100);
const LET_GO_WAIT: Duration = Duration::from_millis(5);
const TELL_EVERY: Duration = Duration::from_secs(10);

/// A client counted against the cap until dropped.
pub struct ClientSlot(());

impl ClientSlot {
    pub fn take() -> ClientSlot {
        CLIENTS.fetch_add(1, Ordering::Relaxed);
        ClientSlot(())
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        CLIENTS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Closes the spare descriptor, so that one accept can succeed; false if
/// there was none (it is given back by [`restore_spare`]).
pub fn release_spare() -> bool {
    lock_spare().take().is_some()
}

/// Opens the spare descriptor again if it was released (and one is free).
pub fn restore_spare() {
    let mut spare = lock_spare();
    if spare.is_none() {
        *spare = File::open("/dev/null").ok();
    }
}

fn lock_spare() -> std::sync::MutexGuard<'static, Option<File>> {
    SPARE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_a_reserve_for_server_connections() {
        assert_eq!(client_cap(128, 0), 96);
        assert_eq!(client_cap(1024, 0), 896);
        assert_eq!(client_cap(1 << 20, 0), (1 << 20) - (1 << 17));
        assert_eq!(client_cap(16, 0), 1);
        // 32 workers of 2 servers each: 64 connections, 256 descriptors.
        assert_eq!(client_cap(1024, 64 + 32 * PER_WORKER), 1024 - 32 - 64 - 256);
    }
}
