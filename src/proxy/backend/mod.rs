//! Backends: the Redis servers a pool forwards to.
//!
//! A [`Backend`] is one Redis address with `server_connections` long-lived
//! connections per protocol version (RESP2, and RESP3 once a RESP3 client
//! needs it) and per worker thread ([`crate::proxy::workers`]: a request
//! never leaves its session's thread). Each connection is a task ([`conn`])
//! that pipelines requests from every client of its worker and matches
//! replies in FIFO order, as twemproxy does.
//! Backends live in a [`BackendRegistry`] keyed by address, so a new routing
//! table reuses the connections of the servers it keeps; a backend that no
//! table references any more is dropped, and its connection tasks finish the
//! replies they owe and close. Each request's reply comes back through a
//! [`reply`] channel, whose slots are reused rather than allocated.

mod backoff;
mod busy;
mod conn;
mod connect;
mod connected;
pub mod health;
mod queue;
mod replies_in;
pub mod reply;
mod target;

pub use health::Health;
pub use reply::{AbandonHandle, ReplyReceiver, ReplySender};

pub(crate) use connect::connect_to;

use crate::protocol::Proto;
use crate::proxy::workers;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A backend's reply: the raw RESP frame, or why there is none.
pub type Reply = Result<Bytes, BackendError>;

/// Why a request got no reply from its backend. Every variant names the
/// backend address; the client adds the shard name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("backend {addr} is unavailable: {reason}")]
    Unavailable { addr: Arc<str>, reason: String },
    #[error("backend {addr} timed out after {ms} ms")]
    Timeout { addr: Arc<str>, ms: u128 },
    #[error("backend {addr} closed the connection before replying{detail}")]
    Closed { addr: Arc<str>, detail: String },
    /// The backend's bytes were not RESP, or a reply came with no request
    /// waiting: the proxy closed the connection.
    #[error("backend {addr} sent what is not a reply ({detail}); the proxy closed the connection")]
    Garbled { addr: Arc<str>, detail: String },
    /// The routing moved the shard's master away from this backend while
    /// the request was in flight: a write may or may not have happened.
    #[error("backend {addr} stopped being the master while the request was in flight; its outcome is unknown")]
    Demoted { addr: Arc<str> },
    /// Slots no known server owns (a stand-in's requests): why.
    #[error("{0}")]
    Unplaced(Arc<str>),
}

/// Connection settings shared by every backend of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    /// Per-request timeout; `None` waits forever.
    pub timeout: Option<Duration>,
    pub auth: Option<String>,
    /// The ACL user `auth` belongs to (`redis_user`); without one the
    /// handshake sends `AUTH password` (the `default` user).
    pub user: Option<String>,
    pub db: u32,
    pub connections: usize,
    pub preconnect: bool,
    pub tcpkeepalive: bool,
    /// Consecutive failures after which the backend counts as failing.
    pub failure_limit: u32,
    /// How long a failing backend is ejected (with `auto_eject_hosts`).
    pub retry_timeout: Duration,
    /// `server_tls`: every connection to the backend speaks TLS.
    pub tls: Option<crate::tls::ServerTls>,
}

impl BackendSettings {
    /// How long a connect may take: the request timeout, else 3 s, so a
    /// black-holed address fails in bounded time.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(3))
    }

    /// The request timeout in milliseconds, as the timeout error gives it.
    pub(crate) fn timeout_ms(&self) -> u128 {
        self.timeout.map_or(0, |t| t.as_millis())
    }
}

/// Counters of one backend, read by INFO and stats.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests taken off a connection's queue: written to the backend
    /// (counted once per batch), or answered with an error before they
    /// could be (failed connect, timeout in the queue, demotion). A
    /// request handed to a new master counts there.
    pub requests: AtomicU64,
    /// Bytes of requests written to the backend.
    pub request_bytes: AtomicU64,
    /// Replies received from the backend.
    pub responses: AtomicU64,
    /// Bytes of replies received from the backend.
    pub response_bytes: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Connections the backend closed.
    pub eof: AtomicU64,
    pub connections: AtomicU64,
    /// The server's `redis_version`, as its last shared connection read it.
    server_version: Mutex<Option<Arc<str>>>,
}

