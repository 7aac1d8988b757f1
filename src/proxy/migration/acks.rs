//! This proxy's acknowledgement of a migration's phase: an EPHEMERAL znode
//! `<control>/migration-acks/<proxy>` holding the migration id and phase
//! its routing table follows. The admin tool moves no key before every
//! live proxy acknowledged `prepare`.
//!
//! `prepare` is acknowledged only once the requests for the source that
//! were queued before it have been answered: every shared connection to
//! the source is PINGed (FIFO per connection). A session that loaded the
//! table just before the swap queues within microseconds; a short pause
//! before the PINGs covers it.
//!
//! The same session keeps this proxy in the roster (`<control>/proxies`,
//! see [`roster_path`]) from its start to a clean shutdown.

use crate::proxy::pool::Pool;
use crate::zk::layout::{child_path, node_name};
use crate::zk::migration::{acks_path, roster_path, Ack, Phase};
use crate::zk::{connect_once, shutdown_requested, Backoff, ZkAuth, SESSION_TIMEOUT};
use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::watch;
use zookeeper_client as zk;

/// The pause before draining (see the module comment).
const SETTLE: Duration = Duration::from_millis(20);
/// How long the drain may wait for the source's replies.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a clean shutdown tries to leave the roster.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps this proxy in the roster and its acknowledgement current until
/// `shutdown`, then takes it out of the roster.
pub async fn run(
    pool: Weak<Pool>,
    hosts: String,
    auth: Option<ZkAuth>,
    root: String,
    proxy_path: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let (Some(dir), Some(roster)) = (acks_path(&root), roster_path(&root)) else {
        return;
    };
    let name = node_name(&proxy_path);
    let path = child_path(&dir, name);
    let entry = child_path(&roster, name);
    let (mut changes, mut registration) = match pool.upgrade() {
        Some(pool) => (pool.router.watch(), pool.zk_status.watch_registration()),
        None => return,
    };
    let mut acked: Option<Ack> = None;
    // While in the roster, a watch on the entry: it fires when the entry
    // is deleted (`forget-proxy` of a proxy that runs after all) or the
    // session has a problem; then the entry is written again, and the
    // acknowledgement too (an expired session took the ephemeral one).
    let mut rostered: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
    let mut client: Option<zk::Client> = None;
    let mut backoff = Backoff::new();
    loop {
        let want = match pool.upgrade() {
            Some(pool) => wanted(&pool).await,
            None => break,
        };
        let registered = *registration.borrow_and_update();
        let ack_due = want != acked;
        // Only while this proxy holds its znode: another proxy given the
        // same path would otherwise acknowledge for it, or it for the
        // other (review: a range moved while one of the two still routed
        // it to the old shard).
        if registered && (rostered.is_none() || ack_due) {
            let written = async {
                let zk = connected(&mut client, &hosts, auth.as_ref()).await?;
                if rostered.is_none() {
                    let watcher = join(zk, &roster, &entry, &proxy_path, auth.as_ref()).await?;
                    rostered = Some(Box::pin(async move {
                        watcher.changed().await;
                    }));
                }
                if ack_due {
                    write(zk, auth.as_ref(), &dir, &path, want.as_ref()).await?;
                }
                Ok::<(), zk::Error>(())
            };
            match written.await {
                Ok(()) => {
                    if let Some(ack) = want.as_ref().filter(|_| ack_due) {
                        tracing::info!(migration = %ack.id, phase = ack.phase.as_str(),
                            "acknowledged the migration phase");
                    }
                    acked = want;
                    backoff.reset();
                }
                Err(error) => {
                    tracing::warn!(path = %path, error = %error,
                        "cannot write the roster entry or the migration acknowledgement");
                    client = None;
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next()) => {}
                        () = shutdown_requested(&mut shutdown) => break,
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            // Once registered, the entry is written at once (CI: polled
            // for, it trailed the registration by up to 200 ms).
            changed = registration.changed() => if changed.is_err() { break },
            () = async { rostered.as_mut().expect("checked").await }, if rostered.is_some() => {
                rostered = None;
                acked = None;
            }
            () = shutdown_requested(&mut shutdown) => break,
        }
    }
    leave(&mut client, &hosts, auth.as_ref(), &entry).await;
}

/// The session, opened if there is none.
async fn connected<'a>(
    client: &'a mut Option<zk::Client>,
    hosts: &str,
    auth: Option<&ZkAuth>,
) -> Result<&'a zk::Client, zk::Error> {
    if client.is_none() {
        *client = Some(connect_once(hosts, Some(SESSION_TIMEOUT), auth).await?);
    }
    Ok(client.as_ref().expect("connected"))
}

