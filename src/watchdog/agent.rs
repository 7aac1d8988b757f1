//! The watchdog's loop: every interval (and at once when the shard's
//! members or its control znode change) it checks its Redis, reads the
//! shard's line, applies [`decide`], serves a switchover asked of it, and
//! applies the split-brain guard ([`super::guard`]).
//!
//! One task does everything in order, so the Redis connection, the member
//! znode and the pause state have a single owner and no locks. Every
//! ZooKeeper request is bounded by a timeout, so a ZooKeeper that stops
//! answering never stops the health checks or the guard.

use super::config::Settings;
use super::connect_zk;
use super::guard::{writes_allowed, Guard};
use super::health::{split_addr, Failures, RedisLink, RedisState};
use super::membership::{decide, Action, Health, View};
use super::switchover::{
    answer_request, members_in_line, pause_until_caught_up, read_request, RequestState,
};
use crate::zk::layout::{child_path, member_prefix, Member, MemberData, Role};
use crate::zk::shutdown_requested;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::watch as signal;
use tokio::time::{Interval, MissedTickBehavior};
use tracing::{debug, error, info, warn};
use zookeeper_client as zk;

/// Member data is refreshed at most every this many intervals when only the
/// offset moved (a role or run_id change is written at once): fresh enough
/// for `shardproxy-admin status`, light on ZooKeeper.
const DATA_REFRESH_TICKS: u64 = 10;

/// How long shutdown waits for ZooKeeper to confirm the session is closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A pending one-shot ZooKeeper watch.
type WatchFuture = Pin<Box<dyn Future<Output = zk::WatchedEvent> + Send>>;

/// One ZooKeeper session and the watches set in it.
struct Session {
    /// The session lives on while disconnected, until it expires.
    client: zk::Client,
    /// Watch on the shard's children, re-armed after it fires.
    children: Option<WatchFuture>,
    /// Watch on the control znode, armed while we are the master.
    control: Option<WatchFuture>,
    /// The control znode existed when last looked at.
    control_exists: bool,
    /// Watch on the data of the lowest member we wait to follow, and its
    /// path: we follow as soon as it reports itself master.
    lowest: Option<WatchFuture>,
    lowest_path: String,
}

impl Session {
    /// Connected now: requests get answers.
    fn connected(&self) -> bool {
        self.client.state() == zk::SessionState::SyncConnected
    }
}

/// Our member znode.
struct Registration {
    name: String,
    /// The data last written.
    data: MemberData,
    /// The interval count when it was written.
    written_tick: u64,
}

/// The watchdog's state across sessions.
pub struct Agent {
    settings: Settings,
    redis: RedisLink,
    failures: Failures,
    health: Health,
    registered: Option<Registration>,
    /// We pointed our Redis at a master to join and have not registered.
    joining: bool,
    /// The shard's members as last read (ours included, strays not).
    members: Vec<Member>,
    /// The lowest member's address as last seen, for "old master" in logs.
    last_master: Option<String>,
    guard: Guard,
    /// The last reason for waiting, logged once.
    last_wait: Option<&'static str>,
    /// Failed attempts at a ZooKeeper session in a row.
    zk_failures: u32,
    ticks: u64,
}

/// Runs the watchdog until `shutdown` turns `true` (or its sender is
/// dropped); then closes the ZooKeeper session, which removes our member.
pub async fn run(settings: Settings, mut shutdown: signal::Receiver<bool>) {
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut agent = Agent::new(settings);
    info!(
        shard = %agent.settings.shard,
        redis = %agent.settings.redis,
        zk = %agent.settings.zk_hosts,
        "watchdog started"
    );
    loop {
        let client = tokio::select! {
            client = agent.connect() => client,
            _ = shutdown_requested(&mut shutdown) => return,
        };
        match client {
            Some(client) => {
                if agent.run_session(client, &mut ticker, &mut shutdown).await {
                    return;
                }
            }
            None => {
                tokio::select! {
                    _ = ticker.tick() => agent.offline_tick().await,
                    _ = shutdown_requested(&mut shutdown) => return,
                }
            }
        }
    }
}

impl Agent {
    fn new(settings: Settings) -> Agent {
        let redis = RedisLink::new(
            &settings.redis,
            settings.redis_auth.clone(),
            settings.interval.max(Duration::from_millis(250)),
        );
        // Renewed every interval: it runs out only if the watchdog stops.
        let guard = Guard::new(
            &settings.shard,
            &settings.redis,
            (settings.interval * 5).max(Duration::from_secs(3)),
        );
        Agent {
            failures: Failures::new(settings.down_after),
            settings,
            redis,
            health: Health::Failing,
            registered: None,
            joining: false,
            members: Vec::new(),
            last_master: None,
            guard,
            last_wait: None,
            zk_failures: 0,
            ticks: 0,
        }
    }

