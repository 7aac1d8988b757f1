//! Moving one big key without blocking either Redis for long (see
//! [`crate::proxy::migration::scripts`]): lock it on the source, copy it
//! in chunks of [`CHUNK`] elements to an import key on the target, rename
//! that into place with the key's expiry, then drop the key and its lock
//! on the source together. While it is locked, proxies hold the requests
//! on it. If the mover dies half-way the lock expires, the key is still
//! whole on the source, and the next run starts that key again.

use crate::protocol::Value;
use crate::proxy::migration::scripts;
use crate::redis_client::{RedisConn, RedisError};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Elements (or 512 KiB of a string) per copy step: each step costs
/// either Redis well under a millisecond.
const CHUNK: usize = 500;
const STRING_CHUNK: usize = 512 * 1024;
/// The lock's TTL, renewed while the copy runs.
const LOCK_TTL_MS: u64 = 30_000;
const RENEW_EVERY: Duration = Duration::from_secs(2);
const REDIS_TIMEOUT: Duration = Duration::from_secs(10);

fn unexpected(conn: &RedisConn, command: &str, reply: &Value) -> RedisError {
    RedisError::Unexpected {
        addr: conn.addr().to_string(),
        command: command.into(),
        reply: format!("{reply:?}"),
    }
}

/// Moves `key` from `src` to `to` in chunks; false when it was gone
/// already (a proxy moved it). Streams, whose consumer groups a copy would
/// lose, and keys of an unknown type go with one MIGRATE instead.
pub(super) async fn move_key(
    src: &mut RedisConn,
    to: &str,
    auth: Option<&str>,
    key: &[u8],
    replicas: usize,
) -> Result<bool, RedisError> {
    let lock = scripts::lock_key(key);
    let ttl = LOCK_TTL_MS.to_string();
    let locked = src
        .call(&[
            &b"EVAL"[..],
            scripts::LOCK.as_bytes(),
            b"2",
            key,
            &lock,
            ttl.as_bytes(),
        ])
        .await?;
    let (kind, expires_at) = match &locked {
        Value::Integer(0) => return Ok(false),
        Value::Array(items) => match &items[..] {
            [Value::Bulk(kind), Value::Integer(at)] => (kind.clone(), *at),
            _ => return Err(unexpected(src, "EVAL lock", &locked)),
        },
        _ => return Err(unexpected(src, "EVAL lock", &locked)),
    };
    let mut dst = RedisConn::connect(to, auth, REDIS_TIMEOUT).await?;
    let import = scripts::import_key(key);
    dst.call(&[&b"UNLINK"[..], &import]).await?;
    let mut renewed = Instant::now();
    let copied = match &kind[..] {
        b"hash" | b"set" | b"zset" => {
            copy_scanned(src, &mut dst, key, &import, &kind, &lock, &mut renewed).await?
        }
        b"list" => copy_list(src, &mut dst, key, &import, &lock, &mut renewed).await?,
        b"string" => copy_string(src, &mut dst, key, &import, &lock, &mut renewed).await?,
        _ => false,
    };
    if copied {
        dst.call(&[&b"RENAME"[..], &import, key]).await?;
        if expires_at > 0 {
            let at = expires_at.to_string();
            dst.call(&[&b"PEXPIREAT"[..], key, at.as_bytes()]).await?;
        }
        src.call(&[&b"EVAL"[..], scripts::RELEASE.as_bytes(), b"2", key, &lock])
            .await?;
    } else {
        // One MIGRATE after all: drop the lock first, or MIGRATE would
        // leave it behind.
        src.call(&[&b"DEL"[..], &lock]).await?;
        let (host, port) = host_port_of(to);
        let mut args: Vec<&[u8]> = vec![
            b"MIGRATE",
            host.as_bytes(),
            port.as_bytes(),
            key,
            b"0",
            b"60000",
            b"REPLACE",
        ];
        if let Some(pw) = auth {
            args.extend([&b"AUTH"[..], pw.as_bytes()]);
        }
        src.call(&args).await?;
    }
    if replicas > 0 {
        let n = replicas.to_string();
        src.call(&["WAIT", n.as_str(), "1000"]).await?;
    }
    Ok(true)
}

fn host_port_of(addr: &str) -> (String, String) {
    crate::proxy::migration::host_port(addr)
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap_or_default()
}

