//! `pause`, `resume`, `abort`, `export` and `forget-proxy`: small edits of
//! the migration znode and the proxies' roster, and the pool file lines
//! that match ZooKeeper.

use super::fence::Fence;
use super::{failed, now, read_shards, read_state, write_state, CallOff};
use crate::admin::target::{connect, Target};
use crate::admin::AdminError;
use crate::zk::layout::child_path;
use crate::zk::migration::{roster_path, MigrationState, Phase, TURNED_AROUND};
use std::time::Duration;
use zookeeper_client as zk;

/// How long `abort` waits for each master when it stops a running mover.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets or clears the running migration's `paused` flag.
pub async fn set_paused(target: &Target, paused: bool) -> Result<String, AdminError> {
    let client = connect(&target.hosts, target.zk_auth.as_ref()).await?;
    let Some((mut state, version)) = read_state(&client, target).await? else {
        return Err(failed("no migration is in progress"));
    };
    state.paused = paused;
    state.updated = now();
    write_state(&client, target, &state, version).await?;
    Ok(format!(
        "migration {} ({} from {} to {}) {}\n",
        state.id,
        state.range,
        state.source,
        state.target,
        if paused { "paused" } else { "resumed" }
    ))
}

/// Calls the migration off. Before any key moved (`prepare`) it just ends.
/// Once keys move, they must go back: the migration is turned around
/// (source and target swapped, back to `prepare` so that every proxy
/// switches direction before a key moves back), and `migrate` finishes it.
pub async fn abort(target: &Target) -> Result<String, AdminError> {
    let client = connect(&target.hosts, target.zk_auth.as_ref()).await?;
    let Some((mut state, version)) = read_state(&client, target).await? else {
        return Err(failed("no migration is in progress"));
    };
    match state.phase {
        Phase::Prepare if state.turned_around() => Err(failed(format!(
            "migration {} was turned around: the keys it moved must go back to {}, so it cannot \
             be called off; run `shardproxy-admin migrate {} --to {}` to finish",
            state.id, state.target, state.range, state.target
        ))),
        Phase::Prepare => match super::call_off(&client, target, &state.id).await? {
            CallOff::Done | CallOff::Gone => Ok(format!(
                "migration {} called off before any key moved\n",
                state.id
            )),
            CallOff::Went(phase) => Err(failed(format!(
                "migration {} went to phase {} meanwhile: run abort again to turn it around",
                state.id,
                phase.as_str()
            ))),
        },
        Phase::Committed => Err(failed(format!(
            "migration {} is committed already: move the range back with `migrate {} --to {}`",
            state.id, state.range, state.source
        ))),
        Phase::Moving => {
            std::mem::swap(&mut state.source, &mut state.target);
            state.id = format!("{}{TURNED_AROUND}", state.id);
            state.phase = Phase::Prepare;
            state.paused = false;
            state.moved = 0;
            state.updated = now();
            write_state(&client, target, &state, version).await?;
            let stopped = stop_mover(&client, target, &state).await;
            Ok(format!(
                "migration turned around: the keys already moved go back to {}; \
                 run `shardproxy-admin migrate {} --to {}` to move them\n{stopped}",
                state.target, state.range, state.target
            ))
        }
    }
}

/// Stops a mover still running the migration before it was turned around:
/// a fence of the abort's own on both masters refuses its next write
/// ([`super::fence`]), so it cannot move keys forward again after they
/// went back. The text is a warning for each master not reached.
async fn stop_mover(client: &zk::Client, target: &Target, state: &MigrationState) -> String {
    let fence = Fence::new(&state.id);
    let mut warnings = String::new();
    let shards = match read_shards(client, target).await {
        Ok(shards) => shards,
        Err(e) => return format!("warning: a mover still running was not stopped: {e}\n"),
    };
    for name in [&state.source, &state.target] {
        let master = match super::mover::master_of(&shards, name) {
            Ok(master) => master,
            Err(e) => {
                warnings +=
                    &format!("warning: a mover still running was not stopped on {name} ({e})\n");
                continue;
            }
        };
        let claimed = match target.redis(&master, CLAIM_TIMEOUT).await {
            Ok(mut conn) => fence.seize(&mut conn).await,
            Err(e) => Err(e),
        };
        if let Err(e) = claimed {
            warnings += &format!(
                "warning: a mover still running was not stopped on {name} ({e}); make sure no \
                 `migrate` of this migration runs before you run it again\n"
            );
        }
    }
    warnings
}

/// The `servers:` lines of a range-form pool file that route as ZooKeeper
/// does now, so the file's fallback routing stays true.
pub async fn export(target: &Target) -> Result<String, AdminError> {
    let client = connect(&target.hosts, target.zk_auth.as_ref()).await?;
    let mut shards = read_shards(&client, target).await?;
    shards.retain(|s| !s.view.empty);
    shards.sort_by_key(|s| s.view.lo);
    let mut out = String::from("  servers:\n");
    for shard in &shards {
        let master = shard
            .view
            .master
            .as_deref()
            .ok_or_else(|| failed(format!("{} has no master", shard.view.name)))?;
        out.push_str(&format!(
            "   - {master}:{}-{}\n",
            shard.view.lo, shard.view.hi
        ));
    }
    if read_state(&client, target).await?.is_some() {
        out.push_str("# a migration is in progress: export again once it is done\n");
    }
    Ok(out)
}

