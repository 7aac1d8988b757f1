//! Carrying out what [`super::membership::decide`] chose: registering,
//! leaving, following, promoting, and keeping our member data fresh.

use super::agent::{Agent, RecordedHistory, Registration};
use super::fence::OldMaster;
use super::health::{probe, split_addr, RedisState};
use super::membership::{Action, Health};
use super::session::Session;
use crate::zk::layout::{child_path, member_prefix, MasterRecord, MemberData, Role, ShardData};
use crate::zk::view::Member;
use std::time::Duration;
use tracing::{debug, error, info, warn};
use zookeeper_client as zk;

/// Member data is refreshed at most every this many intervals when only the
/// offset moved (a role or run_id change is written at once): fresh enough
/// for `shardproxy-admin status`, light on ZooKeeper.
const DATA_REFRESH_TICKS: u64 = 10;

/// The master's history offset in the shard's data is written again every
/// this many intervals while it moves. A Redis restarted at the master's
/// address from a snapshot (a `dump.rdb` its last full sync left) holds
/// the history up to that snapshot: with the offset 10 intervals old, one
/// taken before the last 10 s of writes passed for the whole history and
/// led the emptied shard, every write since lost (review). One ZooKeeper
/// write per interval per shard taking writes.
const HISTORY_REFRESH_TICKS: u64 = 1;

