//! The watchdog's ZooKeeper session: connecting, following the session's
//! state, the watches that wake the agent, and reading the shard's line.
//! Every request is bounded, so a ZooKeeper that stops answering never
//! stops the health checks or the guard.

use super::agent::{Agent, Registration};
use super::membership::{decide, Health, View};
use crate::zk::layout::{child_path, MemberData, Role};
use crate::zk::shutdown_requested;
use crate::zk::view::members_in_line;
use crate::zk::view::Member;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch as signal;
use tokio::time::Interval;
use tracing::{debug, info, warn};
use zookeeper_client as zk;

/// A pending one-shot ZooKeeper watch.
pub(super) type WatchFuture = Pin<Box<dyn Future<Output = zk::WatchedEvent> + Send>>;

/// One ZooKeeper session and the watches set in it.
pub(super) struct Session {
    /// The session lives on while disconnected, until it expires.
    pub(super) client: zk::Client,
    /// Watch on the shard's children, re-armed after it fires.
    pub(super) children: Option<WatchFuture>,
    /// Watch on the control znode, armed while we are the master.
    pub(super) control: Option<WatchFuture>,
    /// The control znode existed when last looked at.
    pub(super) control_exists: bool,
    /// Watch on the data of the lowest member we wait to follow, and its
    /// path: we follow as soon as it reports itself master.
    pub(super) lowest: Option<WatchFuture>,
    pub(super) lowest_path: String,
}

impl Session {
    /// Connected now: requests get answers.
    pub(super) fn connected(&self) -> bool {
        self.client.state() == zk::SessionState::SyncConnected
    }
}

impl Agent {
    /// Stops without closing the session: our member stays in line until
    /// the session expires, so a watchdog started again with the same
    /// arguments before then takes its place back (as a predecessor's
    /// successor) and the shard does not fail over. Stopped for good, the
    /// shard fails over when the session expires. A master's writes are
    /// paused until then: nobody guards it meanwhile, and if it is replaced
    /// it must not have acknowledged writes the new master never saw.
    pub(super) async fn stop_keeping_our_place(&mut self, session: Session) {
        let timeout = session.client.session_timeout();
        let master = matches!(&self.health, Health::Up(state) if state.role == Role::Master);
        let (shard, redis) = (&self.settings.shard, &self.settings.redis);
        if master && (self.is_lowest() || self.predecessor.is_some()) {
            let hold = timeout + self.settings.interval * 2 + Duration::from_secs(1);
            let ms = hold.as_millis().to_string();
            match self.redis.command(&["CLIENT", "PAUSE", &ms, "WRITE"]).await {
                Ok(()) => info!(shard = %shard, redis = %redis, pause_ms = hold.as_millis() as u64,
                    "writes paused until a restarted watchdog takes over or the session expires"),
                Err(e) => {
                    warn!(shard = %shard, redis = %redis, error = %e, "cannot pause writes before stopping")
                }
            }
        }
        info!(
            shard = %shard,
            redis = %redis,
            session_timeout_ms = timeout.as_millis() as u64,
            "watchdog stopped; our member stays until the session expires: start again with the same arguments before then to resume without a failover"
        );
        // Dropping the client would close the session and delete our
        // member at once; the process exits with the session open.
        std::mem::forget(session.client);
    }

    /// Check, read the line, act, guard.
    pub(super) async fn step(&mut self, session: &mut Session, tick: bool) {
        if tick {
            self.ticks += 1;
        }
        self.check_health(tick).await;
        if self.stands_by(tick).await {
            return;
        }
        if session.connected() {
            // Heard as of when we asked, not when the answer came: the
            // server may have last heard from us that long before.
            let asked = std::time::Instant::now();
            match self.membership(session).await {
                Ok(()) => self.last_heard = Some(asked),
                Err(e) => warn!(
                    shard = %self.settings.shard,
                    redis = %self.settings.redis,
                    error = %e,
                    "ZooKeeper request failed"
                ),
            }
        }
        self.guard(session.connected()).await;
    }

