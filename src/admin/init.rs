//! `init`: creates the ZooKeeper layout a pool file describes, or says
//! exactly how ZooKeeper differs from it.
//!
//! The work is split in two: [`Plan::new`] compares the file's shards with
//! what ZooKeeper holds (pure, unit-tested), and [`run`] reads ZooKeeper,
//! refuses a plan that would change existing shards unless forced, and
//! applies the shard changes in one ZooKeeper transaction. The transaction
//! checks the versions that were read, so a concurrent edit makes it fail
//! instead of being overwritten, and proxies never see half a change.

use super::target::{connect, FileShard, Target, ZK_TIMEOUT};
use super::znodes::read_shard_znodes;
use super::AdminError;
use crate::zk::layout::{child_path, parse_shard_data, ShardData};
use std::fmt;
use zookeeper_client as zk;

/// A shard znode as found in ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkShard {
    /// The znode's name, e.g. `redis-0000`.
    pub name: String,
    /// Its data, as stored.
    pub data: Vec<u8>,
    /// Its data version, checked when the change is applied.
    pub version: i32,
    /// How many members (live Redis instances) it has.
    pub members: usize,
}

impl ZkShard {
    /// The range as text, or why the data is not a range.
    fn range_text(&self) -> String {
        match parse_shard_data(&self.name, &self.data) {
            Ok((lo, hi)) => format!("{lo}-{hi}"),
            Err(_) => format!("invalid data {:?}", String::from_utf8_lossy(&self.data)),
        }
    }
}

/// One change that makes ZooKeeper match the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The file has a shard ZooKeeper lacks.
    Create { name: String, lo: u32, hi: u32 },
    /// The shard's data in ZooKeeper (`was`) differs from the file's range.
    SetRange {
        name: String,
        was: String,
        lo: u32,
        hi: u32,
        version: i32,
        /// Its live members: it serves data.
        members: usize,
        /// Its data as read, kept but for the range: the master and
        /// history recorded in it (the range changes, not where the
        /// shard's data is; review: dropped, an empty Redis could then
        /// lead the shard and wipe its master), and keys this version
        /// does not know.
        kept: Option<ShardData>,
    },
    /// ZooKeeper has a shard the file lacks.
    Delete {
        name: String,
        was: String,
        members: usize,
        version: i32,
    },
}

impl Change {
    /// What differs, in the words of the refusal message.
    pub fn difference(&self) -> String {
        match self {
            Change::Create { name, lo, hi } => {
                format!("{name}: missing in ZooKeeper, {lo}-{hi} in the file")
            }
            Change::SetRange {
                name, was, lo, hi, ..
            } => format!("{name}: {was} in ZooKeeper, {lo}-{hi} in the file"),
            Change::Delete {
                name, was, members, ..
            } => format!("{name}: {was} in ZooKeeper ({members} members), not in the file"),
        }
    }
}

impl Change {
    /// The warning for a range changed under a shard that serves data:
    /// the keys of the slots it lost stay on it, no longer found.
    fn stranding(&self) -> Option<String> {
        match self {
            Change::SetRange { name, members, .. } if *members > 0 => Some(format!(
                "warning: {name} has {members} live Redis: the keys of the slots that changed \
                 shard stayed where they were and are no longer found (`migrate` moves ranges \
                 with their keys)"
            )),
            _ => None,
        }
    }
}

impl fmt::Display for Change {
    /// What was done, for the output of a successful run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Create { name, lo, hi } => write!(f, "created {name} with range {lo}-{hi}"),
            Change::SetRange {
                name, was, lo, hi, ..
            } => write!(f, "changed {name} from {was} to {lo}-{hi}"),
            Change::Delete { name, was, .. } => write!(f, "deleted {name} ({was})"),
        }
    }
}

/// How to get from what ZooKeeper holds to what the file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In shard-name order.
    pub changes: Vec<Change>,
    /// Shards already as the file says.
    pub unchanged: usize,
    /// Shards ZooKeeper holds now.
    pub existing: usize,
}

