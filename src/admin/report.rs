//! What `status` found: the raw inputs read from ZooKeeper and the Redis
//! servers ([`Snapshot`]), and the judged result ([`Report`]): proxies,
//! shards, members, and every problem with its level.
//!
//! Judging is pure, so each rule has a unit test. Levels decide the exit
//! code: an `error` means the cluster cannot serve some keys correctly now
//! (no master, master unreachable or not a master, invalid ranges, no proxy
//! registered); a `warning` means it serves but something needs attention
//! (a replica down or lagging behind a broken link, a range that differs
//! from the pool file).

use super::redis::Replication;
use super::target::Target;
use crate::zk::layout::{
    child_path, parse_member_name, ClusterView, LayoutError, ProxyData, Role, ShardData, ShardView,
};
use serde::Serialize;

/// Everything `status` read, before judging.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Seconds since the Unix epoch when it was read (for uptimes).
    pub now: u64,
    /// The proxy znodes: name and data.
    pub proxies: Vec<(String, Vec<u8>)>,
    /// The cluster root exists.
    pub cluster_exists: bool,
    pub shards: Vec<RawShard>,
}

/// A shard znode as read.
#[derive(Debug, Clone)]
pub struct RawShard {
    pub name: String,
    pub data: Vec<u8>,
    /// Member znode names, each with what its Redis said (or why it could
    /// not be asked).
    pub members: Vec<(String, Result<Replication, String>)>,
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Error,
}

/// One thing that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub level: Level,
    /// The proxy, shard or member concerned, or the cluster root.
    pub subject: String,
    pub text: String,
}

/// A registered proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyStatus {
    /// The znode's name: the proxy's `ip:port`.
    pub address: String,
    /// The znode's data, when it parses.
    #[serde(flatten)]
    pub data: Option<ProxyData>,
    /// Seconds since the proxy started.
    pub uptime_secs: Option<u64>,
    pub flags: Vec<String>,
}

/// One live Redis of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// The Redis address.
    pub addr: String,
    /// The member znode's name.
    pub znode: String,
    /// Its sequence: its place in line.
    pub seq: u64,
    /// Its place in line: master for the lowest sequence, replica for the
    /// others.
    pub line: Role,
    /// What the Redis itself says; `None` when it could not be read.
    pub redis: Option<Replication>,
    /// Bytes this replica is behind the shard's master, as read.
    pub lag: Option<u64>,
    /// Why the Redis could not be read.
    pub error: Option<String>,
    pub flags: Vec<String>,
}

/// One shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardStatus {
    pub name: String,
    /// `LO-HI` from the shard's data; `None` when the data is invalid.
    pub range: Option<String>,
    /// The range the pool file gives this shard, if it has one.
    pub file_range: Option<String>,
    /// The first member's address.
    pub master: Option<String>,
    pub replicas: Vec<String>,
    /// In line order.
    pub members: Vec<MemberStatus>,
    /// The shard has a master but no healthy replica (none live, or every
    /// one off its master or lagging past [`DEGRADED_LAG`]): one failure
    /// away from losing data. A warning, distinct from a shard without a
    /// master (an error).
    pub degraded: bool,
    pub flags: Vec<String>,
}

/// A replica further behind its master than this many bytes does not
/// count towards a shard's redundancy.
pub const DEGRADED_LAG: u64 = 16 * 1024 * 1024;

/// The judged state of the cluster, printed as a table or as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub pool: String,
    pub zookeeper: String,
    pub proxy_root: String,
    pub cluster_root: String,
    /// The slot space, when the ranges tile it.
    pub slots: Option<u32>,
    pub proxies: Vec<ProxyStatus>,
    pub shards: Vec<ShardStatus>,
    /// The worst level of `problems`.
    pub health: Level,
    pub problems: Vec<Problem>,
}

impl Report {
    fn raise(&mut self, level: Level, subject: &str, text: String) {
        self.problems.push(Problem {
            level,
            subject: subject.to_string(),
            text,
        });
        self.health = self.health.max(level);
    }
}

/// Judges a snapshot of the cluster `target` names.
pub fn judge(target: &Target, snapshot: &Snapshot) -> Report {
    let mut report = Report {
        pool: target.pool.clone(),
        zookeeper: target.hosts.clone(),
        proxy_root: target.proxy_root.clone(),
        cluster_root: target.cluster_root.clone(),
        slots: None,
        proxies: Vec::new(),
        shards: Vec::new(),
        health: Level::Ok,
        problems: Vec::new(),
    };
    judge_proxies(&mut report, snapshot);
    let mut views = Vec::new();
    let mut raws: Vec<&RawShard> = snapshot.shards.iter().collect();
    raws.sort_by(|a, b| a.name.cmp(&b.name));
    for raw in raws {
        let (shard, view) = judge_shard(&mut report, target, raw);
        report.shards.push(shard);
        views.extend(view);
    }
    judge_layout(&mut report, target, snapshot, views);
    report
}

