//! The split-brain guard: a Redis master takes writes only while its
//! watchdog holds a connected ZooKeeper session in which its member is the
//! lowest of the shard ([`writes_allowed`]).
//!
//! Whenever that is not so and the Redis is a master (ZooKeeper connection
//! lost, session expired, not registered yet, or no longer the lowest after
//! a switchover), the watchdog pauses it for writes with `CLIENT PAUSE <ms>
//! WRITE`, renewed every interval; reads go on. A proxy that still routes
//! to it (an old routing table) gets its writes held, not acknowledged.
//!
//! The pause ends when the watchdog is the connected lowest member again
//! (the connection came back within the session), or once its Redis
//! replicates from the new master: the writes held meanwhile then fail with
//! `READONLY`. If the watchdog itself dies, a pause runs out after
//! [`Guard::pause`]; a watchdog killed while its Redis is an unpaused
//! master cannot guard it (its session expires and the next in line is
//! promoted; the restarted watchdog makes the old master a replica).
//!
//! Losing the connection pauses at once, not after the session timeout:
//! ZooKeeper may expire the session (and another watchdog promote its
//! replica) before this client can tell, so waiting would leave a window
//! with two writable masters.

use super::health::{RedisLink, RedisState};
use crate::zk::layout::Role;
use crate::zk::view::Member;
use std::time::Duration;
use tracing::{error, info, warn};

/// The rule: our Redis may take writes only while this watchdog is
/// `connected` and its member (`registered`) is the lowest of `members`.
pub fn writes_allowed(connected: bool, registered: Option<&str>, members: &[Member]) -> bool {
    connected && registered.is_some() && members.first().map(|m| m.znode.as_str()) == registered
}

/// Whether we paused writes on our Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fence {
    /// Not known: at start, a previous run of the watchdog may have paused.
    Unknown,
    Paused,
    Open,
}

/// Keeps our Redis paused or not, as the rule says.
#[derive(Debug)]
pub struct Guard {
    fence: Fence,
    pause: Duration,
    shard: String,
    redis: String,
}

impl Guard {
    /// A guard whose pauses last `pause` each (renewed every interval).
    pub fn new(shard: &str, redis: &str, pause: Duration) -> Guard {
        Guard {
            fence: Fence::Unknown,
            pause,
            shard: shard.to_string(),
            redis: redis.to_string(),
        }
    }

    /// How long one pause lasts.
    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// Records that writes were paused by someone else (a switchover).
    pub fn paused(&mut self) {
        self.fence = Fence::Paused;
    }

    /// Records that writes were unpaused by someone else.
    pub fn opened(&mut self) {
        self.fence = Fence::Open;
    }

    /// Pauses (or renews the pause of) a master Redis that may not take
    /// writes; unpauses otherwise, if we paused it. `state` is what the
    /// last check saw.
    pub async fn apply(&mut self, link: &mut RedisLink, state: &RedisState, allowed: bool) {
        let (shard, redis) = (&self.shard, &self.redis);
        if state.role == Role::Master && !allowed {
            let ms = self.pause.as_millis().to_string();
            match link.command(&["CLIENT", "PAUSE", &ms, "WRITE"]).await {
                Ok(()) => {
                    if self.fence != Fence::Paused {
                        warn!(
                            shard = %shard,
                            redis = %redis,
                            "split-brain guard: paused writes on our master: not the connected lowest member"
                        );
                    }
                    self.fence = Fence::Paused;
                }
                Err(e) => {
                    error!(shard = %shard, redis = %redis, error = %e, "split-brain guard: CLIENT PAUSE failed");
                }
            }
        } else if self.fence != Fence::Open {
            match link.command(&["CLIENT", "UNPAUSE"]).await {
                Ok(()) => {
                    if self.fence == Fence::Paused {
                        info!(shard = %shard, redis = %redis, role = ?state.role, "split-brain guard: writes unpaused");
                    }
                    self.fence = Fence::Open;
                }
                Err(e) => {
                    error!(shard = %shard, redis = %redis, error = %e, "split-brain guard: CLIENT UNPAUSE failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(addr: &str, seq: u64) -> Member {
        Member {
            addr: addr.to_string(),
            seq,
            znode: format!("{addr}-{seq:010}"),
        }
    }

    #[test]
    fn writes_only_to_the_connected_lowest_member() {
        let members = [member("10.0.0.1:6379", 1), member("10.0.0.2:6379", 2)];
        let a = Some(members[0].znode.as_str());
        let b = Some(members[1].znode.as_str());
        assert!(writes_allowed(true, a, &members));
        assert!(!writes_allowed(false, a, &members), "connection lost");
        assert!(!writes_allowed(true, b, &members), "not the lowest");
        assert!(!writes_allowed(true, None, &members), "not registered");
        assert!(!writes_allowed(true, None, &[]), "no members");
    }
}