impl Plan {
    /// Compares the file's shards with ZooKeeper's, matching them by name.
    pub fn new(file: &[FileShard], zk: &[ZkShard]) -> Plan {
        let mut changes = Vec::new();
        let mut unchanged = 0;
        for want in file {
            match zk.iter().find(|s| s.name == want.name) {
                None => changes.push(Change::Create {
                    name: want.name.clone(),
                    lo: want.lo,
                    hi: want.hi,
                }),
                Some(have)
                    if parse_shard_data(&have.name, &have.data) == Ok((want.lo, want.hi)) =>
                {
                    unchanged += 1
                }
                Some(have) => changes.push(Change::SetRange {
                    name: want.name.clone(),
                    was: have.range_text(),
                    lo: want.lo,
                    hi: want.hi,
                    version: have.version,
                    members: have.members,
                    kept: ShardData::parse(&have.data),
                }),
            }
        }
        for have in zk {
            if !file.iter().any(|s| s.name == have.name) {
                changes.push(Change::Delete {
                    name: have.name.clone(),
                    was: have.range_text(),
                    members: have.members,
                    version: have.version,
                });
            }
        }
        changes.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        Plan {
            changes,
            unchanged,
            existing: zk.len(),
        }
    }

    /// True when the plan touches shards of an existing layout: creating
    /// a fresh layout is always allowed, changing one needs `--force`.
    pub fn needs_force(&self) -> bool {
        self.existing > 0 && !self.changes.is_empty()
    }
}

fn name_of(change: &Change) -> &str {
    match change {
        Change::Create { name, .. }
        | Change::SetRange { name, .. }
        | Change::Delete { name, .. } => name,
    }
}

/// Runs `init` for `target`; returns the text to print.
///
/// # Errors
/// The pool is not in range form, ZooKeeper fails, the layout differs and
/// `force` is off ([`AdminError::Differs`]), or a shard to delete still has
/// members.
pub async fn run(target: &Target, force: bool) -> Result<String, AdminError> {
    let file = target
        .shards
        .as_ref()
        .ok_or_else(|| AdminError::NotRangeForm(target.pool.clone()))?;
    let client = connect(&target.hosts, target.zk_auth.as_ref()).await?;
    let step = async {
        let zk_error = |path: &str| {
            let path = path.to_string();
            move |error: zk::Error| AdminError::zk_path(&target.hosts, &path, error)
        };
        let mut missing_roots = Vec::new();
        for root in [&target.proxy_root, &target.cluster_root] {
            let stat = client.check_stat(root).await.map_err(zk_error(root))?;
            if stat.is_none() {
                missing_roots.push(root);
            }
        }
        let existing = read_shards(&client, target).await?;
        let plan = Plan::new(file, &existing);
        if plan.needs_force() && !force {
            return Err(AdminError::Differs {
                root: target.cluster_root.clone(),
                pool: target.pool.clone(),
                diff: plan.changes.iter().map(Change::difference).collect(),
            });
        }
        let mut done = Vec::new();
        let persistent =
            zk::CreateMode::Persistent.with_acls(crate::zk::acls(target.zk_auth.as_ref()));
        for root in missing_roots {
            client
                .mkdir(root, &persistent)
                .await
                .map_err(zk_error(root))?;
            done.push(format!("created {root}"));
        }
        apply(&client, target, &plan).await?;
        done.extend(plan.changes.iter().map(|c| format!("{c}")));
        done.extend(plan.changes.iter().filter_map(Change::stranding));
        Ok(summary(target, &plan, &done))
    };
    tokio::time::timeout(ZK_TIMEOUT * 2, step)
        .await
        .map_err(|_| AdminError::ZooKeeper {
            hosts: target.hosts.clone(),
            reason: "init did not finish in time".to_string(),
        })?
}

