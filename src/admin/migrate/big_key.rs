//! Moving one big key without blocking either Redis for long (see
//! [`crate::proxy::migration::scripts`]): lock it on the source, copy it
//! in chunks of [`CHUNK`] elements to an import key on the target, rename
//! that into place with the key's expiry, then drop the key and its lock
//! on the source together. While it is locked, proxies hold the requests
//! on it. If the mover dies half-way the lock expires, the key is still
//! whole on the source, and the next run starts that key again.
//! Streams are copied by [`super::stream_copy`].

use super::fence::Fence;
use super::{mover, stream_copy};
use crate::admin::target::Target;
use crate::protocol::Value;
use crate::proxy::migration::scripts;
use crate::redis_client::{RedisConn, RedisError};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Elements (or 512 KiB of a string, or of large elements) per copy
/// step: each step costs either Redis well under a millisecond or so.
pub(super) const CHUNK: usize = 500;
const STRING_CHUNK: usize = 512 * 1024;
/// Arguments one call of the fence library can pass on: Redis's Lua
/// unpacks at most about 8,000 values (a stream entry of 4,000 fields).
const WIDEST_FENCED: usize = 7_000;
/// The lock's TTL, renewed while the copy runs.
const LOCK_TTL_MS: u64 = 30_000;
/// The import key's TTL, renewed with the lock: ten times the lock's, so
/// it never runs out under a copy that still holds its lock (each step
/// times out long before), and a copy left behind goes in minutes.
const IMPORT_TTL_MS: u64 = 10 * LOCK_TTL_MS;
const RENEW_EVERY: Duration = Duration::from_secs(2);
const REDIS_TIMEOUT: Duration = Duration::from_secs(10);
/// MIGRATE's I/O timeout for a key of a type this cannot copy.
const WHOLE_KEY_TIMEOUT_MS: u64 = 60_000;

pub(super) fn unexpected(conn: &RedisConn, command: &str, reply: &Value) -> RedisError {
    RedisError::Unexpected {
        addr: conn.addr().to_string(),
        command: command.into(),
        reply: format!("{reply:?}"),
    }
}

/// One key being copied: both connections, the import key, the lock
/// that must not expire while the copy runs, and the fence every write
/// goes through ([`super::fence`]).
pub(super) struct Job<'a> {
    pub src: &'a mut RedisConn,
    pub dst: RedisConn,
    pub key: &'a [u8],
    pub import: Vec<u8>,
    pub fence: &'a Fence,
    lock: Vec<u8>,
    renewed: Instant,
    /// The import key has a TTL, renewed with the lock: a copy
    /// left behind by a mover that died or was aborted expires, rather
    /// than sit on the target for good as an internal key (review: 11 MB,
    /// in KEYS, SCAN and DBSIZE through the proxies).
    import_expiring: bool,
}

impl Job<'_> {
    /// Writes `args` to the target, if this mover still holds the fence.
    pub(super) async fn write(&mut self, args: &[impl AsRef<[u8]>]) -> Result<Value, RedisError> {
        if args.len() > WIDEST_FENCED {
            // Too wide for the library's call: checked, then written on
            // the same connection. A run replaced between the two writes
            // at most one step into the import key, which the run that
            // replaced it empties first (and a stream's entry IDs refuse
            // a repeat).
            self.dst.call(&self.fence.check()).await?;
            return self.dst.call(args).await;
        }
        self.dst.call(&self.fence.wrap(args)).await
    }

    /// [`Job::write`] for many commands in one round trip (one each when
    /// any is too wide for the library's call: those are rare).
    pub(super) async fn write_all(
        &mut self,
        commands: &[Vec<Bytes>],
    ) -> Result<Vec<Value>, RedisError> {
        if commands.iter().any(|c| c.len() > WIDEST_FENCED) {
            let mut replies = Vec::with_capacity(commands.len());
            for command in commands {
                replies.push(self.write(command).await?);
            }
            return Ok(replies);
        }
        let fenced: Vec<Vec<Bytes>> = commands.iter().map(|c| self.fence.wrap(c)).collect();
        self.dst.pipeline(&fenced).await
    }

    /// Renews the lock, and the import key's TTL, every [`RENEW_EVERY`];
    /// every copy loop calls it once a chunk (after writing it), so a copy
    /// of any length keeps the key locked. The import key gets its TTL
    /// with its first chunk.
    pub(super) async fn renew(&mut self) -> Result<(), RedisError> {
        let due = self.renewed.elapsed() >= RENEW_EVERY;
        if due {
            let ttl = LOCK_TTL_MS.to_string();
            let renew = self
                .fence
                .wrap(&[&b"PEXPIRE"[..], &self.lock, ttl.as_bytes()]);
            self.src.call(&renew).await?;
            self.renewed = Instant::now();
        }
        if due || !self.import_expiring {
            let ttl = IMPORT_TTL_MS.to_string();
            let import = self.import.clone();
            let set = self
                .write(&[&b"PEXPIRE"[..], &import, ttl.as_bytes()])
                .await?;
            self.import_expiring = matches!(set, Value::Integer(1));
        }
        Ok(())
    }
}

