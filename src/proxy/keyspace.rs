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
//! The cursor a client sees packs three numbers into a plain decimal u64:
//! the shard's position in that list in the low 10 bits, the cursor that
//! shard's Redis returned in the next 44, and a walk still owed in the top
//! 10 (below). Clients that parse cursors as u64 (redis-rs, go-redis) keep
//! working, and it carries no state in the proxy: any proxy with the same
//! routing table continues a scan another one started. `0` starts and ends
//! a scan. When one shard's scan ends, the next shard's starts at once in
//! the same call while the batch is empty, else its cursor (`shard`, its
//! own cursor 0) is returned.
//!
//! Redis cursors are below the size of the key table (a power of two), so
//! one of 2^44 or more would need a table of petabytes; it is refused
//! rather than cut. At most 1022 shards can be scanned. Redis's guarantee
//! holds shard by shard: a key present on its shard for the whole
//! iteration is returned. A new shard receiving a range is walked where
//! its name sorts among the others, the place it keeps once it owns the
//! range, so a cursor names the same shards across the commit.
//!
//! A key that moves during the scan to a shard already walked (the
//! migration's target sorts before its source) would be missed: so once a
//! call sees such a migration at or past its target, the cursor owes the
//! target a second walk after the last shard, which returns only the keys
//! of the moving range (all its keys, with duplicates, if the migration has
//! ended meanwhile). A move that starts and ends between two calls of the
//! same scan is not seen. A routing change during a scan (shards added,
//! removed or reordered) breaks it, as moving keys between shards would
//! anyway: a cursor naming a shard the table no longer has gets `ERR
//! invalid cursor`.

use crate::command::{Command, KeyspaceOp};
use crate::protocol::{
    encode_array_header, encode_bulk, encode_request, is_error_reply, reply_frame_len,
};
use crate::proxy::fanout::{self, array_parts};
use crate::proxy::pending::{unsupported_error, Pending};
use crate::proxy::router::RoutingTable;
use crate::proxy::session::Session;
use crate::proxy::stats::PoolStats;
use bytes::{Bytes, BytesMut};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Bits of the client's cursor that hold the shard.
const SHARD_BITS: u32 = 10;
/// Bits at the top of the client's cursor that hold the walk owed.
const OWED_BITS: u32 = 10;
/// Bits in between for the shard's own cursor.
const SHARD_CURSOR_BITS: u32 = 64 - SHARD_BITS - OWED_BITS;
/// `owed` of the second walk itself; below it, 0 owes nothing and `t + 1`
/// owes the shard at position `t`.
const REWALKING: u64 = (1 << OWED_BITS) - 1;
/// Most shards SCAN can walk: every position must fit in `owed` as `t + 1`.
const MAX_SCAN_SHARDS: usize = REWALKING as usize - 1;

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
    let Some(mut at) = parse_cursor(&args[1]).map(Cursor::unpack) else {
        return session.error("ERR invalid cursor");
    };
    if at.position >= shards.len() || (at.owed != REWALKING && at.owed > shards.len() as u64) {
        return session.error("ERR invalid cursor");
    }
    let last = shards.len() - 1;
    let backward = backward_move(&table, &shards);
    let filter = table.clone();
    let mut request: Vec<Bytes> = args.to_vec();
    let (proto, affinity) = (session.proto, session.affinity);
    let ask = move |request: &mut Vec<Bytes>, at: &Cursor| {
        request[1] = Bytes::from(at.shard_cursor.to_string());
        let mut raw = BytesMut::new();
        encode_request(request, &mut raw);
        fanout::ask(
            table.shard(shards[at.position]),
            proto,
            affinity,
            raw.freeze(),
        )
    };
    // The first shard is asked now, not when the reply is first awaited:
    // the requests the client sent after SCAN are dispatched before then,
    // and must not run first. A shard that turns out to be done is
    // followed by the next one in the same call (no empty pages); that
    // request may come after later ones, which SCAN's guarantee allows
    // (keys written during an iteration may or may not be returned).
    let mut answer = ask(&mut request, &at);
    assembling(session, async move {
        loop {
            if let Some((target, _)) = backward {
                if at.owed == 0 && at.position >= target {
                    at.owed = target as u64 + 1;
                }
            }
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
            let rewalking = at.owed == REWALKING;
            let range = backward.map(|(_, range)| range).filter(|_| rewalking);
            let keys = match range {
                Some(range) => keys_in_range(keys, &filter, range),
                None => reply.frame.slice_ref(keys),
            };
            let (count, _) = array_parts(&keys).unwrap_or((0, b""));
            let client_cursor = if next != 0 {
                at.shard_cursor = next;
                match at.pack() {
                    Some(c) => c,
                    None => {
                        return fanout::error_frame(&format!(
                            "ERR shard '{}': SCAN cursor {next} too large for shardproxy",
                            reply.shard
                        ))
                    }
                }
            } else if let Some(following) = at.following(last) {
                at = following;
                if count == 0 {
                    answer = ask(&mut request, &at);
                    continue;
                }
                at.pack().expect("a shard's first cursor fits")
            } else {
                0
            };
            let mut out = BytesMut::with_capacity(keys.len() + 32);
            encode_array_header(2, &mut out);
            encode_bulk(client_cursor.to_string().as_bytes(), &mut out);
            out.extend_from_slice(&keys);
            return out.freeze();
        }
    })
}

