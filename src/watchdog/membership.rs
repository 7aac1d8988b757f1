//! The watchdog rules of DESIGN.md as one pure decision: given what the
//! watchdog sees of its Redis and of its shard's line of members, what to
//! do next. [`super::agent`] gathers the inputs and carries out the
//! [`Action`]; keeping the rules here lets each be tested on its own.
//!
//! Rules 2 to 5:
//! - an empty shard: register at once as master;
//! - otherwise join the line only once replicating from the current master
//!   with the first sync done;
//! - the lowest member is master, the others follow it;
//! - a Redis that is down, or restarted (new `run_id`), leaves the line at
//!   once and later rejoins as a replica.
//!
//! Also: a Redis that was pointed at a master to join and has not finished
//! its first sync never leads an empty shard (its data is incomplete); and
//! nobody follows a new lowest member before it reports itself master, so an
//! old master handing over never replicates from a replica of its own.

use super::health::RedisState;
use crate::zk::layout::Role;
use crate::zk::view::Member;

/// What the last health checks say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The last check passed.
    Up(RedisState),
    /// The last check failed, fewer than `down_after` in a row.
    Failing,
    /// `down_after` checks failed in a row.
    Down,
}

/// The inputs of one decision.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub health: &'a Health,
    /// The shard's members (other runs of this watchdog left out), sorted
    /// by sequence: the master first.
    pub members: &'a [Member],
    /// Our member znode's name, when registered.
    pub registered: Option<&'a str>,
    /// The `run_id` our Redis had when we registered.
    pub registered_run_id: Option<&'a str>,
    /// We pointed our Redis at a master to join and have not registered
    /// since.
    pub joining: bool,
    /// The role the lowest member reports in its data, when it was read.
    pub lowest_role: Option<Role>,
    /// The lowest member is our Redis's but not our znode: a predecessor
    /// watchdog's (a takeover, or our own run before a restart).
    pub predecessor: bool,
    /// Our Redis, a replica when last seen, has not answered for
    /// `down_after` checks (frozen, or stuck in a long command).
    pub frozen_replica: bool,
}

/// What to do; the agent carries it out and logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Everything is as it should be.
    Steady,
    /// Delete our member znode: the Redis is down or restarted (rule 5).
    Leave(LeaveReason),
    /// The shard is empty: make our Redis master if needed and register
    /// (rule 2).
    LeadEmptyShard,
    /// Register as a replica: our Redis has the master's data (rule 3).
    Join,
    /// `REPLICAOF` the given member's address (rules 3 and 4).
    Follow(String),
    /// We are the lowest member: `REPLICAOF NO ONE` (rule 4).
    Promote,
    /// A predecessor's member holds our master Redis's place: register as
    /// master behind it, to take its place when it goes.
    Succeed,
    /// The master's watchdog registered again behind us (a takeover):
    /// register again behind it, so that when its old member goes the
    /// line still starts with the master and nobody fails over.
    StepBack,
    /// Nothing to do yet, and why.
    Wait(&'static str),
}

/// Why we leave the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    RedisDown,
    RedisRestarted,
    FrozenAtHead,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::RedisDown => "redis down",
            LeaveReason::RedisRestarted => "redis restarted (new run_id)",
            LeaveReason::FrozenAtHead => {
                "our replica, first in line, does not answer: stepping aside so that an \
                 in-sync replica behind it is promoted"
            }
        }
    }
}

/// Applies the rules to `view`.
pub fn decide(view: &View<'_>) -> Action {
    match view.registered {
        Some(name) => decide_registered(view, name),
        None => decide_unregistered(view),
    }
}

fn decide_registered(view: &View<'_>, name: &str) -> Action {
    let state = match view.health {
        Health::Down => return Action::Leave(LeaveReason::RedisDown),
        // A frozen replica at the head cannot be promoted: waiting out
        // the busy limit (30 s) would leave the shard without a master
        // although a replica behind it is in sync (review: 11 s of
        // failed writes for an 11 s freeze). A busy master is not
        // concerned: it is waited for, as before.
        Health::Failing
            if view.frozen_replica && view.members.first().is_some_and(|m| m.znode == name) =>
        {
            return Action::Leave(LeaveReason::FrozenAtHead)
        }
        Health::Failing => return Action::Wait("redis check failed; not down yet"),
        Health::Up(state) => state,
    };
    if view.registered_run_id.is_some_and(|id| id != state.run_id) {
        return Action::Leave(LeaveReason::RedisRestarted);
    }
    let Some(lowest) = view.members.first() else {
        // Our own member is missing from the list: the agent forgets it
        // before deciding; nothing sensible to do with this view.
        return Action::Wait("our member is not in the shard");
    };
    if lowest.znode == name {
        return match state.role {
            Role::Master => Action::Steady,
            Role::Replica => Action::Promote,
        };
    }
    if view.predecessor {
        return match state.role {
            Role::Master => Action::Steady,
            Role::Replica => {
                Action::Wait("a predecessor's member holds our place but our Redis is a replica")
            }
        };
    }
    let behind_us = view.members.iter().skip_while(|m| m.znode != name).skip(1);
    if state.follows(&lowest.addr) && behind_us.clone().any(|m| m.addr == lowest.addr) {
        return Action::StepBack;
    }
    follow(view, state, lowest)
}