/// Takes `name` (`ip:port`, as `status` lists it) out of the proxies'
/// roster, so migrations stop waiting for it. Only for a proxy that is down
/// for good: one that is merely cut off from ZooKeeper may still be
/// serving from its last table, and a move it does not follow loses its
/// writes. A registered proxy is refused.
pub async fn forget_proxy(target: &Target, name: &str) -> Result<String, AdminError> {
    let client = connect(&target.hosts, target.zk_auth.as_ref()).await?;
    let zk_error = |path: &str, e| AdminError::zk_path(&target.hosts, path, e);
    let roster = roster_path(&target.cluster_root)
        .ok_or_else(|| refused("the cluster root has no control directory".into()))?;
    let entry = child_path(&roster, name);
    let unknown = || refused(format!("no proxy {name} in the roster ({roster})"));
    let (data, stat) = match client.get_data(&entry).await {
        Ok(found) => found,
        Err(zk::Error::NoNode) => return forget_hand_made(&client, target, name).await,
        Err(e) => return Err(zk_error(&entry, e)),
    };
    let registered = registration_of(&data, &target.proxy_root, name);
    match client.check_stat(&registered).await {
        Ok(None) => {}
        Ok(Some(_)) => return Err(still_registered(name, &registered)),
        Err(e) => return Err(zk_error(&registered, e)),
    }
    // The version read: an entry rewritten meanwhile (by a proxy on this
    // address starting with another registration path) is kept. A proxy
    // that runs watches its entry and writes it again if it goes.
    match client.delete(&entry, Some(stat.version)).await {
        Ok(()) => Ok(format!(
            "proxy {name} forgotten: migrations no longer wait for it (if it runs again it rejoins)\n"
        )),
        Err(zk::Error::NoNode) => Err(unknown()),
        Err(zk::Error::BadVersion) => Err(refused(format!(
            "the roster entry of proxy {name} changed meanwhile; run forget-proxy again"
        ))),
        Err(e) => Err(zk_error(&entry, e)),
    }
}

/// `forget-proxy` of a name not in the roster: a persistent znode of that
/// name under the proxy root, which no proxy registered (made by hand, or
/// by another tool), is deleted; `status` flags such znodes. A proxy's own
/// (ephemeral) registration is refused.
async fn forget_hand_made(
    client: &zk::Client,
    target: &Target,
    name: &str,
) -> Result<String, AdminError> {
    let path = child_path(&target.proxy_root, name);
    let roster = roster_path(&target.cluster_root).unwrap_or_default();
    let stat = match client.check_stat(&path).await {
        Ok(Some(stat)) => stat,
        Ok(None) => {
            return Err(refused(format!(
                "no proxy {name} in the roster ({roster}) nor under {}",
                target.proxy_root
            )))
        }
        Err(e) => return Err(AdminError::zk_path(&target.hosts, &path, e)),
    };
    if stat.ephemeral_owner != 0 {
        return Err(still_registered(name, &path));
    }
    match client.delete(&path, Some(stat.version)).await {
        Ok(()) | Err(zk::Error::NoNode) => Ok(format!(
            "{path} deleted: it was no proxy's registration (not ephemeral)\n"
        )),
        Err(zk::Error::NotEmpty) => Err(refused(format!(
            "{path} has children: it is no proxy's registration; delete it by hand"
        ))),
        Err(e) => Err(AdminError::zk_path(&target.hosts, &path, e)),
    }
}

/// The registration znode a roster entry names (its data: a path whose
/// last segment is the entry's name), else the one the name would have
/// under `proxy_root`.
pub fn registration_of(entry_data: &[u8], proxy_root: &str, name: &str) -> String {
    let valid = |path: &str| {
        path.strip_prefix('/').is_some_and(|rest| {
            rest.split('/').all(|segment| !segment.is_empty())
                && rest.rsplit('/').next() == Some(name)
        })
    };
    match std::str::from_utf8(entry_data) {
        Ok(path) if valid(path) => path.to_string(),
        _ => child_path(proxy_root, name),
    }
}

/// A refusal of `forget-proxy`.
fn refused(message: String) -> AdminError {
    AdminError::Refused("forget-proxy", message)
}

/// The refusal of forgetting a proxy that is registered at `path`.
fn still_registered(name: &str, path: &str) -> AdminError {
    refused(format!(
        "proxy {name} is registered ({path}): it runs and follows migrations; stop it first"
    ))
}

#[cfg(test)]
mod tests {
    use super::registration_of;

    #[test]
    fn a_roster_entry_names_its_registration_or_falls_back() {
        let root = "/redis/proxy/icd";
        let name = "10.0.0.9:22121";
        let fallback = "/redis/proxy/icd/10.0.0.9:22121";
        let other = "/redis/proxy/b/10.0.0.9:22121";
        assert_eq!(registration_of(other.as_bytes(), root, name), other);
        for junk in [
            &b""[..],
            b"junk",
            b"/redis//x",
            b"/redis/proxy/b/10.0.0.9:22121/",
            b"/",
            b"/redis",
            b"/redis/proxy/b/10.0.0.8:22121",
            b"\xff\xfe",
        ] {
            assert_eq!(registration_of(junk, root, name), fallback, "{junk:?}");
        }
    }
}
