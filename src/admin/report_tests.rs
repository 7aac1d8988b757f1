//! Unit tests of the status judgement (`report.rs`), kept apart so that
//! file stays readable.

use super::*;
use crate::admin::target::FileShard;

fn target() -> Target {
    Target {
        db: 0,
        pool: "alpha".into(),
        hosts: "zk:2181".into(),
        zk_auth: None,
        hash: crate::hash::HashKind::Md5,
        hash_tag: None,
        proxy_root: "/redis/proxy/icd".into(),
        cluster_root: "/redis/cluster/icd".into(),
        shards: Some(vec![
            FileShard {
                name: "redis-0000".into(),
                lo: 0,
                hi: 2047,
                server: "10.0.0.1:6379".into(),
            },
            FileShard {
                name: "redis-0001".into(),
                lo: 2048,
                hi: 4095,
                server: "10.0.0.2:6379".into(),
            },
        ]),
        redis_auth: None,
    }
}

fn master(offset: u64) -> Result<Replication, String> {
    Ok(Replication {
        role: Role::Master,
        offset,
        master: None,
        link_up: None,
        run_id: "m".into(),
    })
}

fn replica(of: &str, offset: u64, link_up: bool) -> Result<Replication, String> {
    Ok(Replication {
        role: Role::Replica,
        offset,
        master: Some(of.into()),
        link_up: Some(link_up),
        run_id: "r".into(),
    })
}

fn proxy() -> (String, Vec<u8>) {
    let data = ProxyData {
        listen: "10.0.0.9:22121".into(),
        pool: "alpha".into(),
        version: "0.1.0".into(),
        pid: 42,
        started: 1_000,
        stats: "10.0.0.9:22222".into(),
        metrics: None,
        host: String::new(),
    };
    ("10.0.0.9:22121".into(), data.to_json())
}

/// Two shards, each a master (seq 1) and a replica (seq 2) that is
/// 10 bytes behind.
fn healthy() -> Snapshot {
    let pair = |a: &str, b: &str| {
        vec![
            (format!("{b}-0000000002"), replica(a, 90, true)),
            (format!("{a}-0000000001"), master(100)),
        ]
    };
    Snapshot {
        now: 1_100,
        proxies: vec![proxy()],
        hand_made_proxies: Vec::new(),
        roster: vec![("10.0.0.9:22121".into(), true)],
        cluster_exists: true,
        shards: vec![
            RawShard {
                name: "redis-0001".into(),
                data: br#"{"weight":"2048-4095"}"#.to_vec(),
                members: pair("10.0.0.2:6379", "10.0.0.4:6379"),
            },
            RawShard {
                name: "redis-0000".into(),
                data: br#"{"weight":"0-2047"}"#.to_vec(),
                members: pair("10.0.0.1:6379", "10.0.0.3:6379"),
            },
        ],
    }
}

fn texts(report: &Report) -> Vec<String> {
    report
        .problems
        .iter()
        .map(|p| format!("{:?} {}: {}", p.level, p.subject, p.text))
        .collect()
}

#[test]
fn shard_without_a_replica_is_degraded() {
    let mut snapshot = healthy();
    let _replica = snapshot.shards[1].members.remove(0);
    let report = judge(&target(), &snapshot);
    assert_eq!(
        texts(&report),
        ["Warning redis-0000: degraded: no live replica"]
    );
    assert_eq!(report.health, Level::Warning);
    assert!(report.shards[0].degraded);
    assert!(!report.shards[1].degraded);
}

#[test]
fn healthy_cluster_is_ok_with_lag_and_uptime() {
    let report = judge(&target(), &healthy());
    assert_eq!(texts(&report), Vec::<String>::new());
    assert_eq!(report.health, Level::Ok);
    assert_eq!(report.slots, Some(4096));
    assert_eq!(report.proxies[0].uptime_secs, Some(100));
    let first = &report.shards[0];
    assert_eq!(first.name, "redis-0000");
    assert_eq!(first.range.as_deref(), Some("0-2047"));
    assert_eq!(first.master.as_deref(), Some("10.0.0.1:6379"));
    assert_eq!(first.replicas, ["10.0.0.3:6379"]);
    assert_eq!(first.members[0].line, Role::Master);
    assert_eq!(first.members[0].lag, None);
    assert_eq!(first.members[1].line, Role::Replica);
    assert_eq!(first.members[1].lag, Some(10));
}

