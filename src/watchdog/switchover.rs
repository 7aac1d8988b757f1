//! Planned switchover (DESIGN.md watchdog rule 7): the master's watchdog
//! pauses writes, waits until the next in line has applied everything, then
//! leaves the line so the next in line is promoted. No acknowledged write is
//! lost.
//!
//! # The request znode
//! A switchover is asked for through a persistent **control znode** beside
//! the cluster, never under the shard (the proxy takes every child of a
//! shard for a member):
//!
//! ```text
//! /redis/cluster/<cluster>/<shard>     the shard (members under it)
//! /redis/control/<cluster>/<shard>     its control znode, while a request is open
//! ```
//!
//! That is, the cluster root's parent directory (`cluster`) is replaced by
//! `control` ([`control_path`]). The data is a JSON [`SwitchoverRequest`]:
//! [`request_switchover`] creates it with `state: pending` and the member
//! znode name of the master it wants replaced; only that member's watchdog
//! acts on it, so a request left behind never moves a later master. The
//! watchdog writes its answer into the same znode (`done` with the new
//! master and the pause, or `aborted` with the reason) and the requester
//! deletes the znode.
//!
//! # What the master's watchdog does
//! 1. `CLIENT PAUSE <ms> WRITE` on its Redis;
//! 2. polls its own `master_repl_offset` and the next in line's
//!    `slave_repl_offset` (from that Redis's own `INFO replication`) until
//!    the replica has caught up, at most `max_pause_ms`; else `CLIENT
//!    UNPAUSE` and answer `aborted`;
//! 3. deletes its member znode: the next in line is now the lowest member,
//!    its watchdog promotes it, proxies move to it. The old master stays
//!    paused (the split-brain guard keeps it so) until it replicates from
//!    the new master; writes that reached it meanwhile then fail with
//!    `READONLY` instead of being acknowledged. It rejoins the line later,
//!    as a replica.

use super::health::RedisLink;
use crate::redis_client::RedisConn;
use crate::zk::migration::control_root;
use crate::zk::view::{members_in_line, Member};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// How long one attempt to reach ZooKeeper may take.
const ZK_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long after its deadline the requester still waits for the master's
/// watchdog to answer (it may be in the middle of a health check).
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

/// How often the master's watchdog compares offsets while writes are
/// paused: the pause lasts until the next poll after the catch-up.
const OFFSET_POLL: Duration = Duration::from_millis(2);

/// The control znode of the shard at `shard_path`: the cluster root's
/// parent directory replaced by `control`, e.g.
/// `/redis/cluster/icd/redis-0000` -> `/redis/control/icd/redis-0000`.
/// `None` for a path with fewer than two segments (no cluster root).
pub fn control_path(shard_path: &str) -> Option<String> {
    let (root, shard) = shard_path.trim_end_matches('/').rsplit_once('/')?;
    if shard.is_empty() {
        return None;
    }
    Some(format!("{}/{shard}", control_root(root)?))
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for the master's watchdog.
    Pending,
    /// The master's watchdog took it (writes are paused, or about to be):
    /// the requester can no longer call it off.
    Started,
    /// The master left the line; the next in line takes over.
    Done,
    /// Nothing changed; see `reason`.
    Aborted,
}