/// Moves `key` from `src` to `to` in chunks; false when it was gone
/// already (a proxy moved it). Keys of a type it cannot copy (a module's)
/// go with one MIGRATE instead. Every write checks `fence`.
pub(super) async fn move_key(
    src: &mut RedisConn,
    to: &str,
    target: &Target,
    key: &[u8],
    replicas: usize,
    fence: &Fence,
) -> Result<bool, RedisError> {
    let lock = scripts::lock_key(key);
    let ttl = LOCK_TTL_MS.to_string();
    let locked = src
        .call(&fence.call("shardproxy_lock", &[key, &lock], &[ttl.as_bytes()]))
        .await?;
    let (kind, expires_at) = match &locked {
        Value::Integer(0) => return Ok(false),
        Value::Array(items) => match &items[..] {
            [Value::Bulk(kind), Value::Integer(at)] => (kind.clone(), *at),
            _ => return Err(unexpected(src, "EVAL lock", &locked)),
        },
        _ => return Err(unexpected(src, "EVAL lock", &locked)),
    };
    let mut job = Job {
        dst: target.redis(to, REDIS_TIMEOUT).await?,
        src,
        key,
        import: scripts::import_key(key),
        fence,
        lock,
        renewed: Instant::now(),
        import_expiring: false,
    };
    let import = job.import.clone();
    job.write(&[&b"UNLINK"[..], &import]).await?;
    let step = elements_per_step(job.src, key, &kind).await;
    let copied = match &kind[..] {
        b"hash" | b"set" | b"zset" => copy_scanned(&mut job, &kind, step).await.map(|()| true),
        b"list" => {
            let list = Ranged { step, ..LIST };
            copy_ranged(&mut job, &list).await.map(|()| true)
        }
        b"string" => copy_ranged(&mut job, &STRING).await.map(|()| true),
        b"stream" => stream_copy::copy(&mut job).await.map(|()| true),
        _ => Ok(false),
    };
    if !copied? {
        // One MIGRATE after all: drop the lock first, or MIGRATE would
        // leave it behind. The target's RESTORE of a big key may keep the
        // link silent for longer than a batch of small keys would.
        let unlock = fence.wrap(&[&b"DEL"[..], &job.lock]);
        job.src.call(&unlock).await?;
        let whole = [Bytes::copy_from_slice(key)];
        mover::migrate_batch(job.src, to, target, &whole, WHOLE_KEY_TIMEOUT_MS, fence).await?;
    } else {
        // The copy is whole only if this mover held the fence throughout:
        // the rename checks it again, so a replaced mover's partial copy
        // never lands on the key. The import's own TTL goes first, and
        // the key's expiry (or none) is set in the same round trip: a
        // mover dying between them cannot leave the key with the import's.
        let mut finish = vec![
            vec![Bytes::from_static(b"PERSIST"), Bytes::from(import.clone())],
            vec![
                Bytes::from_static(b"RENAME"),
                Bytes::from(import),
                Bytes::copy_from_slice(key),
            ],
        ];
        if expires_at > 0 {
            finish.push(vec![
                Bytes::from_static(b"PEXPIREAT"),
                Bytes::copy_from_slice(key),
                Bytes::from(expires_at.to_string()),
            ]);
        }
        job.write_all(&finish).await?;
        let release = fence.call::<&[u8]>("shardproxy_release", &[key, &job.lock], &[]);
        job.src.call(&release).await?;
    }
    mover::wait_for_replicas(job.src, replicas).await?;
    Ok(true)
}

