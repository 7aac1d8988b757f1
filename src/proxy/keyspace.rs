//! The commands over the whole keyspace, which no single shard holds:
//! SCAN walks the shards one after the other under one cursor, KEYS joins
//! every shard's keys, RANDOMKEY asks a random shard, and FLUSHALL/FLUSHDB
//! empty every shard when the pool file allows it.
//!
//! The shards are the distinct backends of the routing table, in table
//! order, with a migration's end that owns no range yet where its name
//! sorts ([`crate::proxy::router::RoutingTable::distinct_shards`]).
//!
//! # The SCAN cursor
//! The cursor a client sees is `shard_cursor * 1024 + shard`: the shard's
//! position in that list in the low 10 bits, the cursor that shard's Redis
//! returned above them. It is a plain decimal u64, so clients that parse
//! cursors as u64 (redis-rs, go-redis) keep working, and it carries no
//! state in the proxy: any proxy with the same routing table continues a
//! scan another one started. `0` starts and ends a scan. When one shard's
//! scan ends, the next shard's starts at once in the same call while the
//! batch is empty, else its cursor (`shard`, its own cursor 0) is returned.
//!
//! Redis cursors are below the size of the key table (a power of two), so
//! one of 2^54 or more would need a table of exabytes; it is refused rather
//! than cut. At most 1024 shards can be scanned. Redis's guarantee holds
//! shard by shard: a key present on its shard for the whole iteration is
//! returned. A new shard receiving a range is walked where its name sorts
//! among the others, the place it keeps once it owns the range, so a
//! cursor names the same shards across the commit; a key that moves during
//! the scan is found unless its new shard was walked before its old one. A
//! routing change during a scan (shards added, removed or reordered)
//! breaks it, as moving keys between shards would anyway: a
//! cursor naming a shard the table no longer has gets `ERR invalid cursor`.

use crate::command::{Command, KeyspaceOp};
use crate::protocol::{
    encode_array_header, encode_bulk, encode_request, is_error_reply, reply_frame_len,
};
use crate::proxy::fanout::{self, array_parts};
use crate::proxy::pending::{unsupported_error, Pending};
use crate::proxy::session::Session;
use crate::proxy::stats::PoolStats;
use bytes::{Bytes, BytesMut};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Bits of the client's cursor that hold the shard.
const SHARD_BITS: u32 = 10;
/// Most shards SCAN can walk.
const MAX_SCAN_SHARDS: usize = 1 << SHARD_BITS;

/// Runs a keyspace-wide command.
pub fn run(
    session: &Session,
    op: KeyspaceOp,
    cmd: &Command,
    args: &[Bytes],
    raw: Bytes,
) -> Pending {
    match op {
        KeyspaceOp::Scan => scan(session, args),
        KeyspaceOp::Keys => keys(session, raw),
        KeyspaceOp::RandomKey => random_key(session, raw),
        KeyspaceOp::Flush if session.pool.config().allow_flush => all_ok(session, raw),
        // Refused by default: one stray FLUSHALL would empty every shard.
        KeyspaceOp::Flush => session.error(&unsupported_error(cmd, args)),
    }
}

