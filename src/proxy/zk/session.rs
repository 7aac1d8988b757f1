//! The proxy's ZooKeeper sessions: connecting with retries, following the
//! session's state into [`ZkStatus`], closing.

use super::status::{SessionState, Task, ZkStatus};
use crate::zk::{shutdown_requested, sleep_or_shutdown, Backoff, SESSION_TIMEOUT};
use tokio::sync::watch as signal;
use tracing::{info, warn};
use zookeeper_client as zk;

/// Follows the session's state into `status` and the log; resolves with the
/// terminal state (expired, closed, auth failed) when the session is over.
pub(super) async fn session_over(
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

/// Establishes a session, retrying with backoff; `None` on shutdown (the
/// state is then `Closed`).
/// Failures are logged and recorded against `path`, the znode the session
/// is for.
pub(super) async fn connect(
    hosts: &str,
    auth: Option<&crate::zk::ZkAuth>,
    path: &str,
    task: Task,
    status: &ZkStatus,
    shutdown: &mut signal::Receiver<bool>,
) -> Option<zk::Client> {
    let mut backoff = Backoff::new();
    loop {
        status.set_session(task, SessionState::Connecting);
        // fail_eagerly: one try per host, then our own backoff and logging.
        let attempt = crate::zk::connect_once(hosts, Some(SESSION_TIMEOUT), auth);
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

/// Closes the session and waits until ZooKeeper confirms (or
/// [`crate::zk::close`]'s limit passes), so its ephemeral znodes are gone
/// when this returns.
pub(super) async fn close(client: zk::Client, status: &ZkStatus, task: Task) {
    if !crate::zk::close(client).await {
        warn!(task = ?task, "ZooKeeper did not confirm the session close in time");
    }
    status.set_session(task, SessionState::Closed);
}
