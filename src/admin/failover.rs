//! `failover <shard>`: a planned switchover (DESIGN.md, watchdog rule 7).
//!
//! The admin tool only checks the request and names who hands over to
//! whom; the switchover itself (pause writes on the master, wait for the
//! next in line to catch up, the master's watchdog leaves the line) is the
//! watchdogs' job, and the watchdog library does not offer it yet.

use super::target::{connect, Target};
use super::AdminError;
use crate::zk::layout::{child_path, parse_member_name};
use std::time::Duration;
use zookeeper_client as zk;

/// Asks for a planned switchover of `shard`, waiting up to `timeout`.
///
/// # Errors
/// The shard does not exist or has no member to hand over to; and, until
/// the watchdog provides the switchover, always
/// [`AdminError::Failover`] saying so.
pub async fn run(target: &Target, shard: &str, timeout: Duration) -> Result<String, AdminError> {
    let (master, next) = handover(target, shard).await?;
    Err(AdminError::Failover(format!(
        "{shard}: {master} would hand over to {next} (within {} s), but the \
         watchdog's switchover request is not available yet",
        timeout.as_secs()
    )))
}

/// The shard's master and the next in line.
///
/// # Errors
/// No such shard, or fewer than two members.
async fn handover(target: &Target, shard: &str) -> Result<(String, String), AdminError> {
    let client = connect(&target.hosts).await?;
    let path = child_path(&target.cluster_root, shard);
    let children = match client.list_children(&path).await {
        Ok(children) => children,
        Err(zk::Error::NoNode) => {
            return Err(AdminError::Failover(format!("no shard {path}")));
        }
        Err(error) => return Err(AdminError::zk_path(&target.hosts, &path, error)),
    };
    let mut line: Vec<(u64, String)> = children
        .iter()
        .filter_map(|name| parse_member_name(name).map(|(addr, seq)| (seq, addr)))
        .collect();
    line.sort();
    match line.as_slice() {
        [(_, master), (_, next), ..] => Ok((master.clone(), next.clone())),
        [(_, master)] => Err(AdminError::Failover(format!(
            "{shard}: master {master} has no replica in line to hand over to"
        ))),
        [] => Err(AdminError::Failover(format!("{shard}: no members"))),
    }
}