/// A reply put together once the shards have answered; errors count in
/// the pool's stats.
fn assembling(
    session: &Session,
    reply: impl std::future::Future<Output = Bytes> + Send + 'static,
) -> Pending {
    let pool = session.pool.clone();
    Pending::Assembling(Box::pin(async move {
        let frame = reply.await;
        if is_error_reply(&frame) {
            PoolStats::bump(&pool.stats.errors);
        }
        frame
    }))
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]: the options go to
/// each shard as they are.
fn scan(session: &Session, args: &[Bytes]) -> Pending {
    let table = session.pool.router.load_full();
    let shards = table.distinct_shards();
    if shards.len() > MAX_SCAN_SHARDS {
        return session.error(&format!(
            "ERR SCAN through shardproxy walks at most {MAX_SCAN_SHARDS} shards, the pool has {}",
            shards.len()
        ));
    }
    let Some((mut position, cursor)) = parse_cursor(&args[1]).map(unpack) else {
        return session.error("ERR invalid cursor");
    };
    if position >= shards.len() {
        return session.error("ERR invalid cursor");
    }
    let last = shards.len() - 1;
    let mut request: Vec<Bytes> = args.to_vec();
    let (proto, affinity) = (session.proto, session.affinity);
    let ask = move |request: &mut Vec<Bytes>, position: usize, cursor: u64| {
        request[1] = Bytes::from(cursor.to_string());
        let mut raw = BytesMut::new();
        encode_request(request, &mut raw);
        fanout::ask(table.shard(shards[position]), proto, affinity, raw.freeze())
    };
    // The first shard is asked now, not when the reply is first awaited:
    // the requests the client sent after SCAN are dispatched before then,
    // and must not run first. A shard that turns out to be done is
    // followed by the next one in the same call (no empty pages); that
    // request may come after later ones, which SCAN's guarantee allows
    // (keys written during an iteration may or may not be returned).
    let mut answer = ask(&mut request, position, cursor);
    assembling(session, async move {
        loop {
            let reply = answer.await;
            if reply.failed || is_error_reply(&reply.frame) {
                return reply.frame;
            }
            let Some((next, keys)) = scan_reply(&reply.frame) else {
                return fanout::error_frame(&format!(
                    "ERR shard '{}': SCAN reply is not a cursor and keys",
                    reply.shard
                ));
            };
            let (count, _) = array_parts(keys).unwrap_or((0, b""));
            let client_cursor = if next != 0 {
                match pack(next, position) {
                    Some(c) => c,
                    None => {
                        return fanout::error_frame(&format!(
                            "ERR shard '{}': SCAN cursor {next} too large for shardproxy",
                            reply.shard
                        ))
                    }
                }
            } else if position == last {
                0
            } else {
                position += 1;
                if count == 0 {
                    answer = ask(&mut request, position, 0);
                    continue;
                }
                position as u64
            };
            let mut out = BytesMut::with_capacity(keys.len() + 32);
            encode_array_header(2, &mut out);
            encode_bulk(client_cursor.to_string().as_bytes(), &mut out);
            out.extend_from_slice(keys);
            return out.freeze();
        }
    })
}

/// The cursor and the keys array of a SCAN reply `*2 $cursor *n ...`.
fn scan_reply(frame: &[u8]) -> Option<(u64, &[u8])> {
    let (2, body) = array_parts(frame)? else {
        return None;
    };
    let cursor_len = reply_frame_len(body).ok()??;
    let (cursor, keys) = body.split_at(cursor_len);
    let digits = cursor.strip_prefix(b"$")?;
    let eol = digits.iter().position(|&b| b == b'\n')?;
    let text = std::str::from_utf8(digits.get(eol + 1..digits.len() - 2)?).ok()?;
    Some((text.parse().ok()?, keys))
}

/// Parses a cursor as Redis does (`strtoul` in base 10): no leading space,
/// an optional sign, digits to the end, within a u64; a minus wraps around,
/// and an empty cursor is 0.
fn parse_cursor(text: &[u8]) -> Option<u64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        // strtoul converts nothing: Redis accepts only the empty string.
        return text.is_empty().then_some(0);
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

/// The client's cursor as (shard position, that shard's cursor).
fn unpack(cursor: u64) -> (usize, u64) {
    let position = (cursor & (MAX_SCAN_SHARDS as u64 - 1)) as usize;
    (position, cursor >> SHARD_BITS)
}

/// The client's cursor for a shard's cursor, if it fits.
fn pack(shard_cursor: u64, position: usize) -> Option<u64> {
    if shard_cursor >> (64 - SHARD_BITS) != 0 {
        return None;
    }
    Some(shard_cursor << SHARD_BITS | position as u64)
}