fn decide_unregistered(view: &View<'_>) -> Action {
    let Health::Up(state) = view.health else {
        return Action::Wait("redis not healthy");
    };
    let Some(lowest) = view.members.first() else {
        if view.joining || state.sync_in_progress {
            return Action::Wait("shard empty but our first sync did not finish: not leading it");
        }
        return Action::LeadEmptyShard;
    };
    if view.predecessor {
        return match state.role {
            Role::Master => Action::Succeed,
            Role::Replica => {
                Action::Wait("a predecessor's member holds our place but our Redis is a replica")
            }
        };
    }
    if state.synced_from(&lowest.addr) {
        return Action::Join;
    }
    if state.follows(&lowest.addr) {
        return Action::Wait("first sync from the master in progress");
    }
    follow(view, state, lowest)
}

/// Follow `lowest` once it says it is master.
fn follow(view: &View<'_>, state: &RedisState, lowest: &Member) -> Action {
    if state.follows(&lowest.addr) {
        Action::Steady
    } else if view.lowest_role == Some(Role::Master) {
        Action::Follow(lowest.addr.clone())
    } else {
        Action::Wait("the lowest member has not reported itself master yet")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "10.0.0.1:6379";
    const B: &str = "10.0.0.2:6379";

    fn member(addr: &str, seq: u64) -> Member {
        Member {
            addr: addr.to_string(),
            seq,
            znode: format!("{addr}-{seq:010}"),
        }
    }

    fn master() -> RedisState {
        RedisState {
            run_id: "run1".into(),
            role: Role::Master,
            master: None,
            link_up: false,
            sync_in_progress: false,
            offset: 10,
            replid: String::new(),
            link_down_secs: None,
            replid2: String::new(),
            replid2_until: 0,
        }
    }

    fn replica_of(addr: &str, link_up: bool, syncing: bool) -> RedisState {
        let (host, port) = addr.rsplit_once(':').unwrap();
        RedisState {
            role: Role::Replica,
            master: Some((host.into(), port.parse().unwrap())),
            link_up,
            sync_in_progress: syncing,
            ..master()
        }
    }

    fn view<'a>(health: &'a Health, members: &'a [Member]) -> View<'a> {
        View {
            health,
            members,
            registered: None,
            registered_run_id: None,
            joining: false,
            lowest_role: Some(Role::Master),
            predecessor: false,
            frozen_replica: false,
        }
    }

    #[test]
    fn a_master_behind_its_predecessor_succeeds_it_and_stays_steady() {
        let health = Health::Up(master());
        let line = [member(A, 0), member(B, 1)];
        let mut v = view(&health, &line);
        v.predecessor = true;
        assert_eq!(decide(&v), Action::Succeed);
        let line = [member(A, 0), member(B, 1), member(A, 2)];
        let mut v = view(&health, &line);
        v.predecessor = true;
        let name = line[2].znode.clone();
        v.registered = Some(&name);
        v.registered_run_id = Some("run1");
        assert_eq!(decide(&v), Action::Steady);
    }

    #[test]
    fn a_replica_ahead_of_the_masters_new_member_steps_back() {
        let health = Health::Up(replica_of(A, true, false));
        let line = [member(A, 0), member(B, 1), member(A, 2)];
        let mut v = view(&health, &line);
        let name = line[1].znode.clone();
        v.registered = Some(&name);
        v.registered_run_id = Some("run1");
        assert_eq!(decide(&v), Action::StepBack);
        // Behind the master's new member already: steady.
        let line = [member(A, 0), member(A, 2), member(B, 3)];
        let mut v = view(&health, &line);
        let name = line[2].znode.clone();
        v.registered = Some(&name);
        v.registered_run_id = Some("run1");
        assert_eq!(decide(&v), Action::Steady);
    }

    #[test]
    fn rule2_empty_shard_is_led_at_once() {
        let health = Health::Up(replica_of(A, false, false));
        assert_eq!(decide(&view(&health, &[])), Action::LeadEmptyShard);
        let health = Health::Up(master());
        assert_eq!(decide(&view(&health, &[])), Action::LeadEmptyShard);
    }

    #[test]
    fn rule3_unsynced_replica_never_leads_an_empty_shard() {
        let health = Health::Up(replica_of(A, false, false));
        let mut v = view(&health, &[]);
        v.joining = true;
        assert!(matches!(decide(&v), Action::Wait(_)));
        let syncing = Health::Up(replica_of(A, false, true));
        assert!(matches!(decide(&view(&syncing, &[])), Action::Wait(_)));
    }

    #[test]
    fn rule3_follows_the_master_before_joining() {
        let members = [member(A, 1)];
        let health = Health::Up(master());
        assert_eq!(
            decide(&view(&health, &members)),
            Action::Follow(A.to_string())
        );
    }

    #[test]
    fn rule3_waits_for_the_first_sync() {
        let members = [member(A, 1)];
        for (link_up, syncing) in [(false, false), (false, true), (true, true)] {
            let health = Health::Up(replica_of(A, link_up, syncing));
            assert!(
                matches!(decide(&view(&health, &members)), Action::Wait(_)),
                "link {link_up} syncing {syncing}"
            );
        }
    }

    #[test]
    fn rule3_joins_once_synced() {
        let members = [member(A, 1), member(B, 2)];
        let health = Health::Up(replica_of(A, true, false));
        assert_eq!(decide(&view(&health, &members)), Action::Join);
    }

    #[test]
    fn follows_only_a_lowest_member_that_reports_master() {
        let members = [member(A, 1)];
        let health = Health::Up(master());
        let mut v = view(&health, &members);
        v.lowest_role = Some(Role::Replica);
        assert!(matches!(decide(&v), Action::Wait(_)));
        v.lowest_role = None;
        assert!(matches!(decide(&v), Action::Wait(_)));
    }

    #[test]
    fn rule4_lowest_member_is_promoted() {
        let members = [member(B, 2)];
        let health = Health::Up(replica_of(A, false, false));
        let mut v = view(&health, &members);
        v.registered = Some(&members[0].znode);
        v.registered_run_id = Some("run1");
        assert_eq!(decide(&v), Action::Promote);
        let health = Health::Up(master());
        v.health = &health;
        assert_eq!(decide(&v), Action::Steady);
    }

    #[test]
    fn rule4_others_follow_the_lowest() {
        let members = [member(B, 3), member(A, 4)];
        let stale = Health::Up(replica_of("10.0.0.9:6379", true, false));
        let mut v = view(&stale, &members);
        v.registered = Some(&members[1].znode);
        v.registered_run_id = Some("run1");
        assert_eq!(decide(&v), Action::Follow(B.to_string()));
        let following = Health::Up(replica_of(B, false, false));
        v.health = &following;
        assert_eq!(
            decide(&v),
            Action::Steady,
            "a link being down is not ours to fix"
        );
        let demoted = Health::Up(master());
        v.health = &demoted;
        assert_eq!(decide(&v), Action::Follow(B.to_string()));
    }

    #[test]
    fn rule5_down_redis_leaves_the_line() {
        let members = [member(A, 1), member(B, 2)];
        let mut v = view(&Health::Down, &members);
        v.registered = Some(&members[0].znode);
        assert_eq!(decide(&v), Action::Leave(LeaveReason::RedisDown));
    }

    #[test]
    fn rule5_failing_but_not_down_stays() {
        let members = [member(A, 1)];
        let mut v = view(&Health::Failing, &members);
        v.registered = Some(&members[0].znode);
        assert!(matches!(decide(&v), Action::Wait(_)));
    }

    #[test]
    fn rule5_restarted_redis_leaves_the_line() {
        let members = [member(A, 1), member(B, 2)];
        let health = Health::Up(master());
        let mut v = view(&health, &members);
        v.registered = Some(&members[0].znode);
        v.registered_run_id = Some("run0");
        assert_eq!(decide(&v), Action::Leave(LeaveReason::RedisRestarted));
    }

    #[test]
    fn down_redis_does_not_join() {
        let members = [member(B, 2)];
        for health in [Health::Down, Health::Failing] {
            assert!(matches!(decide(&view(&health, &members)), Action::Wait(_)));
        }
    }
}
