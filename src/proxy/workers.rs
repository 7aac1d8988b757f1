//! Thread-per-core. With `--threads N` (N > 1) the proxy runs N worker
//! threads, each a single-threaded tokio runtime of its own. A client's
//! session stays on the worker it was handed to, and every backend keeps a
//! set of connections per worker ([`crate::proxy::backend`]), so a request
//! is parsed, queued, written, answered and replied to on one thread: no
//! cross-thread wake-up and no cache line written by two workers on the
//! request path. The main thread keeps the control work: accepting clients,
//! ZooKeeper, the stats and metrics ports, reloads.
//!
//! Without workers (one thread, and in unit tests) everything runs on the
//! current runtime and every function here treats it as worker 0.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The running workers: their runtimes, and how many sessions each serves.
struct Registry {
    handles: Vec<Handle>,
    sessions: Vec<AtomicUsize>,
    /// Where the search for the least busy worker starts, so ties rotate.
    next: AtomicUsize,
}

static WORKERS: OnceLock<Registry> = OnceLock::new();

thread_local! {
    /// The worker this thread is; 0 on every other thread.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many sets of backend connections there are: the workers, or 1.
pub fn count() -> usize {
    WORKERS.get().map_or(1, |w| w.handles.len())
}

/// The worker the current thread is (0 off the workers).
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// The next backend-connection affinity for a session created on this
/// thread: a count per thread, so one worker's sessions take its
/// `server_connections` in turn (a pool-wide count would not: clients are
/// handed to the workers in turn too).
pub fn next_affinity() -> usize {
    thread_local! {
        static NEXT: Cell<usize> = const { Cell::new(0) };
    }
    NEXT.with(|next| {
        let affinity = next.get();
        next.set(affinity.wrapping_add(1));
        affinity
    })
}

/// Spawns `future` on worker `i`'s runtime; without workers, on the
/// current runtime.
pub fn spawn_on<F>(i: usize, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match WORKERS.get() {
        Some(w) => w.handles[i % w.handles.len()].spawn(future),
        None => tokio::spawn(future),
    }
}

/// The worker a new client's session goes to: the one serving the fewest
/// sessions (clients come and go unevenly, so plain rotation would drift),
/// with its runtime. `None` without workers.
pub fn pick() -> Option<(usize, &'static Handle)> {
    let w = WORKERS.get()?;
    let n = w.handles.len();
    let start = w.next.fetch_add(1, Ordering::Relaxed);
    let best = (0..n)
        .map(|k| (start + k) % n)
        .min_by_key(|&i| w.sessions[i].load(Ordering::Relaxed))
        .unwrap_or(0);
    Some((best, &w.handles[best]))
}

/// Counts a session on worker `i` for as long as the guard lives.
pub fn session_guard(i: usize) -> SessionGuard {
    if let Some(w) = WORKERS.get() {
        w.sessions[i].fetch_add(1, Ordering::Relaxed);
    }
    SessionGuard(i)
}

/// See [`session_guard`].
pub struct SessionGuard(usize);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(w) = WORKERS.get() {
            w.sessions[self.0].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Sessions per worker, for INFO; empty without workers.
pub fn sessions() -> Vec<usize> {
    WORKERS.get().map_or_else(Vec::new, |w| {
        w.sessions
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect()
    })
}

/// The worker threads, until [`Workers::stop`].
pub struct Workers {
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Starts `n` worker threads, each running its own single-threaded
/// runtime until [`Workers::stop`]. Call once per process, before anything
/// creates a backend.
///
/// # Errors
/// A runtime or thread that cannot be created, or workers already started.
pub fn start(n: usize) -> std::io::Result<Workers> {
    let (stop, stopped) = watch::channel(false);
    let mut handles = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(runtime.handle().clone());
        let mut stopped = stopped.clone();
        let thread = std::thread::Builder::new()
            .name(format!("shardproxy-w{i}"))
            .spawn(move || {
                INDEX.with(|index| index.set(i));
                runtime.block_on(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                });
            })?;
        threads.push(thread);
    }
    let registry = Registry {
        sessions: handles.iter().map(|_| AtomicUsize::new(0)).collect(),
        handles,
        next: AtomicUsize::new(0),
    };
    let workers = Workers { stop, threads };
    if WORKERS.set(registry).is_err() {
        workers.stop();
        return Err(std::io::Error::other("worker threads already started"));
    }
    Ok(workers)
}

impl Workers {
    /// Ends every worker's runtime (dropping the tasks still on it: call it
    /// once the sessions have drained) and waits for the threads.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
