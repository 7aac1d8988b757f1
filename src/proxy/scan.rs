//! SCAN over every shard: the shards one after the other under one
//! cursor, in the order of [`RoutingTable::distinct_shards`] (table order,
//! with a migration's end that owns no range yet where its name sorts).
//!
//! # The cursor
//! The cursor a client sees packs four fields into a plain decimal u64,
//! from the lowest bits: the shard's position in that list (10 bits), the
//! cursor that shard's Redis returned (34), the shards owed a second walk
//! (19, below), and whether the scan is in those second walks (1). Clients
//! that parse cursors as u64 (redis-rs, go-redis) keep working, and it
//! carries no state in the proxy: any proxy with the same routing table
//! continues a scan another one started. `0` starts and ends a scan. When
//! one shard's scan ends, the next shard's starts at once in the same call
//! while the batch is empty, else its cursor (`shard`, its own cursor 0) is
//! returned. Cursors of proxies from before the owed walks read the same.
//!
//! Redis cursors are below the size of the key table (a power of two), so
//! one of 2^34 or more would need a table of 17 billion buckets, hundreds
//! of GB of keys in one Redis; it is refused rather than cut. At most 1024
//! shards can be scanned. Redis's guarantee holds shard by shard: a key
//! present on its shard for the whole iteration is returned. A new shard
//! receiving a range is walked where its name sorts among the others, the
//! place it keeps once it owns the range, so a cursor names the same shards
//! across the commit.
//!
//! # Keys moved behind the scan
//! A key that a migration moves to a shard the scan walked already (the
//! target's position comes before the source's) would be missed. So each
//! call that sees such a migration at or past its target marks the target
//! owed (bit `t` of the owed field; the last bit stands for every position
//! from it on), and after the last shard every owed shard is walked again,
//! whole, lowest position first: its keys come twice, which SCAN allows.
//! A migration seen during those second walks marks its target only if the
//! second walks have not passed it. Not seen, so still missed: the keys of
//! a move that begins and ends between two calls of the same scan. A
//! routing change during a scan (shards added, removed or reordered) breaks
//! it, as moving keys between shards would anyway: a cursor naming a shard
//! the table no longer has gets `ERR invalid cursor`.

use crate::protocol::{encode_array_header, encode_bulk, encode_request, reply_frame_len};
use crate::proxy::fanout::{self, array_parts};
use crate::proxy::pending::Pending;
use crate::proxy::router::RoutingTable;
use crate::proxy::session::Session;
use bytes::{Bytes, BytesMut};

/// Bits of the client's cursor that hold the shard's position.
const POSITION_BITS: u32 = 10;
/// Bits above them for the shard's own cursor.
const SHARD_CURSOR_BITS: u32 = 34;
/// Bits above those for the shards owed a second walk.
const OWED_BITS: u32 = 19;
/// The owed bit that stands for its position and every one after it.
const OWED_FROM: usize = OWED_BITS as usize - 1;
/// Most shards SCAN can walk.
const MAX_SCAN_SHARDS: usize = 1 << POSITION_BITS;

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]: the options go to
/// each shard as they are.
pub fn run(session: &Session, args: &[Bytes]) -> Pending {
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
    if at.position >= shards.len() {
        return session.error("ERR invalid cursor");
    }
    let last = shards.len() - 1;
    let behind = target_behind(&table, &shards);
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
    super::keyspace::assembling(session, async move {
        loop {
            if let Some(target) = behind {
                at.owe(target);
            }
            let reply = answer.await;
            if reply.failed || crate::protocol::is_error_reply(&reply.frame) {
                return reply.frame;
            }
            let Some((next, keys)) = scan_reply(&reply.frame) else {
                return fanout::error_frame(&format!(
                    "ERR shard '{}': SCAN reply is not a cursor and keys",
                    reply.shard
                ));
            };
            let (count, listed) = array_parts(keys).unwrap_or((0, b""));
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
            let (count, listed) = super::keyspace::without_reserved(count, listed);
            let mut out = BytesMut::with_capacity(listed.len() + 48);
            encode_array_header(2, &mut out);
            encode_bulk(client_cursor.to_string().as_bytes(), &mut out);
            encode_array_header(count, &mut out);
            out.extend_from_slice(&listed);
            return out.freeze();
        }
    })
}

/// Where a scan stands (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    position: usize,
    shard_cursor: u64,
    /// Bit `t`: the shard at position `t` is owed a second walk (the last
    /// bit: every position from it on).
    owed: u32,
    /// The walk under way is one of the second walks.
    rewalking: bool,
}

impl Cursor {
    fn unpack(cursor: u64) -> Cursor {
        let field = |shift: u32, bits: u32| (cursor >> shift) & ((1 << bits) - 1);
        Cursor {
            position: field(0, POSITION_BITS) as usize,
            shard_cursor: field(POSITION_BITS, SHARD_CURSOR_BITS),
            owed: field(POSITION_BITS + SHARD_CURSOR_BITS, OWED_BITS) as u32,
            rewalking: cursor >> 63 == 1,
        }
    }

    /// The client's cursor, if the shard's cursor fits.
    fn pack(&self) -> Option<u64> {
        if self.shard_cursor >> SHARD_CURSOR_BITS != 0 {
            return None;
        }
        Some(
            u64::from(self.rewalking) << 63
                | u64::from(self.owed) << (POSITION_BITS + SHARD_CURSOR_BITS)
                | self.shard_cursor << POSITION_BITS
                | self.position as u64,
        )
    }

