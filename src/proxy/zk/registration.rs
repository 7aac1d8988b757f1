//! This proxy's own EPHEMERAL znode at `zookeeper_path`, holding
//! [`ProxyData`] as JSON, so ops and the admin tool see which proxies run.
//!
//! The znode lives as long as the registration's session: it is created
//! (with missing persistent parents) when a session is established, created
//! again if someone deletes it or its session expires, and removed at once on
//! shutdown by closing the session.
//!
//! A znode already at the path is handled by whose it is:
//! - ours (this session): its data is set to ours;
//! - left by an earlier session of this same process (same listen, pid and
//!   start time): deleted and created again;
//! - anyone else's (e.g. the previous run of this proxy, whose session has not
//!   expired yet): left alone; we watch it, log, and create ours once it is
//!   gone. While it is an earlier run on this address that still answers
//!   its clients, the listener accepts no client (see `handing_over`); any
//!   other holder gets clients refused in words.

use super::session::{close, connect, session_over};
use super::status::{Task, ZkStatus};
use crate::zk::layout::ProxyData;
use crate::zk::{is_session_over, shutdown_requested, Backoff, ZkAuth};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch as signal;
use tracing::{error, info, warn};
use zookeeper_client as zk;

/// How long a new run waits for an earlier one on its address to leave
/// before it takes it for another proxy: the earlier run's drain limit,
/// its linger, and the close of its session.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(15);
/// How often a hand-over looks whether the earlier run still runs.
const HANDOVER_LOOK: Duration = Duration::from_millis(200);

/// Keeps this proxy's znode at `path` (a full path) with `data` until
/// shutdown, then closes the session so the znode vanishes at once.
///
/// Runs until `shutdown` turns `true` (or its sender is dropped); meant to be
/// spawned: `tokio::spawn(run_registration(...))`, and awaited on shutdown
/// so the close completes. `hosts` is the `zookeeper_host` connect string.
/// Never returns early: failures are logged, recorded in `status`, and
/// retried with backoff.
pub async fn run_registration(
    hosts: String,
    auth: Option<ZkAuth>,
    path: String,
    data: ProxyData,
    status: Arc<ZkStatus>,
    mut shutdown: signal::Receiver<bool>,
) {
    let task = Task::Registration;
    while let Some(client) =
        connect(&hosts, auth.as_ref(), &path, task, &status, &mut shutdown).await
    {
        let mut states = client.state_watcher();
        let stop = tokio::select! {
            _ = hold(&client, &path, &data, auth.as_ref(), &status) => false,
            _ = session_over(&mut states, &status, task, &hosts) => false,
            _ = shutdown_requested(&mut shutdown) => true,
        };
        status.set_registered(false);
        if stop {
            close(client, &status, task).await;
            info!(path = %path, "unregistered from ZooKeeper");
            return;
        }
        warn!(path = %path, "ZooKeeper session over; registering again with a new session");
    }
}

