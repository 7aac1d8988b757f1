//! The background mover: walks the source with SCAN and moves each key of
//! the range with `MIGRATE ... REPLACE KEYS` (atomic on the source, TTLs
//! kept), in batches, until a whole pass finds none. The proxies move the
//! keys clients touch meanwhile; a key the mover finds gone was one of
//! them.

use super::{failed, now, read_shards, read_state, slot_space, write_state, Plan, Shard};
use crate::admin::output::Output;
use crate::admin::target::Target;
use crate::admin::AdminError;
use crate::protocol::Value;
use crate::proxy::migration::{host_port, scripts};
use crate::redis_client::{RedisConn, RedisError};
use crate::route::hashable_key;
use crate::zk::migration::{MigrationState, TURNED_AROUND};
use bytes::Bytes;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use zookeeper_client as zk;

use super::big_key;
use super::fence::{self, Fence};

/// Keys per MIGRATE: big enough to amortise the round trip, small enough
/// that one call of small keys blocks the source well under a millisecond
/// per key.
const BATCH: usize = 100;
/// SCAN's COUNT hint.
const SCAN_COUNT: &str = "1000";
/// MIGRATE's I/O timeout (ms) for a batch of small keys: how long the
/// source, which runs nothing else meanwhile, waits for each 64 KB write
/// to the target and each of its replies. A stopped target held the
/// source 5 s per batch (review); a healthy one answers in milliseconds.
const MIGRATE_TIMEOUT_MS: u64 = 1000;
/// The timeout of a batch tried again because it timed out while the
/// target answers: a key small by its count can take seconds to restore
/// (a stream with a million pending entries: 1.7 s; with only the short
/// timeout it stayed on both shards, each try slower, in review).
const SLOW_MIGRATE_TIMEOUT_MS: u64 = 10_000;
/// How long the target has to answer [`answers`]: before each batch, so
/// that a stopped target does not hold the source for MIGRATE's timeout,
/// and after a batch timed out, to tell a slow key from a silent target.
const TARGET_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest reply the mover's source connection reads: one element of
/// Redis's largest bulk string (`proto-max-bulk-len`, 512 MB), framed.
const DATA_REPLY_LIMIT: usize = (512 << 20) + 4096;
const REDIS_TIMEOUT: Duration = Duration::from_secs(10);
/// How often progress is written and pause/abort looked for.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the run prints how far it got.
const SAY_EVERY: Duration = Duration::from_secs(10);
/// How long a lost source or target may stay unreachable (a failover).
const RECONNECT_FOR: Duration = Duration::from_secs(60);
/// The rate the time estimate assumes without `--rate`.
const ESTIMATE_RATE: u64 = 20_000;

/// Where the mover works: the range and how keys map onto slots.
struct Range {
    lo: u32,
    hi: u32,
    slots: u32,
}

impl Range {
    fn holds(&self, target: &Target, key: &[u8]) -> bool {
        if self.slots == 0 {
            return false;
        }
        let slot = target.hash.hash(hashable_key(key, target.hash_tag)) % self.slots;
        (self.lo..=self.hi).contains(&slot)
    }
}

pub(super) fn master_of(shards: &[Shard], name: &str) -> Result<String, AdminError> {
    shards
        .iter()
        .find(|s| s.view.name == name)
        .and_then(|s| s.view.master.clone())
        .ok_or_else(|| failed(format!("{name} has no master now")))
}

/// One SCAN step: the next cursor and the keys of the range it returned.
async fn scan_step(
    conn: &mut RedisConn,
    cursor: &Bytes,
    range: &Range,
    target: &Target,
) -> Result<(Bytes, Vec<Bytes>), RedisError> {
    let reply = conn
        .call(&[&b"SCAN"[..], cursor, b"COUNT", SCAN_COUNT.as_bytes()])
        .await?;
    let bad = || RedisError::Unexpected {
        addr: conn.addr().to_string(),
        command: "SCAN".into(),
        reply: "not [cursor, keys]".into(),
    };
    let Value::Array(mut items) = reply else {
        return Err(bad());
    };
    if items.len() != 2 {
        return Err(bad());
    }
    let (Value::Array(keys), Value::Bulk(next)) = (items.pop().unwrap(), items.pop().unwrap())
    else {
        return Err(bad());
    };
    let keys = keys
        .into_iter()
        .filter_map(|k| match k {
            Value::Bulk(k) if !scripts::is_reserved(&k) && range.holds(target, &k) => Some(k),
            _ => None,
        })
        .collect();
    Ok((next, keys))
}