#[test]
fn no_proxies_is_an_error() {
    let mut snapshot = healthy();
    snapshot.proxies.clear();
    snapshot.roster.clear();
    let report = judge(&target(), &snapshot);
    assert_eq!(
        texts(&report),
        ["Error /redis/proxy/icd: no proxies registered"]
    );
    assert_eq!(report.health, Level::Error);
}

#[test]
fn a_proxy_in_the_roster_but_not_registered_is_a_warning() {
    let mut snapshot = healthy();
    snapshot.roster.push(("10.0.0.8:22121".into(), false));
    let report = judge(&target(), &snapshot);
    assert_eq!(
        texts(&report),
        [
            "Warning /redis/control/icd/proxies/10.0.0.8:22121: proxy 10.0.0.8:22121 is not \
          registered: cut off from ZooKeeper (it may still serve from its last table), or \
          stopped without shutting down; migrations wait for it (`forget-proxy \
          10.0.0.8:22121` once it is down for good)"
        ]
    );
    assert_eq!(report.health, Level::Warning);
}

#[test]
fn bad_proxy_data_is_a_warning() {
    let mut snapshot = healthy();
    snapshot.proxies[0].1 = b"junk".to_vec();
    let report = judge(&target(), &snapshot);
    assert_eq!(report.health, Level::Warning);
    assert!(report.proxies[0].flags[0].starts_with("bad znode data"));
}

#[test]
fn shard_without_members_is_an_error() {
    let mut snapshot = healthy();
    snapshot.shards[0].members.clear();
    let report = judge(&target(), &snapshot);
    assert_eq!(texts(&report), ["Error redis-0001: no members"]);
    assert_eq!(report.shards[1].flags, ["no members"]);
    assert_eq!(report.shards[1].master, None);
}

#[test]
fn unreachable_master_is_an_error() {
    let mut snapshot = healthy();
    snapshot.shards[1].members[1].1 = Err("cannot connect: refused".into());
    let report = judge(&target(), &snapshot);
    assert_eq!(
        texts(&report),
        ["Error redis-0000 master 10.0.0.1:6379: unreachable: cannot connect: refused"]
    );
    assert_eq!(report.shards[0].members[1].lag, None, "no master offset");
    assert_eq!(report.shards[0].members[0].flags, ["unreachable"]);
    assert_eq!(report.shards[0].flags, ["master: unreachable"]);
}

#[test]
fn unreachable_replica_is_a_warning() {
    let mut snapshot = healthy();
    snapshot.shards[1].members[0].1 = Err("connect timed out".into());
    let report = judge(&target(), &snapshot);
    assert_eq!(
        texts(&report),
        [
            "Warning redis-0000 replica 10.0.0.3:6379: unreachable: connect timed out",
            "Warning redis-0000: degraded: no replica in sync (link up, within 16777216 bytes)"
        ]
    );
    assert_eq!(report.health, Level::Warning);
    assert!(report.shards[0].degraded);
    assert_eq!(
        report.shards[0].flags,
        [
            "replica 10.0.0.3:6379: unreachable",
            "degraded: no replica in sync (link up, within 16777216 bytes)"
        ]
    );
}

#[test]
fn master_whose_redis_is_a_replica_is_an_error() {
    let mut snapshot = healthy();
    snapshot.shards[1].members[1].1 = replica("10.0.0.3:6379", 100, true);
    let report = judge(&target(), &snapshot);
    assert!(texts(&report).contains(
        &"Error redis-0000 master 10.0.0.1:6379: Redis is a replica of 10.0.0.3:6379".into()
    ));
}

#[test]
fn replica_that_is_a_master_is_a_warning() {
    let mut snapshot = healthy();
    snapshot.shards[1].members[0].1 = master(5);
    let report = judge(&target(), &snapshot);
    assert_eq!(
        texts(&report),
        [
            "Warning redis-0000 replica 10.0.0.3:6379: not replicating: Redis is a master",
            "Warning redis-0000: degraded: no replica in sync (link up, within 16777216 bytes)"
        ]
    );
    assert_eq!(report.shards[0].members[1].lag, None);
}

#[test]
fn replica_of_another_redis_is_a_warning() {
    let mut snapshot = healthy();
    snapshot.shards[1].members[0].1 = replica("10.0.0.7:6379", 100, true);
    let report = judge(&target(), &snapshot);
    assert_eq!(
        texts(&report),
        [
            "Warning redis-0000 replica 10.0.0.3:6379: replicates from 10.0.0.7:6379, not from the master 10.0.0.1:6379",
            "Warning redis-0000: degraded: no replica in sync (link up, within 16777216 bytes)"
        ]
    );
}

