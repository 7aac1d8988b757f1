//! Scripts and functions through the proxy: SCRIPT and FUNCTION keep every
//! shard's script cache and function libraries alike, so that EVALSHA and
//! FCALL work on whichever shard their keys live on.
//!
//! How the shards' replies become one:
//! - SCRIPT LOAD, FUNCTION LOAD: every shard must answer the same (the
//!   SHA1, the library name); that answer is the reply.
//! - SCRIPT EXISTS: per script, 1 only when every shard has it (a 1 means
//!   EVALSHA works wherever the keys are).
//! - SCRIPT FLUSH, FUNCTION DELETE FLUSH RESTORE: `+OK` once every shard
//!   said it.
//! - SCRIPT KILL, FUNCTION KILL: `+OK` when some shard stopped a script;
//!   Redis's `NOTBUSY` when none was running anywhere.
//! - FUNCTION DUMP LIST: from the first shard of the routing table (see
//!   [`KEYLESS_SHARD`]). The libraries are loaded on every shard alike, so
//!   any one lists them.
//! - FUNCTION STATS: the first shard's that runs a function, else the
//!   first shard's; asked over connections of their own, as Redis answers
//!   it while a function runs long.
//!
//! Errors follow [`fanout::failure`]: the same refusal from every shard is
//! Redis's own reply; a refusal from some shards only names the first.
//!
//! EVAL caches its script on the shard it ran on; Redis answers a later
//! EVALSHA of it whatever its keys. So the first EVAL of a script under a
//! routing table also loads it on every shard ([`share`]).
//!
//! A shard added to the routing table later starts without the scripts:
//! EVALSHA there gets `NOSCRIPT` (clients then send EVAL, which loads it),
//! and functions must be loaded again (FUNCTION LOAD REPLACE, or RESTORE).

use crate::command::{Command, KeySpec, NumkeysRule, ScriptOp};
use crate::protocol::{encode, encode_request, is_error_reply, Value};
use crate::proxy::fanout::{self, array_elements, Answer};
use crate::proxy::pending::Pending;
use crate::proxy::router::{RoutingTable, ShardName};
use crate::proxy::session::Session;
use crate::proxy::stats::PoolStats;
use crate::redis_client::{RedisConn, RedisError};
use bytes::{Bytes, BytesMut};
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

/// How long SCRIPT KILL (and FUNCTION STATS) waits for each shard. Not the
/// pool's `timeout`:
/// Redis takes the kill only once the script has run `busy-reply-threshold`
/// (5 s by default), and a kill sent earlier waits for that.
const KILL_TIMEOUT: Duration = Duration::from_secs(6);

/// The shard that runs scripts and functions without keys (EVAL with
/// `numkeys` 0), and answers FUNCTION DUMP, LIST and STATS: the first of
/// the routing table, which every proxy of the fleet agrees on (the first
/// server of the pool file; with ZooKeeper, the shard whose name sorts
/// first). Always the same one, so a keyless script that keeps state in
/// Redis finds it again.
pub const KEYLESS_SHARD: usize = 0;

/// True for EVAL, EVALSHA, FCALL and their read-only forms, which run on
/// [`KEYLESS_SHARD`] when they name no key.
pub fn runs_keyless(cmd: &Command) -> bool {
    matches!(
        cmd.keys,
        KeySpec::Numkeys {
            rule: NumkeysRule::Script | NumkeysRule::Function,
            ..
        }
    )
}

/// Runs a SCRIPT or FUNCTION subcommand.
pub fn run(session: &Session, op: ScriptOp, cmd: &Command, raw: Bytes) -> Pending {
    let table = session.pool.router.load();
    if op == ScriptOp::OneShard {
        let shard = &table.shards[KEYLESS_SHARD];
        return Pending::Forward {
            reply: shard.backend.send(session.proto, session.affinity, raw),
            shard: shard.name,
        };
    }
    if op == ScriptOp::Kill {
        return kill(session, &table, cmd);
    }
    if op == ScriptOp::Stats {
        return function_stats(session, &table);
    }
    if cmd.name == "script|flush" {
        // SCRIPT FLUSH: the scripts EVAL shared are gone.
        forget_shared();
    }
    let asked = fanout::ask_all(session, &table, &raw);
    counted(session, async move {
        let answers = asked.await;
        fanout::failure(&answers).unwrap_or_else(|| combine(op, &answers))
    })
}

