//! The listeners: one per pool, accepting clients until shutdown, and the
//! shutdown sequence (stop accepting, let sessions finish the replies they
//! owe, exit).

use crate::config::{Config, PoolConfig};
use crate::protocol::encode_error;
use crate::proxy::accept::{Accepted, Acceptor, Listening};
use crate::proxy::backend::health;
use crate::proxy::client;
use crate::proxy::cluster;
use crate::proxy::descriptors::{self, ClientSlot};
use crate::proxy::pool::Pool;
use crate::proxy::stats::{PoolStats, RATE_SAMPLE_EVERY};
use crate::proxy::stats_server::{self, Monitoring};
use crate::proxy::unix_socket::{self, SocketFile};
use crate::proxy::workers;
use crate::proxy::zk::registration::HANDOVER_WAIT;
use crate::tls::{ListenTls, ServerStream, ACCEPT_HANDSHAKE_LIMIT};
use bytes::BytesMut;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("pool '{pool}': cannot listen on {addr}: {source}")]
    Listen {
        pool: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {what} address {addr}: {source}")]
    Monitoring {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

/// How long sessions get to finish their replies after a shutdown signal.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// A running proxy: every pool's listener.
pub struct Proxy {
    pub pools: Vec<Arc<Pool>>,
    monitoring: Monitoring,
    stats_listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    listeners: Vec<(ClientListener, Arc<Pool>, u32)>,
}

/// A pool's listener for its clients.
enum ClientListener {
    Tcp(TcpListener),
    /// The file goes when the pool stops serving.
    Unix(UnixListener, SocketFile),
}

impl Proxy {
    /// Binds every pool's listen address and builds its routing. Must run
    /// inside a tokio runtime.
    ///
    /// # Errors
    /// A listen address that cannot be bound.
    pub async fn bind(config: &Config, monitoring: Monitoring) -> Result<Proxy, StartError> {
        let monitor = |what: &'static str, addr: &str| {
            std::net::TcpListener::bind(addr)
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    TcpListener::from_std(l)
                })
                .map_err(|source| StartError::Monitoring {
                    what,
                    addr: addr.to_string(),
                    source,
                })
        };
        let stats_listener = monitor("stats", &monitoring.stats_addr)?;
        let metrics_listener = match &monitoring.metrics_addr {
            Some(addr) => Some(monitor("metrics", addr)?),
            None => None,
        };
        let mut pools = Vec::new();
        let mut listeners = Vec::new();
        for pool_config in &config.pools {
            let listener = listen(pool_config).map_err(|source| StartError::Listen {
                pool: pool_config.name.clone(),
                addr: pool_config.listen.clone(),
                source,
            })?;
            let pool = Arc::new(Pool::new(pool_config));
            pools.push(pool.clone());
            listeners.push((listener, pool, pool_config.client_connections));
        }
        Ok(Proxy {
            pools,
            monitoring,
            stats_listener,
            metrics_listener,
            listeners,
        })
    }

    /// Serves until `shutdown` turns true, then waits (bounded) for the
    /// sessions to write the replies they owe.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut background = JoinSet::new();
        // The ZooKeeper side (registration, roster, migration acks, the
        // cluster watch) stops only once the sessions have drained: until
        // then this proxy still serves, so it must stay in the barrier of
        // any move and keep following the routing. The stats and metrics
        // ports too: they show the drain (review: they closed at once).
        let (leave_zookeeper, zookeeper_shutdown) = watch::channel(false);
        background.spawn(stats_server::serve_stats(
            self.stats_listener,
            self.pools.clone(),
            zookeeper_shutdown.clone(),
        ));
        if let Some(listener) = self.metrics_listener {
            background.spawn(stats_server::serve_metrics(
                listener,
                self.pools.clone(),
                zookeeper_shutdown.clone(),
            ));
        }
        let mut zookeeper = JoinSet::new();
        for pool in &self.pools {
            cluster::spawn(pool, &self.monitoring, &zookeeper_shutdown, &mut zookeeper);
            // Always running: a reload may turn auto_eject_hosts on.
            background.spawn(follow_ejections(pool.clone(), shutdown.clone()));
            // INFO's `instantaneous_*`, sampled as Redis does in its cron.
            let rates = pool.clone();
            background.spawn(every(RATE_SAMPLE_EVERY, shutdown.clone(), move || {
                rates.stats.sample_rates()
            }));
        }
        let mut acceptors = JoinSet::new();
        for (listener, pool, limit) in self.listeners {
            tracing::info!(pool = %pool.name, listen = %pool.listen, "listening");
            match listener {
                ClientListener::Tcp(listener) => {
                    acceptors.spawn(accept_loop(listener, pool, limit, shutdown.clone()));
                }
                ClientListener::Unix(listener, file) => {
                    let serve = accept_loop(listener, pool, limit, shutdown.clone());
                    acceptors.spawn(async move {
                        serve.await;
                        drop(file);
                    });
                }
            }
        }
        while acceptors.join_next().await.is_some() {}
        // The registrations close their sessions, so this proxy's znodes
        // vanish at once, and it leaves the roster.
        let _ = leave_zookeeper.send(true);
        while zookeeper.join_next().await.is_some() {}
        while background.join_next().await.is_some() {}
    }
}