impl BackendStats {
    /// Notes the `redis_version` of an `INFO server` reply (an error
    /// reply, an ACL without INFO, has none).
    pub(super) fn learn_server_version(&self, info: &[u8]) {
        let text = String::from_utf8_lossy(info);
        let Some(version) = crate::redis_client::info_field(&text, "redis_version") else {
            return;
        };
        let mut known = self.server_version.lock().expect("version lock");
        if known.as_deref() != Some(version) {
            *known = Some(version.into());
        }
    }

    /// The server's version, once a connection has read it.
    pub fn server_version(&self) -> Option<Arc<str>> {
        self.server_version.lock().expect("version lock").clone()
    }
}

/// The PING the proxy sends its backends itself (clients' PINGs are
/// answered by the proxy): its reply follows every request sent before it
/// on the connection.
pub(crate) const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// One Redis server and its connections.
pub struct Backend {
    pub addr: Arc<str>,
    pub stats: Arc<BackendStats>,
    pub health: Arc<Health>,
    settings: Arc<BackendSettings>,
    demotion: Arc<Demotion>,
    /// Set for the stand-in of slots no known server owns (why): its
    /// requests are answered with that error, and nothing connects.
    unplaced: Option<Arc<str>>,
    /// One set of connections per worker thread (one set without workers).
    sets: Box<[ConnSet]>,
}

/// The connections one worker's sessions use: `server_connections` slots
/// per protocol, each connection spawned when a session first picks its
/// slot (or at once with `preconnect`), so a large `server_connections`
/// costs a pointer per slot until clients use them, as in twemproxy.
struct ConnSet {
    resp2: Box<[OnceLock<ConnHandle>]>,
    resp3: OnceLock<Box<[OnceLock<ConnHandle>]>>,
}

/// The sending side of one connection task.
struct ConnHandle {
    jobs: mpsc::UnboundedSender<Job>,
}

/// A request for a connection task, and where its reply goes.
pub(crate) struct Job {
    pub request: Bytes,
    pub reply: ReplySender,
    /// When the client must have its answer: `timeout` after the proxy
    /// accepted the request, however long it waits in queues.
    pub deadline: Option<Instant>,
    /// Picks the connection: one client's requests all take the same one,
    /// so they run in the order the client sent them.
    pub affinity: usize,
}

impl Job {
    /// A job for `request`, and the receiver its reply will reach.
    fn new(request: Bytes, affinity: usize, deadline: Option<Instant>) -> (Job, ReplyReceiver) {
        let (reply, rx) = reply::channel();
        let job = Job {
            request,
            reply,
            deadline,
            affinity,
        };
        (job, rx)
    }
}

/// Whether the routing still names this backend as a master, shared with
/// its connection tasks. Set by a routing change from ZooKeeper (a failover
/// replaced the master); cleared when a table names the backend again. One
/// per server address, shared by every backend built for it (see
/// [`BackendRegistry::succeeding`]): a client's dedicated connection opened
/// before a reload of the settings is demoted with the server too (review:
/// one reused after a reload stayed blocked on a deposed master).
pub(crate) struct Demotion {
    demoted: watch::Sender<bool>,
    // A short sync lock: read when a demoted connection hands its queue on.
    successor: Mutex<Weak<Backend>>,
    /// The last ranges of this master's that started moving to another
    /// shard (a migration's, or a reload's): a client's blocking command
    /// on a key of them is ended (see [`Backend::ranges_moving`]).
    moving: MovingSignal,
    /// The `run_id` the routing expects of this server (its watchdog
    /// registered it), if it knows one: a new connection finding another
    /// is refused (see [`super::connect::connect_to`]). A short lock, read
    /// once per connection.
    run_id: Mutex<Option<Arc<str>>>,
}

/// Where a server's moving ranges are announced.
pub(crate) type MovingSignal = watch::Sender<Option<MovingAway>>;

/// Ranges that started moving away: (the move's id, first and last slot
/// of each range).
pub(crate) type MovingAway = (Arc<str>, Arc<[(u32, u32)]>);