    /// Reads the shard's line and applies the rules.
    pub(super) async fn membership(&mut self, session: &mut Session) -> Result<(), zk::Error> {
        if !self.unclaimed_elsewhere(session).await? {
            return Ok(());
        }
        let names = self.read_children(session).await?;
        self.members = self.sort_out(session, &names).await?;
        if !self.members.is_empty() {
            self.empty_since = None;
        }
        let lowest_role = self.lowest_role(session).await?;
        let action = {
            let view = View {
                health: &self.health,
                members: &self.members,
                registered: self.registered.as_ref().map(|r| r.name.as_str()),
                registered_run_id: self.registered.as_ref().map(|r| r.data.run_id.as_str()),
                joining: self.joining,
                lowest_role,
                predecessor: self.predecessor.is_some(),
                frozen_replica: self.frozen_replica(),
            };
            decide(&view)
        };
        let registered_before = self.registered.as_ref().map(|r| r.name.clone());
        self.execute(session, action).await?;
        let registered_now = self.registered.as_ref().map(|r| &r.name);
        if registered_now.is_some() && registered_now != registered_before.as_ref() {
            // Registering put our member into the line read before it.
            // Another watchdog may have registered meanwhile, lower in
            // line: after ZooKeeper expires every session at once (a long
            // pause), both watchdogs of a shard register together. The
            // guard must not open writes on a line that is not true: a
            // review saw a master unpaused for a millisecond, its held
            // writes acknowledged, then lost as it followed the replica
            // that had registered first.
            let names = self.read_children(session).await?;
            self.members = self.sort_out(session, &names).await?;
        }
        self.refresh_data(session).await?;
        if self.is_lowest() {
            self.record_history(session).await?;
        }
        if self.is_lowest() {
            self.serve_switchover(session).await?;
        }
        self.last_master = self.members.first().map(|m| m.addr.clone());
        Ok(())
    }

    /// Bound on each ZooKeeper request, so the loop keeps checking and
    /// guarding while ZooKeeper does not answer.
    pub(super) fn op_timeout(&self) -> Duration {
        self.settings.interval.max(Duration::from_secs(1))
    }

    /// One attempt at a session. The first failure in a row is a warning,
    /// the next ones debug lines, so an outage does not flood the log.
    pub(super) async fn connect(&mut self) -> Option<zk::Client> {
        let attempt = crate::zk::connect_once(
            &self.settings.zk_hosts,
            Some(self.settings.session_timeout),
            self.settings.zk_auth.as_ref(),
        );
        let result = tokio::time::timeout(self.op_timeout(), attempt)
            .await
            .unwrap_or(Err(zk::Error::Timeout));
        let (shard, redis, hosts) = (
            &self.settings.shard,
            &self.settings.redis,
            &self.settings.zk_hosts,
        );
        match result {
            Ok(client) => {
                info!(
                    shard = %shard,
                    redis = %redis,
                    session = %client.session_id(),
                    timeout_ms = client.session_timeout().as_millis() as u64,
                    "ZooKeeper session established"
                );
                self.zk_failures = 0;
                self.session_timeout = client.session_timeout();
                self.last_heard = Some(std::time::Instant::now());
                Some(client)
            }
            Err(e) => {
                self.zk_failures += 1;
                if self.zk_failures == 1 {
                    warn!(shard = %shard, redis = %redis, zk = %hosts, error = %e, "cannot connect to ZooKeeper; retrying every interval");
                } else {
                    debug!(shard = %shard, redis = %redis, zk = %hosts, error = %e, attempts = self.zk_failures, "cannot connect to ZooKeeper");
                }
                None
            }
        }
    }

    /// Without a session: keep checking the Redis and keep it fenced,
    /// unless another watchdog watches it (review: one started with an
    /// unreachable `--zk` beside a healthy master's watchdog paused every
    /// write of the shard for as long as it ran).
    pub(super) async fn offline_tick(&mut self) {
        self.ticks += 1;
        self.check_health(true).await;
        if self.stands_by(true).await {
            return;
        }
        self.guard(false).await;
    }

