//! The barrier of a migration's phase: every live proxy, and every one in
//! the roster, acknowledges the phase before the move goes on, so no proxy
//! still routes by the table of the phase before.

use super::{read_state, CallOff};
use crate::admin::status::children;
use crate::admin::target::Target;
use crate::zk::layout::child_path;
use crate::zk::migration::{acks_path, roster_path, Ack, MigrationState};
use std::time::Duration;
use zookeeper_client as zk;

/// Why a run stops when its migration was called off (or replaced) by
/// someone else while it ran.
pub(super) const CALLED_OFF_MEANWHILE: &str =
    "the migration was called off meanwhile (abort): nothing was moved";

/// What became of migration `id`, which this run stopped waiting for:
/// called off (or replaced), or taken on by another run.
pub(super) async fn ended_meanwhile(client: &zk::Client, target: &Target, id: &str) -> String {
    match read_state(client, target).await {
        Ok(Some((current, _))) if current.id == id => CallOff::Went(current.phase).said(),
        Ok(_) => CALLED_OFF_MEANWHILE.to_string(),
        Err(e) => format!("the migration changed meanwhile and cannot be read ({e})"),
    }
}

/// Why a run whose ZooKeeper session is over stops waiting for the
/// proxies: no write of it can succeed any more.
pub(super) const SESSION_ENDED: &str =
    "this run's ZooKeeper session ended while it waited for the proxies \
     (stopped, or cut off from ZooKeeper): nothing was moved; a migration it had just started \
     ended with the session and the proxies serve the range from its shard again; run migrate \
     again";

/// Waits until every proxy registered under the proxy root, and every one
/// in the roster, acknowledged `state`'s id and phase; `Err` names the ones
/// that did not in time, and is empty when the migration ended meanwhile
/// (or this run's session did). A proxy of the roster that is not registered may
/// be cut off from ZooKeeper and still serving from its last table: it
/// must hold the move up like any other.
pub(super) async fn barrier(
    client: &zk::Client,
    target: &Target,
    state: &MigrationState,
    timeout: Duration,
) -> Result<(), Vec<String>> {
    let acks = acks_path(&target.cluster_root).unwrap_or_default();
    let roster = roster_path(&target.cluster_root).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // A failed read is no answer: empty lists would pass the barrier.
        let listed = tokio::join!(
            children(client, target, &target.proxy_root),
            children(client, target, &roster)
        );
        let (Ok(registered), Ok(rostered)) = listed else {
            if client.state().is_terminated() {
                return Err(Vec::new());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(vec![format!(
                    "(ZooKeeper did not list the proxies: {} or {})",
                    target.proxy_root, roster
                )]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Called off (abort), replaced, or taken on by another run
        // meanwhile: nobody need answer this phase.
        if let Ok(current) = read_state(client, target).await {
            if current
                .is_none_or(|(current, _)| current.id != state.id || current.phase != state.phase)
            {
                return Err(Vec::new());
            }
        }
        let registered = live_registrations(client, target, registered.unwrap_or_default()).await;
        let mut proxies = registered.clone();
        for known in rostered.unwrap_or_default() {
            if !proxies.contains(&known) {
                proxies.push(known);
            }
        }
        let mut missing = Vec::new();
        for proxy in proxies {
            let ack = client
                .get_data(&child_path(&acks, &proxy))
                .await
                .ok()
                .and_then(|(data, _)| Ack::parse(&data));
            let done = ack.is_some_and(|a| a.id == state.id && a.phase == state.phase);
            if done {
                continue;
            }
            missing.push(if registered.contains(&proxy) {
                proxy
            } else {
                format!(
                    "{proxy} (in the roster but not registered: cut off from ZooKeeper, or stopped \
                     without shutting down; once it is down for good, `shardproxy-admin forget-proxy {proxy}`)"
                )
            });
        }
        if missing.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(missing);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The children of the proxy root that a proxy may hold: a proxy
/// registers an ephemeral znode, so a persistent one (made by hand, or by
/// another tool) is no proxy's and is not waited for (review: one blocked
/// every migration). One that cannot be read is kept: it may be a proxy's.
async fn live_registrations(
    client: &zk::Client,
    target: &Target,
    names: Vec<String>,
) -> Vec<String> {
    let mut live = Vec::with_capacity(names.len());
    for name in names {
        let path = child_path(&target.proxy_root, &name);
        match client.check_stat(&path).await {
            Ok(Some(stat)) if stat.ephemeral_owner == 0 => {}
            Ok(None) => {}
            _ => live.push(name),
        }
    }
    live
}