/// Scripts EVAL loaded on every shard: hashes of their text, under the
/// routing table of the version kept with them (a new table may have new
/// shards, or masters that lost their cache in a failover).
static SHARED: Mutex<Option<(u64, HashSet<u64>)>> = Mutex::new(None);
/// How many scripts [`SHARED`] remembers before it starts over: a client
/// that makes a new script per call must not grow the proxy for good.
const SHARED_MAX: usize = 4096;

/// The first EVAL (or EVAL_RO) of a script under `table` also sends SCRIPT
/// LOAD of it to every shard, on the session's connections: the client's
/// next EVALSHA reaches its shard after that, as from one Redis (TCL suite
/// review: EVAL, then EVALSHA of a key on another shard got `NOSCRIPT`),
/// also when the EVAL was queued in MULTI. The EVAL's reply does not wait
/// for the loads; a shard that refuses one answers EVALSHA `NOSCRIPT` as
/// before, and clients then send EVAL. Any other command: nothing.
pub fn share(session: &Session, table: &RoutingTable, cmd: &Command, args: &[Bytes]) {
    let Some(script) = args
        .get(1)
        .filter(|_| matches!(cmd.name, "eval" | "eval_ro"))
    else {
        return;
    };
    if table.distinct_shards().len() < 2 {
        return;
    }
    let hash = {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        script.hash(&mut hasher);
        hasher.finish()
    };
    {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let (version, hashes) = shared.get_or_insert_with(|| (table.version, HashSet::new()));
        if *version != table.version || hashes.len() >= SHARED_MAX {
            *version = table.version;
            hashes.clear();
        }
        if !hashes.insert(hash) {
            return;
        }
    }
    let mut load = BytesMut::new();
    encode_request(&[&b"SCRIPT"[..], b"LOAD", script], &mut load);
    // Sent now; awaited by a task of its own, so that the client's reply
    // does not wait (a request whose reply nobody waits for is not sent).
    let asked = fanout::ask_all(session, table, &load.freeze());
    tokio::spawn(async move {
        for answer in asked.await.iter().filter(|a| is_error_reply(&a.frame)) {
            tracing::debug!(shard = %answer.shard, reply = %String::from_utf8_lossy(&answer.frame).trim_end(),
                "loading an EVAL's script on every shard");
        }
    });
}