/// The JSON data of a control znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    pub state: RequestState,
    /// Member znode name of the master to replace; only its watchdog acts.
    pub master: String,
    /// The longest writes may stay paused while the next in line catches up.
    pub max_pause_ms: u64,
    /// Answer: the new master's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_master: Option<String>,
    /// Answer: how long writes were paused before the master left the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_ms: Option<u64>,
    /// Answer: the replication offset both had when the master left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Answer: why it was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl SwitchoverRequest {
    /// A pending request to replace the member `master`.
    pub fn new(master: &str, max_pause: Duration) -> SwitchoverRequest {
        SwitchoverRequest {
            state: RequestState::Pending,
            master: master.to_string(),
            max_pause_ms: max_pause.as_millis() as u64,
            new_master: None,
            pause_ms: None,
            offset: None,
            reason: None,
        }
    }

    /// The answer when the master has left the line.
    pub fn done(&self, new_master: &str, pause: Duration, offset: u64) -> SwitchoverRequest {
        SwitchoverRequest {
            state: RequestState::Done,
            new_master: Some(new_master.to_string()),
            pause_ms: Some(pause.as_millis() as u64),
            offset: Some(offset),
            ..self.clone()
        }
    }

    /// Taken by the master's watchdog, before it pauses writes.
    pub fn started(&self) -> SwitchoverRequest {
        SwitchoverRequest {
            state: RequestState::Started,
            ..self.clone()
        }
    }

    /// The answer when nothing changed.
    pub fn aborted(&self, reason: &str) -> SwitchoverRequest {
        SwitchoverRequest {
            state: RequestState::Aborted,
            reason: Some(reason.to_string()),
            ..self.clone()
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers and an enum: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What a finished switchover did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchoverReport {
    /// The shard znode.
    pub shard: String,
    /// Address of the master that left the line.
    pub old_master: String,
    /// Address of the next in line, now the lowest member.
    pub new_master: String,
    /// How long the old master's writes were paused before it left.
    pub pause: Duration,
    /// The replication offset both had.
    pub offset: u64,
}

/// Why a switchover did not happen. Each names the shard.
#[derive(Debug, thiserror::Error)]
pub enum SwitchoverError {
    #[error("bad shard path {0:?}: want <cluster root>/<shard>")]
    BadShardPath(String),
    #[error("cannot reach ZooKeeper {hosts}: {error}")]
    Connect { hosts: String, error: zk::Error },
    #[error("ZooKeeper error on {path}: {error}")]
    Zk { path: String, error: zk::Error },
    #[error("shard {0} does not exist")]
    NoShard(String),
    #[error("shard {0} has no member, so no master to replace")]
    NoMaster(String),
    #[error("shard {shard} has no replica in line to take over from {master}")]
    NoReplica { shard: String, master: String },
    #[error("a switchover of shard {shard} is already open ({path})")]
    Busy { shard: String, path: String },
    #[error("switchover of shard {shard} aborted by the watchdog of {master}: {reason}")]
    Aborted {
        shard: String,
        master: String,
        reason: String,
    },
    #[error("the watchdog of {master} (shard {shard}) did not answer within {waited:?}")]
    NoAnswer {
        shard: String,
        master: String,
        waited: Duration,
    },
    #[error("the switchover request {path} was deleted before an answer")]
    Cancelled { path: String },
    #[error(
        "the switchover of shard {shard} was called off before the watchdog of {master} took \
         it: nothing changed"
    )]
    Withdrawn { shard: String, master: String },
}

/// Asks the watchdog of the master of the shard at `shard_path` to hand
/// over to the next in line, pausing writes at most `deadline` while the
/// replica catches up, and waits for the answer. For `shardproxy-admin
/// failover`.
///
/// # Errors
/// A [`SwitchoverError`]: bad path, ZooKeeper unreachable, no such shard,
/// no master or no replica, another switchover open, aborted by the
/// watchdog (e.g. the replica did not catch up in time: writes were
/// unpaused and nothing changed), or no answer.
pub async fn request_switchover(
    zk_hosts: &str,
    auth: Option<&crate::zk::ZkAuth>,
    shard_path: &str,
    deadline: Duration,
) -> Result<SwitchoverReport, SwitchoverError> {
    let never = std::future::pending();
    request_switchover_unless(zk_hosts, auth, shard_path, deadline, never).await
}

