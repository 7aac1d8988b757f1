//! `promote <shard> <addr> [--force]`: the operator's way out when a shard
//! has no eligible master.
//!
//! A shard records its last master and that master's replication history
//! in its data (the watchdog writes it when it takes over). When the shard
//! is empty, only a Redis holding that history may lead it, so an empty
//! Redis can never take a shard and wipe it. If no such Redis is left, an
//! operator accepts the loss here: this says what the candidate holds
//! against the recorded history and, with `--force`, records the candidate
//! as the shard's master, so its watchdog leads the shard.

use super::redis::REDIS_TIMEOUT;
use super::target::{connect, Target};
use super::znodes::read_shard_znodes;
use super::AdminError;
use crate::watchdog::health::RedisLink;
use crate::zk::layout::{child_path, MasterRecord, MemberData, ShardData};
use crate::zk::view::{claim_on, members_in_line};

/// Returns the text to print and the exit code: 0 when recorded (or
/// nothing to force), 2 when `--force` is needed.
///
/// # Errors
/// [`AdminError::Promote`]: a bad shard name, a shard with members (use
/// `failover`), unreadable shard data, or an unreachable candidate.
pub async fn run(
    target: &Target,
    shard: &str,
    addr: &str,
    force: bool,
) -> Result<(String, u8), AdminError> {
    let fail = |text: String| AdminError::Promote(format!("{shard}: {text}"));
    if shard.is_empty() || shard.contains('/') {
        return Err(fail("want a shard znode name such as redis-0001".into()));
    }
    let path = child_path(&target.cluster_root, shard);
    let client = connect(&target.hosts, target.zk_auth.as_ref()).await?;
    let zk_fail = |e: zookeeper_client::Error| fail(format!("ZooKeeper: {e}"));
    let (data, stat) = client.get_data(&path).await.map_err(zk_fail)?;
    let mut shard_data =
        ShardData::parse(&data).ok_or_else(|| fail("the shard's data is not valid JSON".into()))?;
    let members = members_in_line(&client.list_children(&path).await.map_err(zk_fail)?);
    if let Some(master) = members.first() {
        return Err(fail(format!(
            "has a master ({}); use failover for a planned switchover",
            master.addr
        )));
    }
    let mut link = RedisLink::new(addr, target.redis_auth.clone(), REDIS_TIMEOUT);
    let state = link
        .replication()
        .await
        .map_err(|e| fail(format!("cannot read the candidate: {e}")))?;
    // By run too: the same Redis under another name (`localhost:P` for
    // `127.0.0.1:P`) is still the other shard's (review: it was recorded
    // here, and the proxies wrote this shard's keys to it at once).
    if let Some(other) = other_shards_claim(&client, target, shard, addr, &state.run_id).await? {
        return Err(fail(format!(
            "{addr} {other}; promote a Redis of this shard (its watchdog started with this \
             shard's --shard)"
        )));
    }
    let mut text = String::new();
    let recorded = shard_data.master.clone();
    match &recorded {
        Some(last) => {
            text.push_str(&format!(
                "{shard}: last master {} (replication ID {}, offset {})\n",
                last.addr, last.replid, last.offset
            ));
            if state.holds_history(&last.replid, last.offset) {
                text.push_str(&format!(
                    "{addr} holds that history (offset {}): its watchdog leads the shard, unless \
                     it counts its Redis behind the last master (a replica whose link was down \
                     when the master failed: its log says 'not leading it'), and then only once \
                     forced\n",
                    state.offset
                ));
                // The watchdog's own refusal is what --force is for (review:
                // it told the operator to force, and the force was ignored
                // here because the data looked whole, leaving the shard
                // without a master).
                if !force {
                    return Ok((text, 0));
                }
            } else if let Some(reach) = state.history_reach(&last.replid) {
                text.push_str(&format!(
                    "{addr} holds only the start of that history (to offset {reach} of {}): every \
                     write that was on {} after it is lost if it becomes master\n",
                    last.offset, last.addr
                ));
            } else {
                text.push_str(&format!(
                    "{addr} holds another history (replication ID {}, offset {}): every write that \
                     was on {} and is not on {addr} is lost if it becomes master\n",
                    state.replid, state.offset, last.addr
                ));
            }
        }
        None => text.push_str(&format!(
            "{shard}: no history recorded: any Redis may lead it already\n"
        )),
    }
    if recorded.is_none() {
        return Ok((text, 0));
    }
    if !force {
        text.push_str("nothing changed; add --force to accept the loss\n");
        return Ok((text, 2));
    }
    // No replication ID: the operator's choice, whatever the candidate
    // holds (its ID changes when its first replica connects); its watchdog
    // records the real one once it leads.
    shard_data.master = Some(MasterRecord {
        addr: addr.to_string(),
        replid: String::new(),
        offset: state.offset,
        run_id: String::new(),
        keys: None,
    });
    // Conditional on the version read: a shard whose data changed since (a
    // watchdog joined and recorded a master, another operator promoted)
    // must be looked at again, not overwritten with a decision made on
    // what it was.
    match client
        .set_data(&path, &shard_data.to_json(), Some(stat.version))
        .await
    {
        Ok(_) => {}
        Err(zookeeper_client::Error::BadVersion) => {
            return Err(fail(
                "its data changed while promoting (a watchdog or another operator wrote it); \
                 nothing recorded: run promote again to see the shard as it is now"
                    .into(),
            ))
        }
        Err(e) => return Err(zk_fail(e)),
    }
    text.push_str(&format!(
        "recorded {addr} as the shard's master: its watchdog (started with --shard {path}) \
         registers it as master\n"
    ));
    Ok((text, 0))
}

/// How another shard holds `addr` (whose run is `run_id`), if one does:
/// in its line, or as the master recorded in its data. Recorded for this
/// shard too, that Redis would be routed as the master of two shards,
/// their keys mixed on it (review: a proxy started after such a promote
/// wrote this shard's keys to the other shard's master).
async fn other_shards_claim(
    client: &zookeeper_client::Client,
    target: &Target,
    shard: &str,
    addr: &str,
    run_id: &str,
) -> Result<Option<String>, AdminError> {
    let shards = read_shard_znodes(client, target).await?.unwrap_or_default();
    for other in shards.iter().filter(|other| other.name != shard) {
        // Each member's registered run, to know the candidate in that
        // line under another name; a member gone meanwhile claims nothing.
        let mut members = Vec::with_capacity(other.members.len());
        for member in &other.members {
            let path = child_path(&other.path, member);
            match client.get_data(&path).await {
                Ok((data, _)) => {
                    members.push((member.clone(), MemberData::registered_run_id(&data)));
                }
                Err(zookeeper_client::Error::NoNode) => {}
                // Unreadable: known by its address alone.
                Err(zookeeper_client::Error::NoAuth) => members.push((member.clone(), None)),
                Err(e) => return Err(AdminError::zk_path(&target.hosts, &path, e)),
            }
        }
        if let Some(claim) = claim_on(addr, Some(run_id), &other.name, &other.data, &members) {
            return Ok(Some(claim));
        }
    }
    Ok(None)
}