/// What the run did, or that it had nothing to do.
fn summary(target: &Target, plan: &Plan, done: &[String]) -> String {
    let shards = match plan.unchanged + plan.changes.len() - deletions(plan) {
        1 => "1 shard".to_string(),
        n => format!("{n} shards"),
    };
    if done.is_empty() {
        return format!(
            "nothing to do: {} already matches pool '{}' ({shards})\n",
            target.cluster_root, target.pool
        );
    }
    let mut out: String = done.iter().map(|line| format!("{line}\n")).collect();
    out.push_str(&format!(
        "{} now matches pool '{}' ({shards})\n",
        target.cluster_root, target.pool
    ));
    out
}

fn deletions(plan: &Plan) -> usize {
    plan.changes
        .iter()
        .filter(|c| matches!(c, Change::Delete { .. }))
        .count()
}

/// Reads the shard znodes under the cluster root (none if it is missing).
async fn read_shards(client: &zk::Client, target: &Target) -> Result<Vec<ZkShard>, AdminError> {
    let znodes = read_shard_znodes(client, target).await?.unwrap_or_default();
    Ok(znodes
        .into_iter()
        .map(|znode| ZkShard {
            name: znode.name,
            data: znode.data,
            version: znode.version,
            members: znode.members.len(),
        })
        .collect())
}

