//! ZooKeeper: the proxy's registration and the cluster watch.
//!
//! - [`layout`]: names and data of the znodes (DESIGN.md "ZooKeeper
//!   layout") and [`ClusterView`] validation; pure, shared with the
//!   watchdog and the admin tool.
//! - [`registration`]: this proxy's EPHEMERAL znode, kept while it runs.
//! - [`watch`]: watches the cluster root and hands every new valid
//!   [`ClusterView`] to a callback.
//! - [`status`]: what both are doing, for INFO and stats.
//!
//! Registration and watch each run their own session. They fail in
//! different ways: the watch may drop its session and start over at any
//! time without side effects, while the registration's session carries the
//! proxy's znode and must end only on shutdown (closing it removes the znode
//! at once).
//!
//! Both run until their shutdown receiver turns `true` (or its sender is
//! dropped), retrying with backoff while ZooKeeper is unreachable; they never
//! panic or give up.
//!
//! The `zookeeper-client` crate needs its `tokio` feature to spawn its
//! session task on the tokio runtime (without it, connecting panics with "no
//! spawner").
//!
//! # Usage
//! ```no_run
//! use shardproxy::zk::{self, ProxyData, ZkStatus};
//! use std::sync::Arc;
//!
//! # async fn example(data: ProxyData) {
//! let status = Arc::new(ZkStatus::new()); // shown by INFO
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! let on_change: zk::OnChange = Arc::new(|view: zk::ClusterView| {
//!     // Build a routing table from `view` and swap it in.
//!     let _ = view.slots;
//! });
//! let hosts = "172.16.10.163:2181,172.16.10.96:2181".to_string();
//! let watch = tokio::spawn(zk::watch_cluster(
//!     hosts.clone(),
//!     "/redis/cluster/icd".into(),
//!     on_change,
//!     status.clone(),
//!     shutdown.clone(),
//! ));
//! let registration = tokio::spawn(zk::run_registration(
//!     hosts,
//!     "/redis/proxy/icd/172.17.32.105:22121".into(),
//!     data,
//!     status.clone(),
//!     shutdown,
//! ));
//! // On shutdown: both close their sessions; the proxy znode is gone when
//! // `registration` has finished.
//! stop.send(true).ok();
//! let _ = tokio::join!(watch, registration);
//! # }
//! ```

pub mod layout;
pub mod registration;
pub mod status;
pub mod watch;

pub use layout::{ClusterView, LayoutError, Member, MemberData, ProxyData, Role, ShardView};
pub use registration::run_registration;
pub use status::{SessionState, ZkError, ZkStatus, ZkStatusSnapshot};
pub use watch::{watch_cluster, OnChange};

use status::Task;
use std::time::Duration;
use tokio::sync::watch as signal;
use tracing::{info, warn};
use zookeeper_client as zk;

/// Session timeout asked of ZooKeeper (the server may clamp it to its
/// `minSessionTimeout..maxSessionTimeout`).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// How long shutdown waits for ZooKeeper to confirm the session is closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Exponential retry delay: 100 ms doubling up to 3 s, so a ZooKeeper that
/// comes back is seen within a few seconds without flooding its log.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(3);

    fn new() -> Backoff {
        Backoff { next: Backoff::MIN }
    }

    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = Backoff::MIN;
    }
}

/// Resolves once shutdown is asked for: the value turns `true` or the
/// sender is gone.
pub(crate) async fn shutdown_requested(shutdown: &mut signal::Receiver<bool>) {
    // An error means the sender was dropped: nobody can stop us any more,
    // so stop now rather than run unowned.
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// Sleeps for `delay`; returns true if shutdown was asked for meanwhile.
async fn sleep_or_shutdown(delay: Duration, shutdown: &mut signal::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown_requested(shutdown) => true,
    }
}