fn listen(pool: &PoolConfig) -> std::io::Result<ClientListener> {
    if let Some(unix) = &pool.listen_unix {
        let (listener, file) = unix_socket::bind(unix, pool.backlog)?;
        return Ok(ClientListener::Unix(listener, file));
    }
    let addr = tokio_lookup(&pool.listen)?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if pool.reuseport {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(pool.backlog).map(ClientListener::Tcp)
}

/// Resolves `host:port` to the first address (blocking is fine at start-up).
fn tokio_lookup(addr: &str) -> std::io::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{addr} resolves to nothing"),
        )
    })
}

/// Accepts clients until shutdown, then gives its sessions up to
/// `DRAIN_LIMIT` to finish.
async fn accept_loop<L>(
    listener: L,
    pool: Arc<Pool>,
    limit: u32,
    mut shutdown: watch::Receiver<bool>,
) where
    L: Listening,
    L::Stream: ClientSocket,
{
    let mut sessions = JoinSet::new();
    wait_for_zookeeper(&pool, &mut shutdown).await;
    let mut acceptor = Acceptor::new(listener, "clients");
    let mut full = descriptors::Full::default();
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.accept_client() => accepted,
            _ = shutdown.changed() => break,
        };
        while sessions.try_join_next().is_some() {}
        PoolStats::bump(&pool.stats.connections_received);
        let (stream, no_descriptors) = match accepted {
            Accepted::Open(stream) => (stream, false),
            Accepted::NoDescriptors(stream) => (stream, true),
        };
        if !no_descriptors && descriptors::clients_full() {
            full.make_room().await;
        }
        let current = pool.stats.connected_clients.load(Ordering::Relaxed);
        if no_descriptors || full.refuses() || limit != 0 && current >= u64::from(limit) {
            PoolStats::bump(&pool.stats.rejected_connections);
            stream.refuse(&pool, no_descriptors);
            continue;
        }
        stream.prepare();
        let counted = Connected::count(&pool);
        let pool = pool.clone();
        let shutdown = shutdown.clone();
        match workers::pick() {
            None => {
                sessions.spawn(session(pool, stream, shutdown, counted));
            }
            // The socket leaves this thread's event loop for the worker's.
            Some((worker, runtime)) => match stream.into_std() {
                Ok(stream) => {
                    let guard = workers::session_guard(worker);
                    sessions.spawn_on(
                        async move {
                            let _guard = guard;
                            match L::Stream::from_std(stream) {
                                Ok(stream) => session(pool, stream, shutdown, counted).await,
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot hand a client to its worker");
                                }
                            }
                        },
                        runtime,
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot hand a client to a worker"),
            },
        }
    }
    drop(acceptor);
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        tokio::select! {
            () = async { while sessions.join_next().await.is_some() {} } => {}
            () = cut_short() => {
                tracing::warn!(pool = %pool.name, sessions = sessions.len(), "second stop signal: closing the sessions still owed replies");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(pool = %pool.name, "sessions still busy after the drain limit; closing them");
    }
}