/// Keeps the znode in place for as long as the session lives; returns when
/// the session is over.
async fn hold(
    client: &zk::Client,
    path: &str,
    data: &ProxyData,
    auth: Option<&ZkAuth>,
    status: &ZkStatus,
) {
    let mut backoff = Backoff::new();
    loop {
        match register(client, path, data, auth, status).await {
            Ok(watcher) => {
                backoff.reset();
                status.set_registered(true);
                status.set_name_taken(None);
                status.set_handing_over(false);
                let event = watcher.changed().await;
                match event.event_type {
                    zk::EventType::Session => return,
                    zk::EventType::NodeDeleted => {
                        status.set_registered(false);
                        warn!(path = %path, "our znode was deleted; creating it again");
                    }
                    // Data changed by someone else: register() puts ours back.
                    _ => {}
                }
            }
            Err(error) if is_session_over(&error) => return,
            Err(error) => {
                let delay = backoff.next();
                warn!(
                    path = %path,
                    error = %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot register in ZooKeeper"
                );
                status.record_error(path, format!("cannot register: {error}"));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Makes sure our znode is at `path` with our data, and returns a watcher
/// on it. Waits while another session holds the path.
async fn register(
    client: &zk::Client,
    path: &str,
    data: &ProxyData,
    auth: Option<&ZkAuth>,
    status: &ZkStatus,
) -> Result<zk::OneshotWatcher, zk::Error> {
    let json = data.to_json();
    let acls = crate::zk::acls(auth);
    if let Some(parent) = path
        .rsplit_once('/')
        .map(|(p, _)| p)
        .filter(|p| !p.is_empty())
    {
        client
            .mkdir(parent, &zk::CreateMode::Persistent.with_acls(acls))
            .await?;
    }
    // Since when an earlier run of this proxy, still stopping, holds the
    // path.
    let mut handover_since: Option<Instant> = None;
    loop {
        match client
            .create(path, &json, &zk::CreateMode::Ephemeral.with_acls(acls))
            .await
        {
            Ok(_) => info!(path = %path, session = %client.session_id(), "registered in ZooKeeper"),
            Err(zk::Error::NodeExists) => {}
            Err(error) => return Err(error),
        }
        let (found, stat, watcher) = match client.get_and_watch_data(path).await {
            Ok(found) => found,
            Err(zk::Error::NoNode) => continue,
            Err(error) => return Err(error),
        };
        if stat.ephemeral_owner == client.session_id().0 {
            if found == json {
                return Ok(watcher);
            }
            // Someone changed our data; put ours back and look again.
            match client.set_data(path, &json, Some(stat.version)).await {
                Ok(_) | Err(zk::Error::BadVersion) | Err(zk::Error::NoNode) => continue,
                Err(error) => return Err(error),
            }
        }
        let owner = zk::SessionId(stat.ephemeral_owner);
        if data.is_same_process(&found) {
            info!(path = %path, owner = %owner, "replacing our znode left by an earlier session");
            match client.delete(path, Some(stat.version)).await {
                Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => continue,
                Err(error) => return Err(error),
            }
        }
        let held_by = String::from_utf8_lossy(&found);
        let first_look = handover_since.is_none();
        let handover_until = data
            .is_earlier_run_stopping(&found, pid_runs)
            .then(|| *handover_since.get_or_insert_with(Instant::now) + HANDOVER_WAIT)
            .filter(|until| Instant::now() < *until);
        if let Some(until) = handover_until {
            // A restart that overlaps the old run (started as soon as the
            // old one stopped accepting, or beside it with `reuseport`):
            // the old run answers its clients, then leaves. New clients
            // wait in the listen backlog meanwhile, instead of being
            // refused (review: the new run answered -ERR for up to 10 s).
            // Refused all the same if one was accepted already: two
            // proxies must not route on one registration.
            if first_look {
                info!(
                    path = %path,
                    owner = %owner,
                    data = %held_by,
                    "znode held by an earlier run of this proxy that is stopping; accepting clients once it is gone"
                );
            }
            status.set_handing_over(true);
            status.set_name_taken(Some(format!(
                "ERR shardproxy: this proxy's zookeeper_path {path} is still held by an earlier run \
                 of this proxy ({held_by}), which is stopping; try again in a moment"
            )));
            status.record_error(path, format!("held by session {owner}: {held_by}"));
            // Looked at again every moment: an earlier run killed meanwhile
            // is a predecessor, served beside at once (review: the new run
            // waited for its session to expire).
            let next_look = (Instant::now() + HANDOVER_LOOK).min(until);
            tokio::select! {
                _ = watcher.changed() => {}
                () = tokio::time::sleep_until(next_look.into()) => {}
            }
            continue;
        }
        if status.handing_over() {
            status.set_handing_over(false);
            status.set_name_taken(None);
        }
        if data.is_predecessor(&found, pid_runs) {
            warn!(
                path = %path,
                owner = %owner,
                data = %held_by,
                "znode held by an earlier run of this proxy; waiting for its session to expire"
            );
        } else {
            // Perhaps a second proxy given the same path (a pool file
            // copied unchanged): one roster entry and one acknowledgement
            // for both, so a range could move while this one still routed
            // it to its old shard (review: 70 of 300 acknowledged writes
            // lost). It serves nothing until the path is its own.
            error!(
                path = %path,
                owner = %owner,
                data = %held_by,
                "zookeeper_path held by another proxy: serving nothing until it is ours; give each proxy its own zookeeper_path"
            );
            status.set_name_taken(Some(format!(
                "ERR shardproxy: this proxy's zookeeper_path {path} is held by another proxy ({held_by}); \
                 it serves nothing until that znode is gone: give each proxy its own zookeeper_path"
            )));
        }
        status.record_error(path, format!("held by session {owner}: {held_by}"));
        // Fires when it is deleted or changed, or our session ends (then the
        // next create fails with the session error).
        watcher.changed().await;
    }
}

/// Whether process `pid` runs on this host: listed in `/proc` and neither
/// a zombie nor dead (review: a proxy killed with -9 stays listed as a
/// zombie until its parent reaps it, and its restarted successor refused
/// every request for 5 s, taking it for a second proxy).
fn pid_runs(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`; the name may hold spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X' | 'x'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_runs_and_an_unused_pid_does_not() {
        assert!(super::pid_runs(std::process::id()));
        assert!(!super::pid_runs(u32::MAX - 1));
    }

    /// A child that exited and was not reaped yet (a zombie) is listed in
    /// `/proc` but does not run.
    #[test]
    fn a_zombie_does_not_run() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let zombie = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
        };
        while !zombie() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never exited"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!super::pid_runs(pid));
        child.wait().unwrap();
    }
}
