//! `status`: reads the proxies and shards from ZooKeeper and each member's
//! replication state from its Redis, then judges and prints them.
//!
//! All Redis servers are asked at once, each with its own timeout, so one
//! stuck server costs seconds, not seconds per server.

use super::migrate::control::registration_of;
use super::redis::read_replication;
use super::render::render;
use super::report::{judge, RawShard, Report, Snapshot};
use super::target::{connect, Target, ZK_TIMEOUT};
use super::znodes::{read_shard_znodes, ShardZnode};
use super::AdminError;
use crate::zk::layout::{child_path, parse_member_name};
use crate::zk::migration::{migration_path, roster_path, MigrationState};
use std::time::{SystemTime, UNIX_EPOCH};
use zookeeper_client as zk;

/// Reads and judges the cluster `target` names.
///
/// # Errors
/// ZooKeeper cannot be reached or read. Problems in the cluster itself are
/// not errors: they are in the report.
pub async fn report(target: &Target) -> Result<Report, AdminError> {
    let client = connect(&target.hosts, target.zk_auth.as_ref()).await?;
    let snapshot = tokio::time::timeout(ZK_TIMEOUT * 2, snapshot(&client, target))
        .await
        .map_err(|_| AdminError::ZooKeeper {
            hosts: target.hosts.clone(),
            reason: "status did not finish in time".to_string(),
        })??;
    let mut report = judge(target, &snapshot);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match read_migration(&client, target).await {
        Ok(migration) => report.with_migration(migration, now),
        // Not "no migration": the proxies flag their state invalid and no
        // migration can be started, aborted or exported (review: status
        // said ok meanwhile).
        Err((path, why)) => report.with_unreadable_migration(&path, why),
    }
    Ok(report)
}

/// The migration znode's state, and whether it is ephemeral (it ends with
/// the session of the run that wrote it); `None` when there is none. The
/// error names the znode and why it cannot be read or parsed.
async fn read_migration(
    client: &zk::Client,
    target: &Target,
) -> Result<Option<(MigrationState, bool)>, (String, String)> {
    let Some(path) = migration_path(&target.cluster_root) else {
        return Ok(None);
    };
    match client.get_data(&path).await {
        Ok((data, stat)) => match MigrationState::parse(&data) {
            Ok(state) => Ok(Some((state, stat.ephemeral_owner != 0))),
            Err(why) => Err((path, why)),
        },
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err((path, format!("cannot be read: {e}"))),
    }
}

/// The report as text for a terminal or, with `json`, as pretty JSON.
pub fn format(report: &Report, json: bool) -> String {
    if json {
        // A Report holds only strings, numbers and options: it serializes.
        let mut text = serde_json::to_string_pretty(report).unwrap_or_default();
        text.push('\n');
        text
    } else {
        render(report)
    }
}

async fn snapshot(client: &zk::Client, target: &Target) -> Result<Snapshot, AdminError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut proxies = Vec::new();
    let mut hand_made_proxies = Vec::new();
    for name in children(client, target, &target.proxy_root)
        .await?
        .unwrap_or_default()
    {
        let path = child_path(&target.proxy_root, &name);
        if let Some((data, stat)) = data(client, target, &path).await? {
            if stat.ephemeral_owner == 0 {
                hand_made_proxies.push(name.clone());
            }
            proxies.push((name, data));
        }
    }
    let mut roster = Vec::new();
    if let Some(path) = roster_path(&target.cluster_root) {
        for name in children(client, target, &path).await?.unwrap_or_default() {
            // An entry forgotten while we read is simply not shown.
            let Some((entry, _)) = data(client, target, &child_path(&path, &name)).await? else {
                continue;
            };
            let registration = registration_of(&entry, &target.proxy_root, &name);
            let registered = client
                .check_stat(&registration)
                .await
                .map_err(|e| AdminError::zk_path(&target.hosts, &registration, e))?
                .is_some();
            roster.push((name, registered));
        }
    }
    let znodes = read_shard_znodes(client, target).await?;
    let cluster_exists = znodes.is_some();
    let mut shards = Vec::new();
    // A shard deleted while we read is simply not shown.
    for ShardZnode {
        name,
        data,
        members,
        ..
    } in znodes.unwrap_or_default()
    {
        let asked: Vec<_> = members
            .into_iter()
            .map(|znode| {
                let auth = target.redis_auth.clone();
                let addr = parse_member_name(&znode).map(|(addr, _)| addr);
                let answer = tokio::spawn(async move {
                    match addr {
                        Some(addr) => read_replication(&addr, auth).await,
                        None => Err("not asked: bad member name".to_string()),
                    }
                });
                (znode, answer)
            })
            .collect();
        shards.push((name, data, asked));
    }
    let mut raw = Vec::with_capacity(shards.len());
    for (name, data, asked) in shards {
        let mut members = Vec::with_capacity(asked.len());
        for (znode, answer) in asked {
            let redis = answer
                .await
                .unwrap_or_else(|e| Err(format!("query failed: {e}")));
            members.push((znode, redis));
        }
        raw.push(RawShard {
            name,
            data,
            members,
        });
    }
    Ok(Snapshot {
        now,
        proxies,
        hand_made_proxies,
        roster,
        cluster_exists,
        shards: raw,
    })
}

/// The children of `path`, `None` if it does not exist.
pub(super) async fn children(
    client: &zk::Client,
    target: &Target,
    path: &str,
) -> Result<Option<Vec<String>>, AdminError> {
    match client.list_children(path).await {
        Ok(names) => Ok(Some(names)),
        Err(zk::Error::NoNode) => Ok(None),
        Err(error) => Err(AdminError::zk_path(&target.hosts, path, error)),
    }
}

/// The data and stat of `path`, `None` if it does not exist (any more).
async fn data(
    client: &zk::Client,
    target: &Target,
    path: &str,
) -> Result<Option<(Vec<u8>, zk::Stat)>, AdminError> {
    match client.get_data(path).await {
        Ok(found) => Ok(Some(found)),
        Err(zk::Error::NoNode) => Ok(None),
        Err(error) => Err(AdminError::zk_path(&target.hosts, path, error)),
    }
}