    /// Serves one session until it is over (false) or shutdown (true).
    pub(super) async fn run_session(
        &mut self,
        client: zk::Client,
        ticker: &mut Interval,
        shutdown: &mut signal::Receiver<bool>,
    ) -> bool {
        let mut states = client.state_watcher();
        let mut session = Session {
            client,
            children: None,
            control: None,
            control_exists: false,
            lowest: None,
            lowest_path: String::new(),
        };
        self.step(&mut session, false).await;
        loop {
            let guard_due = self.guard_due(session.connected());
            tokio::select! {
                _ = ticker.tick() => self.step(&mut session, true).await,
                _ = sleep_until_some(guard_due) => self.guard(false).await,
                _ = fired(&mut session.children) => {
                    session.children = None;
                    self.step(&mut session, false).await;
                }
                _ = fired(&mut session.control) => {
                    session.control = None;
                    self.step(&mut session, false).await;
                }
                _ = fired(&mut session.lowest) => {
                    session.lowest = None;
                    self.step(&mut session, false).await;
                }
                state = states.changed() => match state {
                    zk::SessionState::SyncConnected => {
                        info!(shard = %self.settings.shard, redis = %self.settings.redis, "ZooKeeper reconnected");
                        self.step(&mut session, false).await;
                    }
                    zk::SessionState::Disconnected | zk::SessionState::ConnectedReadOnly => {
                        let grace_ms = self.surely_alive_until().map_or(0, |until| {
                            until.saturating_duration_since(std::time::Instant::now()).as_millis() as u64
                        });
                        warn!(shard = %self.settings.shard, redis = %self.settings.redis, grace_ms,
                            "ZooKeeper connection lost; writes go on while the session cannot have expired");
                        self.guard(false).await;
                    }
                    over => {
                        warn!(
                            shard = %self.settings.shard,
                            redis = %self.settings.redis,
                            state = %over,
                            "ZooKeeper session over: our member is gone"
                        );
                        self.registered = None;
                        self.last_heard = None;
                        self.guard(false).await;
                        return false;
                    }
                },
                _ = shutdown_requested(shutdown) => {
                    self.stop_keeping_our_place(session).await;
                    return true;
                }
            }
        }
    }

    /// The shard's children, re-arming the watch when it has fired.
    pub(super) async fn read_children(
        &self,
        session: &mut Session,
    ) -> Result<Vec<String>, zk::Error> {
        let shard = &self.settings.shard;
        if session.children.is_some() {
            return self
                .bounded(session, session.client.list_children(shard))
                .await;
        }
        let (names, watcher) = self
            .bounded(session, session.client.list_and_watch_children(shard))
            .await?;
        session.children = Some(Box::pin(watcher.changed()));
        Ok(names)
    }

