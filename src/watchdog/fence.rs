//! Fencing the old master at a promotion: a master whose watchdog died
//! but whose Redis did not would otherwise stay writable, and a proxy that
//! still routes to it (cut off from ZooKeeper, or slower to see the new
//! line) would have writes acknowledged there and lost.

use super::agent::Agent;
use super::health::{replication_at, split_addr, RedisState};
use crate::redis_client::RedisConn;
use crate::zk::layout::Role;
use std::time::Duration;
use tracing::{error, info, warn};

/// How long a promotion waits for our replica to make progress applying
/// what a fenced old master holds.
const FENCE_CATCH_UP: Duration = Duration::from_secs(1);
/// How long a fenced old master that holds writes our replica lacks stays
/// paused for writes: until an operator has looked.
const FENCE_HOLD: Duration = Duration::from_secs(3600);
/// How long after a promotion a silent old master is watched for, to be
/// fenced when it answers again (a frozen host woken up).
const FENCE_LATER_FOR: Duration = Duration::from_secs(600);

/// What became of the old master before a promotion.
pub(super) enum OldMaster {
    /// Paused and caught up with: to be made our replica.
    Fenced(RedisConn),
    /// It did not answer: watched for after the promotion.
    Silent,
    /// Not ours to make a replica: not a master, another history, or
    /// holding writes our replica lacks (then held paused).
    LeftAlone,
}

impl Agent {
    /// Before promoting our replica: the old master, if it still answers
    /// as a master on the history we replicate (its watchdog died or hung,
    /// its Redis did not), is fenced, since a proxy that still routes to
    /// it (cut off from ZooKeeper, or slower to see the new line) would
    /// have writes acknowledged there and lost (review: up to 5,195 with a
    /// partitioned proxy). Its writes are paused and our replica applies
    /// what it holds, for as long as it makes progress (at most two
    /// session timeouts). Caught up, the old master is returned, to be
    /// made our replica after the promotion ([`Agent::demote_old_master`]):
    /// the writes it held then fail with `-READONLY`. Not caught up, it is
    /// held paused for [`FENCE_HOLD`] and never made our replica: a full
    /// sync would wipe the only copy of what our replica lacks (review:
    /// 4,819 acknowledged writes gone from both). One on another history
    /// (restarted, or another Redis on its address) is left alone; one
    /// that does not answer now is fenced later ([`Agent::fence_later`]).
    pub(super) async fn fence_old_master(&mut self, ours: &RedisState) -> OldMaster {
        let old = ours.master_addr();
        let timeout = self.settings.interval.max(Duration::from_millis(500));
        let Some((mut conn, theirs)) =
            replication_at(&old, self.settings.redis_auth.as_deref(), timeout).await
        else {
            return OldMaster::Silent;
        };
        if theirs.role != Role::Master || theirs.replid != ours.replid {
            return OldMaster::LeftAlone;
        }
        let most = self.settings.session_timeout * 2;
        let pause_ms = (most + FENCE_CATCH_UP).as_millis().to_string();
        if let Err(e) = conn.ok(&["CLIENT", "PAUSE", &pause_ms, "WRITE"]).await {
            warn!(shard = %self.settings.shard, redis = %self.settings.redis, old_master = %old,
                error = %e, "the old master still answers but could not be paused");
            return OldMaster::LeftAlone;
        }
        warn!(shard = %self.settings.shard, redis = %self.settings.redis, old_master = %old,
            "the old master still answers as a master: its writes are paused before the promotion");
        let started = tokio::time::Instant::now();
        let (mut applied, mut progressed) = (0, started);
        loop {
            // What it holds of our history, read after the pause took.
            let Ok(Some(theirs)) = conn
                .text(&["INFO", "replication"])
                .await
                .map(|info| RedisState::parse("", &info))
            else {
                return OldMaster::Silent;
            };
            let now = self.redis.replication().await.map_or(0, |s| s.offset);
            if now >= theirs.offset {
                return OldMaster::Fenced(conn);
            }
            if now > applied {
                (applied, progressed) = (now, tokio::time::Instant::now());
            }
            if progressed.elapsed() >= FENCE_CATCH_UP || started.elapsed() >= most {
                let (shard, new) = (&self.settings.shard, &self.settings.redis);
                hold(conn, shard, new, theirs.offset, now).await;
                return OldMaster::LeftAlone;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// After our promotion: the fenced old master replicates from us.
    pub(super) async fn demote_old_master(&self, old: RedisConn) {
        demote(old, &self.settings.redis, &self.settings.shard).await;
    }

    /// After a promotion whose old master did not answer (frozen, or its
    /// host unreachable): watches its address for [`FENCE_LATER_FOR`] and
    /// fences it once it answers as a master of the history we took over.
    /// Holding nothing we lack, it is made our replica; holding more
    /// (writes it took on waking), its writes are held paused. Review: a
    /// master frozen at the promotion woke up writable, and a proxy cut
    /// off from ZooKeeper had 5,363 writes acknowledged there and lost.
    pub(super) fn fence_later(&self, ours: &RedisState) {
        let old = ours.master_addr();
        let (history, reach) = (ours.replid.clone(), ours.offset);
        let auth = self.settings.redis_auth.clone();
        let (new, shard) = (self.settings.redis.clone(), self.settings.shard.clone());
        let every = self.settings.interval.max(Duration::from_millis(100));
        let timeout = self.settings.interval.max(Duration::from_millis(500));
        warn!(shard = %shard, redis = %new, old_master = %old,
            "the old master did not answer: it is fenced when it does");
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + FENCE_LATER_FOR;
            while tokio::time::Instant::now() < until {
                tokio::time::sleep(every).await;
                let Some((conn, theirs)) = replication_at(&old, auth.as_deref(), timeout).await
                else {
                    continue;
                };
                if theirs.role != Role::Master || theirs.replid != history {
                    return;
                }
                if theirs.offset <= reach {
                    demote(conn, &new, &shard).await;
                } else {
                    hold(conn, &shard, &new, theirs.offset, reach).await;
                }
                return;
            }
        });
    }
}

/// Holds the old master's writes paused for [`FENCE_HOLD`] rather than
/// make it our replica: it holds writes (to `theirs`) we never got (we
/// are at `ours`), which a full sync from us would wipe.
async fn hold(mut old: RedisConn, shard: &str, new: &str, theirs: u64, ours: u64) {
    let hold_ms = FENCE_HOLD.as_millis().to_string();
    let held = old.ok(&["CLIENT", "PAUSE", &hold_ms, "WRITE"]).await;
    error!(shard = %shard, redis = %new, old_master = %old.addr(), their_offset = theirs, ours,
        held = held.is_ok(), hold_secs = FENCE_HOLD.as_secs(),
        "the old master holds writes we never got: it is not made our replica (that would \
         wipe them) and its writes stay paused: copy what it holds, then CLIENT UNPAUSE it or \
         start its watchdog");
}

/// `REPLICAOF new` on the old master.
async fn demote(mut old: RedisConn, new: &str, shard: &str) {
    let Some((host, port)) = split_addr(new) else {
        return;
    };
    match old.ok(&["REPLICAOF", &host, &port.to_string()]).await {
        Ok(()) => info!(shard = %shard, redis = %new, old_master = %old.addr(),
            "the old master now replicates from us"),
        Err(e) => warn!(shard = %shard, redis = %new, old_master = %old.addr(), error = %e,
            "could not make the old master replicate from us; its pause runs out by itself"),
    }
}