impl Agent {
    pub(super) async fn execute(
        &mut self,
        session: &Session,
        action: Action,
    ) -> Result<(), zk::Error> {
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
                if self.waits_for_the_masters_watchdog(&state) {
                    return Ok(());
                }
                if !self.may_lead_empty_shard(session, &state).await? {
                    return Ok(());
                }
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
            Action::Succeed => {
                self.register(session, Role::Master).await?;
                info!(
                    shard = %self.settings.shard,
                    redis = %self.settings.redis,
                    old_master = %self.settings.redis,
                    new_master = %self.settings.redis,
                    "registered behind a predecessor's member of our Redis; taking its place when it goes"
                );
            }
            Action::StepBack => {
                self.leave(session, "the master registered again behind us")
                    .await?;
                self.register(session, Role::Replica).await?;
                info!(
                    shard = %self.settings.shard,
                    redis = %self.settings.redis,
                    master = %state.master_addr(),
                    "registered again behind the master's new member"
                );
            }
            Action::Promote => {
                if let Some((better, why)) = self.better_candidate(&state).await {
                    info!(
                        shard = %self.settings.shard,
                        redis = %self.settings.redis,
                        better = %better,
                        why = %why,
                        "lowest member, but a replica with more of the master's data is in line: stepping back so it is promoted"
                    );
                    self.leave(session, "a better replica is in line").await?;
                    self.register(session, Role::Replica).await?;
                    return Ok(());
                }
                if let Some(record) = self.another_history(session, &state).await? {
                    let name = self.settings.shard.rsplit('/').next().unwrap_or_default();
                    error!(
                        shard = %self.settings.shard,
                        redis = %self.settings.redis,
                        last_master = %record.addr,
                        recorded = %record.replid,
                        ours = %state.replid,
                        recorded_keys = record.keys.unwrap_or_default(),
                        "not promoting: this replica's data is not the shard's history, and holds \
                         fewer than half the keys its master was recorded with (a full sync from a \
                         master restarted without its data at the same address replaced it); \
                         leaving the line. Bring back a Redis that holds the history, or accept \
                         the loss with `shardproxy-admin promote {name} <addr> --force`"
                    );
                    self.leave(session, "its data is not the shard's history")
                        .await?;
                    return Ok(());
                }
                if !state.in_sync(self.stale_link()) || self.behind_since.is_some() {
                    // Nobody in line has the failed master's last writes:
                    // promoting ours would drop them without a word. The
                    // shard waits, empty, for its master to come back, or
                    // for an operator to accept the loss
                    // (`shardproxy-admin promote --force`).
                    error!(
                        shard = %self.settings.shard,
                        redis = %self.settings.redis,
                        old_master = %self.last_master.as_deref().unwrap_or("none"),
                        behind_secs = self.behind_since.map(|t| t.elapsed().as_secs()),
                        link_down_secs = ?state.link_down_secs,
                        "not promoting: this replica lacks writes the failed master acknowledged \
                         (its link was down, or a full sync ran, while the master answered) and no \
                         replica in line has them; leaving the line. Restart the old master, or \
                         accept the loss with `shardproxy-admin promote <shard> <addr> --force`"
                    );
                    self.leave(session, "not in sync with the failed master")
                        .await?;
                    return Ok(());
                }
                let fenced = self.fence_old_master(&state).await;
                if self.replicaof_no_one().await {
                    info!(
                        shard = %self.settings.shard,
                        redis = %self.settings.redis,
                        old_master = %self.last_master.as_deref().unwrap_or("none"),
                        new_master = %self.settings.redis,
                        "lowest member: promoted to master"
                    );
                    match fenced {
                        OldMaster::Fenced(old) => self.demote_old_master(old).await,
                        OldMaster::Silent => self.fence_later(&state),
                        OldMaster::LeftAlone => {}
                    }
                    // Others follow us once our data says master.
                    self.refresh_data(session).await?;
                }
            }
        }
        Ok(())
    }

    /// Notes whether our replica falls behind: its link is down while the
    /// master it follows answers with more of the history it follows (the
    /// same replication ID at a higher offset), writes this replica lacks.
    /// A master that died or froze does not answer, and one restarted
    /// answers with another history or less of it: a link lost with either
    /// loses nothing. While the master does not answer, what was last known
    /// stands, so the state at the master's failure is known when the
    /// promotion is decided. A full sync is [`RedisState::in_sync`]'s.
    pub(super) async fn track_replication(&mut self, state: &RedisState) {
        // Behind from a spell of not answering: it catches up by applying
        // what its master was seen holding, not by its link looking up
        // (just woken, a replica still shows the link it had; review: one
        // promoted 0.2 s after waking, 30 MB short).
        if let Some((replid, seen)) = &self.frozen_behind {
            if state.replid != *replid {
                self.frozen_behind = None;
            } else if state.offset >= *seen {
                self.frozen_behind = None;
                if self.behind_since.take().is_some() {
                    info!(shard = %self.settings.shard, redis = %self.settings.redis,
                        offset = state.offset,
                        "replica applied what its master held when last seen: no longer behind");
                }
            } else {
                return;
            }
        }
        if state.role != Role::Replica || state.link_up && !state.sync_in_progress {
            self.seen_in_sync = true;
            if self.behind_since.take().is_some() {
                info!(shard = %self.settings.shard, redis = %self.settings.redis,
                    "replica caught up with its master");
            }
            return;
        }
        // A first sync is expected to run: such a replica is not in line.
        if self.joining || state.sync_in_progress {
            return;
        }
        let timeout = self.settings.interval.max(Duration::from_millis(500));
        let master = state.master_addr();
        let Some(answer) = probe(&master, self.settings.redis_auth.as_deref(), timeout).await
        else {
            if !self.seen_in_sync && self.behind_since.is_none() {
                // Started with the link down and the master gone: how long
                // it was down before, nobody here knows (review: a behind
                // replica whose watchdog was restarted led the shard and
                // lost the writes it lacked). Counted as behind until it
                // catches up; an operator may accept what it holds.
                self.behind_since = Some(std::time::Instant::now());
                warn!(shard = %self.settings.shard, redis = %self.settings.redis, master = %master,
                    link_down_secs = ?state.link_down_secs,
                    "replica found with its link down and its master gone at start: counted as \
                     behind (not promoted) until it catches up");
            }
            return;
        };
        let ahead = answer.role == Role::Master
            && answer.replid == state.replid
            && answer.offset > state.offset;
        match (ahead, self.behind_since) {
            (true, None) => {
                self.behind_since = Some(std::time::Instant::now());
                warn!(shard = %self.settings.shard, redis = %self.settings.redis, master = %master,
                    ours = state.offset, master_offset = answer.offset,
                    link_down_secs = ?state.link_down_secs,
                    "replica falling behind: its link is down while its master takes writes; it \
                     is not promoted until it catches up");
            }
            (false, Some(_)) => {
                self.behind_since = None;
                info!(shard = %self.settings.shard, redis = %self.settings.redis, master = %master,
                    "replica no longer behind: its master holds nothing more of its history");
            }
            _ => {}
        }
    }

    /// Before promoting our replica: another replica in line that holds
    /// more of the failed master's history (a higher offset of the same
    /// replication ID), or any in-sync one when ours is not (mid-sync, or
    /// its link was down before the master failed). Its address and why.
    async fn better_candidate(&self, ours: &RedisState) -> Option<(String, String)> {
        let stale = self.stale_link();
        let ours_in_sync = ours.in_sync(stale) && self.behind_since.is_none();
        let probe_timeout = self.settings.interval.max(Duration::from_millis(500));
        for member in self
            .members
            .iter()
            .filter(|m| m.addr != self.settings.redis)
        {
            let Some(other) = probe(
                &member.addr,
                self.settings.redis_auth.as_deref(),
                probe_timeout,
            )
            .await
            else {
                continue;
            };
            if !other.in_sync(stale) {
                continue;
            }
            if !ours_in_sync {
                return Some((member.addr.clone(), "ours is not in sync".to_string()));
            }
            if other.replid == ours.replid && other.offset > ours.offset {
                let why = format!("offset {} against ours {}", other.offset, ours.offset);
                return Some((member.addr.clone(), why));
            }
        }
        None
    }

    /// True while our Redis replicates from a live master (link up) and
    /// the shard has been empty for less than two session timeouts: that
    /// master's watchdog leads it. After ZooKeeper expires every session
    /// at once (a pause longer than the timeout), both watchdogs find the
    /// shard empty; leading it from here would fail a healthy master over.
    /// If the master's watchdog is gone, this one leads after the wait.
    fn waits_for_the_masters_watchdog(&mut self, state: &RedisState) -> bool {
        if state.role != Role::Replica || !state.link_up {
            self.empty_since = None;
            return false;
        }
        let grace = self.settings.session_timeout * 2;
        let first = self.empty_since.is_none();
        let since = *self.empty_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= grace {
            return false;
        }
        if first {
            info!(shard = %self.settings.shard, redis = %self.settings.redis,
                master = %state.master_addr(), wait_ms = grace.as_millis() as u64,
                "shard empty while our master answers: waiting for its watchdog to register");
        }
        true
    }

    /// A link down longer than it takes to declare a master down was down
    /// before the master failed.
    fn stale_link(&self) -> Duration {
        self.settings.interval * self.settings.down_after
            + self.settings.busy_down_after
            + Duration::from_secs(10)
    }

    /// An empty shard that held data may be led only by a Redis holding its
    /// last master's history (see [`ShardData::master`]); an empty Redis
    /// would make every key of the shard vanish and then, as master, wipe
    /// the old master's data when it rejoins as a replica.
    async fn may_lead_empty_shard(
        &mut self,
        session: &Session,
        state: &RedisState,
    ) -> Result<bool, zk::Error> {
        let shard = self.settings.shard.clone();
        let (data, _) = self
            .bounded(session, session.client.get_data(&shard))
            .await?;
        let Some(parsed) = ShardData::parse(&data) else {
            // Unreadable data may hide a history: an empty Redis leading
            // now could wipe it. Led once an operator fixes the data.
            if !self.history_refused {
                self.history_refused = true;
                error!(shard = %shard, redis = %self.settings.redis,
                    data = %String::from_utf8_lossy(&data),
                    "the shard is empty and its data is unreadable: not leading it until the data \
                     is fixed (it may name a last master whose keys this Redis would wipe)");
            }
            return Ok(false);
        };
        let Some(record) = parsed.master else {
            return Ok(true);
        };
        // An empty recorded ID names the Redis an operator chose with
        // `promote --force`, whatever it holds.
        let chosen = record.replid.is_empty() && record.addr == self.settings.redis;
        // Holding the history is not enough for a replica that fell behind
        // its master before it failed: it holds only the start of it. Nor
        // for one that cannot tell, its link down too long or a full sync
        // running (promotion refused it for that, and it left the line: it
        // must not take the shard back through the empty shard).
        let behind = state.role == Role::Replica
            && (self.behind_since.is_some() || !state.in_sync(self.stale_link()));
        if chosen || state.holds_history(&record.replid, record.offset) && !behind {
            self.history_refused = false;
            return Ok(true);
        }
        debug!(shard = %shard, ours = %state.replid, ours2 = %state.replid2, offset = state.offset,
            ours2_until = state.replid2_until, recorded = %record.replid, recorded_offset = record.offset,
            "not the shard's history, or not as far as recorded");
        if !self.history_refused {
            self.history_refused = true;
            let name = shard.rsplit('/').next().unwrap_or(&shard);
            error!(
                shard = %shard,
                redis = %self.settings.redis,
                last_master = %record.addr,
                replid = %record.replid,
                offset = record.offset,
                "the shard is empty but {}: not leading it; start the last master's watchdog, \
                 or accept the loss with `shardproxy-admin promote {name} {} --force`",
                if behind {
                    "this replica fell behind its last master, or lost touch with it, before it failed"
                } else if state.history_reach(&record.replid).is_some() {
                    "its data holds only the start of the history recorded (an old snapshot, or \
                     a replica that was behind)"
                } else {
                    "its data was last on another history"
                },
                self.settings.redis
            );
        }
        Ok(false)
    }

    /// The master record our replica's data does not continue, if any: a
    /// replica that followed its master's address through a restart (a
    /// supervisor's `Restart=always`, the master's watchdog dead or slow)
    /// was given the restarted Redis's empty data by a full sync, and
    /// promoting it would serve the shard empty, with `status` ok (review:
    /// every key of the shard lost in 15 of 18 runs). Such a record names
    /// a history ours does not reach, and its address answers as another
    /// run than the one recorded. A record merely late (a master takes a
    /// new history when its first replica connects, recorded on its next
    /// check) names a master that died: its address does not answer. Only
    /// the history's name is compared, not its offset, and the replica must
    /// hold fewer than half the keys the master was recorded with: a
    /// master restarted with its data hands it over on a new history too.
    /// Unreadable data, no record (or one without a key count), or one an
    /// operator chose (no history named) lets the promotion go on.
    async fn another_history(
        &mut self,
        session: &Session,
        state: &RedisState,
    ) -> Result<Option<MasterRecord>, zk::Error> {
        let shard = self.settings.shard.clone();
        let (data, _) = self
            .bounded(session, session.client.get_data(&shard))
            .await?;
        let Some(record) = ShardData::parse(&data).and_then(|parsed| parsed.master) else {
            return Ok(None);
        };
        if record.replid.is_empty()
            || record.run_id.is_empty()
            || state.history_reach(&record.replid).is_some()
        {
            return Ok(None);
        }
        let timeout = self.settings.interval.max(Duration::from_millis(500));
        let auth = self.settings.redis_auth.as_deref();
        let restarted = probe(&record.addr, auth, timeout)
            .await
            .is_some_and(|there| there.run_id != record.run_id);
        // A master restarted with its data (an AOF) gives a full sync of
        // it, on a history of its own: that replica holds the shard
        // (review: it was refused, and the shard stopped for nothing).
        let emptied = match (restarted, record.keys) {
            (true, Some(recorded)) => self
                .redis
                .keys()
                .await
                .is_ok_and(|ours| ours.saturating_mul(2) < recorded),
            _ => false,
        };
        Ok(emptied.then_some(record))
    }

    /// As the master: records our Redis and its replication history in the
    /// shard's data, so an empty shard is led later only by a Redis that
    /// holds it, as far as recorded. Written again whenever the replication
    /// ID changes (a master takes a new one when its first replica
    /// connects), and the offset every [`HISTORY_REFRESH_TICKS`] intervals
    /// while it moves: a Redis holding only the start of the history (a
    /// snapshot of long ago) must not pass for one that holds it.
    pub(super) async fn record_history(&mut self, session: &Session) -> Result<(), zk::Error> {
        let Health::Up(state) = &self.health else {
            return Ok(());
        };
        let ticks = self.ticks;
        let fresh = |recorded: &RecordedHistory| {
            recorded.replid == state.replid
                && recorded.run_id == state.run_id
                && (recorded.offset == state.offset
                    || ticks < recorded.tick + HISTORY_REFRESH_TICKS)
        };
        if state.role != Role::Master
            || self.registered.is_none()
            || self.history_recorded.as_ref().is_some_and(fresh)
        {
            return Ok(());
        }
        let record = MasterRecord {
            addr: self.settings.redis.clone(),
            replid: state.replid.clone(),
            offset: state.offset,
            run_id: state.run_id.clone(),
            keys: self.redis.keys().await.ok(),
        };
        let shard = self.settings.shard.clone();
        let (data, stat) = self
            .bounded(session, session.client.get_data(&shard))
            .await?;
        let Some(mut shard_data) = ShardData::parse(&data) else {
            // Never overwrite data we cannot read: the proxies flag it.
            return Ok(());
        };
        // The same master and history, only further on: a quiet update.
        let same = shard_data.master.as_ref().is_some_and(|m| {
            m.addr == record.addr && m.replid == record.replid && m.run_id == record.run_id
        });
        if shard_data.master.as_ref() != Some(&record) {
            shard_data.master = Some(record.clone());
            match self
                .bounded(
                    session,
                    session
                        .client
                        .set_data(&shard, &shard_data.to_json(), Some(stat.version)),
                )
                .await
            {
                Ok(_) if same => {
                    debug!(shard = %shard, offset = record.offset, "recorded the history's offset")
                }
                Ok(_) => {
                    info!(shard = %shard, redis = %self.settings.redis, replid = %record.replid,
                    "recorded as the shard's master and history")
                }
                // Changed meanwhile: tried again on the next step.
                Err(zk::Error::BadVersion) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.history_recorded = Some(RecordedHistory {
            replid: record.replid,
            run_id: record.run_id,
            offset: record.offset,
            tick: ticks,
        });
        Ok(())
    }

    /// Deletes our member znode (rule 5).
    pub(super) async fn leave(&mut self, session: &Session, reason: &str) -> Result<(), zk::Error> {
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
    pub(super) async fn register(
        &mut self,
        session: &Session,
        role: Role,
    ) -> Result<(), zk::Error> {
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
        let mode = zk::CreateMode::EphemeralSequential
            .with_acls(crate::zk::acls(self.settings.zk_auth.as_ref()));
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
    pub(super) async fn replicaof_no_one(&mut self) -> bool {
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
    pub(super) async fn follow(&mut self, state: &RedisState, master: &str) {
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
    pub(super) async fn refresh_data(&mut self, session: &Session) -> Result<(), zk::Error> {
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
}
