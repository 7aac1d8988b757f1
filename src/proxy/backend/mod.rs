//! Backends: the Redis servers a pool forwards to.
//!
//! A [`Backend`] is one Redis address with `server_connections` long-lived
//! connections per protocol version (RESP2, and RESP3 once a RESP3 client
//! needs it). Each connection is a task ([`conn`]) that pipelines requests
//! from every client and matches replies in FIFO order, as twemproxy does.
//! Backends live in a [`BackendRegistry`] keyed by address, so a new routing
//! table reuses the connections of the servers it keeps; a backend that no
//! table references any more is dropped, and its connection tasks finish the
//! replies they owe and close.

mod conn;
mod health;

pub use health::Health;

use crate::protocol::Proto;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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
}

/// Connection settings shared by every backend of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    /// Per-request timeout; `None` waits forever.
    pub timeout: Option<Duration>,
    pub auth: Option<String>,
    pub db: u32,
    pub connections: usize,
    pub preconnect: bool,
    pub tcpkeepalive: bool,
    /// Consecutive failures after which the backend counts as failing.
    pub failure_limit: u32,
    /// How long a failing backend is ejected (with `auto_eject_hosts`).
    pub retry_timeout: Duration,
}

impl BackendSettings {
    /// How long a connect may take: the request timeout, else 3 s, so a
    /// black-holed address fails in bounded time.
    fn connect_timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(3))
    }
}

/// Counters of one backend, read by INFO and stats.
#[derive(Debug, Default)]
pub struct BackendStats {
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
}

/// One Redis server and its connections.
pub struct Backend {
    pub addr: Arc<str>,
    pub stats: Arc<BackendStats>,
    pub health: Arc<Health>,
    settings: Arc<BackendSettings>,
    resp2: Vec<ConnHandle>,
    resp3: OnceLock<Vec<ConnHandle>>,
    next: AtomicUsize,
}

/// The sending side of one connection task.
struct ConnHandle {
    jobs: mpsc::UnboundedSender<conn::Job>,
}

impl Backend {
    /// Creates the backend and spawns its RESP2 connection tasks (which
    /// connect at once with `preconnect`, else on first use). Must run inside
    /// a tokio runtime.
    fn new(addr: &str, settings: Arc<BackendSettings>) -> Backend {
        let addr: Arc<str> = Arc::from(addr);
        let stats = Arc::new(BackendStats::default());
        let health = Arc::new(Health::new(settings.failure_limit, settings.retry_timeout));
        let mut backend = Backend {
            addr,
            stats,
            health,
            settings,
            resp2: Vec::new(),
            resp3: OnceLock::new(),
            next: AtomicUsize::new(0),
        };
        backend.resp2 = backend.spawn_connections(Proto::Resp2, backend.settings.preconnect);
        backend
    }

    fn spawn_connections(&self, proto: Proto, preconnect: bool) -> Vec<ConnHandle> {
        (0..self.settings.connections.max(1))
            .map(|_| {
                let (jobs, rx) = mpsc::unbounded_channel();
                let target = conn::Target {
                    addr: self.addr.clone(),
                    proto,
                    settings: self.settings.clone(),
                    stats: self.stats.clone(),
                    health: self.health.clone(),
                };
                tokio::spawn(conn::run(target, rx, preconnect));
                ConnHandle { jobs }
            })
            .collect()
    }

    /// Queues `request` (complete RESP bytes) on one of the connections for
    /// `proto` and returns where its reply will arrive.
    pub fn send(&self, proto: Proto, request: Bytes) -> oneshot::Receiver<Reply> {
        let (reply, rx) = oneshot::channel();
        self.send_to(proto, request, reply);
        rx
    }

    /// Like [`Backend::send`], with the reply channel given by the caller.
    pub fn send_to(&self, proto: Proto, request: Bytes, reply: oneshot::Sender<Reply>) {
        let conns = match proto {
            Proto::Resp2 => &self.resp2,
            Proto::Resp3 => self
                .resp3
                .get_or_init(|| self.spawn_connections(Proto::Resp3, false)),
        };
        let i = if conns.len() == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % conns.len()
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let job = conn::Job { request, reply };
        if let Err(mpsc::error::SendError(job)) = conns[i].jobs.send(job) {
            // The task only ends when the backend is dropped; answer anyway.
            let _ = job.reply.send(Err(BackendError::Unavailable {
                addr: self.addr.clone(),
                reason: "connection task stopped".into(),
            }));
        }
    }
}

/// All backends of a pool, by address. Holds them weakly: the routing
/// tables own them.
pub struct BackendRegistry {
    settings: Arc<BackendSettings>,
    // A short sync lock: only taken while a routing table is built.
    backends: Mutex<HashMap<String, Weak<Backend>>>,
}

impl BackendRegistry {
    pub fn new(settings: BackendSettings) -> BackendRegistry {
        BackendRegistry {
            settings: Arc::new(settings),
            backends: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &BackendSettings {
        &self.settings
    }

    /// The live backend for `addr`, created if no routing table holds one.
    pub fn get(&self, addr: &str) -> Arc<Backend> {
        let mut map = self.backends.lock().expect("registry lock");
        if let Some(backend) = map.get(addr).and_then(Weak::upgrade) {
            return backend;
        }
        map.retain(|_, b| b.strong_count() > 0);
        let backend = Arc::new(Backend::new(addr, self.settings.clone()));
        map.insert(addr.to_string(), Arc::downgrade(&backend));
        backend
    }
}