/// A private connection has no blocking command on keys in flight: a span
/// whose first slot lies after its last, which no real span packs to (one
/// of position `u32::MAX` alone does not collide with it).
pub(crate) const NOT_BLOCKED: u64 = (u32::MAX as u64) << 32;

/// The slots a blocking command's keys span, for its connection's
/// `blocked_on`: first slot in the high half, last in the low.
pub(crate) fn pack_span((lo, hi): (u32, u32)) -> u64 {
    (u64::from(lo) << 32) | u64::from(hi)
}

pub(crate) fn unpack_span(packed: u64) -> (u32, u32) {
    ((packed >> 32) as u32, packed as u32)
}

impl Demotion {
    fn new() -> Demotion {
        Demotion {
            demoted: watch::Sender::new(false),
            successor: Mutex::new(Weak::new()),
            moving: watch::Sender::new(None),
            run_id: Mutex::new(None),
        }
    }

    /// The `run_id` new connections must find, if one is known.
    pub(crate) fn expected_run_id(&self) -> Option<Arc<str>> {
        self.run_id.lock().expect("run_id lock").clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.demoted.subscribe()
    }

    /// The backend that took over, while it is in use.
    pub(crate) fn successor(&self) -> Option<Arc<Backend>> {
        self.successor.lock().expect("successor lock").upgrade()
    }
}

impl Backend {
    /// Slot ranges of this master's started moving to another server (a
    /// migration's range, or what a reload gave away; `id` names the
    /// move): a client blocked here on a key of them (BLPOP before the
    /// move began) would wait for ever, as pushes now go elsewhere; its
    /// command is ended with `-TRYAGAIN` and its connection closed, which
    /// frees it on this server too.
    pub fn ranges_moving(&self, id: &Arc<str>, ranges: Vec<(u32, u32)>) {
        self.demotion.moving.send_if_modified(|now| {
            let known = now.as_ref().is_some_and(|(known, ..)| known == id);
            if !known {
                *now = Some((id.clone(), ranges.into()));
            }
            !known
        });
    }

    /// Creates the backend and spawns its RESP2 connection tasks (which
    /// connect at once with `preconnect`, else on first use). Must run inside
    /// a tokio runtime.
    fn new(
        addr: &str,
        settings: Arc<BackendSettings>,
        demotion: Arc<Demotion>,
        stats: Arc<BackendStats>,
        unplaced: Option<Arc<str>>,
    ) -> Backend {
        let addr: Arc<str> = Arc::from(addr);
        let health = Arc::new(Health::new(settings.failure_limit, settings.retry_timeout));
        let mut backend = Backend {
            addr,
            stats,
            health,
            settings,
            demotion,
            unplaced,
            sets: Box::new([]),
        };
        let preconnect = backend.settings.preconnect;
        backend.sets = (0..workers::count())
            .map(|worker| {
                let resp2 = backend.slots();
                if preconnect {
                    for slot in resp2.iter() {
                        slot.get_or_init(|| backend.spawn_connection(worker, Proto::Resp2, true));
                    }
                }
                ConnSet {
                    resp2,
                    resp3: OnceLock::new(),
                }
            })
            .collect();
        backend
    }

    /// `server_connections` empty slots.
    fn slots(&self) -> Box<[OnceLock<ConnHandle>]> {
        (0..self.settings.connections.max(1))
            .map(|_| OnceLock::new())
            .collect()
    }

    /// Spawns a connection task on `worker`'s runtime.
    fn spawn_connection(&self, worker: usize, proto: Proto, preconnect: bool) -> ConnHandle {
        let (jobs, rx) = mpsc::unbounded_channel();
        let target = self.target(proto, None);
        workers::spawn_on(worker, conn::run(target, rx, preconnect));
        ConnHandle { jobs }
    }

    /// What a connection task to this backend needs to know.
    fn target(&self, proto: Proto, private: Option<target::Private>) -> target::Target {
        target::Target {
            addr: self.addr.clone(),
            proto,
            settings: self.settings.clone(),
            stats: self.stats.clone(),
            health: self.health.clone(),
            demotion: self.demotion.clone(),
            unplaced: self.unplaced.clone(),
            private,
        }
    }