/// SCRIPT FLUSH went through: EVAL shares its scripts again.
fn forget_shared() {
    *SHARED.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The reply `assembled` from the shards' answers, counted as one of the
/// pool's errors when it is an error.
fn counted(
    session: &Session,
    assembled: impl std::future::Future<Output = Bytes> + Send + 'static,
) -> Pending {
    let pool = session.pool.clone();
    Pending::Assembling(Box::pin(async move {
        let reply = assembled.await;
        if is_error_reply(&reply) {
            PoolStats::bump(&pool.stats.errors);
        }
        reply
    }))
}

/// The reply from answers that are not errors.
fn combine(op: ScriptOp, answers: &[Answer]) -> Bytes {
    match op {
        ScriptOp::Load => same(answers),
        ScriptOp::Exists => exists(answers),
        _ => Bytes::from_static(b"+OK\r\n"),
    }
}

/// The answer every shard gave; an error naming two shards that differ.
fn same(answers: &[Answer]) -> Bytes {
    let first = &answers[0];
    match answers.iter().find(|a| a.frame != first.frame) {
        None => first.frame.clone(),
        Some(other) => fanout::error_frame(&format!(
            "ERR shards disagree: shard '{}' answered {}, shard '{}' answered {}",
            first.shard,
            String::from_utf8_lossy(&first.frame).trim_end(),
            other.shard,
            String::from_utf8_lossy(&other.frame).trim_end()
        )),
    }
}

/// SCRIPT EXISTS: per position, the first shard's element when every shard
/// says 1, else the 0 of a shard that lacks the script.
fn exists(answers: &[Answer]) -> Bytes {
    let lists: Vec<Vec<&[u8]>> = answers.iter().map(|a| array_elements(&a.frame)).collect();
    let len = lists[0].len();
    let mut out = BytesMut::new();
    out.extend_from_slice(format!("*{len}\r\n").as_bytes());
    for position in 0..len {
        let element = lists
            .iter()
            .filter_map(|list| list.get(position).copied())
            .find(|e| !is_true(e))
            .unwrap_or(lists[0][position]);
        out.extend_from_slice(element);
    }
    out.freeze()
}

/// `:1` (or RESP3 `#t`).
fn is_true(element: &[u8]) -> bool {
    element == b":1\r\n" || element == b"#t\r\n"
}

/// SCRIPT KILL, FUNCTION KILL: the backend connections the proxy shares
/// are busy behind the very script to stop, so each shard is asked over a
/// short-lived connection of its own.
fn kill(session: &Session, table: &RoutingTable, cmd: &Command) -> Pending {
    let command = if cmd.name.starts_with("function") {
        "FUNCTION"
    } else {
        "SCRIPT"
    };
    let asked = ask_on_own_connections(table, &[], [command, "KILL"]);
    counted(session, async move { kill_reply(&asked.await) })
}

/// FUNCTION STATS, which Redis answers while a function runs long (to show
/// which one, and for how long, before a FUNCTION KILL): the shared
/// connections wait behind that function, so each shard is asked over a
/// connection of its own, as for KILL. The reply is that of the first shard
/// running a function, else the keyless shard's (the libraries are alike
/// on every shard).
fn function_stats(session: &Session, table: &RoutingTable) -> Pending {
    // RESP3 tells a null from an empty value; the reply is encoded again
    // in the client's protocol, as Redis would give it.
    let asked = ask_on_own_connections(table, &["HELLO", "3"], ["FUNCTION", "STATS"]);
    let keyless = table.shard(KEYLESS_SHARD);
    let (keyless, unplaced) = (keyless.name, keyless.backend.unplaced_reason().cloned());
    let proto = session.proto;
    counted(session, async move {
        let outcomes = asked.await;
        let chosen = outcomes
            .iter()
            .find(|(_, outcome)| outcome.as_ref().is_ok_and(runs_a_function))
            .or_else(|| outcomes.iter().find(|(name, _)| *name == keyless))
            .or_else(|| outcomes.first());
        let Some(chosen) = chosen else {
            // Every shard is a stand-in: no server to ask.
            let reason = unplaced.as_deref().unwrap_or("no server to ask");
            return fanout::error_frame(&format!("ERR shard '{keyless}': {reason}"));
        };
        match chosen {
            (_, Ok(stats)) => {
                let mut out = BytesMut::new();
                encode(stats, proto, &mut out);
                out.freeze()
            }
            (name, Err(e)) => refusal(name, e),
        }
    })
}

/// True when FUNCTION STATS says a function runs (its `running_script` is
/// not null).
fn runs_a_function(stats: &Value) -> bool {
    let Value::Map(fields) = stats else {
        return false;
    };
    fields.iter().any(|(name, value)| {
        matches!(name, Value::Bulk(n) | Value::Simple(n) if &n[..] == b"running_script")
            && !matches!(value, Value::Null | Value::NullArray)
    })
}

/// How many connections of their own SCRIPT KILL, FUNCTION KILL and
/// FUNCTION STATS hold open at once, in the whole process.
static OWN_CONNECTIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(32);

/// What each shard answered over a connection of its own.
type OwnAnswers = Vec<(ShardName, Result<Value, RedisError>)>;

/// Sends `first` (unless empty) then `command` to every shard, each over a
/// short-lived connection of its own that logs in as the pool's do. Sent
/// now, not when the reply's turn comes: a request of the same client
/// before it may be stuck behind the very script the command is about
/// (review: `GET` + `SCRIPT KILL` pipelined never killed the script).
fn ask_on_own_connections(
    table: &RoutingTable,
    first: &'static [&'static str],
    command: [&'static str; 2],
) -> impl std::future::Future<Output = OwnAnswers> + Send + 'static {
    let timeout = KILL_TIMEOUT;
    // A stand-in for slots no known server owns runs no script and has
    // no server to ask.
    let asked: Vec<_> = table
        .distinct_shards()
        .into_iter()
        .filter(|&i| table.shard(i).backend.unplaced_reason().is_none())
        .map(|i| {
            let shard = table.shard(i);
            let settings = shard.backend.settings();
            let (user, auth) = (settings.user.clone(), settings.auth.clone());
            let (addr, tls) = (shard.backend.addr.clone(), settings.tls.clone());
            let answer = tokio::spawn(async move {
                // A client pipelining thousands of FUNCTION STATS opens
                // this many connections at most (review: 468 to one Redis).
                let _turn = OWN_CONNECTIONS.acquire().await;
                // As the backend connections log in: as `redis_user` when
                // set, else as the default user.
                let password = auth.as_deref().filter(|_| user.is_none());
                let mut conn =
                    RedisConn::connect_tls(&addr, password, timeout, tls.as_ref()).await?;
                if let (Some(user), Some(auth)) = (&user, &auth) {
                    conn.ok(&["AUTH", user, auth]).await?;
                }
                if !first.is_empty() {
                    conn.call(first).await?;
                }
                conn.call(&command).await
            });
            (shard.name, answer)
        })
        .collect();
    async move {
        let mut outcomes = Vec::new();
        for (name, answer) in asked {
            let outcome = match answer.await {
                Ok(outcome) => outcome,
                Err(e) => Err(RedisError::Closed {
                    addr: format!("{name} ({e})"),
                }),
            };
            outcomes.push((name, outcome));
        }
        outcomes
    }
}