fn judge_proxies(report: &mut Report, snapshot: &Snapshot) {
    for (name, data) in &snapshot.proxies {
        let mut proxy = ProxyStatus {
            address: name.clone(),
            data: None,
            uptime_secs: None,
            flags: Vec::new(),
        };
        match serde_json::from_slice::<ProxyData>(data) {
            Ok(parsed) => {
                proxy.uptime_secs = Some(snapshot.now.saturating_sub(parsed.started));
                proxy.data = Some(parsed);
            }
            Err(error) => {
                let text = format!("bad znode data: {error}");
                proxy.flags.push(text.clone());
                report.raise(Level::Warning, &child_path(&report.proxy_root, name), text);
            }
        }
        report.proxies.push(proxy);
    }
    report.proxies.sort_by(|a, b| a.address.cmp(&b.address));
    if report.proxies.is_empty() {
        let root = report.proxy_root.clone();
        report.raise(Level::Error, &root, "no proxies registered".to_string());
    }
}

/// Judges one shard; also returns its view for the range check when its
/// data is valid.
fn judge_shard(
    report: &mut Report,
    target: &Target,
    raw: &RawShard,
) -> (ShardStatus, Option<ShardView>) {
    let path = child_path(&target.cluster_root, &raw.name);
    let file = target
        .shards
        .as_ref()
        .and_then(|shards| shards.iter().find(|s| s.name == raw.name));
    let mut shard = ShardStatus {
        name: raw.name.clone(),
        range: None,
        file_range: file.map(|f| format!("{}-{}", f.lo, f.hi)),
        master: None,
        replicas: Vec::new(),
        members: Vec::new(),
        degraded: false,
        flags: Vec::new(),
    };
    // Only the range matters for the tiling check, not the members.
    let view = ShardView::from_znodes(&path, &raw.data, &[], None);
    match &view {
        Ok(view) => shard.range = Some(format!("{}-{}", view.lo, view.hi)),
        Err(error) => flag_shard(report, &mut shard, Level::Error, error.to_string()),
    }
    match (&shard.range, &shard.file_range) {
        (Some(have), Some(want)) if have != want => {
            let text = format!("range mismatch: {have} in ZooKeeper, {want} in the pool file");
            flag_shard(report, &mut shard, Level::Warning, text);
        }
        (_, None) if target.shards.is_some() => {
            flag_shard(
                report,
                &mut shard,
                Level::Warning,
                "not in the pool file".into(),
            );
        }
        _ => {}
    }
    let mut line = Vec::new();
    for (znode, redis) in &raw.members {
        match parse_member_name(znode) {
            Some((addr, seq)) => line.push((addr, seq, redis)),
            None => {
                let text = format!("stray child {znode:?} (not a member; ignored)");
                flag_shard(report, &mut shard, Level::Warning, text);
            }
        }
    }
    if line.is_empty() {
        // With a recorded history only a Redis holding it may lead: say
        // where the data was, and the way out.
        let text = match ShardData::parse(&raw.data).and_then(|d| d.master) {
            Some(last) => format!(
                "no members: no eligible master (the data was last on {}, replication ID {}); \
                 start its watchdog, or accept the loss with `shardproxy-admin promote {} <addr> --force`",
                last.addr, last.replid, raw.name
            ),
            None => "no members".into(),
        };
        flag_shard(report, &mut shard, Level::Error, text);
    }
    line.sort_by_key(|(_, seq, _)| *seq);
    let master = line.first().map(|(addr, _, redis)| Master {
        addr: addr.clone(),
        offset: redis.as_ref().ok().map(|r| r.offset),
    });
    for (i, (addr, seq, redis)) in line.iter().enumerate() {
        let role = if i == 0 { None } else { master.as_ref() };
        let member = judge_member(report, &raw.name, (addr, *seq, redis), role);
        shard.members.push(member);
    }
    // The shard's row shows its members' troubles too.
    for member in &shard.members {
        let who = match member.line {
            Role::Master => "master".to_string(),
            Role::Replica => format!("replica {}", member.addr),
        };
        let summary: Vec<String> = member.flags.iter().map(|f| format!("{who}: {f}")).collect();
        shard.flags.extend(summary);
    }
    shard.master = master.map(|m| m.addr);
    shard.replicas = line.iter().skip(1).map(|(a, _, _)| a.clone()).collect();
    // Judged only while the master answers: a shard whose master does not
    // has a worse problem, already reported.
    let master_answers = shard.members.first().is_some_and(|m| m.redis.is_some());
    let healthy = shard
        .members
        .iter()
        .skip(1)
        .filter(|m| is_healthy_replica(m))
        .count();
    if master_answers && healthy == 0 {
        shard.degraded = true;
        let text = if shard.replicas.is_empty() {
            "degraded: no live replica".to_string()
        } else {
            format!("degraded: no replica in sync (link up, within {DEGRADED_LAG} bytes)")
        };
        flag_shard(report, &mut shard, Level::Warning, text);
    }
    (shard, view.ok())
}