#[test]
fn replica_with_link_down_is_a_warning() {
    let mut snapshot = healthy();
    snapshot.shards[1].members[0].1 = replica("10.0.0.1:6379", 100, false);
    let report = judge(&target(), &snapshot);
    assert_eq!(
        texts(&report),
        [
            "Warning redis-0000 replica 10.0.0.3:6379: replication link down",
            "Warning redis-0000: degraded: no replica in sync (link up, within 16777216 bytes)"
        ]
    );
}

#[test]
fn range_that_differs_from_the_file_is_a_warning() {
    let mut target = target();
    target.shards.as_mut().unwrap()[0].hi = 1023;
    target.shards.as_mut().unwrap()[1].lo = 1024;
    let report = judge(&target, &healthy());
    assert_eq!(
        texts(&report),
        [
            "Warning redis-0000: range mismatch: 0-2047 in ZooKeeper, 0-1023 in the pool file",
            "Warning redis-0001: range mismatch: 2048-4095 in ZooKeeper, 1024-4095 in the pool file",
        ]
    );
    assert_eq!(report.shards[0].file_range.as_deref(), Some("0-1023"));
}

#[test]
fn shards_missing_from_the_file_or_zookeeper_are_warnings() {
    let mut target = target();
    target.shards.as_mut().unwrap().remove(1);
    let report = judge(&target, &healthy());
    assert_eq!(texts(&report), ["Warning redis-0001: not in the pool file"]);

    let mut snapshot = healthy();
    snapshot.shards.remove(0);
    snapshot.shards[0].data = br#"{"weight":"0-4095"}"#.to_vec();
    let report = judge(&self::target(), &snapshot);
    assert!(texts(&report).contains(
        &"Warning /redis/cluster/icd: redis-0001 (2048-4095) is in the pool file but not in ZooKeeper"
            .to_string()
    ));
}

#[test]
fn weight_form_file_has_no_range_checks() {
    let mut target = target();
    target.shards = None;
    let report = judge(&target, &healthy());
    assert_eq!(report.health, Level::Ok);
    assert_eq!(report.shards[0].file_range, None);
}

#[test]
fn gap_is_an_error_flagging_both_shards() {
    let mut snapshot = healthy();
    snapshot.shards[0].data = br#"{"weight":"3000-4095"}"#.to_vec();
    let mut target = target();
    target.shards = None;
    let report = judge(&target, &snapshot);
    assert_eq!(
        texts(&report),
        ["Error /redis/cluster/icd: slots 2048-2999 belong to no shard (gap between shards redis-0000 and redis-0001)"]
    );
    assert_eq!(report.slots, None);
    assert_eq!(report.shards[0].flags, ["gap/overlap"]);
    assert_eq!(report.shards[1].flags, ["gap/overlap"]);
}

#[test]
fn overlap_is_an_error() {
    let mut snapshot = healthy();
    snapshot.shards[0].data = br#"{"weight":"2000-4095"}"#.to_vec();
    let mut target = target();
    target.shards = None;
    let report = judge(&target, &snapshot);
    assert_eq!(
        texts(&report),
        ["Error /redis/cluster/icd: shards redis-0000 and redis-0001 overlap on slots 2000-2047"]
    );
}

#[test]
fn bad_shard_data_is_an_error_without_a_bogus_gap() {
    let mut snapshot = healthy();
    snapshot.shards[0].data = b"{weight".to_vec();
    let report = judge(&target(), &snapshot);
    let problems = texts(&report);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("Error redis-0001: /redis/cluster/icd/redis-0001: bad shard data"),
        "{problems:?}"
    );
    assert_eq!(report.shards[1].range, None);
}

#[test]
fn stray_child_is_a_warning() {
    let mut snapshot = healthy();
    snapshot.shards[0]
        .members
        .push(("junk".into(), Err("not asked".into())));
    let report = judge(&target(), &snapshot);
    assert_eq!(
        texts(&report),
        ["Warning redis-0001: stray child \"junk\" (not a member; ignored)"]
    );
    assert_eq!(report.shards[1].members.len(), 2);
}

#[test]
fn missing_cluster_root_is_an_error() {
    let snapshot = Snapshot {
        now: 0,
        proxies: vec![proxy()],
        hand_made_proxies: Vec::new(),
        roster: Vec::new(),
        cluster_exists: false,
        shards: Vec::new(),
    };
    let report = judge(&target(), &snapshot);
    assert_eq!(
        texts(&report),
        ["Error /redis/cluster/icd: missing: run init"]
    );
}

