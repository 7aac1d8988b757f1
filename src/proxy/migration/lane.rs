//! A session's migration lane: the requests on a moving range, run one
//! after another in the order the client sent them (see the module above
//! for what each phase does with them).

use super::silence::Next;
use super::{scripts, take_command, MigrationRoute, HOLD};
use crate::protocol::{encode_request, Proto};
use crate::proxy::backend::{reply, BackendError, Reply, ReplyReceiver, ReplySender};
use crate::proxy::pool::Pool;
use crate::zk::migration::{migrator_user, Phase};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long MIGRATE may take to reach the target (its own I/O timeout on
/// the source), and the target to answer a lane's probe: the pool's
/// `timeout`, at most this. A small key moves in well under a millisecond.
const MIGRATE_TIMEOUT_MS: u64 = 2000;
/// How often a request on a big key being moved looks again.
const BIG_KEY_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// One request on the moving range.
struct Job {
    keys: Vec<Bytes>,
    raw: Bytes,
    proto: Proto,
    affinity: usize,
    reply: ReplySender,
}

/// The sending side, held by the session; the task ends when it is dropped.
///
/// A request sent after the routing changed (the commit) never overtakes
/// one still in the lane: the session dispatches a request under a new
/// routing table only once every earlier one is answered.
pub struct Lane {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Lane {
    pub fn new(pool: &Arc<Pool>) -> Lane {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool.clone(), rx));
        Lane { jobs }
    }

    /// Queues a request whose keys are `keys`; where its reply arrives.
    pub fn submit(
        &self,
        keys: Vec<Bytes>,
        raw: Bytes,
        proto: Proto,
        affinity: usize,
    ) -> ReplyReceiver {
        let (reply, rx) = reply::channel();
        let job = Job {
            keys,
            raw,
            proto,
            affinity,
            reply,
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            job.reply.send(Ok(tryagain("the migration lane stopped")));
        }
        rx
    }
}

async fn run(pool: Arc<Pool>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        let reply = serve(&pool, &job).await;
        job.reply.send(reply);
    }
}

/// A `-TRYAGAIN` reply frame.
fn tryagain(why: &str) -> Bytes {
    Bytes::from(format!("-TRYAGAIN {why}; retry\r\n"))
}

/// Runs one job against the current table, waiting out `prepare`.
async fn serve(pool: &Pool, job: &Job) -> Reply {
    let hold_until = Instant::now() + HOLD;
    let mut changes = pool.router.watch();
    loop {
        changes.mark_unchanged();
        let table = pool.router.load_full();
        let migration = table
            .active_migration()
            .filter(|m| job.keys.iter().all(|k| m.covers(table.slot_of(k))));
        let Some(m) = migration else {
            // The migration is over (or was called off) for this table:
            // the keys' own shard serves them.
            let shard = &table.shards[table.shard_of(&job.keys[0])];
            let reply = wait(shard.backend.send(job.proto, job.affinity, job.raw.clone())).await;
            return named(reply, shard.name);
        };
        if m.phase == Phase::Prepare {
            let left = hold_until.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, changes.changed()).await.is_err() {
                return Ok(tryagain(&format!(
                    "slots {}-{} are about to move to shard '{}' and the move has not started within {} s",
                    m.lo,
                    m.hi,
                    m.target_name,
                    HOLD.as_secs()
                )));
            }
            continue;
        }
        // The pool's settings for the target: its timeout, database and
        // credentials.
        let settings = m.target.settings();
        let timeout_ms = settings.timeout.map_or(MIGRATE_TIMEOUT_MS, |t| {
            (t.as_millis() as u64).clamp(1, MIGRATE_TIMEOUT_MS)
        });
        if let Some(refusal) = target_refusal(m, job, Duration::from_millis(timeout_ms)).await {
            return Ok(refusal);
        }
        let source = &m.mover;
        // MIGRATE logs into the target as the migration user: the main
        // user may not SELECT, which MIGRATE sends on every new connection
        // (review: once the mover's cached connection had expired, every
        // move failed with NOPERM, the key restored on the target anyway).
        let user = settings.user.as_deref().map(migrator_user);
        let auth = settings.auth.as_deref().map(|pw| (&user, pw));
        let Some(args) = take_command(&m.target.addr, settings.db, timeout_ms, auth, &job.keys)
        else {
            return Ok(tryagain(&format!("bad target address {}", m.target.addr)));
        };
        let mut request = BytesMut::new();
        encode_request(&args, &mut request);
        let moved = wait(source.send(job.proto, job.affinity, request.freeze())).await;
        match moved {
            // +OK (moved now) or +NOKEY (moved before, or never there).
            Ok(frame) if frame.first() == Some(&b'+') => {
                if m.source_replicas > 0 {
                    // The source's DEL (now, or by an earlier move whose
                    // fence fell short) must reach every replica before the
                    // key is written on the target: a replica promoted
                    // without it would hand the old value back to the mover.
                    let fence = wait_command(m.source_replicas);
                    let acked = wait(source.send(job.proto, job.affinity, fence)).await;
                    if let Some(refusal) = fence_refusal(acked, m.source_replicas) {
                        return Ok(tryagain(&refusal));
                    }
                }
            }
            Ok(frame) if frame[..] == b"$6\r\nSILENT\r\n"[..] => {
                m.target_silence.silent();
                return Ok(silent_refusal(m));
            }
            // LOCKED or BIG: the mover moves it in chunks; wait for it.
            Ok(frame) if frame.first() == Some(&b'$') => {
                if Instant::now() >= hold_until {
                    return Ok(tryagain(&format!(
                        "a key of this request is big and is being moved to shard '{}'",
                        m.target_name
                    )));
                }
                tokio::time::sleep(BIG_KEY_POLL).await;
                continue;
            }
            Ok(frame) => {
                let text = String::from_utf8_lossy(&frame[1..]).trim_end().to_string();
                tracing::warn!(source = %source.addr, target = %m.target.addr, error = %text,
                    "moving keys on access failed");
                return Ok(tryagain(&format!(
                    "moving the keys to shard '{}' failed: {text}",
                    m.target_name
                )));
            }
            Err(e) => return Ok(tryagain(&format!("moving the keys failed: {e}"))),
        }
        let reply = wait(m.target.send(job.proto, job.affinity, job.raw.clone())).await;
        return named(reply, m.target_name);
    }
}