/// A shard's refusal, or failure, naming the shard.
fn refusal(name: &ShardName, error: &RedisError) -> Bytes {
    match error {
        RedisError::Reply { message, .. } => {
            fanout::error_frame(&format!("{message} (shard '{name}')"))
        }
        e => fanout::error_frame(&format!("ERR shard '{name}': {e}")),
    }
}

/// `+OK` when some shard stopped a script; else the first refusal other
/// than "nothing runs" (a script that already wrote is UNKILLABLE), naming
/// its shard; else Redis's NOTBUSY.
fn kill_reply(outcomes: &[(ShardName, Result<Value, RedisError>)]) -> Bytes {
    if outcomes.iter().any(|(_, o)| o.is_ok()) {
        return Bytes::from_static(b"+OK\r\n");
    }
    let mut notbusy = None;
    for (name, outcome) in outcomes {
        match outcome {
            Err(RedisError::Reply { message, .. }) if message.starts_with("NOTBUSY") => {
                notbusy.get_or_insert_with(|| message.clone());
            }
            Err(e) => return refusal(name, e),
            Ok(_) => {}
        }
    }
    fanout::error_frame(
        &notbusy.unwrap_or_else(|| "NOTBUSY No scripts in execution right now.".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(frame: &'static [u8]) -> Answer {
        Answer {
            shard: "s",
            frame: Bytes::from_static(frame),
            failed: false,
        }
    }

    #[test]
    fn exists_only_where_every_shard_has_it() {
        let answers = [
            answer(b"*3\r\n:1\r\n:1\r\n:0\r\n"),
            answer(b"*3\r\n:1\r\n:0\r\n:0\r\n"),
        ];
        assert_eq!(exists(&answers), &b"*3\r\n:1\r\n:0\r\n:0\r\n"[..]);
    }

    #[test]
    fn load_needs_one_answer() {
        let sha = b"$40\r\ne0e1f9fabfc9d4800c877a703b823ac0578ff8db\r\n";
        assert_eq!(same(&[answer(sha), answer(sha)]), &sha[..]);
        let other = b"$40\r\n0000000000000000000000000000000000000000\r\n";
        let reply = same(&[answer(sha), answer(other)]);
        assert!(reply.starts_with(b"-ERR shards disagree"), "{reply:?}");
    }

    #[test]
    fn a_function_runs_when_running_script_is_not_null() {
        let stats = |running: Value| {
            Value::Map(vec![
                (Value::Bulk(Bytes::from_static(b"running_script")), running),
                (
                    Value::Bulk(Bytes::from_static(b"engines")),
                    Value::Map(vec![]),
                ),
            ])
        };
        assert!(!runs_a_function(&stats(Value::Null)));
        let spin = Value::Map(vec![(
            Value::Bulk(Bytes::from_static(b"name")),
            Value::Bulk(Bytes::from_static(b"spin")),
        )]);
        assert!(runs_a_function(&stats(spin)));
        assert!(!runs_a_function(&Value::Array(vec![])), "not RESP3");
    }

    #[test]
    fn kill_reply_prefers_a_kill_then_notbusy() {
        let notbusy = |name: &'static str| {
            (
                name,
                Err(RedisError::Reply {
                    addr: "x".into(),
                    command: "SCRIPT".into(),
                    message: "NOTBUSY No scripts in execution right now.".into(),
                }),
            )
        };
        let killed = ("b", Ok(Value::Simple(Bytes::from_static(b"OK"))));
        assert_eq!(kill_reply(&[notbusy("a"), killed]), &b"+OK\r\n"[..]);
        assert_eq!(
            kill_reply(&[notbusy("a"), notbusy("b")]),
            &b"-NOTBUSY No scripts in execution right now.\r\n"[..]
        );
    }
}