/// Splits a batch into the keys one MIGRATE may move and the big ones.
async fn split_big(
    conn: &mut RedisConn,
    keys: &[Bytes],
) -> Result<(Vec<Bytes>, Vec<Bytes>), RedisError> {
    let script = scripts::sizes_script();
    let n = keys.len().to_string();
    let (elements, bytes) = (
        scripts::BIG_ELEMENTS.to_string(),
        scripts::BIG_STRING_BYTES.to_string(),
    );
    let mut args: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), n.as_bytes()];
    args.extend(keys.iter().map(|k| &k[..]));
    args.extend([elements.as_bytes(), bytes.as_bytes()]);
    let Value::Array(flags) = conn.call(&args).await? else {
        return Err(RedisError::Unexpected {
            addr: conn.addr().to_string(),
            command: "EVAL".into(),
            reply: "not an array of sizes".into(),
        });
    };
    let (mut small, mut big) = (Vec::new(), Vec::new());
    for (key, flag) in keys.iter().zip(flags) {
        if flag == Value::Integer(1) {
            big.push(key.clone());
        } else {
            small.push(key.clone());
        }
    }
    Ok((small, big))
}

/// Waits until the source's `replicas` have every write made so far (the
/// DELs of the keys just moved), failing when fewer confirm within a
/// second: a replica promoted without those DELs would give old values
/// back to the next copy, over newer writes on the target.
pub(super) async fn wait_for_replicas(
    conn: &mut RedisConn,
    replicas: usize,
) -> Result<(), RedisError> {
    let short = "fewer replicas confirmed the moved keys' deletion than the source has";
    confirmed(conn, replicas, short).await
}

/// `WAIT replicas 1000` on `conn`: every write it made so far is on
/// `replicas` replicas, else an error saying `short`.
async fn confirmed(conn: &mut RedisConn, replicas: usize, short: &str) -> Result<(), RedisError> {
    if replicas == 0 {
        return Ok(());
    }
    let n = replicas.to_string();
    match conn.call(&["WAIT", n.as_str(), "1000"]).await? {
        Value::Integer(acked) if acked >= replicas as i64 => Ok(()),
        other => Err(RedisError::Unexpected {
            addr: conn.addr().to_string(),
            command: format!("WAIT {n} 1000"),
            reply: format!("{other:?} ({short})"),
        }),
    }
}

/// Waits until the target's `replicas` have the keys moved so far,
/// failing when fewer confirm within a second: the source no longer holds
/// them, so until then they are on one copy, and a target master lost then
/// would take them with it (review: a move of 3,000 keys said "done" with
/// the target's replica holding 711; the target master killed, the range
/// stayed down until its loss was accepted). The keys were written by the
/// source's MIGRATE, not on this connection, so it first makes a write of
/// its own for WAIT to wait for, which comes after them in the replication
/// stream: a key set and deleted in one script, which no client sees (a
/// PUBLISH reached clients subscribed to every channel, in review).
async fn wait_for_target_replicas(conn: &mut RedisConn, replicas: usize) -> Result<(), String> {
    if replicas == 0 {
        return Ok(());
    }
    let mark = ["EVAL", MARK_SCRIPT, "1", MARK_KEY];
    conn.call(&mark).await.map_err(|e| e.to_string())?;
    let short = "fewer of the target's replicas confirmed the moved keys than it has";
    confirmed(conn, replicas, short)
        .await
        .map_err(|e| e.to_string())
}

/// A write that leaves nothing behind, replicated as one transaction.
const MARK_SCRIPT: &str = "redis.call('set', KEYS[1], '1') redis.call('del', KEYS[1])";
/// The key it sets and deletes: one of the proxies' own, which clients
/// cannot use.
const MARK_KEY: &str = "__shardproxy_moved";