/// Enters the roster (persistent; its data is the registration's path);
/// a watcher on the entry.
async fn join(
    zk: &zk::Client,
    roster: &str,
    entry: &str,
    proxy_path: &str,
    auth: Option<&ZkAuth>,
) -> Result<zk::OneshotWatcher, zk::Error> {
    let persistent = zk::CreateMode::Persistent.with_acls(crate::zk::acls(auth));
    zk.mkdir(roster, &persistent).await?;
    loop {
        match zk.create(entry, proxy_path.as_bytes(), &persistent).await {
            Ok(_) => tracing::info!(path = %entry, "in the proxies' roster"),
            Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
        match zk.get_and_watch_data(entry).await {
            // Left with another path (this address registered elsewhere
            // before): ours, then look again.
            Ok((data, stat, _)) if data != proxy_path.as_bytes() => {
                match zk
                    .set_data(entry, proxy_path.as_bytes(), Some(stat.version))
                    .await
                {
                    Ok(_) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok((_, _, watcher)) => return Ok(watcher),
            // Forgotten between the two calls: once more.
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Leaves the roster on a clean shutdown, on a new session if the one held
/// has ended; gives up after [`LEAVE_TIMEOUT`] (ZooKeeper unreachable: the
/// entry stays, and the admin names this proxy until it runs again or is
/// forgotten).
async fn leave(client: &mut Option<zk::Client>, hosts: &str, auth: Option<&ZkAuth>, entry: &str) {
    let left = async {
        let mut result = Ok(());
        for _ in 0..2 {
            result = match connected(client, hosts, auth).await {
                Ok(zk) => match zk.delete(entry, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => return Ok(()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            *client = None;
        }
        result
    };
    match tokio::time::timeout(LEAVE_TIMEOUT, left).await {
        Ok(Ok(())) => tracing::info!(path = %entry, "left the proxies' roster"),
        Ok(Err(error)) => {
            tracing::warn!(path = %entry, error = %error, "cannot leave the proxies' roster")
        }
        Err(_) => {
            tracing::warn!(path = %entry, "cannot leave the proxies' roster: ZooKeeper did not answer")
        }
    }
}

/// The acknowledgement the current table calls for, once it is safe to
/// give.
async fn wanted(pool: &Pool) -> Option<Ack> {
    let table = pool.router.load_full();
    let m = table.migration.as_deref()?;
    if m.phase == Phase::Prepare && m.active() {
        tokio::time::sleep(SETTLE).await;
        let pings = m.source.ping_all();
        let drained = async {
            for ping in pings {
                let _ = ping.await;
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
            tracing::warn!(backend = %m.source.addr,
                "the source did not answer within 5 s; acknowledging prepare anyway (its requests timed out)");
        }
    }
    Some(Ack {
        id: m.id.to_string(),
        phase: m.phase,
    })
}

/// Writes (or, for `None`, deletes) the acknowledgement.
async fn write(
    zk: &zk::Client,
    auth: Option<&ZkAuth>,
    dir: &str,
    path: &str,
    ack: Option<&Ack>,
) -> Result<(), zk::Error> {
    let Some(ack) = ack else {
        return match zk.delete(path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(e),
        };
    };
    let data = ack.to_json();
    let ours = zk.session_id().0;
    // An ack left by an earlier process on this address (killed, its
    // session not yet expired) would vanish with that session: only our
    // own is updated in place, another is replaced.
    loop {
        match zk.check_stat(path).await? {
            Some(stat) if stat.ephemeral_owner == ours => {
                match zk.set_data(path, &data, Some(stat.version)).await {
                    Ok(_) => return Ok(()),
                    Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => continue,
                    Err(e) => return Err(e),
                }
            }
            Some(stat) => match zk.delete(path, Some(stat.version)).await {
                Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => continue,
                Err(e) => return Err(e),
            },
            None => {}
        }
        let acls = crate::zk::acls(auth);
        // The directory may not exist yet: a proxy may come before the admin.
        zk.mkdir(dir, &zk::CreateMode::Persistent.with_acls(acls))
            .await?;
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(acls);
        match zk.create(path, &data, &ephemeral).await {
            Ok(_) => return Ok(()),
            Err(zk::Error::NodeExists) => continue,
            Err(e) => return Err(e),
        }
    }
}