/// A reply of the shard that served the request: its error names that
/// shard, not the migration's source the client's request is counted
/// against (review: a timeout of the target named the source with the
/// target's address).
fn named(reply: Reply, shard: &str) -> Reply {
    match reply {
        Ok(frame) => Ok(frame),
        Err(e) => Ok(reply::client_frame(Ok(Err(e)), shard)),
    }
}

/// The refusal of a move while the target does not answer.
fn silent_refusal(m: &MigrationRoute) -> Bytes {
    tryagain(&format!(
        "the keys cannot move to shard '{}' now: it did not answer at {}",
        m.target_name, m.target.addr
    ))
}

/// `-TRYAGAIN` at once while the target is known not to answer (see
/// [`super::silence`]): a MIGRATE would hold the source for its whole timeout.
/// When that was a while ago, this lane asks the target, which has
/// `timeout` to answer, with [`scripts::probe_command`]: a write, since a
/// target paused for writes (`CLIENT PAUSE ... WRITE`, a switchover)
/// answers PING but restores nothing.
async fn target_refusal(m: &MigrationRoute, job: &Job, timeout: Duration) -> Option<Bytes> {
    match m.target_silence.next(Instant::now(), timeout) {
        Next::Move => None,
        Next::Refuse => Some(silent_refusal(m)),
        Next::Probe => {
            let mut probe = BytesMut::new();
            encode_request(&scripts::probe_command(), &mut probe);
            let answer = m.target.send(job.proto, job.affinity, probe.freeze());
            match tokio::time::timeout(timeout, wait(answer)).await {
                Ok(Ok(frame)) if frame.starts_with(b":") => {
                    m.target_silence.answered();
                    None
                }
                _ => {
                    m.target_silence.silent();
                    Some(silent_refusal(m))
                }
            }
        }
    }
}

/// How long the replication fence waits for the source's replicas (ms):
/// on a healthy link they confirm within a millisecond; a lagging replica
/// costs this much once per key moved on access.
const FENCE_MS: u64 = 200;

/// Why the fence's WAIT reply does not let the request go on: an error, or
/// fewer replicas than the source has confirmed within [`FENCE_MS`].
fn fence_refusal(acked: Reply, replicas: usize) -> Option<String> {
    let frame = match acked {
        Ok(frame) => frame,
        Err(e) => return Some(format!("waiting for the source's replicas failed: {e}")),
    };
    let text = String::from_utf8_lossy(&frame).trim_end().to_string();
    match text.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if n >= replicas => None,
        Some(n) => Some(format!(
            "only {n} of the source's {replicas} replicas confirmed the move within {FENCE_MS} ms"
        )),
        None => Some(format!("waiting for the source's replicas failed: {text}")),
    }
}

/// `WAIT replicas FENCE_MS`.
fn wait_command(replicas: usize) -> Bytes {
    let mut out = BytesMut::new();
    encode_request(
        &["WAIT", &replicas.to_string(), &FENCE_MS.to_string()],
        &mut out,
    );
    out.freeze()
}

async fn wait(reply: ReplyReceiver) -> Reply {
    reply.await.unwrap_or_else(|_| {
        Err(BackendError::Closed {
            addr: Arc::from("migration"),
            detail: String::new(),
        })
    })
}
