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

use crate::proxy::pool::Pool;
use crate::zk::layout::{child_path, node_name};
use crate::zk::migration::{acks_path, Ack, Phase};
use crate::zk::{connect_once, shutdown_requested, Backoff, ZkAuth, SESSION_TIMEOUT};
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::watch;
use zookeeper_client as zk;

/// The pause before draining (see the module comment).
const SETTLE: Duration = Duration::from_millis(20);
/// How long the drain may wait for the source's replies.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps this proxy's acknowledgement current until `shutdown`.
pub async fn run(
    pool: Weak<Pool>,
    hosts: String,
    auth: Option<ZkAuth>,
    root: String,
    proxy_path: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(dir) = acks_path(&root) else {
        return;
    };
    let path = child_path(&dir, node_name(&proxy_path));
    let mut changes = match pool.upgrade() {
        Some(pool) => pool.router.watch(),
        None => return,
    };
    let mut acked: Option<Ack> = None;
    let mut client: Option<zk::Client> = None;
    let mut backoff = Backoff::new();
    loop {
        let want = match pool.upgrade() {
            Some(pool) => wanted(&pool).await,
            None => return,
        };
        if want != acked {
            match write(
                &mut client,
                &hosts,
                auth.as_ref(),
                &dir,
                &path,
                want.as_ref(),
            )
            .await
            {
                Ok(()) => {
                    if let Some(ack) = &want {
                        tracing::info!(migration = %ack.id, phase = ack.phase.as_str(),
                            "acknowledged the migration phase");
                    }
                    acked = want;
                    backoff.reset();
                }
                Err(error) => {
                    tracing::warn!(path = %path, error = %error, "cannot write the migration acknowledgement");
                    client = None;
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next()) => {}
                        () = shutdown_requested(&mut shutdown) => return,
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = shutdown_requested(&mut shutdown) => return,
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

/// Writes (or, for `None`, deletes) the acknowledgement, opening a session
/// if there is none.
async fn write(
    client: &mut Option<zk::Client>,
    hosts: &str,
    auth: Option<&ZkAuth>,
    dir: &str,
    path: &str,
    ack: Option<&Ack>,
) -> Result<(), zk::Error> {
    if client.is_none() {
        *client = Some(connect_once(hosts, Some(SESSION_TIMEOUT), auth).await?);
    }
    let zk = client.as_ref().expect("connected");
    let Some(ack) = ack else {
        return match zk.delete(path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(e),
        };
    };
    let data = ack.to_json();
    match zk.set_data(path, &data, None).await {
        Ok(_) => return Ok(()),
        Err(zk::Error::NoNode) => {}
        Err(e) => return Err(e),
    }
    let acls = crate::zk::acls(auth);
    // The directory may not exist yet: a proxy may come before the admin.
    zk.mkdir(dir, &zk::CreateMode::Persistent.with_acls(acls))
        .await?;
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(acls);
    match zk.create(path, &data, &ephemeral).await {
        Ok(_) => Ok(()),
        Err(zk::Error::NodeExists) => zk.set_data(path, &data, None).await.map(|_| ()),
        Err(e) => Err(e),
    }
}