    /// The line: members sorted by sequence, with members of our address
    /// sorted out. One of ours that this session created is adopted (its
    /// create reply was lost). One at the head of the line while our Redis
    /// is master is a predecessor's (the old watchdog's during a takeover,
    /// or this watchdog's before a restart, whose session still lives): it
    /// is kept, since deleting it would fail the shard over, and we take
    /// its place when it goes. Any other was left by an earlier run or
    /// session of this watchdog and is deleted, since our Redis has one
    /// place in line at most.
    pub(super) async fn sort_out(
        &mut self,
        session: &Session,
        names: &[String],
    ) -> Result<Vec<Member>, zk::Error> {
        let ours = self.registered.as_ref().map(|r| r.name.clone());
        if let Some(name) = &ours {
            if !names.contains(name) {
                warn!(shard = %self.settings.shard, redis = %self.settings.redis, member = %name, "our member znode was deleted");
                self.registered = None;
            }
        }
        let mut line = Vec::new();
        let in_line = members_in_line(names);
        let head = in_line.first().map(|m| m.znode.clone());
        let our_redis_is_master =
            matches!(&self.health, Health::Up(state) if state.role == Role::Master);
        if let Some(first) = in_line.first() {
            if first.addr != self.settings.redis
                && our_redis_is_master
                && self.names_our_redis(session, first).await?
            {
                // The fleet knows our Redis by that name: the proxies route
                // to it, and the replicas' watchdogs know the master by it
                // when it registers again. Ours from now on; the rules for
                // a member of our Redis apply to it (a restarted Redis's is
                // deleted, so the shard fails over).
                warn!(shard = %self.settings.shard, redis = %self.settings.redis, known_as = %first.addr,
                    "the shard's line knows our Redis under another address: using that one");
                self.settings.redis = first.addr.clone();
            }
        }
        let had_predecessor = self.predecessor.take();
        // Another Redis in line can take over from a run of ours that is
        // gone; without one, the shard would stay down.
        let another_in_line = in_line.iter().any(|m| m.addr != self.settings.redis);
        self.ephemeral.retain(|name, _| names.contains(name));
        for member in in_line {
            if member.addr != self.settings.redis {
                if self.made_by_a_watchdog(session, &member.znode).await? {
                    line.push(member);
                }
                continue;
            }
            if Some(&member.znode) == ours.as_ref() {
                line.push(member);
                continue;
            }
            let path = child_path(&self.settings.shard, &member.znode);
            if Some(&member.znode) == head.as_ref() && our_redis_is_master {
                let known = had_predecessor.as_ref() == Some(&member.znode);
                let same = if known {
                    Some(true)
                } else {
                    self.same_run_of_our_redis(session, &path).await?
                };
                match same {
                    // Gone since the listing.
                    None => continue,
                    // Our Redis restarted since that member was registered
                    // (its watchdog died with it): the member names a Redis
                    // that is gone, as its watchdog would have said by
                    // deleting it (rule 5). Kept, it would hand the shard
                    // to the restarted, empty Redis once its session
                    // expired (review: 26,813 acknowledged writes lost).
                    Some(false) if another_in_line => {
                        warn!(shard = %self.settings.shard, redis = %self.settings.redis, member = %member.znode,
                        "a member at the head names an earlier run of our Redis (another run_id): \
                         it restarted since; deleting the member so the shard fails over")
                    }
                    Some(same) => {
                        if !same {
                            // Nobody else could lead: deleted, the member
                            // would leave the shard down for good, even
                            // with the data kept (an AOF) and no other
                            // history to protect (review). Taken over, as
                            // before.
                            warn!(shard = %self.settings.shard, redis = %self.settings.redis, member = %member.znode,
                                "a member at the head names an earlier run of our Redis (another run_id), \
                                 and no other Redis is in line: taking its place with our Redis as it is");
                        } else if !known {
                            info!(shard = %self.settings.shard, redis = %self.settings.redis, member = %member.znode,
                                "a predecessor's member holds our Redis's place as master; keeping it and taking over when it goes");
                        }
                        self.predecessor = Some(member.znode.clone());
                        line.push(member);
                        continue;
                    }
                }
            }
            let (data, stat) = match self.bounded(session, session.client.get_data(&path)).await {
                Ok(found) => found,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(e),
            };
            if stat.ephemeral_owner == session.client.session_id().0 && self.registered.is_none() {
                let data: Option<MemberData> = serde_json::from_slice(&data).ok();
                if let Some(data) = data {
                    info!(shard = %self.settings.shard, redis = %self.settings.redis, member = %member.znode, "adopted our member znode");
                    self.registered = Some(Registration {
                        name: member.znode.clone(),
                        data,
                        written_tick: self.ticks,
                    });
                    line.push(member);
                    continue;
                }
            }
            warn!(
                shard = %self.settings.shard,
                redis = %self.settings.redis,
                member = %member.znode,
                "deleting a member of our Redis left by an earlier session"
            );
            match self
                .bounded(session, session.client.delete(&path, None))
                .await
            {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(line)
    }

    /// Whether the member at `path` was registered for our Redis as it runs
    /// now (the `run_id` in its data); `None` when it is gone. Data that
    /// does not say is taken for ours, as before the check.
    async fn same_run_of_our_redis(
        &self,
        session: &Session,
        path: &str,
    ) -> Result<Option<bool>, zk::Error> {
        let Health::Up(state) = &self.health else {
            return Ok(Some(true));
        };
        let data = match self.bounded(session, session.client.get_data(path)).await {
            Ok((data, _)) => data,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(e),
        };
        let registered = MemberData::registered_run_id(&data);
        Ok(Some(registered.is_none_or(|id| id == state.run_id)))
    }

    /// Whether `member`, under another address than ours, is our Redis:
    /// both addresses resolve to the same socket address (`localhost:P`
    /// and `127.0.0.1:P`), or its watchdog registered it with our Redis's
    /// `run_id` (a name that resolves elsewhere from here). Review: a
    /// master's watchdog restarted with the other spelling followed that
    /// member, making its Redis a replica of itself, the shard read-only;
    /// with the Redis restarted empty meanwhile, its replica once synced
    /// from it and lost every key.
    async fn names_our_redis(&self, session: &Session, member: &Member) -> Result<bool, zk::Error> {
        let Health::Up(state) = &self.health else {
            return Ok(false);
        };
        if same_socket(&member.addr, &self.settings.redis).await {
            return Ok(true);
        }
        let path = child_path(&self.settings.shard, &member.znode);
        let data = match self.bounded(session, session.client.get_data(&path)).await {
            Ok((data, _)) => data,
            Err(zk::Error::NoNode) => return Ok(false),
            Err(e) => return Err(e),
        };
        let registered = MemberData::registered_run_id(&data);
        Ok(registered.is_some_and(|id| id == state.run_id))
    }

    /// False for a member znode that is not ephemeral: made by hand, not
    /// by a watchdog (whose members live and die with its session). Such
    /// a member is left out of the line, as the proxies leave it out: at
    /// its head it would pause the real master's writes and send the
    /// proxies to whatever address it names (review: every request of the
    /// shard refused until it was deleted). Logged once per member.
    async fn made_by_a_watchdog(
        &mut self,
        session: &Session,
        znode: &str,
    ) -> Result<bool, zk::Error> {
        if let Some(&ephemeral) = self.ephemeral.get(znode) {
            return Ok(ephemeral);
        }
        let path = child_path(&self.settings.shard, znode);
        let Some(stat) = self
            .bounded(session, session.client.check_stat(&path))
            .await?
        else {
            return Ok(false);
        };
        let ephemeral = stat.ephemeral_owner != 0;
        if !ephemeral {
            tracing::error!(shard = %self.settings.shard, member = %znode,
                "a member that is not ephemeral, so no watchdog wrote it: left out of the line \
                 (delete it if it was made by hand)");
        }
        self.ephemeral.insert(znode.to_string(), ephemeral);
        Ok(ephemeral)
    }

    /// The role the lowest member reports, read only when we are about to
    /// follow it, with a watch so its promotion is seen at once. Data that
    /// is not ours (a member written by another watchdog) cannot say; it is
    /// taken for a master rather than waited on forever. A member that is
    /// not ephemeral was written by hand, not by a watchdog: it is never
    /// followed (`None`), since following it could wipe our data.
    pub(super) async fn lowest_role(
        &self,
        session: &mut Session,
    ) -> Result<Option<Role>, zk::Error> {
        let (Some(lowest), Health::Up(state)) = (self.members.first(), &self.health) else {
            return Ok(None);
        };
        let ours = self.registered.as_ref().map(|r| r.name.as_str());
        if ours == Some(lowest.znode.as_str()) || state.follows(&lowest.addr) {
            return Ok(None);
        }
        let path = child_path(&self.settings.shard, &lowest.znode);
        let watching = session.lowest.is_some() && session.lowest_path == path;
        let read = if watching {
            self.bounded(session, session.client.get_data(&path)).await
        } else {
            let watched = self
                .bounded(session, session.client.get_and_watch_data(&path))
                .await;
            watched.map(|(data, stat, watcher)| {
                session.lowest = Some(Box::pin(watcher.changed()));
                session.lowest_path = path;
                (data, stat)
            })
        };
        match read {
            Ok((_, stat)) if stat.ephemeral_owner == 0 => {
                if !watching {
                    tracing::error!(member = %lowest.znode, shard = %self.settings.shard,
                        "the lowest member is not ephemeral, so no watchdog wrote it: \
                         not following it (delete it if it was made by hand)");
                }
                Ok(None)
            }
            Ok((data, _)) => Ok(Some(
                serde_json::from_slice::<MemberData>(&data).map_or(Role::Master, |d| d.role),
            )),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bounds a ZooKeeper request by [`Agent::op_timeout`], and cuts it
    /// short when the connection is lost: requests wait for a reconnection,
    /// and the guard must not.
    pub(super) async fn bounded<T>(
        &self,
        session: &Session,
        request: impl Future<Output = Result<T, zk::Error>>,
    ) -> Result<T, zk::Error> {
        let mut states = session.client.state_watcher();
        let lost = async move {
            while states.peek_state() == zk::SessionState::SyncConnected {
                states.changed().await;
            }
        };
        tokio::select! {
            result = request => result,
            _ = lost => Err(zk::Error::ConnectionLoss),
            _ = tokio::time::sleep(self.op_timeout()) => Err(zk::Error::Timeout),
        }
    }
}

/// Resolves when the watch fires; never while there is none.
async fn fired(watch: &mut Option<WatchFuture>) -> zk::WatchedEvent {
    match watch {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`; for ever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// True when `a` and `b` (`host:port`) resolve to a common socket address.
/// A name that does not resolve, or not within half a second (a step of
/// the watchdog waits for it), matches nothing.
async fn same_socket(a: &str, b: &str) -> bool {
    tokio::time::timeout(Duration::from_millis(500), resolve_to_same(a, b))
        .await
        .unwrap_or(false)
}

async fn resolve_to_same(a: &str, b: &str) -> bool {
    let resolve = |addr: &str| {
        let addr = addr.to_string();
        async move {
            match tokio::net::lookup_host(addr).await {
                Ok(found) => found.collect::<Vec<_>>(),
                Err(_) => Vec::new(),
            }
        }
    };
    let (a, b) = (resolve(a).await, resolve(b).await);
    a.iter().any(|addr| b.contains(addr))
}