#[test]
fn cluster_root_without_shards_is_an_error() {
    let mut snapshot = healthy();
    snapshot.shards.clear();
    let mut target = target();
    target.shards = None;
    let report = judge(&target, &snapshot);
    assert_eq!(texts(&report), ["Error /redis/cluster/icd: no shards"]);
}

#[test]
fn json_has_the_fields_scripts_read() {
    let report = judge(&target(), &healthy());
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["health"], "ok");
    assert_eq!(json["proxies"][0]["address"], "10.0.0.9:22121");
    assert_eq!(json["proxies"][0]["version"], "0.1.0");
    assert_eq!(json["shards"][0]["members"][1]["redis"]["role"], "replica");
    assert_eq!(json["shards"][0]["members"][1]["lag"], 10);
}

/// A migration 2 s into its move: 1,000 keys of about 5,000 moved.
fn moving() -> crate::zk::migration::MigrationState {
    crate::zk::migration::MigrationState {
        id: "m1".into(),
        range: "1365-2047".into(),
        source: "redis-0000".into(),
        target: "redis-0001".into(),
        phase: crate::zk::migration::Phase::Moving,
        paused: false,
        rate: 0,
        moved: 1000,
        started: 100,
        updated: 102,
        estimate: Some(5000),
    }
}

#[test]
fn a_running_migration_shows_keys_moved_rate_and_eta() {
    use crate::zk::migration::MigrationState;
    let mut report = judge(&target(), &healthy());
    let state = moving();
    report.migration_progress = Some(MigrationProgress::of(&state));
    report.migration = Some(state.clone());
    let text = crate::admin::render::render(&report);
    assert!(
        text.contains("1000 keys moved by the mover of about 5000 (500 keys/s), ETA 8 s"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["migration_progress"]["keys_moved"], 1000);
    assert_eq!(json["migration_progress"]["keys_per_second"], 500);
    assert_eq!(json["migration_progress"]["eta_seconds"], 8);
    // Before the mover's first second: no rate, so no ETA.
    let fresh = MigrationState {
        moved: 0,
        updated: 100,
        ..state
    };
    report.migration_progress = Some(MigrationProgress::of(&fresh));
    assert!(crate::admin::render::render(&report).contains("(0 keys/s), ETA unknown"));
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert!(json["migration_progress"]["eta_seconds"].is_null());
}

#[test]
fn a_migration_nothing_drives_is_reported() {
    use crate::zk::migration::{MigrationState, Phase};
    let state = moving();
    let warned_if = |state: &MigrationState, ephemeral: bool, now: u64| {
        let mut report = judge(&target(), &healthy());
        report.with_migration(Some((state.clone(), ephemeral)), now);
        let text = crate::admin::render::render(&report);
        (report.health, text)
    };
    let warned = |state: &MigrationState, now: u64| warned_if(state, false, now);
    // Progress a second ago, or a paused mover: nothing to say.
    assert_eq!(warned(&state, 103).0, Level::Ok);
    let paused = MigrationState {
        paused: true,
        ..state.clone()
    };
    assert_eq!(warned(&paused, 1000).0, Level::Ok);
    let (level, text) = warned(&state, 162);
    assert_eq!(level, Level::Warning);
    assert!(
        text.contains("no progress written for 60 s")
            && text.contains("`shardproxy-admin migrate 1365-2047 --to redis-0001`"),
        "{text}"
    );
    // A persistent prepare znode (turned around by abort, or left by an
    // older migrate) past any barrier: the proxies hold the range's
    // requests until migrate runs again.
    let prepare = MigrationState {
        phase: Phase::Prepare,
        moved: 0,
        updated: 100,
        ..state
    };
    assert_eq!(warned(&prepare, 110).0, Level::Ok);
    let (level, text) = warned(&prepare, 131);
    assert_eq!(level, Level::Warning);
    assert!(text.contains("in phase prepare for 31 s"), "{text}");
    // An ephemeral one has a run waiting for the proxies: it ends with
    // that run's ZooKeeper session.
    assert_eq!(warned_if(&prepare, true, 1000).0, Level::Ok);
    // Committed, a run may still be waiting for the proxies for a while;
    // then the same migrate finishes it. No ETA either way.
    let committed = MigrationState {
        phase: Phase::Committed,
        ..moving()
    };
    let (level, text) = warned(&committed, 150);
    assert_eq!(level, Level::Ok);
    assert!(!text.contains("ETA"), "{text}");
    let (level, text) = warned(&committed, 162);
    assert_eq!(level, Level::Warning);
    assert!(
        text.contains("committed 60 s ago and not finished")
            && text.contains("`shardproxy-admin migrate 1365-2047 --to redis-0001` to finish it"),
        "{text}"
    );
}