    /// Queues `request` (complete RESP bytes) on one of the connections for
    /// `proto`, picked by `affinity` (the client's id: all requests of one
    /// client take the same connection), and returns where its reply will
    /// arrive. The request's timeout starts now.
    pub fn send(&self, proto: Proto, affinity: usize, request: Bytes) -> ReplyReceiver {
        self.send_since(proto, affinity, request, Instant::now())
    }

    /// [`Self::send`] for a request the proxy accepted at `accepted`: its
    /// timeout runs from then.
    pub fn send_since(
        &self,
        proto: Proto,
        affinity: usize,
        request: Bytes,
        accepted: Instant,
    ) -> ReplyReceiver {
        let (job, rx) = Job::new(request, affinity, self.deadline_after(accepted));
        self.send_job(proto, job);
        rx
    }

    /// The reply to a request that had waited its whole timeout in the
    /// proxy before it could be sent: the timeout error, at once. Never
    /// written, so it is no failure of the server's (which never saw it).
    pub fn expired(&self) -> ReplyReceiver {
        let (reply, rx) = reply::channel();
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        reply.send(Err(BackendError::Timeout {
            addr: self.addr.clone(),
            ms: self.settings.timeout_ms(),
        }));
        rx
    }

    /// When a request accepted at `accepted` times out.
    fn deadline_after(&self, accepted: Instant) -> Option<Instant> {
        self.settings.timeout.map(|t| accepted + t)
    }

    /// PINGs every shared connection open to this backend, on every
    /// worker: each reply arrives only once everything queued on its
    /// connection before it has been answered.
    pub fn ping_all(&self) -> Vec<ReplyReceiver> {
        let ping = Bytes::from_static(PING);
        let deadline = self.deadline_after(Instant::now());
        let mut replies = Vec::new();
        for set in &self.sets {
            for slots in [Some(&set.resp2), set.resp3.get()].into_iter().flatten() {
                // A slot never used has nothing queued.
                for conn in slots.iter().filter_map(OnceLock::get) {
                    let (job, rx) = Job::new(ping.clone(), 0, deadline);
                    self.queue(conn, job);
                    replies.push(rx);
                }
            }
        }
        replies
    }

    /// The pool's per-request timeout for this backend.
    pub fn timeout(&self) -> Option<Duration> {
        self.settings.timeout
    }

    /// Opens a connection of one client's own to this backend (blocking
    /// commands, transactions), speaking `proto`. It connects on its first
    /// request, is never reopened, and closes as soon as it is dropped.
    pub fn open_private(&self, proto: Proto) -> PrivateConn {
        let (jobs, rx) = mpsc::unbounded_channel();
        let broken = Arc::new(AtomicBool::new(false));
        let blocked_on = Arc::new(AtomicU64::new(NOT_BLOCKED));
        let target = self.target(
            proto,
            Some(target::Private {
                broken: broken.clone(),
                blocked_on: blocked_on.clone(),
                moving: self.demotion.moving.subscribe(),
            }),
        );
        tokio::spawn(conn::run(target, rx, false));
        PrivateConn {
            addr: self.addr.clone(),
            proto,
            jobs,
            broken,
            blocked_on,
        }
    }

    /// Queues a request on the connection its affinity picks, among those
    /// of the current thread's worker.
    pub(crate) fn send_job(&self, proto: Proto, job: Job) {
        let worker = workers::current() % self.sets.len();
        let set = &self.sets[worker];
        let slots = match proto {
            Proto::Resp2 => &set.resp2,
            Proto::Resp3 => set.resp3.get_or_init(|| self.slots()),
        };
        let conn = slots[job.affinity % slots.len()]
            .get_or_init(|| self.spawn_connection(worker, proto, false));
        self.queue(conn, job);
    }