/// `MIGRATE` of `keys` from `conn`'s Redis to `to`, into the pool's
/// database, with an I/O timeout of `timeout_ms`, if this mover still
/// holds `fence`; true if any moved.
pub(super) async fn migrate_batch(
    conn: &mut RedisConn,
    to: &str,
    target: &Target,
    keys: &[Bytes],
    timeout_ms: u64,
    fence: &Fence,
) -> Result<bool, RedisError> {
    let timeout_ms = timeout_ms.to_string();
    let db = target.db.to_string();
    let Some((host, port)) = host_port(to) else {
        return Err(RedisError::Unexpected {
            addr: to.to_string(),
            command: "MIGRATE".into(),
            reply: "bad target address".into(),
        });
    };
    let mut args: Vec<&[u8]> = vec![
        b"MIGRATE",
        host.as_bytes(),
        port.as_bytes(),
        b"",
        db.as_bytes(),
        timeout_ms.as_bytes(),
        b"REPLACE",
    ];
    if let Some(pw) = &target.redis_auth {
        args.extend([&b"AUTH"[..], pw.as_bytes()]);
    }
    args.push(b"KEYS");
    args.extend(keys.iter().map(|k| &k[..]));
    match conn.call(&fence.wrap(&args)).await? {
        Value::Simple(text) => Ok(&text[..] == b"OK"),
        other => Err(RedisError::Unexpected {
            addr: conn.addr().to_string(),
            command: "MIGRATE".into(),
            reply: format!("{other:?}"),
        }),
    }
}

/// Where the mover is connected: the source's master, and where it moves
/// keys to.
struct Link {
    conn: RedisConn,
    /// The target's master, asked before each batch whether it answers.
    to_conn: RedisConn,
    to: String,
    range: Range,
    /// Replicas in the source's line, waited for after each batch.
    replicas: usize,
    /// Replicas in the target's line, waited for after each batch too.
    to_replicas: usize,
}

