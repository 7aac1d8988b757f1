//! ZooKeeper, as the three programs share it.
//!
//! - [`layout`]: names and data of the znodes (DESIGN.md "ZooKeeper
//!   layout"); pure.
//! - [`view`]: what they mean for routing, [`ClusterView`], validated; pure.
//! - Session helpers: connecting with the flags every program uses,
//!   closing a session so that its ephemeral znodes are gone on return,
//!   retry backoff and shutdown signals.
//!
//! What only the proxy runs (its registration and the cluster watch) lives
//! in [`crate::proxy::zk`]; the watchdog's session in
//! [`crate::watchdog`].

pub mod layout;
pub mod migration;
pub mod view;

pub use layout::{LayoutError, MemberData, ProxyData, Role};
pub use view::{ClusterView, Member, ShardView};

use std::fmt;
use std::time::Duration;
use tokio::sync::watch as signal;
use zookeeper_client as zk;

/// A ZooKeeper digest identity, `user:password`. With one, the programs
/// authenticate every session and create their znodes writable only by
/// that identity and readable by all, so no anonymous client can delete a
/// member (forcing a failover) or rewrite a shard.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkAuth {
    text: String,
}

impl ZkAuth {
    /// Parses `user:password` (both non-empty).
    ///
    /// # Errors
    /// What is wrong, without echoing the password.
    pub fn parse(text: &str) -> Result<ZkAuth, String> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(ZkAuth {
                text: text.to_string(),
            }),
            _ => Err("want user:password (both non-empty)".into()),
        }
    }

    pub fn user(&self) -> &str {
        self.text.split_once(':').map_or("", |(user, _)| user)
    }
}

impl fmt::Debug for ZkAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZkAuth({}:***)", self.user())
    }
}

/// Everything for the creator's authenticated identity, reading for anyone.
static SECURED: [zk::Acl; 2] = [
    zk::Acl::new_const(zk::Permission::ALL, "auth", ""),
    zk::Acl::new_const(zk::Permission::READ, "world", "anyone"),
];

/// The ACL of the znodes the programs create: open to all without an
/// identity (ZooKeeper's default), else writable only by it.
pub fn acls(auth: Option<&ZkAuth>) -> zk::Acls<'static> {
    match auth {
        Some(_) => zk::Acls::new(&SECURED),
        None => zk::Acls::anyone_all(),
    }
}

/// Session timeout the proxy and the admin tool ask of ZooKeeper (the
/// server may clamp it to its `minSessionTimeout..maxSessionTimeout`).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// How long closing waits for ZooKeeper to confirm the session is closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Exponential retry delay: 100 ms doubling up to 1 s, so a ZooKeeper that
/// comes back is seen within a second (a failover it recorded meanwhile
/// moves routing then; with 3 s, proxies lagged the new line by up to 3 s)
/// while a fleet's retries stay a few a second.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Backoff::MIN }
    }

    pub(crate) fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        delay
    }

    pub(crate) fn reset(&mut self) {
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
pub(crate) async fn sleep_or_shutdown(
    delay: Duration,
    shutdown: &mut signal::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown_requested(shutdown) => true,
    }
}

/// True when `error` means the session is over and a new one is needed.
pub(crate) fn is_session_over(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::SessionExpired
            | zk::Error::ClientClosed
            | zk::Error::AuthFailed
            | zk::Error::SessionMoved
    )
}

/// One attempt at a session. `fail_eagerly`: one try per host, so the
/// caller decides how to retry and what to log.
pub(crate) async fn connect_once(
    hosts: &str,
    session_timeout: Option<Duration>,
    auth: Option<&ZkAuth>,
) -> Result<zk::Client, zk::Error> {
    let mut connector = zk::Client::connector().with_fail_eagerly();
    if let Some(auth) = auth {
        connector = connector.with_auth("digest", auth.text.as_bytes());
    }
    let connector = match session_timeout {
        Some(timeout) => connector.with_session_timeout(timeout),
        None => connector,
    };
    connector.connect(hosts).await
}

/// Closes the session and waits (up to [`CLOSE_TIMEOUT`]) until ZooKeeper
/// confirms, so its ephemeral znodes are gone when this returns. False when
/// the confirmation did not come in time.
pub(crate) async fn close(client: zk::Client) -> bool {
    let mut states = client.state_watcher();
    if states.peek_state().is_terminated() {
        return true;
    }
    // The session task sends CloseSession once the last Client is dropped;
    // watchers hold no Client, so this is the last one.
    drop(client);
    let closed = async { while !states.changed().await.is_terminated() {} };
    tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_parses_user_and_password_and_hides_the_password() {
        let auth = ZkAuth::parse("ops:s3cret").unwrap();
        assert_eq!(auth.user(), "ops");
        assert_eq!(format!("{auth:?}"), "ZkAuth(ops:***)");
        for bad in ["", "ops", ":pw", "ops:"] {
            assert!(ZkAuth::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..7).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
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