/// Renews the lock every [`RENEW_EVERY`].
async fn renew(src: &mut RedisConn, lock: &[u8], renewed: &mut Instant) -> Result<(), RedisError> {
    if renewed.elapsed() >= RENEW_EVERY {
        let ttl = LOCK_TTL_MS.to_string();
        src.call(&[&b"PEXPIRE"[..], lock, ttl.as_bytes()]).await?;
        *renewed = Instant::now();
    }
    Ok(())
}

/// Hashes, sets and sorted sets: HSCAN/SSCAN/ZSCAN into HSET/SADD/ZADD.
async fn copy_scanned(
    src: &mut RedisConn,
    dst: &mut RedisConn,
    key: &[u8],
    import: &[u8],
    kind: &[u8],
    lock: &[u8],
    renewed: &mut Instant,
) -> Result<bool, RedisError> {
    let (scan, write): (&[u8], &[u8]) = match kind {
        b"hash" => (b"HSCAN", b"HSET"),
        b"set" => (b"SSCAN", b"SADD"),
        _ => (b"ZSCAN", b"ZADD"),
    };
    let count = CHUNK.to_string();
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let reply = src
            .call(&[scan, key, &cursor, b"COUNT", count.as_bytes()])
            .await?;
        let Value::Array(mut parts) = reply else {
            return Err(unexpected(src, "SCAN", &Value::Null));
        };
        let (Some(Value::Array(items)), Some(Value::Bulk(next))) = (parts.pop(), parts.pop())
        else {
            return Err(unexpected(src, "SCAN", &Value::Null));
        };
        let mut items: Vec<Bytes> = items
            .into_iter()
            .filter_map(|v| match v {
                Value::Bulk(b) => Some(b),
                _ => None,
            })
            .collect();
        if kind == b"zset" {
            // ZSCAN gives member, score; ZADD takes score, member.
            for pair in items.chunks_mut(2) {
                pair.swap(0, 1);
            }
        }
        if !items.is_empty() {
            let mut args: Vec<&[u8]> = vec![write, import];
            args.extend(items.iter().map(|b| &b[..]));
            dst.call(&args).await?;
        }
        renew(src, lock, renewed).await?;
        cursor = next;
        if &cursor[..] == b"0" {
            return Ok(true);
        }
    }
}

/// Lists: LRANGE in order into RPUSH.
async fn copy_list(
    src: &mut RedisConn,
    dst: &mut RedisConn,
    key: &[u8],
    import: &[u8],
    lock: &[u8],
    renewed: &mut Instant,
) -> Result<bool, RedisError> {
    let mut start = 0usize;
    loop {
        let (from, to) = (start.to_string(), (start + CHUNK - 1).to_string());
        let reply = src
            .call(&[&b"LRANGE"[..], key, from.as_bytes(), to.as_bytes()])
            .await?;
        let Value::Array(items) = reply else {
            return Err(unexpected(src, "LRANGE", &reply));
        };
        if items.is_empty() {
            return Ok(true);
        }
        let values: Vec<Bytes> = items
            .into_iter()
            .filter_map(|v| match v {
                Value::Bulk(b) => Some(b),
                _ => None,
            })
            .collect();
        let mut args: Vec<&[u8]> = vec![b"RPUSH", import];
        args.extend(values.iter().map(|b| &b[..]));
        dst.call(&args).await?;
        start += values.len();
        renew(src, lock, renewed).await?;
    }
}

/// Strings: GETRANGE into APPEND.
async fn copy_string(
    src: &mut RedisConn,
    dst: &mut RedisConn,
    key: &[u8],
    import: &[u8],
    lock: &[u8],
    renewed: &mut Instant,
) -> Result<bool, RedisError> {
    let mut start = 0usize;
    loop {
        let (from, to) = (start.to_string(), (start + STRING_CHUNK - 1).to_string());
        let reply = src
            .call(&[&b"GETRANGE"[..], key, from.as_bytes(), to.as_bytes()])
            .await?;
        let Value::Bulk(chunk) = reply else {
            return Err(unexpected(src, "GETRANGE", &reply));
        };
        if chunk.is_empty() {
            return Ok(true);
        }
        dst.call(&[&b"APPEND"[..], import, &chunk]).await?;
        start += chunk.len();
        renew(src, lock, renewed).await?;
    }
}