    /// A migration moves keys to the shard at position `target`, which
    /// this scan may have walked: owed a second walk, unless the walks
    /// have not reached it yet.
    fn owe(&mut self, target: usize) {
        let due = if self.rewalking {
            // Not walked again yet, and not ahead in the run of positions
            // being walked again now (the run reaches it anyway).
            target > self.position && !(self.position >= OWED_FROM && target >= OWED_FROM)
        } else {
            target <= self.position
        };
        if due {
            self.owed |= 1 << target.min(OWED_FROM);
        }
    }

    /// The walk after this shard's, once it ended: the next shard, then
    /// the owed ones; `None` at the end of the scan.
    fn following(&self, last: usize) -> Option<Cursor> {
        let walk = |position, owed, rewalking| Cursor {
            position,
            shard_cursor: 0,
            owed,
            rewalking,
        };
        // The last owed bit is a run of positions, walked in order.
        let in_run = self.rewalking && self.position >= OWED_FROM;
        if (!self.rewalking || in_run) && self.position < last {
            return Some(walk(self.position + 1, self.owed, self.rewalking));
        }
        let mut owed = self.owed;
        while owed != 0 {
            let position = owed.trailing_zeros() as usize;
            owed &= !(1 << position);
            if position <= last {
                return Some(walk(position, owed, true));
            }
        }
        None
    }
}

/// The position of a migration's target that comes before its source's
/// (a key it moves may land on a shard a scan walked already).
fn target_behind(table: &RoutingTable, shards: &[usize]) -> Option<usize> {
    let (source, target) = table.migration_between()?;
    let position = |index| shards.iter().position(|&i| i == index);
    let target = position(target)?;
    match source.and_then(position) {
        Some(source) if source < target => None,
        _ => Some(target),
    }
}

/// The cursor and the keys array of a SCAN reply `*2 $cursor *n ...`.
pub(super) fn scan_reply(frame: &[u8]) -> Option<(u64, &[u8])> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: usize, owed: u32, rewalking: bool) -> Cursor {
        Cursor {
            position,
            shard_cursor: 0,
            owed,
            rewalking,
        }
    }

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
        assert_eq!(Cursor::unpack(0), at(0, 0, false));
        assert_eq!(at(0, 0, false).pack(), Some(0));
    }

    #[test]
    fn the_fields_pack_from_the_lowest_bits() {
        let plain = Cursor {
            shard_cursor: 12345,
            ..at(7, 0, false)
        };
        // As before owed walks existed: a scan running across an upgrade
        // keeps its place.
        assert_eq!(plain.pack(), Some(12345 * 1024 + 7));
        assert_eq!(Cursor::unpack(12345 * 1024 + 7), plain);
        let owing = Cursor {
            owed: 0b101,
            rewalking: true,
            ..plain
        };
        assert_eq!(Cursor::unpack(owing.pack().unwrap()), owing);
        let full = Cursor {
            shard_cursor: (1 << 34) - 1,
            ..at(1023, (1 << 19) - 1, true)
        };
        assert_eq!(full.pack(), Some(u64::MAX));
        assert_eq!(Cursor::unpack(u64::MAX), full);
        let too_large = Cursor {
            shard_cursor: 1 << 34,
            ..plain
        };
        assert_eq!(too_large.pack(), None);
    }

    #[test]
    fn a_target_is_owed_once_the_scan_reached_it() {
        let mut scan = at(1, 0, false);
        scan.owe(2);
        assert_eq!(scan.owed, 0, "not walked yet: its keys are found then");
        scan.owe(1);
        scan.owe(0);
        assert_eq!(scan.owed, 0b11);
        // Far positions share the last bit.
        let mut far = at(40, 0, false);
        far.owe(30);
        assert_eq!(far.owed, 1 << 18);
        // In the second walks, only targets not walked again yet.
        let mut again = at(3, 0, true);
        again.owe(3);
        again.owe(1);
        assert_eq!(again.owed, 0);
        again.owe(5);
        assert_eq!(again.owed, 1 << 5);
    }

    #[test]
    fn owed_shards_are_walked_after_the_last_then_the_scan_ends() {
        assert_eq!(at(0, 0, false).following(2), Some(at(1, 0, false)));
        assert_eq!(at(2, 0, false).following(2), None);
        assert_eq!(at(1, 0b101, false).following(2), Some(at(2, 0b101, false)));
        assert_eq!(at(2, 0b101, false).following(2), Some(at(0, 0b100, true)));
        assert_eq!(at(0, 0b100, true).following(2), Some(at(2, 0, true)));
        assert_eq!(at(2, 0, true).following(2), None);
        // Owed positions the table no longer has are skipped.
        assert_eq!(at(1, 0b1000, false).following(1), None);
        // The last bit walks every position from it on.
        let last = 20;
        assert_eq!(
            at(last, 1 << 18, false).following(last),
            Some(at(18, 0, true))
        );
        assert_eq!(at(18, 0, true).following(last), Some(at(19, 0, true)));
        assert_eq!(at(20, 0, true).following(last), None);
        // A second walk's cursor is never 0, which would end the scan.
        assert_ne!(at(0, 0, true).pack(), Some(0));
    }
}
