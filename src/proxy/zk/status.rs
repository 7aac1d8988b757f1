//! What the ZooKeeper layer is doing, shared with INFO and stats: session
//! states, the last error, the current view.
//!
//! Writers are the registration and watch tasks; readers take a
//! [`ZkStatus::snapshot`]. The lock is a plain `Mutex` held only to copy or
//! set a few fields, never across an `.await`.

use crate::zk::view::ClusterView;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};
use tokio::sync::watch;
use zookeeper_client as zk;

/// State of one ZooKeeper session of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Not started yet.
    Idle,
    /// Trying to establish a session.
    Connecting,
    /// Session established and connected.
    Connected,
    /// Session alive but the connection is lost; the client reconnects.
    Disconnected,
    /// Session expired; a new one is being established.
    Expired,
    /// ZooKeeper refused our credentials.
    AuthFailed,
    /// Session closed on shutdown.
    Closed,
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionState::Idle => "idle",
            SessionState::Connecting => "connecting",
            SessionState::Connected => "connected",
            SessionState::Disconnected => "disconnected",
            SessionState::Expired => "expired",
            SessionState::AuthFailed => "auth_failed",
            SessionState::Closed => "closed",
        })
    }
}

impl From<zk::SessionState> for SessionState {
    fn from(state: zk::SessionState) -> Self {
        match state {
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                SessionState::Connected
            }
            zk::SessionState::Disconnected => SessionState::Disconnected,
            zk::SessionState::Expired => SessionState::Expired,
            zk::SessionState::AuthFailed => SessionState::AuthFailed,
            zk::SessionState::Closed => SessionState::Closed,
        }
    }
}

/// Which of the proxy's two sessions a state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    Registration,
    Watch,
}

/// An error seen by the ZooKeeper layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkError {
    /// The znode concerned (the cluster root for range errors).
    pub path: String,
    pub reason: String,
    pub at: SystemTime,
}

/// A copy of the status at one moment.
#[derive(Debug, Clone)]
pub struct ZkStatusSnapshot {
    /// The session that holds this proxy's znode.
    pub registration_session: SessionState,
    /// The session that watches the cluster.
    pub watch_session: SessionState,
    /// This proxy's znode exists now.
    pub registered: bool,
    /// The cluster's state in ZooKeeper was valid at the last read; when
    /// false the proxy routes on the last good view.
    pub state_valid: bool,
    /// The most recent error (kept after it is resolved; see `state_valid`).
    pub last_error: Option<ZkError>,
    /// Views handed to the proxy (one per change of the cluster).
    pub views_applied: u64,
    /// When the last view was handed over.
    pub last_change: Option<SystemTime>,
    /// The view the proxy routes on: per shard its range, master, members,
    /// and the no-members flag.
    pub view: Option<Arc<ClusterView>>,
    /// Since when the watch session has not been connected (from its
    /// first attempt on), if it is not now.
    pub watch_cut_off_since: Option<Instant>,
    /// The error clients get while another proxy holds this one's
    /// `zookeeper_path`.
    pub name_taken: Option<String>,
    /// The path is held by an earlier run of this proxy that is stopping:
    /// clients wait in the listen backlog instead of being refused.
    pub handing_over: bool,
}

/// Shared status of the ZooKeeper layer; cheap to read.
#[derive(Debug)]
pub struct ZkStatus {
    inner: Mutex<ZkStatusSnapshot>,
    /// Set while this proxy's `zookeeper_path` is held by another proxy:
    /// read on every request, so kept apart from the lock.
    name_taken: AtomicBool,
    /// Whether this proxy's znode exists, for the tasks that must act the
    /// moment it does (the roster entry and acknowledgement).
    registration: watch::Sender<bool>,
}

impl Default for ZkStatus {
    fn default() -> Self {
        ZkStatus::new()
    }
}

impl ZkStatus {
    /// A status with both sessions idle and no view.
    pub fn new() -> ZkStatus {
        ZkStatus {
            inner: Mutex::new(ZkStatusSnapshot {
                registration_session: SessionState::Idle,
                watch_session: SessionState::Idle,
                registered: false,
                state_valid: false,
                last_error: None,
                views_applied: 0,
                last_change: None,
                view: None,
                watch_cut_off_since: None,
                name_taken: None,
                handing_over: false,
            }),
            name_taken: AtomicBool::new(false),
            registration: watch::channel(false).0,
        }
    }

    /// Why this proxy serves nothing now, if it does not: the error its
    /// clients get ([`ZkStatus::set_name_taken`]).
    pub fn refusal(&self) -> Option<String> {
        if !self.name_taken.load(Ordering::Relaxed) {
            return None;
        }
        self.lock().name_taken.clone()
    }

    /// Records that another proxy holds this one's `zookeeper_path`
    /// (`Some`: the error its clients get) or no longer does.
    pub(crate) fn set_name_taken(&self, refusal: Option<String>) {
        let taken = refusal.is_some();
        self.lock().name_taken = refusal;
        self.name_taken.store(taken, Ordering::Relaxed);
    }

    pub(crate) fn set_handing_over(&self, handing_over: bool) {
        self.lock().handing_over = handing_over;
    }

    pub(crate) fn handing_over(&self) -> bool {
        self.lock().handing_over
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> ZkStatusSnapshot {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, ZkStatusSnapshot> {
        // A panic elsewhere while holding this lock leaves plain data that
        // is still worth showing.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn set_session(&self, task: Task, state: SessionState) {
        let mut inner = self.lock();
        match task {
            Task::Registration => inner.registration_session = state,
            Task::Watch => {
                inner.watch_session = state;
                if state == SessionState::Connected {
                    inner.watch_cut_off_since = None;
                } else if state != SessionState::Closed {
                    inner.watch_cut_off_since.get_or_insert_with(Instant::now);
                }
            }
        }
    }

    /// What a client whose request timed out is told besides, while this
    /// proxy has been cut off from ZooKeeper for a second or more: the
    /// watchdogs pause their masters' writes once they cannot reach it
    /// either, so the timeout is most likely that pause, not the Redis.
    pub fn outage_note(&self) -> Option<String> {
        let since = self.lock().watch_cut_off_since?;
        let secs = since.elapsed().as_secs();
        (secs >= 1).then(|| {
            format!(
                " (this proxy has been cut off from ZooKeeper for {secs} s; watchdogs \
                 pause their masters' writes while they cannot reach it)"
            )
        })
    }

    pub(crate) fn set_registered(&self, registered: bool) {
        self.lock().registered = registered;
        self.registration.send_replace(registered);
    }

    /// Changes whenever this proxy's znode is made or lost.
    pub(crate) fn watch_registration(&self) -> watch::Receiver<bool> {
        self.registration.subscribe()
    }

    /// This proxy's znode exists now.
    pub fn is_registered(&self) -> bool {
        self.lock().registered
    }

    pub(crate) fn record_error(&self, path: &str, reason: String) {
        self.lock().last_error = Some(ZkError {
            path: path.to_string(),
            reason,
            at: SystemTime::now(),
        });
    }

    pub(crate) fn set_state_valid(&self, valid: bool) {
        self.lock().state_valid = valid;
    }

    pub(crate) fn view_applied(&self, view: Arc<ClusterView>) {
        let mut inner = self.lock();
        inner.views_applied += 1;
        inner.last_change = Some(SystemTime::now());
        inner.view = Some(view);
    }
}