fn flag_shard(report: &mut Report, shard: &mut ShardStatus, level: Level, text: String) {
    shard.flags.push(text.clone());
    report.raise(level, &shard.name, text);
}

/// A replica that could take over without losing much: it replicates from
/// the shard's master with the link up and is at most [`DEGRADED_LAG`]
/// behind.
fn is_healthy_replica(member: &MemberStatus) -> bool {
    let Some(redis) = &member.redis else {
        return false;
    };
    redis.role == Role::Replica
        && redis.link_up != Some(false)
        && member.lag.is_some_and(|lag| lag <= DEGRADED_LAG)
        && !member
            .flags
            .iter()
            .any(|f| f.starts_with("replicates from"))
}

/// The first member of a shard's line, as its replicas are judged against.
struct Master {
    addr: String,
    /// Its Redis's replication offset, when it could be read.
    offset: Option<u64>,
}

/// Judges one member: `master` is `None` for the first in line, else the
/// master its Redis should replicate from.
fn judge_member(
    report: &mut Report,
    shard: &str,
    (addr, seq, redis): (&String, u64, &Result<Replication, String>),
    master: Option<&Master>,
) -> MemberStatus {
    let mut member = MemberStatus {
        addr: addr.clone(),
        znode: format!("{addr}-{seq:010}"),
        seq,
        line: if master.is_none() {
            Role::Master
        } else {
            Role::Replica
        },
        redis: redis.as_ref().ok().cloned(),
        lag: None,
        error: redis.as_ref().err().cloned(),
        flags: Vec::new(),
    };
    let place = match member.line {
        Role::Master => "master",
        Role::Replica => "replica",
    };
    let subject = format!("{shard} {place} {addr}");
    let mut flag = |member: &mut MemberStatus, level, text: String| {
        member.flags.push(text.clone());
        report.raise(level, &subject, text);
    };
    match (redis, master) {
        (Err(error), _) => {
            // A master that cannot serve is an outage; a replica, a risk.
            let level = if master.is_none() {
                Level::Error
            } else {
                Level::Warning
            };
            member.flags.push("unreachable".to_string());
            report.raise(level, &subject, format!("unreachable: {error}"));
        }
        (Ok(info), None) => {
            if info.role != Role::Master {
                let of = info.master.as_deref().unwrap_or("?");
                flag(
                    &mut member,
                    Level::Error,
                    format!("Redis is a replica of {of}"),
                );
            }
        }
        (Ok(info), Some(master)) => {
            if info.role == Role::Master {
                let text = "not replicating: Redis is a master".to_string();
                flag(&mut member, Level::Warning, text);
            } else if info.master.as_deref() != Some(master.addr.as_str()) {
                let of = info.master.as_deref().unwrap_or("?");
                let text = format!("replicates from {of}, not from the master {}", master.addr);
                flag(&mut member, Level::Warning, text);
            } else if info.link_up == Some(false) {
                flag(
                    &mut member,
                    Level::Warning,
                    "replication link down".to_string(),
                );
            }
            if info.role == Role::Replica {
                member.lag = master.offset.map(|m| m.saturating_sub(info.offset));
            }
        }
    }
    member
}

/// The checks across shards: the ranges tile the slot space, and the file's
/// shards all exist.
fn judge_layout(report: &mut Report, target: &Target, snapshot: &Snapshot, views: Vec<ShardView>) {
    let root = target.cluster_root.clone();
    if !snapshot.cluster_exists {
        report.raise(Level::Error, &root, "missing: run init".to_string());
        return;
    }
    for file in target.shards.iter().flatten() {
        if !report.shards.iter().any(|s| s.name == file.name) {
            let text = format!(
                "{} ({}-{}) is in the pool file but not in ZooKeeper",
                file.name, file.lo, file.hi
            );
            report.raise(Level::Warning, &root, text);
        }
    }
    // Shards with invalid data are already errors; tiling is judged only
    // when every shard is readable, or it would report a bogus gap.
    if views.len() != snapshot.shards.len() {
        return;
    }
    match ClusterView::new(views) {
        Ok(view) => report.slots = Some(view.slots),
        Err(error) => {
            let named: Vec<String> = match &error {
                LayoutError::Gap { after, before, .. } => {
                    after.iter().chain([before]).cloned().collect()
                }
                LayoutError::Overlap { first, second, .. } => vec![first.clone(), second.clone()],
                _ => Vec::new(),
            };
            for shard in report.shards.iter_mut().filter(|s| named.contains(&s.name)) {
                shard.flags.push("gap/overlap".to_string());
            }
            report.raise(Level::Error, &root, error.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::target::FileShard;

    fn target() -> Target {
        Target {
            pool: "alpha".into(),
            hosts: "zk:2181".into(),
            zk_auth: None,
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
        let report = judge(&target(), &snapshot);
        assert_eq!(
            texts(&report),
            ["Error /redis/proxy/icd: no proxies registered"]
        );
        assert_eq!(report.health, Level::Error);
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
            problems[0]
                .starts_with("Error redis-0001: /redis/cluster/icd/redis-0001: bad shard data"),
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
}