/// Connects to the two shards' masters and claims the migration on both
/// ([`fence`]): a mover still running from an earlier run stops at its
/// next write. On a reconnect (`first` false) the claim is refused if
/// another run took the migration over meanwhile.
async fn open_link(
    client: &zk::Client,
    target: &Target,
    state: &MigrationState,
    fence: &Fence,
    first: bool,
) -> Result<Link, String> {
    let (lo, hi) = state.slots()?;
    let shards = read_shards(client, target)
        .await
        .map_err(|e| e.to_string())?;
    let from = master_of(&shards, &state.source).map_err(|e| e.to_string())?;
    let to = master_of(&shards, &state.target).map_err(|e| e.to_string())?;
    let mut conn = target
        .redis(&from, REDIS_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    // A big key's copy reads its elements through this connection, and
    // one element may be as large as a Redis bulk string (512 MB).
    conn.accept_replies_up_to(DATA_REPLY_LIMIT);
    let mut to_conn = target
        .redis(&to, REDIS_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    for conn in [&mut conn, &mut to_conn] {
        let claimed = if first {
            fence.claim(conn).await
        } else {
            fence.reclaim(conn).await
        };
        claimed.map_err(|e| e.to_string())?;
    }
    let replicas_of = |name: &str| {
        shards
            .iter()
            .find(|s| s.view.name == name)
            .map_or(0, |s| s.view.members.len().saturating_sub(1))
    };
    // Nothing more leaves the source while the target's replicas lack a
    // batch moved before (its confirmation failed, and this link replaces
    // the one that moved it).
    let to_replicas = replicas_of(&state.target);
    wait_for_target_replicas(&mut to_conn, to_replicas).await?;
    Ok(Link {
        conn,
        to_conn,
        to,
        replicas: replicas_of(&state.source),
        to_replicas,
        range: Range {
            lo,
            hi,
            slots: slot_space(&shards),
        },
    })
}

/// Moves every key of the migration's range; returns the keys moved by
/// this run and the seconds it took. Writes progress, and follows pause
/// and abort, through the migration znode. A lost source or target (a
/// failover) is reconnected at the shard's new master, scanning again.
pub(super) async fn run(
    client: &zk::Client,
    target: &Target,
    state: &mut MigrationState,
    version: &mut i32,
    fence: &Fence,
    out: &mut Output,
) -> Result<(u64, f64), AdminError> {
    let started = Instant::now();
    let mut last_said = Instant::now();
    // Keys moved by earlier runs of this migration.
    let base = state.moved;
    let mut moved_here = 0u64;
    let mut last_check = Instant::now();
    let mut lost_since: Option<Instant> = None;
    let mut link: Option<Link> = None;
    // The first link claims the migration; later ones only keep it.
    let mut claimed = false;
    let mut cursor = Bytes::from_static(b"0");
    // Keys of the range seen in this pass: a pass that sees none ends it.
    let mut found = 0u64;
    loop {
        let step: Result<(), String> = async {
            if link.is_none() {
                link = Some(open_link(client, target, state, fence, !claimed).await?);
                if !claimed {
                    // A run paused between its last look at ZooKeeper and
                    // its claim (the migration ended, or was turned around
                    // and the library gone) must find out before it writes.
                    checkpoint(client, target, state, version, base + moved_here)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                claimed = true;
                cursor = Bytes::from_static(b"0");
                found = 0;
            }
            let l = link.as_mut().expect("opened");
            let (next, keys) = scan_step(&mut l.conn, &cursor, &l.range, target)
                .await
                .map_err(|e| e.to_string())?;
            found += keys.len() as u64;
            for batch in keys.chunks(BATCH) {
                let (small, big) = split_big(&mut l.conn, batch)
                    .await
                    .map_err(|e| e.to_string())?;
                for key in big {
                    let t = Instant::now();
                    let moved =
                        big_key::move_key(&mut l.conn, &l.to, target, &key, l.replicas, fence)
                            .await
                            .map_err(|e| e.to_string())?;
                    if moved {
                        wait_for_target_replicas(&mut l.to_conn, l.to_replicas).await?;
                        moved_here += 1;
                        tracing::info!(key = %String::from_utf8_lossy(&key), ms = t.elapsed().as_millis() as u64,
                            "big key moved in chunks");
                    }
                }
                if small.is_empty() {
                    continue;
                }
                let any = move_small(l, target, &small, fence).await?;
                if any {
                    // As the proxies do: the DELs reach the source's
                    // replicas before anyone writes these keys on the
                    // target; and the keys reach the target's before more
                    // leave. Both at once, each on its own connection.
                    let (source, target) = tokio::join!(
                        wait_for_replicas(&mut l.conn, l.replicas),
                        wait_for_target_replicas(&mut l.to_conn, l.to_replicas),
                    );
                    source.map_err(|e| e.to_string())?;
                    target?;
                    moved_here += batch.len() as u64;
                }
                throttle(state.rate, moved_here, started).await;
            }
            cursor = next;
            Ok(())
        }
        .await;
        if let Err(error) = step {
            if fence::refused(&error) {
                return Err(replaced(client, target, state).await);
            }
            if error.contains(fence::OUT_OF_MEMORY) || error.contains(fence::FOREIGN_FUNCTION) {
                return Err(failed(error));
            }
            link = None;
            let since = *lost_since.get_or_insert_with(Instant::now);
            if since.elapsed() > RECONNECT_FOR {
                return Err(failed(format!(
                    "moving keys failed for {} s: {error}; run migrate again to continue",
                    RECONNECT_FOR.as_secs()
                )));
            }
            tracing::warn!(error = %error, "moving keys failed; retrying with the shards' current masters");
            tokio::time::sleep(Duration::from_millis(500)).await;
            // A run woken from a long stop finds the migration gone or
            // turned around here, before it connects again.
            checkpoint(client, target, state, version, base + moved_here).await?;
            continue;
        }
        lost_since = None;
        if last_check.elapsed() >= CHECK_EVERY {
            last_check = Instant::now();
            checkpoint(client, target, state, version, base + moved_here).await?;
        }
        if last_said.elapsed() >= SAY_EVERY {
            last_said = Instant::now();
            let _ = writeln!(
                out,
                "{}",
                progress(state, base + moved_here, moved_here, started)
            );
        }
        if &cursor[..] == b"0" {
            if found == 0 {
                break;
            }
            found = 0;
        }
    }
    checkpoint(client, target, state, version, base + moved_here).await?;
    // A replaced mover whose last passes found nothing wrote nothing the
    // fence refused: it must not commit either.
    let mut source = link.expect("the last pass ran on a link").conn;
    match fence.holds(&mut source).await {
        Ok(true) => Ok((moved_here, started.elapsed().as_secs_f64())),
        Ok(false) => Err(replaced(client, target, state).await),
        Err(e) => Err(failed(format!(
            "checking that this run still drives the migration: {e}; run migrate again to continue"
        ))),
    }
}

/// MIGRATE of a batch of small keys, once the target [`answers`];
/// true if any moved. A batch that timed out while the target answers is
/// slow, not lost: it goes again with [`SLOW_MIGRATE_TIMEOUT_MS`].
async fn move_small(
    l: &mut Link,
    target: &Target,
    batch: &[Bytes],
    fence: &Fence,
) -> Result<bool, String> {
    answers(&mut l.to_conn).await?;
    let moved = migrate_batch(&mut l.conn, &l.to, target, batch, MIGRATE_TIMEOUT_MS, fence).await;
    match moved {
        Err(e) if e.to_string().contains("IOERR") => {
            answers(&mut l.to_conn).await?;
            tracing::info!(keys = batch.len(), error = %e, "a batch timed out while the target answers: trying it again with a longer timeout");
            migrate_batch(
                &mut l.conn,
                &l.to,
                target,
                batch,
                SLOW_MIGRATE_TIMEOUT_MS,
                fence,
            )
            .await
            .map_err(|e| e.to_string())
        }
        moved => moved.map_err(|e| e.to_string()),
    }
}

/// Ok if the target's master answers [`scripts::probe_command`] (a write
/// that changes nothing: a target paused for writes answers PING but
/// restores nothing) within [`TARGET_PROBE_TIMEOUT`]; a connection that did
/// not is left for a new one (its reply may still come).
async fn answers(to: &mut RedisConn) -> Result<(), String> {
    let addr = to.addr().to_string();
    match tokio::time::timeout(TARGET_PROBE_TIMEOUT, to.call(&scripts::probe_command())).await {
        Ok(Ok(Value::Integer(_))) => Ok(()),
        Ok(Ok(other)) => Err(format!("the target {addr} answered PEXPIRE with {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the target {addr} did not take a write within {} ms",
            TARGET_PROBE_TIMEOUT.as_millis()
        )),
    }
}

/// A line of how far the move got: `moved` keys in all, `here` by this
/// run since `started`, against the estimate when there is one.
fn progress(state: &MigrationState, moved: u64, here: u64, started: Instant) -> String {
    let rate = here as f64 / started.elapsed().as_secs_f64().max(0.001);
    let of = match state.estimate {
        Some(estimate) if estimate > 0 => format!(
            " of about {estimate} ({}%)",
            (moved * 100 / estimate).min(100)
        ),
        _ => String::new(),
    };
    format!("moved {moved} keys{of}, {rate:.0} keys/s")
}

/// Why this run stopped when a fence refused its write: the migration as
/// it is now tells whether `abort` turned it around, someone ended or
/// replaced it, or another run of it took over.
async fn replaced(client: &zk::Client, target: &Target, state: &MigrationState) -> AdminError {
    if let Ok(current) = read_state(client, target).await {
        if let Some(why) = gone_from(state, current.as_ref().map(|(current, _)| current)) {
            return failed(why);
        }
    }
    failed(
        "another shardproxy-admin run took this migration over (migrate run again, or abort): \
         this one stopped, and left the rest to it",
    )
}

/// Why a run driving `state` must stop, given the migration's znode as it
/// is now (`None`: none); `None` while the run still drives it.
fn gone_from(state: &MigrationState, current: Option<&MigrationState>) -> Option<String> {
    let Some(current) = current else {
        return Some(
            "the migration is over: another run finished it, or it was called off".to_string(),
        );
    };
    if current.id == format!("{}{TURNED_AROUND}", state.id) {
        // Review: the run stopped by `abort` said another run took over.
        return Some(format!(
            "the migration was turned around by abort: this run stopped; \
             `shardproxy-admin migrate {} --to {}` moves the keys already moved back",
            current.range, current.target
        ));
    }
    if current.id != state.id || current.range != state.range || current.target != state.target {
        return Some("the migration was replaced (aborted and restarted?)".to_string());
    }
    None
}

/// Removes the fence from the two shards' masters once the migration is
/// over (best effort: a fence left behind only stops movers of a
/// migration that has ended).
pub(super) async fn release_fence(
    client: &zk::Client,
    target: &Target,
    state: &MigrationState,
    fence: &Fence,
) {
    let Ok(shards) = read_shards(client, target).await else {
        return;
    };
    for name in [&state.source, &state.target] {
        let Ok(master) = master_of(&shards, name) else {
            continue;
        };
        if let Ok(mut conn) = target.redis(&master, REDIS_TIMEOUT).await {
            if let Err(e) = fence.release(&mut conn).await {
                tracing::warn!(master = %master, error = %e, "removing the migration's fence");
            }
        }
    }
}

/// Sleeps so that `moved` keys since `started` stay within `rate` per
/// second (0: no limit).
async fn throttle(rate: u64, moved: u64, started: Instant) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(moved as f64 / rate as f64);
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        tokio::time::sleep(wait).await;
    }
}

/// Writes progress; waits while paused; fails if the migration was
/// aborted or replaced.
async fn checkpoint(
    client: &zk::Client,
    target: &Target,
    state: &mut MigrationState,
    version: &mut i32,
    moved: u64,
) -> Result<(), AdminError> {
    loop {
        let current = read_state(client, target).await?;
        if let Some(why) = gone_from(state, current.as_ref().map(|(current, _)| current)) {
            return Err(failed(why));
        }
        let (current, current_version) = current.expect("gone_from: there is one");
        let mut next = current.clone();
        next.moved = moved;
        next.updated = now();
        *version = write_state(client, target, &next, current_version).await?;
        *state = next;
        if !state.paused {
            return Ok(());
        }
        tracing::info!(migration = %state.id, "paused");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keys of the range the source still holds after the commit.
pub(super) async fn leftovers(
    client: &zk::Client,
    target: &Target,
    state: &MigrationState,
) -> Result<u64, AdminError> {
    let (lo, hi) = state.slots().map_err(failed)?;
    let shards = read_shards(client, target).await?;
    let from = master_of(&shards, &state.source)?;
    // The source may own no range now: the slot space comes from all.
    let range = Range {
        lo,
        hi,
        slots: slot_space(&shards),
    };
    let count = async {
        let mut conn = target.redis(&from, REDIS_TIMEOUT).await?;
        let mut cursor = Bytes::from_static(b"0");
        let mut found = 0u64;
        loop {
            let (next, keys) = scan_step(&mut conn, &cursor, &range, target).await?;
            found += keys.len() as u64;
            cursor = next;
            if &cursor[..] == b"0" {
                return Ok::<u64, RedisError>(found);
            }
        }
    };
    count
        .await
        .map_err(|e| failed(format!("counting leftovers: {e}")))
}

/// The source's key count (DBSIZE on its master); `None` if it has no
/// master or it did not answer.
pub(crate) async fn dbsize(target: &Target, shard: &Shard) -> Option<u64> {
    let master = shard.view.master.as_ref()?;
    let mut conn = target.redis(master, REDIS_TIMEOUT).await.ok()?;
    match conn.call(&["DBSIZE"]).await {
        Ok(Value::Integer(n)) => u64::try_from(n).ok(),
        _ => None,
    }
}

/// Keys `plan` will move: the source's DBSIZE times the range's share of
/// its slots (keys spread evenly over slots, as the hash makes them).
pub(super) async fn estimate_keys(target: &Target, shards: &[Shard], plan: &Plan) -> Option<u64> {
    let source = shards.iter().find(|s| s.view.name == plan.source)?;
    let share = f64::from(plan.hi - plan.lo + 1) / f64::from(source.view.hi - source.view.lo + 1);
    let keys = dbsize(target, source).await?;
    Some((keys as f64 * share).round() as u64)
}

/// Seconds `keys` take at `rate` keys/s, or at what the mover typically
/// does here when unthrottled (`rate` 0).
pub(crate) fn estimate_secs(keys: u64, rate: u64) -> (f64, u64) {
    let per_second = if rate > 0 { rate } else { ESTIMATE_RATE };
    (keys as f64 / per_second as f64, per_second)
}

/// `migrate --dry-run`: the plan, a key estimate and a time estimate.
pub(super) async fn dry_run(
    target: &Target,
    shards: &[Shard],
    plan: &Plan,
    rate: u64,
) -> Result<String, AdminError> {
    let source = shards
        .iter()
        .find(|s| s.view.name == plan.source)
        .expect("planned");
    let keys = estimate_keys(target, shards, plan).await;
    let range = |r: Option<(u32, u32)>| r.map_or("(none)".to_string(), |(a, b)| format!("{a}-{b}"));
    let target_before = shards
        .iter()
        .find(|s| s.view.name == plan.target)
        .map(|s| {
            if s.view.empty {
                None
            } else {
                Some((s.view.lo, s.view.hi))
            }
        })
        .unwrap_or(None);
    let mut out = format!(
        "plan: move slots {}-{} from {} to {}\n  {}: {}-{} -> {}\n  {}: {} -> {}\n",
        plan.lo,
        plan.hi,
        plan.source,
        plan.target,
        plan.source,
        source.view.lo,
        source.view.hi,
        range(plan.source_after),
        plan.target,
        range(target_before),
        range(Some(plan.target_after)),
    );
    match keys {
        Some(keys) => {
            let (secs, per_second) = estimate_secs(keys, rate);
            out.push_str(&format!(
                "  about {keys} keys (the source's DBSIZE times the range's share of its slots); about {secs:.0} s at {per_second} keys/s\n"
            ))
        }
        None => out.push_str("  key count unknown (the source's master did not answer DBSIZE)\n"),
    }
    out.push_str("(dry run: nothing changed)\n");
    Ok(out)
}