/// KEYS pattern: every shard's keys, in table order.
fn keys(session: &Session, raw: Bytes) -> Pending {
    let table = session.pool.router.load();
    let asked = fanout::ask_all(session, &table, &raw);
    assembling(session, async move {
        let answers = asked.await;
        if let Some(error) = fanout::failure(&answers) {
            return error;
        }
        let mut total = 0;
        let mut size = 0;
        for answer in &answers {
            let (count, body) = array_parts(&answer.frame).unwrap_or((0, b""));
            total += count;
            size += body.len();
        }
        let mut out = BytesMut::with_capacity(size + 16);
        encode_array_header(total, &mut out);
        for answer in &answers {
            if let Some((_, body)) = array_parts(&answer.frame) {
                out.extend_from_slice(body);
            }
        }
        out.freeze()
    })
}

/// RANDOMKEY: a random shard's random key; while a shard is empty the next
/// one is asked, so nil means every shard is empty. Each non-empty shard is
/// as likely as another, whatever its size.
fn random_key(session: &Session, raw: Bytes) -> Pending {
    let table = session.pool.router.load_full();
    let shards = table.distinct_shards();
    let start = RandomState::new().hash_one(session.id) as usize % shards.len();
    // Every shard is asked now, not one after another as the replies come:
    // the requests the client sent after RANDOMKEY are dispatched before
    // then, and must not run first.
    let answers: Vec<_> = (0..shards.len())
        .map(|i| {
            let shard = table.shard(shards[(start + i) % shards.len()]);
            fanout::ask(shard, session.proto, session.affinity, raw.clone())
        })
        .collect();
    assembling(session, async move {
        let mut last = None;
        for answer in answers {
            let answer = answer.await;
            if !is_nil(&answer.frame) {
                return answer.frame;
            }
            last = Some(answer.frame);
        }
        last.unwrap_or_else(|| Bytes::from_static(b"$-1\r\n"))
    })
}

/// RESP2's nil bulk or RESP3's null.
fn is_nil(frame: &[u8]) -> bool {
    frame == b"$-1\r\n" || frame == b"_\r\n"
}

/// FLUSHALL, FLUSHDB: `+OK` once every shard said it.
fn all_ok(session: &Session, raw: Bytes) -> Pending {
    let table = session.pool.router.load();
    let asked = fanout::ask_all(session, &table, &raw);
    assembling(session, async move {
        let answers = asked.await;
        match fanout::failure(&answers) {
            Some(error) => error,
            None => Bytes::from_static(b"+OK\r\n"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_as_redis_strtoul() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b"1234"), Some(1234));
        assert_eq!(parse_cursor(b"007"), Some(7));
        assert_eq!(parse_cursor(b"+5"), Some(5));
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b"18446744073709551616"[..],
            b"abc",
            b"1x",
            b" 1",
            b"+",
            b"-",
            b"1 ",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn zero_starts_on_the_first_shard() {
        assert_eq!(unpack(0), (0, 0));
        assert_eq!(pack(0, 0), Some(0));
    }

    #[test]
    fn cursor_packs_shard_low_and_shard_cursor_high() {
        let c = pack(12345, 7).unwrap();
        assert_eq!(c, 12345 * 1024 + 7);
        assert_eq!(unpack(c), (7, 12345));
        assert_eq!(pack((1 << 54) - 1, 1023), Some(u64::MAX));
        assert_eq!(pack(1 << 54, 0), None);
    }

    #[test]
    fn scan_replies_are_read_in_both_protocols() {
        let frame = b"*2\r\n$2\r\n17\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        let (cursor, keys) = scan_reply(frame).unwrap();
        assert_eq!(cursor, 17);
        assert_eq!(keys, b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        assert_eq!(scan_reply(b"*2\r\n$1\r\n0\r\n*0\r\n").unwrap().0, 0);
        assert!(scan_reply(b"+OK\r\n").is_none());
    }

    #[test]
    fn nil_in_both_protocols() {
        assert!(is_nil(b"$-1\r\n") && is_nil(b"_\r\n"));
        assert!(!is_nil(b"$1\r\na\r\n"));
    }
}
