//! The watchdog's state and main loop: every interval (and at once when the shard's
//! members or its control znode change) it checks its Redis, reads the
//! shard's line, applies [`decide`], serves a switchover asked of it, and
//! applies the split-brain guard ([`super::guard`]).
//!
//! One task does everything in order, so the Redis connection, the member
//! znode and the pause state have a single owner and no locks. Every
//! ZooKeeper request is bounded by a timeout, so a ZooKeeper that stops
//! answering never stops the health checks or the guard.
//!
//! The agent's work is spread by concern: [`super::session`] runs a
//! ZooKeeper session and reads the shard's line, [`super::actions`] carries
//! out what [`super::membership::decide`] chose, [`super::handover`] serves
//! a switchover asked of the master.

use super::config::Settings;
use super::guard::{writes_allowed, Guard};
use super::health::{is_busy, is_busy_script, probe, Failures, RedisLink, RedisState};
use super::membership::Health;
use crate::zk::layout::{MemberData, Role};
use crate::zk::shutdown_requested;
use crate::zk::view::Member;
use std::time::{Duration, Instant};
use tokio::sync::watch as signal;
use tokio::time::MissedTickBehavior;
use tracing::{debug, error, info, warn};

/// Our member znode.
pub(super) struct Registration {
    pub(super) name: String,
    /// The data last written.
    pub(super) data: MemberData,
    /// The interval count when it was written.
    pub(super) written_tick: u64,
}

/// What the master last recorded of its history in the shard's data: the
/// replication ID and `run_id` (a Redis restarted with its data keeps the
/// one, not the other), and the offset, at the watchdog's tick then.
#[derive(Debug, Clone)]
pub(super) struct RecordedHistory {
    pub replid: String,
    pub run_id: String,
    pub offset: u64,
    pub tick: u64,
}