    /// Bound on each ZooKeeper request, so the loop keeps checking and
    /// guarding while ZooKeeper does not answer.
    fn op_timeout(&self) -> Duration {
        self.settings.interval.max(Duration::from_secs(1))
    }

    /// One attempt at a session. The first failure in a row is a warning,
    /// the next ones debug lines, so an outage does not flood the log.
    async fn connect(&mut self) -> Option<zk::Client> {
        let attempt = connect_zk(&self.settings.zk_hosts, Some(self.settings.session_timeout));
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

    /// Without a session: keep checking the Redis and keep it fenced.
    async fn offline_tick(&mut self) {
        self.ticks += 1;
        self.check_health(true).await;
        self.guard(false).await;
    }

    /// Serves one session until it is over (false) or shutdown (true).
    async fn run_session(
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
            tokio::select! {
                _ = ticker.tick() => self.step(&mut session, true).await,
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
                        warn!(shard = %self.settings.shard, redis = %self.settings.redis, "ZooKeeper connection lost");
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
                        self.guard(false).await;
                        return false;
                    }
                },
                _ = shutdown_requested(shutdown) => {
                    close(session.client).await;
                    info!(shard = %self.settings.shard, redis = %self.settings.redis, "watchdog stopped; left the shard");
                    return true;
                }
            }
        }
    }

    /// Check, read the line, act, guard.
    async fn step(&mut self, session: &mut Session, tick: bool) {
        if tick {
            self.ticks += 1;
        }
        self.check_health(tick).await;
        if session.connected() {
            if let Err(e) = self.membership(session).await {
                warn!(
                    shard = %self.settings.shard,
                    redis = %self.settings.redis,
                    error = %e,
                    "ZooKeeper request failed"
                );
            }
        }
        self.guard(session.connected()).await;
    }

    /// Runs the health check; only interval checks count towards down, so
    /// extra checks on watch events do not speed it up.
    async fn check_health(&mut self, tick: bool) {
        match self.redis.check().await {
            Ok(state) => {
                if self.failures.count() > 0 {
                    info!(shard = %self.settings.shard, redis = %self.settings.redis, "redis answers again");
                }
                self.failures.record(true);
                self.health = Health::Up(state);
            }
            Err(e) => {
                let was_down = self.failures.is_down();
                let down = if tick {
                    self.failures.record(false)
                } else {
                    was_down
                };
                let (shard, redis) = (&self.settings.shard, &self.settings.redis);
                if down && !was_down {
                    error!(shard = %shard, redis = %redis, error = %e, failures = self.failures.count(), "redis is down");
                } else if tick && self.failures.count() == 1 {
                    warn!(shard = %shard, redis = %redis, error = %e, "redis check failed");
                } else {
                    debug!(shard = %shard, redis = %redis, error = %e, "redis check failed");
                }
                self.health = if down { Health::Down } else { Health::Failing };
            }
        }
    }

    /// Reads the shard's line and applies the rules.
    async fn membership(&mut self, session: &mut Session) -> Result<(), zk::Error> {
        let names = self.read_children(session).await?;
        self.members = self.sort_out(session, &names).await?;
        let lowest_role = self.lowest_role(session).await?;
        let action = {
            let view = View {
                health: &self.health,
                members: &self.members,
                registered: self.registered.as_ref().map(|r| r.name.as_str()),
                registered_run_id: self.registered.as_ref().map(|r| r.data.run_id.as_str()),
                joining: self.joining,
                lowest_role,
            };
            decide(&view)
        };
        self.execute(session, action).await?;
        self.refresh_data(session).await?;
        if self.is_lowest() {
            self.serve_switchover(session).await?;
        }
        self.last_master = self.members.first().map(|m| m.addr.clone());
        Ok(())
    }

    /// The shard's children, re-arming the watch when it has fired.
    async fn read_children(&self, session: &mut Session) -> Result<Vec<String>, zk::Error> {
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
    /// create reply was lost); any other was left by an earlier run or
    /// session of this watchdog and is deleted, since our Redis has one
    /// place in line at most.
    async fn sort_out(
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
        for member in members_in_line(names) {
            if member.addr != self.settings.redis || Some(&member.znode) == ours.as_ref() {
                line.push(member);
                continue;
            }
            let path = child_path(&self.settings.shard, &member.znode);
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

    /// The role the lowest member reports, read only when we are about to
    /// follow it, with a watch so its promotion is seen at once. Data that
    /// is not ours (a member written by another tool) cannot say; it is
    /// taken for a master rather than waited on forever.
    async fn lowest_role(&self, session: &mut Session) -> Result<Option<Role>, zk::Error> {
        let (Some(lowest), Health::Up(state)) = (self.members.first(), &self.health) else {
            return Ok(None);
        };
        let ours = self.registered.as_ref().map(|r| r.name.as_str());
        if ours == Some(lowest.znode.as_str()) || state.follows(&lowest.addr) {
            return Ok(None);
        }
        let path = child_path(&self.settings.shard, &lowest.znode);
        let read = if session.lowest.is_some() && session.lowest_path == path {
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
            Ok((data, _)) => Ok(Some(
                serde_json::from_slice::<MemberData>(&data).map_or(Role::Master, |d| d.role),
            )),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn execute(&mut self, session: &Session, action: Action) -> Result<(), zk::Error> {
        if let Action::Wait(reason) = action {
            if self.last_wait != Some(reason) {
                info!(shard = %self.settings.shard, redis = %self.settings.redis, reason, "waiting");
                self.last_wait = Some(reason);
            }
            return Ok(());
        }
        self.last_wait = None;
        let Health::Up(state) = self.health.clone() else {
            if let Action::Leave(reason) = action {
                self.leave(session, reason.as_str()).await?;
            }
            return Ok(());
        };
        match action {
            Action::Steady | Action::Wait(_) => {}
            Action::Leave(reason) => self.leave(session, reason.as_str()).await?,
            Action::LeadEmptyShard => {
                if state.role != Role::Master && !self.replicaof_no_one().await {
                    return Ok(());
                }
                self.register(session, Role::Master).await?;
                info!(
                    shard = %self.settings.shard,
                    redis = %self.settings.redis,
                    old_master = %self.last_master.as_deref().unwrap_or("none"),
                    new_master = %self.settings.redis,
                    "shard was empty: registered as its master"
                );
            }
            Action::Join => {
                self.register(session, Role::Replica).await?;
                self.joining = false;
                let master = state.master_addr();
                info!(
                    shard = %self.settings.shard,
                    redis = %self.settings.redis,
                    old_master = %master,
                    new_master = %master,
                    "first sync done: joined the line as a replica"
                );
            }
            Action::Follow(master) => self.follow(&state, &master).await,
            Action::Promote => {
                if self.replicaof_no_one().await {
                    info!(
                        shard = %self.settings.shard,
                        redis = %self.settings.redis,
                        old_master = %self.last_master.as_deref().unwrap_or("none"),
                        new_master = %self.settings.redis,
                        "lowest member: promoted to master"
                    );
                    // Others follow us once our data says master.
                    self.refresh_data(session).await?;
                }
            }
        }
        Ok(())
    }

    /// Deletes our member znode (rule 5).
    async fn leave(&mut self, session: &Session, reason: &str) -> Result<(), zk::Error> {
        let Some(registration) = &self.registered else {
            return Ok(());
        };
        let path = child_path(&self.settings.shard, &registration.name);
        match self
            .bounded(session, session.client.delete(&path, None))
            .await
        {
            Ok(()) | Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
        let name = registration.name.clone();
        self.registered = None;
        let old_master = self.members.first().map(|m| m.addr.clone());
        self.members.retain(|m| m.znode != name);
        let new_master = self.members.first().map(|m| m.addr.as_str());
        warn!(
            shard = %self.settings.shard,
            redis = %self.settings.redis,
            reason,
            old_master = %old_master.as_deref().unwrap_or("none"),
            new_master = %new_master.unwrap_or("none"),
            "left the line"
        );
        Ok(())
    }

    /// Creates our EPHEMERAL_SEQUENTIAL member znode.
    async fn register(&mut self, session: &Session, role: Role) -> Result<(), zk::Error> {
        let Health::Up(state) = &self.health else {
            return Ok(());
        };
        let data = MemberData {
            addr: self.settings.redis.clone(),
            role,
            run_id: state.run_id.clone(),
            offset: state.offset,
        };
        let json = serde_json::to_vec(&data).unwrap_or_default();
        let prefix = member_prefix(&self.settings.shard, &self.settings.redis);
        let mode = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let (_, sequence) = self
            .bounded(session, session.client.create(&prefix, &json, &mode))
            .await?;
        let name = format!("{}-{sequence}", self.settings.redis);
        self.members.push(Member {
            addr: self.settings.redis.clone(),
            seq: u64::try_from(sequence.into_i64()).unwrap_or(u64::MAX),
            znode: name.clone(),
        });
        self.members.sort_by_key(|m| m.seq);
        self.registered = Some(Registration {
            name,
            data,
            written_tick: self.ticks,
        });
        Ok(())
    }

    /// `REPLICAOF NO ONE`; false (logged) if it failed.
    async fn replicaof_no_one(&mut self) -> bool {
        match self.redis.command(&["REPLICAOF", "NO", "ONE"]).await {
            Ok(()) => {
                if let Health::Up(state) = &mut self.health {
                    state.role = Role::Master;
                    state.master = None;
                }
                true
            }
            Err(e) => {
                error!(shard = %self.settings.shard, redis = %self.settings.redis, error = %e, "REPLICAOF NO ONE failed");
                false
            }
        }
    }

    /// `REPLICAOF <master>` (rules 3 and 4).
    async fn follow(&mut self, state: &RedisState, master: &str) {
        let Some((host, port)) = split_addr(master) else {
            return;
        };
        let port = port.to_string();
        if let Err(e) = self.redis.command(&["REPLICAOF", &host, &port]).await {
            error!(shard = %self.settings.shard, redis = %self.settings.redis, master, error = %e, "REPLICAOF failed");
            return;
        }
        let old_master = match state.role {
            Role::Master => self.settings.redis.clone(),
            Role::Replica => state.master_addr(),
        };
        if self.registered.is_none() {
            self.joining = true;
        }
        info!(
            shard = %self.settings.shard,
            redis = %self.settings.redis,
            old_master = %old_master,
            new_master = %master,
            joining = self.joining,
            "replicating from the master"
        );
        if let Health::Up(state) = &mut self.health {
            state.role = Role::Replica;
            state.master = Some((host, port.parse().unwrap_or_default()));
            state.link_up = false;
        }
    }

    /// Keeps our member data fresh: role and run_id at once, the offset
    /// every [`DATA_REFRESH_TICKS`] intervals.
    async fn refresh_data(&mut self, session: &Session) -> Result<(), zk::Error> {
        let (Some(registration), Health::Up(state)) = (&self.registered, &self.health) else {
            return Ok(());
        };
        let data = MemberData {
            addr: self.settings.redis.clone(),
            role: state.role,
            run_id: registration.data.run_id.clone(),
            offset: state.offset,
        };
        let old = &registration.data;
        let due = data.role != old.role
            || (data.offset != old.offset
                && self.ticks >= registration.written_tick + DATA_REFRESH_TICKS);
        if !due {
            return Ok(());
        }
        let path = child_path(&self.settings.shard, &registration.name);
        let json = serde_json::to_vec(&data).unwrap_or_default();
        match self
            .bounded(session, session.client.set_data(&path, &json, None))
            .await
        {
            // A vanished member is noticed on the next read of the line.
            Ok(_) | Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
        if let Some(registration) = &mut self.registered {
            registration.data = data;
            registration.written_tick = self.ticks;
        }
        Ok(())
    }

    fn is_lowest(&self) -> bool {
        writes_allowed(
            true,
            self.registered.as_ref().map(|r| r.name.as_str()),
            &self.members,
        )
    }

    /// As the master: acts on a switchover request for our member.
    async fn serve_switchover(&mut self, session: &mut Session) -> Result<(), zk::Error> {
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
        if request.state != RequestState::Pending || request.master != registration.name {
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
            max_pause,
            pause_for,
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

    /// Applies the split-brain guard to what the last check saw.
    async fn guard(&mut self, connected: bool) {
        let Health::Up(state) = &self.health else {
            return;
        };
        let registered = self.registered.as_ref().map(|r| r.name.as_str());
        let allowed = writes_allowed(connected, registered, &self.members);
        self.guard.apply(&mut self.redis, state, allowed).await;
    }

    /// Bounds a ZooKeeper request by [`Agent::op_timeout`], and cuts it
    /// short when the connection is lost: requests wait for a reconnection,
    /// and the guard must not.
    async fn bounded<T>(
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

/// Closes the session and waits (up to [`CLOSE_TIMEOUT`]) until ZooKeeper
/// confirms, so our member is gone when this returns.
async fn close(client: zk::Client) {
    let mut states = client.state_watcher();
    if states.peek_state().is_terminated() {
        return;
    }
    // The session task closes the session when the last Client is dropped.
    drop(client);
    let closed = async { while !states.changed().await.is_terminated() {} };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closed).await;
}