/// Where a scan stands (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    position: usize,
    shard_cursor: u64,
    /// 0, `t + 1` (the shard at position `t` is walked again after the
    /// last one) or [`REWALKING`] (this is that walk).
    owed: u64,
}

impl Cursor {
    fn unpack(cursor: u64) -> Cursor {
        Cursor {
            position: (cursor & ((1 << SHARD_BITS) - 1)) as usize,
            shard_cursor: (cursor >> SHARD_BITS) & ((1 << SHARD_CURSOR_BITS) - 1),
            owed: cursor >> (SHARD_BITS + SHARD_CURSOR_BITS),
        }
    }

    /// The client's cursor, if the shard's cursor fits.
    fn pack(&self) -> Option<u64> {
        if self.shard_cursor >> SHARD_CURSOR_BITS != 0 {
            return None;
        }
        Some(
            self.owed << (SHARD_BITS + SHARD_CURSOR_BITS)
                | self.shard_cursor << SHARD_BITS
                | self.position as u64,
        )
    }

    /// The walk after this shard's, once it ended: the next shard, else
    /// the walk owed; `None` at the end of the scan.
    fn following(&self, last: usize) -> Option<Cursor> {
        let start = |position, owed| Cursor {
            position,
            shard_cursor: 0,
            owed,
        };
        if self.owed == REWALKING {
            None
        } else if self.position < last {
            Some(start(self.position + 1, self.owed))
        } else if self.owed != 0 {
            Some(start(self.owed as usize - 1, REWALKING))
        } else {
            None
        }
    }
}

/// The position of a migration's target that sorts before its source (a
/// key it moves may land on a shard a scan walked already), and the range.
fn backward_move(table: &RoutingTable, shards: &[usize]) -> Option<(usize, (u32, u32))> {
    let (source, target, range) = table.migration_between()?;
    let position = |index| shards.iter().position(|&i| i == index);
    let target = position(target)?;
    match source.and_then(position) {
        Some(source) if source < target => None,
        _ => Some((target, range)),
    }
}

/// The keys of a SCAN page (an array of bulk strings) that fall in the
/// slots `lo..=hi`, as an array frame.
fn keys_in_range(keys: &[u8], table: &RoutingTable, (lo, hi): (u32, u32)) -> Bytes {
    let elements = fanout::array_elements(keys);
    let kept: Vec<&[u8]> = elements
        .into_iter()
        .filter(|element| {
            bulk_contents(element)
                .and_then(|key| table.slot_of(key))
                .is_some_and(|slot| (lo..=hi).contains(&slot))
        })
        .collect();
    let mut out = BytesMut::with_capacity(kept.iter().map(|e| e.len()).sum::<usize>() + 16);
    encode_array_header(kept.len(), &mut out);
    for element in kept {
        out.extend_from_slice(element);
    }
    out.freeze()
}

/// The bytes of a bulk string frame `$n\r\n...\r\n`.
fn bulk_contents(frame: &[u8]) -> Option<&[u8]> {
    let body = frame.strip_prefix(b"$")?;
    let eol = body.windows(2).position(|w| w == b"\r\n")?;
    body.get(eol + 2..body.len().checked_sub(2)?)
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
        let start = Cursor::unpack(0);
        assert_eq!(
            start,
            Cursor {
                position: 0,
                shard_cursor: 0,
                owed: 0
            }
        );
        assert_eq!(start.pack(), Some(0));
    }

    #[test]
    fn cursor_packs_shard_low_shard_cursor_above_and_owed_walk_on_top() {
        let at = Cursor {
            position: 7,
            shard_cursor: 12345,
            owed: 0,
        };
        // As before owed walks existed: a scan running across an upgrade
        // keeps its place.
        assert_eq!(at.pack(), Some(12345 * 1024 + 7));
        assert_eq!(Cursor::unpack(12345 * 1024 + 7), at);
        let owing = Cursor { owed: 3, ..at };
        assert_eq!(Cursor::unpack(owing.pack().unwrap()), owing);
        let full = Cursor {
            position: 1023,
            shard_cursor: (1 << 44) - 1,
            owed: REWALKING,
        };
        assert_eq!(full.pack(), Some(u64::MAX));
        assert_eq!(Cursor::unpack(u64::MAX), full);
        let too_large = Cursor {
            shard_cursor: 1 << 44,
            ..at
        };
        assert_eq!(too_large.pack(), None);
    }

    #[test]
    fn the_owed_walk_comes_after_the_last_shard_and_ends_the_scan() {
        let at = |position, owed| Cursor {
            position,
            shard_cursor: 0,
            owed,
        };
        assert_eq!(at(0, 0).following(2), Some(at(1, 0)));
        assert_eq!(at(2, 0).following(2), None);
        assert_eq!(at(1, 1).following(2), Some(at(2, 1)));
        assert_eq!(at(2, 1).following(2), Some(at(0, REWALKING)));
        assert_eq!(at(0, REWALKING).following(2), None);
        // The owed walk's cursor is never 0, which would end the scan.
        assert_ne!(at(0, REWALKING).pack(), Some(0));
    }

    #[test]
    fn bulk_contents_are_the_key() {
        assert_eq!(bulk_contents(b"$3\r\nabc\r\n"), Some(&b"abc"[..]));
        assert_eq!(bulk_contents(b"$0\r\n\r\n"), Some(&b""[..]));
        assert_eq!(bulk_contents(b":1\r\n"), None);
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