    fn queue(&self, conn: &ConnHandle, job: Job) {
        if let Err(mpsc::error::SendError(job)) = conn.jobs.send(job) {
            // The task only ends when the backend is dropped; answer anyway.
            job.reply.send(Err(BackendError::Unavailable {
                addr: self.addr.clone(),
                reason: "connection task stopped".into(),
            }));
        }
    }

    /// The routing no longer names this backend as a master: its
    /// connections answer what they owe with an error, close, and pass
    /// what they have not written to `successor`.
    pub fn demote(&self, successor: Option<&Arc<Backend>>) {
        *self.demotion.successor.lock().expect("successor lock") =
            successor.map(Arc::downgrade).unwrap_or_default();
        self.demotion
            .demoted
            .send_if_modified(|demoted| !std::mem::replace(demoted, true));
    }

    /// The `run_id` the routing now expects of this server (`None`: it
    /// knows none, as with a pool file's servers). Connections open
    /// already were opened to it and stay.
    pub fn expect_run_id(&self, run_id: Option<&str>) {
        let mut expected = self.demotion.run_id.lock().expect("run_id lock");
        if expected.as_deref() != run_id {
            *expected = run_id.map(Arc::from);
        }
    }

    /// The `run_id` the routing expects of this server (its watchdog
    /// registered it in ZooKeeper), if it knows one: the same on every
    /// proxy routing from the same view.
    pub fn expected_run_id(&self) -> Option<Arc<str>> {
        self.demotion.expected_run_id()
    }

    /// A routing table names this backend again.
    pub fn reinstate(&self) {
        self.demotion
            .demoted
            .send_if_modified(|demoted| std::mem::replace(demoted, false));
    }

    /// The connection settings (a client's subscriber connections open
    /// theirs the same way).
    pub(crate) fn settings(&self) -> &Arc<BackendSettings> {
        &self.settings
    }

    /// Why this is the stand-in for slots no known server owns (then it
    /// names no server to connect to), or `None` for a real server.
    pub(crate) fn unplaced_reason(&self) -> Option<&Arc<str>> {
        self.unplaced.as_ref()
    }

    /// True when `other` reaches the same server as this backend, logged in
    /// the same way: a connection opened by either serves both. A reload of
    /// other settings (`timeout`, `server_connections`) builds new backends
    /// for the same servers; a client's transaction or WATCH on one of the
    /// old ones goes on there.
    pub fn same_server(&self, other: &Backend) -> bool {
        let (mine, theirs) = (&self.settings, &other.settings);
        self.addr == other.addr
            && mine.db == theirs.db
            && mine.user == theirs.user
            && mine.auth == theirs.auth
            && mine.tls == theirs.tls
    }

    pub fn is_demoted(&self) -> bool {
        *self.demotion.demoted.borrow()
    }
}

/// A connection one client has to itself: its blocking commands wait on it
/// without holding up anyone else, and its WATCH and MULTI state lives on
/// it. Dropping it closes the connection at once.
pub struct PrivateConn {
    pub addr: Arc<str>,
    pub proto: Proto,
    jobs: mpsc::UnboundedSender<Job>,
    broken: Arc<AtomicBool>,
    /// The slots of the blocking command in flight, packed
    /// ([`pack_span`]; [`NOT_BLOCKED`]: none).
    blocked_on: Arc<AtomicU64>,
}

impl PrivateConn {
    /// Queues a blocking command whose keys lie in the slots `span`
    /// (first, last): ended with `-TRYAGAIN` if a range meeting it starts
    /// moving away meanwhile. `None` for a command without keys.
    pub fn send_blocking(
        &self,
        request: Bytes,
        deadline: Option<Instant>,
        span: Option<(u32, u32)>,
    ) -> ReplyReceiver {
        self.queue(request, deadline, span.map_or(NOT_BLOCKED, pack_span))
    }

    /// Queues `request`; its reply fails with a timeout at `deadline`.
    pub fn send(&self, request: Bytes, deadline: Option<Instant>) -> ReplyReceiver {
        self.queue(request, deadline, NOT_BLOCKED)
    }