/// Follows the session's state into `status` and the log; resolves with the
/// terminal state (expired, closed, auth failed) when the session is over.
async fn session_over(
    states: &mut zk::StateWatcher,
    status: &ZkStatus,
    task: Task,
    hosts: &str,
) -> SessionState {
    loop {
        let state = SessionState::from(states.changed().await);
        status.set_session(task, state);
        match state {
            SessionState::Connected => info!(hosts = %hosts, task = ?task, "ZooKeeper reconnected"),
            _ => warn!(hosts = %hosts, task = ?task, state = %state, "ZooKeeper connection lost"),
        }
        if matches!(
            state,
            SessionState::Expired | SessionState::Closed | SessionState::AuthFailed
        ) {
            return state;
        }
    }
}

/// True when `error` means the session is over and a new one is needed.
fn is_session_over(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::SessionExpired
            | zk::Error::ClientClosed
            | zk::Error::AuthFailed
            | zk::Error::SessionMoved
    )
}

/// Establishes a session, retrying with backoff; `None` on shutdown (the
/// state is then `Closed`).
/// Failures are logged and recorded against `path`, the znode the session
/// is for.
async fn connect(
    hosts: &str,
    path: &str,
    task: Task,
    status: &ZkStatus,
    shutdown: &mut signal::Receiver<bool>,
) -> Option<zk::Client> {
    let mut backoff = Backoff::new();
    loop {
        status.set_session(task, SessionState::Connecting);
        // fail_eagerly: one try per host, then our own backoff and logging.
        let attempt = zk::Client::connector()
            .with_session_timeout(SESSION_TIMEOUT)
            .with_fail_eagerly()
            .connect(hosts);
        let error = tokio::select! {
            result = attempt => match result {
                Ok(client) => {
                    info!(
                        hosts = %hosts,
                        task = ?task,
                        session = %client.session_id(),
                        timeout_ms = client.session_timeout().as_millis() as u64,
                        "ZooKeeper session established"
                    );
                    status.set_session(task, SessionState::Connected);
                    return Some(client);
                }
                Err(error) => error,
            },
            _ = shutdown_requested(shutdown) => {
                status.set_session(task, SessionState::Closed);
                return None;
            }
        };
        let delay = backoff.next();
        warn!(
            hosts = %hosts,
            task = ?task,
            error = %error,
            retry_in_ms = delay.as_millis() as u64,
            "cannot connect to ZooKeeper"
        );
        status.record_error(
            path,
            format!("cannot connect to ZooKeeper {hosts}: {error}"),
        );
        if sleep_or_shutdown(delay, shutdown).await {
            status.set_session(task, SessionState::Closed);
            return None;
        }
    }
}

/// Closes the session and waits (up to [`CLOSE_TIMEOUT`]) until ZooKeeper
/// confirms, so its ephemeral znodes are gone when this returns.
async fn close(client: zk::Client, status: &ZkStatus, task: Task) {
    let mut states = client.state_watcher();
    let already_over = states.peek_state().is_terminated();
    // The session task sends CloseSession once the last Client is dropped;
    // watchers hold no Client, so this is the last one.
    drop(client);
    if !already_over {
        let closed = async { while !states.changed().await.is_terminated() {} };
        if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
            warn!(task = ?task, "ZooKeeper did not confirm the session close in time");
        }
    }
    status.set_session(task, SessionState::Closed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..7).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3000, 3000]);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn dropped_shutdown_sender_means_shutdown() {
        let (tx, mut rx) = signal::channel(false);
        drop(tx);
        assert!(sleep_or_shutdown(Duration::from_secs(10), &mut rx).await);
    }

    #[tokio::test]
    async fn sleep_runs_out_without_shutdown() {
        let (_tx, mut rx) = signal::channel(false);
        assert!(!sleep_or_shutdown(Duration::from_millis(10), &mut rx).await);
    }

    #[tokio::test]
    async fn shutdown_cuts_the_sleep_short() {
        let (tx, mut rx) = signal::channel(false);
        tx.send(true).unwrap();
        assert!(sleep_or_shutdown(Duration::from_secs(10), &mut rx).await);
    }
}
