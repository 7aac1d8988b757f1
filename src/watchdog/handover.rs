//! The master's side of a planned switchover: when a request names our
//! member, pause writes, wait for the next in line to catch up, leave the
//! line, and answer the request ([`super::switchover`] has the protocol).

use super::agent::Agent;
use super::membership::Health;
use super::session::Session;
use super::switchover::{
    answer_request, pause_until_caught_up, read_request, take_request, RequestState,
};
use crate::zk::layout::{child_path, Role};
use std::time::{Duration, Instant};
use tracing::{info, warn};
use zookeeper_client as zk;

impl Agent {
    /// As the master: acts on a switchover request for our member.
    pub(super) async fn serve_switchover(
        &mut self,
        session: &mut Session,
    ) -> Result<(), zk::Error> {
        let control = self.settings.control.clone();
        if session.control.is_none() {
            let (stat, watcher) = self
                .bounded(session, session.client.check_and_watch_stat(&control))
                .await?;
            session.control = Some(Box::pin(watcher.changed()));
            session.control_exists = stat.is_some();
        }
        let (Some(registration), Health::Up(state)) = (&self.registered, &self.health) else {
            return Ok(());
        };
        if !session.control_exists || state.role != Role::Master {
            return Ok(());
        }
        let Some((request, version)) = self
            .bounded(session, read_request(&session.client, &control))
            .await?
        else {
            return Ok(());
        };
        if request.master != registration.name {
            return Ok(());
        }
        if request.state == RequestState::Started {
            // Taken by this member before, and never answered (the answer
            // was lost to a ZooKeeper outage): a switchover runs within
            // one step, so it is over, and this member is still the
            // master: nothing changed. Answered so that it no longer
            // holds the shard's next failover off (review: `Busy` for
            // ever).
            let answer = request.aborted("the watchdog's answer was lost; nothing changed");
            return self
                .bounded(
                    session,
                    answer_request(&session.client, &control, &answer, version),
                )
                .await;
        }
        if request.state != RequestState::Pending {
            return Ok(());
        }
        let me = registration.name.clone();
        let Some(next) = self.members.get(1).map(|m| m.addr.clone()) else {
            let answer = request.aborted("no replica in line");
            return self
                .bounded(
                    session,
                    answer_request(&session.client, &control, &answer, version),
                )
                .await;
        };
        let Some(version) = self
            .bounded(
                session,
                take_request(&session.client, &control, &request, version),
            )
            .await?
        else {
            return Ok(());
        };
        let (shard, redis) = (self.settings.shard.clone(), self.settings.redis.clone());
        info!(shard = %shard, redis = %redis, old_master = %redis, new_master = %next, "switchover requested");
        let max_pause = Duration::from_millis(request.max_pause_ms);
        let pause_for = max_pause + self.guard.pause();
        let started = Instant::now();
        let caught_up = pause_until_caught_up(
            &mut self.redis,
            &redis,
            &next,
            self.settings.redis_auth.as_deref(),
            (max_pause, pause_for),
            // Its watchdog checks it every interval, as ours does.
            (self.settings.interval * 3).max(Duration::from_secs(2)),
        )
        .await;
        let answer = match caught_up {
            Ok(offset) => {
                self.guard.paused();
                let path = child_path(&shard, &me);
                match self
                    .bounded(session, session.client.delete(&path, None))
                    .await
                {
                    Ok(()) | Err(zk::Error::NoNode) => {
                        let pause = started.elapsed();
                        self.registered = None;
                        self.members.retain(|m| m.znode != me);
                        info!(
                            shard = %shard,
                            redis = %redis,
                            old_master = %redis,
                            new_master = %next,
                            pause_ms = pause.as_millis() as u64,
                            offset,
                            "switchover: replica caught up; left the line"
                        );
                        request.done(&next, pause, offset)
                    }
                    Err(e) => {
                        let _ = self.redis.command(&["CLIENT", "UNPAUSE"]).await;
                        self.guard.opened();
                        request.aborted(&format!("cannot leave the line: {e}"))
                    }
                }
            }
            Err(reason) => {
                warn!(shard = %shard, redis = %redis, old_master = %redis, new_master = %next, reason = %reason, "switchover aborted");
                request.aborted(&reason)
            }
        };
        self.bounded(
            session,
            answer_request(&session.client, &control, &answer, version),
        )
        .await
    }
}