/// [`request_switchover`], called off when `cancel` completes (a stop
/// signal) while the master's watchdog has not taken the request yet
/// ([`SwitchoverError::Withdrawn`]: nothing changed). Once it has, the
/// switchover goes on and its answer is still awaited (review: a request
/// left behind by an interrupted `failover` was carried out seconds later,
/// after the operator was told nothing happened).
///
/// # Errors
/// As [`request_switchover`], and [`SwitchoverError::Withdrawn`].
pub async fn request_switchover_unless(
    zk_hosts: &str,
    auth: Option<&crate::zk::ZkAuth>,
    shard_path: &str,
    deadline: Duration,
    cancel: impl std::future::Future<Output = ()>,
) -> Result<SwitchoverReport, SwitchoverError> {
    let shard = shard_path.trim_end_matches('/');
    let control =
        control_path(shard).ok_or_else(|| SwitchoverError::BadShardPath(shard.to_string()))?;
    let client = match tokio::time::timeout(
        ZK_CONNECT_TIMEOUT,
        crate::zk::connect_once(zk_hosts, None, auth),
    )
    .await
    {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => {
            return Err(SwitchoverError::Connect {
                hosts: zk_hosts.to_string(),
                error,
            })
        }
        Err(_) => {
            return Err(SwitchoverError::Connect {
                hosts: zk_hosts.to_string(),
                error: zk::Error::Timeout,
            })
        }
    };
    let members = read_members(&client, shard).await?;
    let master = members
        .first()
        .ok_or_else(|| SwitchoverError::NoMaster(shard.to_string()))?;
    if members.len() < 2 {
        return Err(SwitchoverError::NoReplica {
            shard: shard.to_string(),
            master: master.addr.clone(),
        });
    }
    let request = SwitchoverRequest::new(&master.znode, deadline);
    place_request(&client, auth, shard, &control, &request, &members).await?;
    let waited = deadline + ANSWER_MARGIN;
    let until = tokio::time::Instant::now() + waited;
    let answer = tokio::select! {
        answer = tokio::time::timeout_at(until, wait_answer(&client, &control)) => answer,
        () = cancel => {
            // Created at version 0; the watchdog's taking it moved that on.
            match client.delete(&control, Some(0)).await {
                Ok(()) => {
                    return Err(SwitchoverError::Withdrawn {
                        shard: shard.to_string(),
                        master: master.addr.clone(),
                    })
                }
                Err(zk::Error::BadVersion) | Err(zk::Error::NoNode) => {
                    tokio::time::timeout_at(until, wait_answer(&client, &control)).await
                }
                Err(error) => {
                    return Err(SwitchoverError::Zk {
                        path: control.clone(),
                        error,
                    })
                }
            }
        }
    };
    // The request is done with whatever happened; a failed delete leaves a
    // finished or stale request, which no watchdog acts on.
    let _ = client.delete(&control, None).await;
    let answer = match answer {
        Ok(answer) => answer?,
        Err(_) => {
            return Err(SwitchoverError::NoAnswer {
                shard: shard.to_string(),
                master: master.addr.clone(),
                waited,
            })
        }
    };
    match answer.state {
        RequestState::Done => Ok(SwitchoverReport {
            shard: shard.to_string(),
            old_master: master.addr.clone(),
            new_master: answer.new_master.unwrap_or_default(),
            pause: Duration::from_millis(answer.pause_ms.unwrap_or_default()),
            offset: answer.offset.unwrap_or_default(),
        }),
        _ => Err(SwitchoverError::Aborted {
            shard: shard.to_string(),
            master: master.addr.clone(),
            reason: answer.reason.unwrap_or_default(),
        }),
    }
}

/// The shard's members in line order (names that are not members skipped).
async fn read_members(client: &zk::Client, shard: &str) -> Result<Vec<Member>, SwitchoverError> {
    let names = match client.list_children(shard).await {
        Ok(names) => names,
        Err(zk::Error::NoNode) => return Err(SwitchoverError::NoShard(shard.to_string())),
        Err(error) => {
            return Err(SwitchoverError::Zk {
                path: shard.to_string(),
                error,
            })
        }
    };
    Ok(members_in_line(&names))
}

/// Creates the control znode with `request`. An existing one is replaced
/// when it is finished or names a master that is gone; else `Busy`.
async fn place_request(
    client: &zk::Client,
    auth: Option<&crate::zk::ZkAuth>,
    shard: &str,
    control: &str,
    request: &SwitchoverRequest,
    members: &[Member],
) -> Result<(), SwitchoverError> {
    let zk_error = |error| SwitchoverError::Zk {
        path: control.to_string(),
        error,
    };
    let persistent = zk::CreateMode::Persistent.with_acls(crate::zk::acls(auth));
    if let Some((parent, _)) = control.rsplit_once('/') {
        client.mkdir(parent, &persistent).await.map_err(zk_error)?;
    }
    // Two rounds: the second follows the removal of a stale request.
    for _ in 0..2 {
        match client
            .create(control, &request.to_json(), &persistent)
            .await
        {
            Ok(_) => return Ok(()),
            Err(zk::Error::NodeExists) => {}
            Err(error) => return Err(zk_error(error)),
        }
        let (data, stat) = match client.get_data(control).await {
            Ok(found) => found,
            Err(zk::Error::NoNode) => continue,
            Err(error) => return Err(zk_error(error)),
        };
        let open = serde_json::from_slice::<SwitchoverRequest>(&data).is_ok_and(|old| {
            matches!(old.state, RequestState::Pending | RequestState::Started)
                && members.iter().any(|m| m.znode == old.master)
        });
        if open {
            break;
        }
        match client.delete(control, Some(stat.version)).await {
            Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => {}
            Err(error) => return Err(zk_error(error)),
        }
    }
    Err(SwitchoverError::Busy {
        shard: shard.to_string(),
        path: control.to_string(),
    })
}