/// Elements per copy step of a collection: [`CHUNK`], or fewer when they
/// are large, so that a step reads about [`STRING_CHUNK`] bytes (a
/// 100 MB hash of 200 fields goes a field at a time, not in one step that
/// would block the source as long as MIGRATE). The size is `MEMORY
/// USAGE`'s estimate; without it, [`CHUNK`].
async fn elements_per_step(src: &mut RedisConn, key: &[u8], kind: &[u8]) -> usize {
    let length: &[u8] = match kind {
        b"hash" => b"HLEN",
        b"set" => b"SCARD",
        b"zset" => b"ZCARD",
        b"list" => b"LLEN",
        _ => return CHUNK,
    };
    let Ok(Value::Integer(elements)) = src.call(&[length, key]).await else {
        return CHUNK;
    };
    let usage = src
        .call(&[&b"MEMORY"[..], b"USAGE", key, b"SAMPLES", b"5"])
        .await;
    let Ok(Value::Integer(bytes)) = usage else {
        return CHUNK;
    };
    let per_element = (bytes / elements.max(1)).max(1) as usize;
    (STRING_CHUNK / per_element).clamp(1, CHUNK)
}

/// Hashes, sets and sorted sets: HSCAN/SSCAN/ZSCAN into HSET/SADD/ZADD,
/// `step` elements at a time (SCAN's COUNT: a hint it may exceed a little).
async fn copy_scanned(job: &mut Job<'_>, kind: &[u8], step: usize) -> Result<(), RedisError> {
    let (scan, write): (&[u8], &[u8]) = match kind {
        b"hash" => (b"HSCAN", b"HSET"),
        b"set" => (b"SSCAN", b"SADD"),
        _ => (b"ZSCAN", b"ZADD"),
    };
    let count = step.to_string();
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let reply = job
            .src
            .call(&[scan, job.key, &cursor, b"COUNT", count.as_bytes()])
            .await?;
        let Value::Array(mut parts) = reply else {
            return Err(unexpected(job.src, "SCAN", &Value::Null));
        };
        let (Some(Value::Array(items)), Some(Value::Bulk(next))) = (parts.pop(), parts.pop())
        else {
            return Err(unexpected(job.src, "SCAN", &Value::Null));
        };
        let mut items = bulks(items);
        if kind == b"zset" {
            // ZSCAN gives member, score; ZADD takes score, member.
            for pair in items.chunks_mut(2) {
                pair.swap(0, 1);
            }
        }
        if !items.is_empty() {
            let mut args: Vec<Bytes> =
                vec![Bytes::copy_from_slice(write), job.import.clone().into()];
            args.extend(items);
            job.write(&args).await?;
        }
        job.renew().await?;
        cursor = next;
        if &cursor[..] == b"0" {
            return Ok(());
        }
    }
}

/// A type read by position and rebuilt by appending in order.
struct Ranged {
    /// Reads positions `from..=to`: LRANGE (elements) or GETRANGE (bytes).
    read: &'static [u8],
    /// Appends what was read: RPUSH or APPEND.
    write: &'static [u8],
    step: usize,
}

const LIST: Ranged = Ranged {
    read: b"LRANGE",
    write: b"RPUSH",
    step: CHUNK,
};
const STRING: Ranged = Ranged {
    read: b"GETRANGE",
    write: b"APPEND",
    step: STRING_CHUNK,
};

/// Lists and strings: read a step of positions, append it, until a read
/// comes back empty.
async fn copy_ranged(job: &mut Job<'_>, how: &Ranged) -> Result<(), RedisError> {
    let mut start = 0usize;
    loop {
        let (from, to) = (start.to_string(), (start + how.step - 1).to_string());
        let reply = job
            .src
            .call(&[how.read, job.key, from.as_bytes(), to.as_bytes()])
            .await?;
        // LRANGE answers elements, GETRANGE one string of bytes.
        let (parts, advanced) = match reply {
            Value::Array(items) => {
                let n = items.len();
                (bulks(items), n)
            }
            Value::Bulk(bytes) => {
                let n = bytes.len();
                (vec![bytes], n)
            }
            other => return Err(unexpected(job.src, "LRANGE/GETRANGE", &other)),
        };
        if advanced == 0 {
            return Ok(());
        }
        let mut args: Vec<Bytes> =
            vec![Bytes::copy_from_slice(how.write), job.import.clone().into()];
        args.extend(parts);
        job.write(&args).await?;
        start += advanced;
        job.renew().await?;
    }
}

/// The strings of an array reply.
pub(super) fn bulks(items: Vec<Value>) -> Vec<Bytes> {
    items
        .into_iter()
        .filter_map(|v| match v {
            Value::Bulk(b) => Some(b),
            _ => None,
        })
        .collect()
}