    /// Queues `request`, the packed slots of its blocking keys (set first,
    /// so the connection never sees the command without them) or
    /// [`NOT_BLOCKED`].
    fn queue(&self, request: Bytes, deadline: Option<Instant>, span: u64) -> ReplyReceiver {
        self.blocked_on.store(span, Ordering::Release);
        let (job, rx) = Job::new(request, 0, deadline);
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            job.reply.send(Err(BackendError::Closed {
                addr: self.addr.clone(),
                detail: " (the dedicated connection was closed)".into(),
            }));
        }
        rx
    }

    /// The connection stopped serving (closed, timed out, demoted): the
    /// state on it is lost and it takes no more requests.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }
}

/// All backends of a pool, by address. Holds them weakly: the routing
/// tables own them.
pub struct BackendRegistry {
    settings: Arc<BackendSettings>,
    // A short sync lock: only taken while a routing table is built.
    backends: SharedByAddress<Backend>,
    /// Each server address's demotion (and moving signal) while a backend
    /// for it lives, shared with the registries that succeed this one.
    demotions: Arc<SharedByAddress<Demotion>>,
    /// Likewise each server's counters, so that a reload of the settings
    /// does not start them again from 0 (pollers of the stats port take
    /// differences).
    stats: Arc<SharedByAddress<BackendStats>>,
}

/// What the backends for one server address share while any of them lives.
type SharedByAddress<T> = Mutex<HashMap<String, Weak<T>>>;

/// The value the live backends for `addr` share, or a new one from `make`.
fn shared<T>(by_address: &SharedByAddress<T>, addr: &str, make: impl FnOnce() -> T) -> Arc<T> {
    let mut map = by_address.lock().expect("shared per address lock");
    if let Some(value) = map.get(addr).and_then(Weak::upgrade) {
        return value;
    }
    map.retain(|_, v| v.strong_count() > 0);
    let value = Arc::new(make());
    map.insert(addr.to_string(), Arc::downgrade(&value));
    value
}

impl BackendRegistry {
    pub fn new(settings: BackendSettings) -> BackendRegistry {
        BackendRegistry {
            settings: Arc::new(settings),
            backends: SharedByAddress::default(),
            demotions: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// A registry for new backend settings (a reload changed them): its
    /// backends are new, but each shares with the backends this one built
    /// for the same address its counters and its demotion and moving
    /// signal, on which clients may still be blocked: a later failover or
    /// reload that moves their keys away must reach them (a client blocked
    /// before a `timeout` change stayed blocked for good on a key the next
    /// reload moved).
    pub fn succeeding(&self, settings: BackendSettings) -> BackendRegistry {
        BackendRegistry {
            demotions: self.demotions.clone(),
            stats: self.stats.clone(),
            ..BackendRegistry::new(settings)
        }
    }

    pub fn settings(&self) -> &BackendSettings {
        &self.settings
    }

    /// The live backend for `addr`, created if no routing table holds one.
    pub fn get(&self, addr: &str) -> Arc<Backend> {
        self.get_or_make(addr, None)
    }

    /// The stand-in named `name` for slots no known server owns: every
    /// request sent to it is answered `backend NAME is unavailable:
    /// REASON`. It is never ejected (its slots would go to other shards).
    pub fn unplaced(&self, name: &str, reason: &str) -> Arc<Backend> {
        self.get_or_make(name, Some(Arc::from(reason)))
    }

    fn get_or_make(&self, addr: &str, unplaced: Option<Arc<str>>) -> Arc<Backend> {
        shared(&self.backends, addr, || {
            let demotion = shared(&self.demotions, addr, Demotion::new);
            let stats = shared(&self.stats, addr, BackendStats::default);
            Backend::new(addr, self.settings.clone(), demotion, stats, unplaced)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_span_packs_to_not_blocked() {
        for span in [
            (0, 0),
            (0, u32::MAX),
            (u32::MAX - 1, u32::MAX),
            (u32::MAX, u32::MAX),
        ] {
            assert_ne!(pack_span(span), NOT_BLOCKED, "{span:?}");
            assert_eq!(unpack_span(pack_span(span)), span);
        }
        let (first, last) = unpack_span(NOT_BLOCKED);
        assert!(first > last);
    }
}