/// Applies the plan's shard changes in one transaction.
async fn apply(client: &zk::Client, target: &Target, plan: &Plan) -> Result<(), AdminError> {
    if plan.changes.is_empty() {
        return Ok(());
    }
    let root = &target.cluster_root;
    let persistent = zk::CreateMode::Persistent.with_acls(crate::zk::acls(target.zk_auth.as_ref()));
    let mut multi = client.new_multi_writer();
    for change in &plan.changes {
        // Adding to the transaction only validates the path.
        let added = match change {
            Change::Create { name, lo, hi } => multi.add_create(
                &child_path(root, name),
                &ShardData::new(*lo, *hi).to_json(),
                &persistent,
            ),
            Change::SetRange {
                name,
                lo,
                hi,
                version,
                kept,
                ..
            } => multi.add_set_data(
                &child_path(root, name),
                &ShardData {
                    weight: format!("{lo}-{hi}"),
                    ..kept.clone().unwrap_or_else(|| ShardData::new(*lo, *hi))
                }
                .to_json(),
                Some(*version),
            ),
            Change::Delete {
                name,
                members,
                version,
                ..
            } => {
                // Members are the watchdogs' ephemeral znodes: deleting them
                // here would fight the watchdogs, so the shard must be
                // drained first.
                if *members > 0 {
                    return Err(AdminError::ShardInUse {
                        shard: child_path(root, name),
                        members: *members,
                    });
                }
                multi.add_delete(&child_path(root, name), Some(*version))
            }
        };
        added.map_err(|e| AdminError::zk_path(&target.hosts, root, e))?;
    }
    match multi.commit().await {
        Ok(_) => Ok(()),
        Err(zk::MultiWriteError::OperationFailed { index, source }) => {
            let what = plan.changes[index].difference();
            let reason = match source {
                zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode => {
                    format!("ZooKeeper changed while init ran ({what}): run init again")
                }
                zk::Error::NotEmpty => format!("a member joined meanwhile ({what})"),
                other => format!("{what}: {other}"),
            };
            Err(AdminError::ZooKeeper {
                hosts: target.hosts.clone(),
                reason: format!("nothing was changed: {reason}"),
            })
        }
        Err(zk::MultiWriteError::RequestFailed { source }) => {
            Err(AdminError::zk_path(&target.hosts, root, source))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ranges: &[(u32, u32)]) -> Vec<FileShard> {
        ranges
            .iter()
            .enumerate()
            .map(|(i, &(lo, hi))| FileShard {
                name: format!("redis-{i:04}"),
                lo,
                hi,
                server: format!("10.0.0.{i}:6379"),
            })
            .collect()
    }

    fn zk_shard(name: &str, data: &str, members: usize) -> ZkShard {
        ZkShard {
            name: name.into(),
            data: data.as_bytes().to_vec(),
            version: 3,
            members,
        }
    }

    #[test]
    fn empty_zookeeper_creates_every_shard_without_force() {
        let plan = Plan::new(&file(&[(0, 2047), (2048, 4095)]), &[]);
        assert_eq!(
            plan.changes,
            [
                Change::Create {
                    name: "redis-0000".into(),
                    lo: 0,
                    hi: 2047
                },
                Change::Create {
                    name: "redis-0001".into(),
                    lo: 2048,
                    hi: 4095
                },
            ]
        );
        assert!(!plan.needs_force());
    }

    #[test]
    fn matching_layout_is_a_no_op() {
        let zk = [
            zk_shard("redis-0000", r#"{"weight":"0-2047"}"#, 2),
            zk_shard("redis-0001", r#"{"weight":"2048-4095","note":"x"}"#, 0),
        ];
        let plan = Plan::new(&file(&[(0, 2047), (2048, 4095)]), &zk);
        assert!(plan.changes.is_empty());
        assert_eq!(plan.unchanged, 2);
        assert!(!plan.needs_force());
    }

    #[test]
    fn different_range_needs_force_and_says_both_ranges() {
        let zk = [
            zk_shard("redis-0000", r#"{"weight":"0-2047"}"#, 1),
            zk_shard("redis-0001", r#"{"weight":"2048-4095"}"#, 1),
        ];
        let plan = Plan::new(&file(&[(0, 1023), (1024, 4095)]), &zk);
        assert!(plan.needs_force());
        let diff: Vec<String> = plan.changes.iter().map(Change::difference).collect();
        assert_eq!(
            diff,
            [
                "redis-0000: 0-2047 in ZooKeeper, 0-1023 in the file",
                "redis-0001: 2048-4095 in ZooKeeper, 1024-4095 in the file",
            ]
        );
        assert_eq!(
            plan.changes[0].to_string(),
            "changed redis-0000 from 0-2047 to 0-1023"
        );
        // Both serve data: forced, the run warns of the keys left behind.
        let warning = plan.changes[0].stranding().expect("a warning");
        assert!(
            warning.starts_with("warning: redis-0000 has 1 live Redis"),
            "{warning}"
        );
        let idle = Plan::new(
            &file(&[(0, 1023), (1024, 4095)]),
            &[
                zk_shard("redis-0000", r#"{"weight":"0-2047"}"#, 0),
                zk_shard("redis-0001", r#"{"weight":"2048-4095"}"#, 0),
            ],
        );
        assert!(idle.changes.iter().all(|c| c.stranding().is_none()));
    }

    #[test]
    fn missing_shard_in_existing_layout_needs_force() {
        let zk = [zk_shard("redis-0000", r#"{"weight":"0-2047"}"#, 1)];
        let plan = Plan::new(&file(&[(0, 2047), (2048, 4095)]), &zk);
        assert!(plan.needs_force());
        assert_eq!(
            plan.changes[0].difference(),
            "redis-0001: missing in ZooKeeper, 2048-4095 in the file"
        );
    }

    #[test]
    fn extra_shard_needs_force_and_counts_its_members() {
        let zk = [
            zk_shard("redis-0000", r#"{"weight":"0-2047"}"#, 1),
            zk_shard("redis-0001", r#"{"weight":"2048-4095"}"#, 2),
        ];
        let plan = Plan::new(&file(&[(0, 2047)]), &zk);
        assert!(plan.needs_force());
        assert_eq!(
            plan.changes,
            [Change::Delete {
                name: "redis-0001".into(),
                was: "2048-4095".into(),
                members: 2,
                version: 3
            }]
        );
        assert_eq!(
            plan.changes[0].difference(),
            "redis-0001: 2048-4095 in ZooKeeper (2 members), not in the file"
        );
    }

    #[test]
    fn invalid_data_in_zookeeper_is_shown_as_is() {
        let zk = [zk_shard("redis-0000", "junk", 0)];
        let plan = Plan::new(&file(&[(0, 9)]), &zk);
        assert_eq!(
            plan.changes[0].difference(),
            "redis-0000: invalid data \"junk\" in ZooKeeper, 0-9 in the file"
        );
    }
}