/// Waits until the request is answered.
async fn wait_answer(
    client: &zk::Client,
    control: &str,
) -> Result<SwitchoverRequest, SwitchoverError> {
    loop {
        let (data, _, watcher) = match client.get_and_watch_data(control).await {
            Ok(found) => found,
            Err(zk::Error::NoNode) => {
                return Err(SwitchoverError::Cancelled {
                    path: control.to_string(),
                })
            }
            Err(error) => {
                return Err(SwitchoverError::Zk {
                    path: control.to_string(),
                    error,
                })
            }
        };
        if let Ok(answer) = serde_json::from_slice::<SwitchoverRequest>(&data) {
            if matches!(answer.state, RequestState::Done | RequestState::Aborted) {
                return Ok(answer);
            }
        }
        watcher.changed().await;
    }
}

/// Reads the shard's control znode: the request and its version, if one
/// is there and parses.
///
/// # Errors
/// ZooKeeper errors other than "no such znode".
pub async fn read_request(
    client: &zk::Client,
    control: &str,
) -> Result<Option<(SwitchoverRequest, i32)>, zk::Error> {
    match client.get_data(control).await {
        Ok((data, stat)) => Ok(serde_json::from_slice(&data)
            .ok()
            .map(|request| (request, stat.version))),
        Err(zk::Error::NoNode) => Ok(None),
        // A znode this watchdog may not read is no request of the admin's
        // (which writes them readable): ignored, said once. As an error it
        // ended every step after the line's (review: the offset recorded
        // and the last contact with ZooKeeper stopped moving, so a short
        // disconnection paused the master at once).
        Err(zk::Error::NoAuth) => {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(znode = %control, "the control znode is not readable by this watchdog \
                    (its ACL); switchover requests there are ignored");
            }
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Writes the watchdog's answer over the request it read at `version`; a
/// request withdrawn meanwhile is left alone.
///
/// # Errors
/// ZooKeeper errors other than "gone" or "changed meanwhile".
/// Takes the pending `request` (read at `version`) before acting on it:
/// the new version, or `None` when the requester called it off meanwhile.
pub async fn take_request(
    client: &zk::Client,
    control: &str,
    request: &SwitchoverRequest,
    version: i32,
) -> Result<Option<i32>, zk::Error> {
    let taken = request.started().to_json();
    match client.set_data(control, &taken, Some(version)).await {
        Ok(stat) => Ok(Some(stat.version)),
        Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => Ok(None),
        Err(error) => Err(error),
    }
}

pub async fn answer_request(
    client: &zk::Client,
    control: &str,
    answer: &SwitchoverRequest,
    version: i32,
) -> Result<(), zk::Error> {
    match client
        .set_data(control, &answer.to_json(), Some(version))
        .await
    {
        Ok(_) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => Ok(()),
        Err(error) => Err(error),
    }
}

/// The Redis side of a switchover, run by the master's watchdog: pause
/// writes on `own` (for `pause_for`, longer than `max_pause` so the
/// split-brain guard can take over the pause), wait until the Redis at
/// `next` replicates from `own_addr` with the link up and has applied our
/// whole stream. Returns the offset.
///
/// # Errors
/// The reason, when the replica cannot be read or does not catch up within
/// `max_pause`; writes are unpaused again then. Also when no watchdog of
/// the next in line has used its connection within `fresh`.
pub async fn pause_until_caught_up(
    own: &mut RedisLink,
    own_addr: &str,
    next: &str,
    auth: Option<&str>,
    (max_pause, pause_for): (Duration, Duration),
    fresh: Duration,
) -> Result<u64, String> {
    // Connect before pausing: the pause should last only the catch-up.
    let mut replica = RedisConn::connect(next, auth, max_pause.max(Duration::from_millis(500)))
        .await
        .map_err(|e| format!("cannot reach the next in line: {e}"))?;
    // Its watchdog promotes it once we leave the line: without one (killed,
    // its member not expired yet) the shard would refuse writes until the
    // member expires, and then come back to us.
    let clients = replica
        .text(&["CLIENT", "LIST", "TYPE", "normal"])
        .await
        .map_err(|e| format!("cannot list the next in line's clients: {e}"))?;
    if super::health::watchdog_connections(&clients)
        .next()
        .is_none()
    {
        return Err(format!(
            "the next in line, {next}, has no watchdog connected to it (stopped, or an older \
             version): nobody would promote it"
        ));
    }
    // Connected but silent: stopped (SIGSTOP) or hung. Handing over would
    // leave the shard on a replica nobody promotes (review: -READONLY for
    // 5 s, then the old master back, while the switchover said done).
    if !super::health::live_watchdog(&clients, fresh) {
        return Err(format!(
            "the next in line's watchdog has not checked {next} for over {} s (stopped or \
             hung): nobody would promote it",
            fresh.as_secs()
        ));
    }
    let pause_ms = pause_for.as_millis().to_string();
    own.command(&["CLIENT", "PAUSE", &pause_ms, "WRITE"])
        .await
        .map_err(|e| format!("cannot pause writes: {e}"))?;
    let started = Instant::now();
    let result = catch_up(own, own_addr, &mut replica, started + max_pause).await;
    if result.is_err() {
        // Best effort: if this fails the pause still ends by itself.
        let _ = own.command(&["CLIENT", "UNPAUSE"]).await;
    }
    result
}

async fn catch_up(
    own: &mut RedisLink,
    own_addr: &str,
    replica: &mut RedisConn,
    deadline: Instant,
) -> Result<u64, String> {
    loop {
        let ours = own
            .replication()
            .await
            .map_err(|e| format!("cannot read our offset: {e}"))?;
        let info = replica
            .text(&["INFO", "replication"])
            .await
            .map_err(|e| format!("cannot read the replica's offset: {e}"))?;
        let theirs = super::health::RedisState::parse("", &info)
            .ok_or_else(|| format!("{}: INFO replication without role", replica.addr()))?;
        let linked = theirs.follows(own_addr) && theirs.link_up;
        if linked && theirs.offset >= ours.offset {
            return Ok(ours.offset);
        }
        if Instant::now() >= deadline {
            return Err(if linked {
                format!(
                    "replica {} at offset {} did not reach ours, {}, in time",
                    replica.addr(),
                    theirs.offset,
                    ours.offset
                )
            } else {
                format!(
                    "replica {} does not replicate from us with the link up",
                    replica.addr()
                )
            });
        }
        tokio::time::sleep(OFFSET_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_path_replaces_the_cluster_directory() {
        assert_eq!(
            control_path("/redis/cluster/icd/redis-0000").as_deref(),
            Some("/redis/control/icd/redis-0000")
        );
        assert_eq!(
            control_path("/a/b/cluster/icd/redis-0001/").as_deref(),
            Some("/a/b/control/icd/redis-0001")
        );
        assert_eq!(
            control_path("/icd/redis-0000").as_deref(),
            Some("/control/icd/redis-0000")
        );
    }

    #[test]
    fn control_path_needs_a_cluster_root() {
        assert_eq!(control_path("/redis-0000"), None);
        assert_eq!(control_path("/"), None);
    }

    #[test]
    fn request_json_round_trips_and_answers_keep_the_master() {
        let request = SwitchoverRequest::new("10.0.0.1:6379-0000000001", Duration::from_secs(1));
        assert_eq!(
            String::from_utf8(request.to_json()).unwrap(),
            r#"{"state":"pending","master":"10.0.0.1:6379-0000000001","max_pause_ms":1000}"#
        );
        let done = request.done("10.0.0.2:6379", Duration::from_millis(12), 77);
        let parsed: SwitchoverRequest = serde_json::from_slice(&done.to_json()).unwrap();
        assert_eq!(parsed, done);
        assert_eq!(parsed.state, RequestState::Done);
        assert_eq!(parsed.master, request.master);
        assert_eq!(parsed.pause_ms, Some(12));
        let aborted = request.aborted("no replica");
        assert_eq!(aborted.state, RequestState::Aborted);
        assert_eq!(aborted.reason.as_deref(), Some("no replica"));
    }

    #[test]
    fn members_in_line_sorts_and_skips_strangers() {
        let names: Vec<String> = ["b:2-0000000007", "junk", "a:1-0000000003"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let line = members_in_line(&names);
        let order: Vec<&str> = line.iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(order, ["a:1", "b:2"]);
    }
}
