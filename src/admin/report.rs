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
use crate::zk::layout::{child_path, parse_member_name, LayoutError, ProxyData, Role, ShardData};
use crate::zk::migration::{roster_path, MigrationState, Phase};
use crate::zk::view::{ClusterView, ShardView};
use serde::Serialize;

/// Everything `status` read, before judging.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Seconds since the Unix epoch when it was read (for uptimes).
    pub now: u64,
    /// The proxy znodes: name and data.
    pub proxies: Vec<(String, Vec<u8>)>,
    /// Those of them that are not ephemeral: no running proxy registered
    /// them (left by hand, or by another tool).
    pub hand_made_proxies: Vec<String>,
    /// The proxies' roster (`<control>/proxies`): each name, and whether
    /// the registration its entry names exists.
    pub roster: Vec<(String, bool)>,
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
    /// A range migration in progress, as its znode says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<crate::zk::migration::MigrationState>,
    /// How far that migration's mover got and how long it still needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_progress: Option<MigrationProgress>,
}

/// A migration's progress as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationProgress {
    pub keys_moved: u64,
    /// The key estimate made when the migration was planned.
    pub keys_estimated: Option<u64>,
    /// The mover's average since the migration started.
    pub keys_per_second: u64,
    /// `None` (JSON null): unknown, no estimate or no rate yet.
    pub eta_seconds: Option<u64>,
}

impl MigrationProgress {
    pub fn of(state: &crate::zk::migration::MigrationState) -> MigrationProgress {
        MigrationProgress {
            keys_moved: state.moved,
            keys_estimated: state.estimate,
            keys_per_second: state.keys_per_second(),
            // Committed, no key is left to move: what remains is the
            // proxies' acknowledgements and the znode's removal.
            eta_seconds: (state.phase != Phase::Committed)
                .then(|| state.eta_seconds())
                .flatten(),
        }
    }
}

/// Seconds without progress after which a moving migration is reported
/// as possibly driven by no `migrate` run (the mover writes progress every
/// second between batches; one big key may take longer).
const MOVER_QUIET_SECS: u64 = 60;
/// Seconds in phase prepare after which no `migrate` run can still be
/// waiting for the proxies (it gives them `--barrier-timeout-ms`, 10 s by
/// default, then calls the migration off). Only a persistent prepare znode
/// stays without a run: a migration turned around by `abort`, or one an
/// older `migrate` left; a fresh one's ends with its run's session.
const PREPARE_QUIET_SECS: u64 = 30;
/// Seconds in phase committed after which its `migrate` run has most
/// likely ended without finishing (killed, or its ZooKeeper session lost
/// right after the commit): after the commit a run only waits for the
/// proxies (`--barrier-timeout-ms`, 10 s by default), counts the keys left
/// on the source and deletes the znode. Until then no other migration
/// starts.
const COMMITTED_QUIET_SECS: u64 = 60;

impl Report {
    /// Records the migration in progress (and whether its znode is
    /// ephemeral: it ends with the session of the run that wrote it), and
    /// warns when nothing seems to drive it (its `migrate` was killed): in
    /// phase prepare the proxies hold the range's requests meanwhile, and a
    /// moving one never ends.
    pub fn with_migration(&mut self, migration: Option<(MigrationState, bool)>, now: u64) {
        let (state, ephemeral) = match migration {
            Some((state, ephemeral)) => (Some(state), ephemeral),
            None => (None, false),
        };
        self.migration_progress = state.as_ref().map(MigrationProgress::of);
        if let Some(m) = &state {
            let quiet = now.saturating_sub(m.updated);
            let rerun = format!("`shardproxy-admin migrate {} --to {}`", m.range, m.target);
            let text = match m.phase {
                Phase::Moving if !m.paused && quiet >= MOVER_QUIET_SECS => Some(format!(
                    "no progress written for {quiet} s: if no `migrate` runs (it was killed), \
                     run {rerun} to finish the move"
                )),
                Phase::Prepare if !ephemeral && quiet >= PREPARE_QUIET_SECS => Some(format!(
                    "in phase prepare for {quiet} s, so no `migrate` waits for the proxies: they \
                     hold every request of slots {} (TRYAGAIN) until {rerun} runs or `abort`",
                    m.range
                )),
                Phase::Committed if quiet >= COMMITTED_QUIET_SECS => Some(format!(
                    "committed {quiet} s ago and not finished: if no `migrate` runs (it was \
                     killed or lost its ZooKeeper session), run {rerun} to finish it; no other \
                     migration starts until then"
                )),
                _ => None,
            };
            if let Some(text) = text {
                self.raise(Level::Warning, &format!("migration {}", m.id), text);
            }
        }
        self.migration = state;
    }

    /// Records a migration znode that cannot be read or parsed (`why`) as
    /// an error: every proxy reports its ZooKeeper state invalid, and
    /// `migrate`, `abort` and `export` fail, until it is fixed.
    pub fn with_unreadable_migration(&mut self, path: &str, why: String) {
        let text = format!(
            "{why}: every proxy reports state_valid 0, and migrate, abort and export fail \
             until this znode is fixed"
        );
        self.raise(Level::Error, path, text);
    }

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
        migration: None,
        migration_progress: None,
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
        if snapshot.hand_made_proxies.contains(name) {
            let text = format!(
                "not ephemeral: no running proxy registered it (made by hand, or by another \
                 tool); migrations do not wait for it (`forget-proxy {name}` deletes it)"
            );
            proxy.flags.push(text.clone());
            report.raise(Level::Warning, &child_path(&report.proxy_root, name), text);
        }
        report.proxies.push(proxy);
    }
    report.proxies.sort_by(|a, b| a.address.cmp(&b.address));
    let roster = roster_path(&report.cluster_root).unwrap_or_default();
    for (name, registered) in &snapshot.roster {
        if !registered {
            report.raise(
                Level::Warning,
                &child_path(&roster, name),
                format!(
                    "proxy {name} is not registered: cut off from ZooKeeper (it may still serve \
                     from its last table), or stopped without shutting down; migrations wait for \
                     it (`forget-proxy {name}` once it is down for good)"
                ),
            );
        }
    }
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
        // A shard added for growth owns nothing yet.
        Ok(view) if view.empty => shard.range = Some("(none)".to_string()),
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
            Some(last) => {
                // An operator's `promote --force` records no replication ID.
                let history = if last.replid.is_empty() {
                    String::from("chosen by promote")
                } else {
                    format!("replication ID {}", last.replid)
                };
                format!(
                    "no members: no eligible master (the data was last on {}, {history}); \
                     start its watchdog, or accept the loss with `shardproxy-admin promote {} <addr> --force`",
                    last.addr, raw.name
                )
            }
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
#[path = "report_tests.rs"]
mod tests;