/// The watchdog's state across sessions.
pub struct Agent {
    pub(super) settings: Settings,
    pub(super) redis: RedisLink,
    pub(super) failures: Failures,
    pub(super) health: Health,
    pub(super) registered: Option<Registration>,
    /// We pointed our Redis at a master to join and have not registered.
    pub(super) joining: bool,
    /// The shard's members as last read (ours included, strays not).
    pub(super) members: Vec<Member>,
    /// The lowest member's address as last seen, for "old master" in logs.
    pub(super) last_master: Option<String>,
    /// When ZooKeeper last answered us, and the session timeout it granted:
    /// while the session cannot have expired nobody can take over, so a
    /// master keeps taking writes through a short ZooKeeper outage.
    pub(super) last_heard: Option<Instant>,
    /// When the guard last ran (see [`Agent::guard_due`]).
    pub(super) guarded_at: Option<Instant>,
    pub(super) session_timeout: Duration,
    /// Since when the Redis has been busy (see [`super::health::is_busy`]),
    /// and whether SCRIPT KILL was sent in this busy spell.
    pub(super) busy_since: Option<Instant>,
    /// The history last recorded in the shard's data (see
    /// `Agent::record_history`).
    pub(super) history_recorded: Option<RecordedHistory>,
    /// We refused to lead an empty shard whose history we lack (logged once).
    pub(super) history_refused: bool,
    pub(super) script_killed: bool,
    /// The head of the line is a member of our Redis that is not ours: a
    /// predecessor's, kept until it goes (see `sort_out`).
    pub(super) predecessor: Option<String>,
    pub(super) guard: Guard,
    /// The last reason for waiting, logged once.
    pub(super) last_wait: Option<&'static str>,
    /// Failed attempts at a ZooKeeper session in a row.
    pub(super) zk_failures: u32,
    pub(super) ticks: u64,
    /// Since when our replica has been falling behind: its link down (or
    /// a full sync running) while its master answered. Such a replica
    /// lacks writes its master acknowledged, and is not promoted.
    pub(super) behind_since: Option<Instant>,
    /// Our Redis's last state before it stopped answering (see
    /// [`Agent::note_frozen_behind`]).
    pub(super) busy_from: Option<RedisState>,
    /// Behind because it did not answer while its master took writes: the
    /// master's history and the furthest offset it was seen at then.
    pub(super) frozen_behind: Option<(String, u64)>,
    /// This watchdog has seen its replica in sync (link up) since it
    /// started: before that, a link found down with the master gone could
    /// have gone down long before (a restarted watchdog knows nothing of
    /// what its predecessor saw).
    pub(super) seen_in_sync: bool,
    /// Whether each member znode of another Redis seen is ephemeral: one
    /// that is not was made by hand, not by a watchdog, and is not in line.
    pub(super) ephemeral: std::collections::HashMap<String, bool>,
    /// Since when the shard has been empty while our Redis replicates from
    /// a live master (see `waits_for_the_masters_watchdog`).
    pub(super) empty_since: Option<Instant>,
    /// Another watchdog was connected to our Redis first: we stand by
    /// (two watchdogs of one Redis deleted each other's members for ever).
    pub(super) standing_by: Option<String>,
    /// The Redis connection that was last checked for another watchdog.
    pub(super) checked_connection: u64,
    /// No other shard claimed our Redis when last checked (see
    /// `Agent::unclaimed_elsewhere`), and the claim last logged.
    pub(super) claims_cleared: bool,
    pub(super) claim_logged: Option<String>,
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
    pub(super) fn new(settings: Settings) -> Agent {
        let settings_session_timeout = settings.session_timeout;
        let redis = RedisLink::new(
            &settings.redis,
            settings.redis_auth.clone(),
            settings.interval.max(Duration::from_millis(250)),
        )
        .with_proxy_user(settings.proxy_user.clone());
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
            last_heard: None,
            guarded_at: None,
            busy_since: None,
            history_recorded: None,
            history_refused: false,
            behind_since: None,
            busy_from: None,
            frozen_behind: None,
            seen_in_sync: false,
            empty_since: None,
            ephemeral: std::collections::HashMap::new(),
            script_killed: false,
            session_timeout: settings_session_timeout,
            predecessor: None,
            guard,
            last_wait: None,
            zk_failures: 0,
            ticks: 0,
            standing_by: None,
            checked_connection: 0,
            claims_cleared: false,
            claim_logged: None,
        }
    }

    /// Runs the health check. A Redis that is gone (refused or dropped
    /// connections) is down after `down_after` failed interval checks; one
    /// that is busy (accepts but does not answer, or answers -BUSY or
    /// -LOADING) only after `busy_down_after`, so a long script or a slow
    /// command does not fail the shard over. Only interval checks count, so
    /// extra checks on watch events do not speed either up.
    pub(super) async fn check_health(&mut self, tick: bool) {
        let (shard, redis) = (self.settings.shard.clone(), self.settings.redis.clone());
        match self.redis.check().await {
            Ok(state) => {
                if self.failures.count() > 0 || self.busy_since.is_some() {
                    info!(shard = %shard, redis = %redis, "redis answers again");
                }
                self.failures.record(true);
                self.busy_since = None;
                self.busy_from = None;
                self.script_killed = false;
                self.track_replication(&state).await;
                self.health = Health::Up(state);
            }
            Err(e) if is_busy(&e) => {
                let first = self.busy_since.is_none();
                if let Health::Up(last) = &self.health {
                    self.busy_from = Some(last.clone());
                }
                self.note_frozen_behind().await;
                let since = *self.busy_since.get_or_insert_with(Instant::now);
                let busy_for = since.elapsed();
                if is_busy_script(&e) {
                    self.kill_script_if_due(busy_for).await;
                }
                let limit = self.settings.busy_down_after;
                let down = busy_for >= limit;
                if down && !matches!(self.health, Health::Down) {
                    error!(shard = %shard, redis = %redis, error = %e, busy_ms = busy_for.as_millis() as u64,
                        "redis busy for longer than the busy limit: taken for down");
                } else if first {
                    warn!(shard = %shard, redis = %redis, error = %e, limit_ms = limit.as_millis() as u64,
                        "redis is busy (alive but not answering): no failover before the busy limit");
                } else {
                    debug!(shard = %shard, redis = %redis, error = %e, "redis still busy");
                }
                self.health = if down { Health::Down } else { Health::Failing };
            }
            Err(e) => {
                self.busy_since = None;
                let was_down = self.failures.is_down();
                let down = if tick {
                    self.failures.record(false)
                } else {
                    was_down
                };
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

    /// Our Redis, a replica when it last answered, has not answered for
    /// `down_after` intervals.
    pub(super) fn frozen_replica(&self) -> bool {
        let limit = self.settings.interval * self.settings.down_after;
        self.busy_from
            .as_ref()
            .is_some_and(|last| last.role == Role::Replica)
            && self
                .busy_since
                .is_some_and(|since| since.elapsed() >= limit)
    }

    /// While our replica does not answer (frozen, or stuck in a long
    /// command) it applies nothing: if its master answers meanwhile with
    /// more of the history than it last had, it is behind, and stays so
    /// until it has applied what the master was last seen holding
    /// ([`Agent::track_replication`]). Review: a
    /// replica frozen 4 s while its master took writes was promoted when
    /// that master died right after, and 3,630 acknowledged writes were
    /// lost; its link, down for 0 s then, looked in sync.
    async fn note_frozen_behind(&mut self) {
        let Some(last) = self.busy_from.as_ref() else {
            return;
        };
        if last.role != Role::Replica || self.behind_since.is_some() && self.frozen_behind.is_none()
        {
            return;
        }
        let timeout = self.settings.interval.max(Duration::from_millis(500));
        let master = last.master_addr();
        let Some(answer) = probe(&master, self.settings.redis_auth.as_deref(), timeout).await
        else {
            return;
        };
        if answer.role == Role::Master
            && answer.replid == last.replid
            && answer.offset > last.offset
        {
            // The furthest the master was seen at: applied that far, the
            // replica lacks nothing it could have known of (review: one
            // busy 1 s, then holding every write, was refused for good).
            let seen = self.frozen_behind.as_ref().map_or(0, |(_, at)| *at);
            self.frozen_behind = Some((answer.replid.clone(), answer.offset.max(seen)));
            debug!(shard = %self.settings.shard, redis = %self.settings.redis,
                master_offset = answer.offset, "replica not answering; its master seen at");
            if self.behind_since.is_none() {
                self.behind_since = Some(Instant::now());
                warn!(shard = %self.settings.shard, redis = %self.settings.redis, master = %master,
                    ours = last.offset, master_offset = answer.offset,
                    "replica falling behind: it does not answer while its master takes writes; it \
                     is not promoted until it catches up");
            }
        }
    }

    /// With `--script-kill-after-ms`: stops a script (or function) that
    /// has kept the Redis -BUSY that long, once per busy spell. Never
    /// SHUTDOWN NOSAVE: a script that wrote cannot be killed, and is waited
    /// out up to the busy limit.
    async fn kill_script_if_due(&mut self, busy_for: Duration) {
        let Some(after) = self.settings.script_kill_after else {
            return;
        };
        if self.script_killed || busy_for < after {
            return;
        }
        self.script_killed = true;
        let (shard, redis) = (&self.settings.shard, &self.settings.redis);
        for kill in [["SCRIPT", "KILL"], ["FUNCTION", "KILL"]] {
            match self.redis.command(&kill).await {
                Ok(()) => {
                    warn!(shard = %shard, redis = %redis, command = kill.join(" "), busy_ms = busy_for.as_millis() as u64, "stopped a long script");
                    return;
                }
                Err(e) => {
                    debug!(shard = %shard, redis = %redis, error = %e, command = kill.join(" "), "kill refused")
                }
            }
        }
    }

    /// True while another watchdog, connected to our Redis before us,
    /// watches it: we then leave the line and the guard to it. Looked at
    /// on each new Redis connection, and again every interval while
    /// standing by.
    pub(super) async fn stands_by(&mut self, tick: bool) -> bool {
        if !matches!(self.health, Health::Up(_)) {
            return self.standing_by.is_some();
        }
        let new_connection = self.redis.connections != self.checked_connection;
        let recheck = self.standing_by.is_some() && tick;
        if !new_connection && !recheck {
            return self.standing_by.is_some();
        }
        self.look_for_another_watchdog().await
    }

    /// Lists the Redis's clients for another watchdog to stand by for
    /// ([`RedisLink::older_watchdog`]); true while there is one.
    pub(super) async fn look_for_another_watchdog(&mut self) -> bool {
        let (shard, redis) = (&self.settings.shard, &self.settings.redis);
        match self.redis.older_watchdog().await {
            Ok(other) => {
                self.checked_connection = self.redis.connections;
                match (&self.standing_by, &other) {
                    (None, Some(other)) => error!(shard = %shard, redis = %redis, other = %other,
                        "another shardproxy-watchdog already watches this Redis: standing by until it goes"),
                    (Some(_), None) => info!(shard = %shard, redis = %redis,
                        "the other watchdog of this Redis is gone: taking over"),
                    (Some(_), Some(_)) => {
                        debug!(shard = %shard, redis = %redis, "still standing by")
                    }
                    (None, None) => {}
                }
                self.standing_by = other;
            }
            Err(e) => warn!(shard = %shard, redis = %redis, error = %e,
                "cannot list the Redis's clients to look for another watchdog"),
        }
        self.standing_by.is_some()
    }

    /// Applies the split-brain guard to what the last check saw.
    pub(super) async fn guard(&mut self, connected: bool) {
        self.guarded_at = Some(Instant::now());
        let Health::Up(state) = &self.health else {
            return;
        };
        // A Redis another shard claims is that shard's to guard, and one
        // another watchdog watches is that watchdog's.
        if self.claim_logged.is_some() || self.standing_by.is_some() {
            return;
        }
        let connected = connected || self.session_surely_alive();
        // A predecessor at the head holds our Redis's place: the line says
        // our Redis is the master.
        let registered = self
            .predecessor
            .as_deref()
            .or(self.registered.as_ref().map(|r| r.name.as_str()));
        let allowed = writes_allowed(connected, registered, &self.members);
        self.guard.apply(&mut self.redis, state, allowed).await;
    }

    /// Until when our session cannot have expired on the server: three
    /// quarters of the session timeout after it last answered us. The
    /// server expires a session only a whole timeout after it last heard
    /// from it, and a replica is promoted only after that, so pausing by
    /// then (checked every interval, and at that moment itself once
    /// disconnected: [`Agent::guard_due`]) still comes first.
    pub(super) fn surely_alive_until(&self) -> Option<Instant> {
        Some(self.last_heard? + self.session_timeout * 3 / 4)
    }

    /// True while our session cannot have expired on the server.
    pub(super) fn session_surely_alive(&self) -> bool {
        self.surely_alive_until()
            .is_some_and(|until| Instant::now() < until)
    }

    /// When the guard must run whatever the interval: once the connection
    /// is lost, the moment the session may have expired
    /// ([`Agent::surely_alive_until`]), unless it ran since. Review:
    /// guarded once per interval only, an interval over a quarter of the
    /// session left the old master writable for up to an interval after
    /// its replica's promotion (1.0 s with 1.5 s intervals).
    pub(super) fn guard_due(&self, connected: bool) -> Option<tokio::time::Instant> {
        if connected {
            return None;
        }
        let deadline = self.surely_alive_until()?;
        if self.guarded_at.is_some_and(|at| at >= deadline) {
            return None;
        }
        Some(tokio::time::Instant::from_std(deadline))
    }

    pub(super) fn is_lowest(&self) -> bool {
        writes_allowed(
            true,
            self.registered.as_ref().map(|r| r.name.as_str()),
            &self.members,
        )
    }
}