/// Set by a second stop signal: the drain ends at once.
static CUT_SHORT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static CUT_SHORT_NOW: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Ends every pool's drain now: sessions still owed replies are closed
/// (a second SIGTERM or SIGINT, when the operator will not wait for the
/// drain limit). The proxy then leaves ZooKeeper and exits as usual.
pub fn cut_drain_short() {
    CUT_SHORT.store(true, Ordering::Release);
    CUT_SHORT_NOW.notify_waiters();
}

async fn cut_short() {
    loop {
        let notified = CUT_SHORT_NOW.notified();
        if CUT_SHORT.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// A client counted in `connected_clients` from the moment it is accepted
/// (so the `client_connections` check sees it at once, even while it waits
/// for its worker) until its session ends.
/// Also held against the process's cap ([`descriptors::clients_full`]).
struct Connected(Arc<Pool>, ClientSlot);

impl Connected {
    fn count(pool: &Arc<Pool>) -> Connected {
        pool.stats.connected_clients.fetch_add(1, Ordering::Relaxed);
        Connected(pool.clone(), ClientSlot::take())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0
            .stats
            .connected_clients
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// One client's connection, from the TLS handshake (if any) to the end.
async fn session<S: ClientSocket>(
    pool: Arc<Pool>,
    stream: S,
    shutdown: watch::Receiver<bool>,
    _counted: Connected,
) {
    stream.serve(pool, shutdown).await;
}

/// What the accept loop does with a client's socket, TCP or unix.
trait ClientSocket: AsyncWrite + Unpin + Sized + Send + 'static {
    /// The socket outside any event loop, to hand to a worker thread.
    type Std: Send + 'static;
    fn into_std(self) -> std::io::Result<Self::Std>;
    fn from_std(std: Self::Std) -> std::io::Result<Self>;
    /// Readies the socket for requests.
    fn prepare(&self);
    /// Turns the client away: `client_connections` or the process's cap
    /// is reached, or (`no_descriptors`) it was accepted on the spare
    /// descriptor.
    fn refuse(self, pool: &Pool, no_descriptors: bool);
    /// Serves the client to the end.
    fn serve(
        self,
        pool: Arc<Pool>,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send;
}

impl ClientSocket for TcpStream {
    type Std = std::net::TcpStream;

    fn into_std(self) -> std::io::Result<Self::Std> {
        TcpStream::into_std(self)
    }

    fn from_std(std: Self::Std) -> std::io::Result<Self> {
        TcpStream::from_std(std)
    }

    fn prepare(&self) {
        let _ = self.set_nodelay(true);
    }

    fn refuse(self, pool: &Pool, no_descriptors: bool) {
        match &pool.tls {
            None => refuse_now(self),
            // Closed at once: a handshake would hold the spare descriptor
            // for up to 2 s, and the clients after it waited in the
            // backlog with no answer (review).
            Some(_) if no_descriptors => drop(self),
            Some(tls) => refuse_tls(&tls.load(), self),
        }
    }

    async fn serve(self, pool: Arc<Pool>, shutdown: watch::Receiver<bool>) {
        match &pool.tls {
            None => client::serve(pool.clone(), self, shutdown).await,
            Some(tls) => {
                let tls = tls.load_full();
                // The handshake runs in the session's task, so a slow or
                // silent client never holds up the accept loop. Boxed: a TLS
                // session's state (its stream alone is 1.2 KB) would
                // otherwise size every plain session's task too, idle ones
                // included.
                Box::pin(async {
                    if let Some(stream) = handshake(&pool, &tls, self).await {
                        client::serve(pool.clone(), stream, shutdown).await;
                    }
                })
                .await;
            }
        }
    }
}

/// A client of a pool that listens on a unix socket (never TLS: the
/// pool file refuses that).
impl ClientSocket for UnixStream {
    type Std = std::os::unix::net::UnixStream;

    fn into_std(self) -> std::io::Result<Self::Std> {
        UnixStream::into_std(self)
    }

    fn from_std(std: Self::Std) -> std::io::Result<Self> {
        UnixStream::from_std(std)
    }

    fn prepare(&self) {}

    fn refuse(self, _pool: &Pool, _no_descriptors: bool) {
        refuse_now(self);
    }

    async fn serve(self, pool: Arc<Pool>, shutdown: watch::Receiver<bool>) {
        client::serve(pool, self, shutdown).await;
    }
}

/// How long a pool that routes from ZooKeeper waits for its first view,
/// and one that registers for its registration, before serving.
const FIRST_VIEW_WAIT: Duration = Duration::from_secs(2);

/// Holds the first client (in the listen backlog) until ZooKeeper has
/// had its say:
/// - the cluster watch applied its first view, at most [`FIRST_VIEW_WAIT`]:
///   a proxy that starts while a range migrates, or after one, must not
///   route by a pool file that ZooKeeper has overtaken. With ZooKeeper
///   down it serves from the file after the wait, as before;
/// - this proxy's znode is its own, or held by another proxy (whose
///   clients are refused in words), at most [`FIRST_VIEW_WAIT`] unless an
///   earlier run of this proxy, still stopping, holds it: then until that
///   run is gone (bounded by the registration's hand-over wait), so that a
///   restart which overlaps the old run is not answered with errors.
async fn wait_for_zookeeper(pool: &Pool, shutdown: &mut watch::Receiver<bool>) {
    let Some(zookeeper) = &pool.zookeeper else {
        return;
    };
    let started = tokio::time::Instant::now();
    loop {
        let status = pool.zk_status.snapshot();
        let waited_enough = started.elapsed() >= FIRST_VIEW_WAIT;
        let view_known =
            zookeeper.redis_path.is_none() || status.views_applied > 0 || waited_enough;
        // The hand-over is bounded here too: with ZooKeeper unreachable
        // the registration cannot end it (review: clients waited for the
        // whole outage).
        let handing_over = status.handing_over && started.elapsed() < HANDOVER_WAIT;
        let registration_known = zookeeper.proxy_path.is_none()
            || status.registered
            || !handing_over && (status.name_taken.is_some() || waited_enough);
        if view_known && registration_known {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = shutdown.changed() => return,
        }
    }
    if zookeeper.redis_path.is_some() && pool.zk_status.snapshot().views_applied == 0 {
        tracing::warn!(pool = %pool.name, "no view from ZooKeeper yet; serving from the pool file's servers");
    }
}

/// How often a pool with `auto_eject_hosts` checks for servers to take
/// back once their `server_retry_timeout` is over. A server reaching its
/// `server_failure_limit` is routed around at once.
const EJECTION_CHECK: Duration = Duration::from_millis(50);

/// Runs `tick` every `period` until the proxy stops.
async fn every(period: Duration, mut shutdown: watch::Receiver<bool>, mut tick: impl FnMut()) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        tick();
    }
}

/// Rebuilds the routing table when a server was ejected (woken the
/// moment one reaches its failure limit, as nutcracker ejects it with the
/// failure: review, with a check every 50 ms, 36 requests failed on a dead
/// server where nutcracker failed 1) or its `server_retry_timeout` is
/// over, until the proxy stops.
async fn follow_ejections(pool: Arc<Pool>, mut shutdown: watch::Receiver<bool>) {
    loop {
        // Waiting before the check: a failure recorded while it runs (on
        // another worker thread) still wakes the next wait (review: one
        // was missed, and 60 requests failed before the 50 ms check).
        let due = health::ejection_due().notified();
        tokio::pin!(due);
        due.as_mut().enable();
        rebuild_on_ejections(&pool);
        tokio::select! {
            () = tokio::time::sleep(EJECTION_CHECK) => {}
            () = due => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn rebuild_on_ejections(pool: &Pool) {
    if pool.router.ejections_changed() {
        let before = pool.router.load().shards.len();
        let table = pool.router.rebuild();
        if table.shards.len() < before {
            PoolStats::bump(&pool.stats.server_ejects);
        }
        let live: Vec<&str> = table.shards.iter().map(|s| &*s.backend.addr).collect();
        tracing::warn!(pool = %pool.name, live = ?live, "servers ejected or retried; routing rebuilt");
    }
}

/// The server side of a client's TLS handshake, bounded by
/// [`ACCEPT_HANDSHAKE_LIMIT`]; `None` (logged) when it fails: a plain-TCP
/// client, a client certificate missing or not signed by `tls_ca`.
async fn handshake(pool: &Pool, tls: &ListenTls, stream: TcpStream) -> Option<ServerStream> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(ACCEPT_HANDSHAKE_LIMIT, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            PoolStats::bump(&pool.stats.tls_handshake_failures);
            tracing::info!(pool = %pool.name, client = ?peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            PoolStats::bump(&pool.stats.tls_handshake_failures);
            tracing::info!(pool = %pool.name, client = ?peer, "TLS handshake timed out");
            None
        }
    }
}

/// Turns a client away at once, with Redis's answer when `maxclients` is
/// reached: a fresh socket has room for the error, so it is written and
/// the socket closed before the accept loop goes on (written from a task,
/// a burst of refused clients held their descriptors until the loop
/// yielded, and ran the process out of them). What does not fit is left
/// to a task.
fn refuse_now<S: ClientSocket>(stream: S)
where
    S::Std: std::io::Write,
{
    let mut error = max_clients_error();
    // Outside tokio's event loop, the write is tried on the socket itself
    // (tokio's would wait for the loop to see the socket writable first).
    let Ok(mut socket) = stream.into_std() else {
        return;
    };
    let written = std::io::Write::write(&mut socket, &error).unwrap_or(0);
    if written < error.len() {
        let _ = error.split_to(written);
        if let Ok(mut stream) = S::from_std(socket) {
            tokio::spawn(async move {
                let _ = stream.write_all(&error).await;
            });
        }
    }
}

fn max_clients_error() -> BytesMut {
    let mut out = BytesMut::new();
    encode_error("ERR max number of clients reached", &mut out);
    out
}

/// TLS clients being refused at once, at most [`TLS_REFUSALS_MAX`].
static TLS_REFUSALS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Past this many, a TLS client over the limit is closed without a word:
/// each refusal costs a handshake, and clients that never finish theirs
/// must not grow the proxy while the limit holds the others off.
const TLS_REFUSALS_MAX: usize = 64;
/// How long a refused TLS client has to finish its handshake and take
/// the refusal.
const TLS_REFUSAL_LIMIT: Duration = Duration::from_secs(2);

/// Redis's answer when `maxclients` is reached, over TLS, as Redis sends it
/// after the handshake (review: a TLS client over the limit was closed
/// with no reply, and redis-cli died of SIGPIPE saying nothing).
/// Not past a quarter of the descriptors kept from clients either: each
/// refusal holds one for up to [`TLS_REFUSAL_LIMIT`], and 64 of them took
/// those the server connections needed (review: 14 of 14 BLPOPs failed
/// with `Too many open files` under a limit of 128).
fn refuse_tls(tls: &ListenTls, stream: TcpStream) {
    let most = TLS_REFUSALS_MAX.min(descriptors::kept_from_clients() / 4);
    if TLS_REFUSALS.fetch_add(1, Ordering::Relaxed) >= most {
        TLS_REFUSALS.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let accept = tls.acceptor.accept(stream);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(TLS_REFUSAL_LIMIT, async {
            if let Ok(mut stream) = accept.await {
                let _ = stream.write_all(&max_clients_error()).await;
                let _ = stream.shutdown().await;
            }
        })
        .await;
        TLS_REFUSALS.fetch_sub(1, Ordering::Relaxed);
    });
}
