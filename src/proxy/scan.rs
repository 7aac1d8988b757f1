//! SCAN over every shard: the shards one after the other under one
//! cursor, in the order of [`RoutingTable::distinct_shards`] (table order,
//! with a migration's end that owns no range yet where its name sorts).
//!
//! # The cursor
//! The cursor a client sees packs five fields into a plain decimal u64,
//! from the lowest bits: the shard's position in that list (10 bits), the
//! cursor that shard's Redis returned (34), a tag of the server that
//! returned it (9, below), the shards owed a second walk (10, below), and
//! whether the scan is in those second walks (1). Clients that parse
//! cursors as u64 (redis-rs, go-redis) keep working, and it carries no
//! state in the proxy: any proxy with the same routing table continues a
//! scan another one started. `0` starts and ends a scan. When one shard's
//! scan ends, the next shard's starts at once in the same call while the
//! batch is empty, else its cursor (`shard`, its own cursor 0) is
//! returned. A cursor owing no walk is below 2^53, so clients that read it
//! as a double (node-redis 4) keep it exact.
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
//!
//! # The server behind a shard's cursor
//! A Redis cursor means something only to the process that returned it
//! (each Redis hashes keys with a seed of its own): resumed on another
//! server, say the replica a failover promoted, it skips keys (review: 653
//! of 6,015 keys of the shard never returned). So the cursor keeps a tag
//! of the server that returned the shard's cursor, 1 to 511: a hash of the
//! `run_id` its watchdog registered in ZooKeeper, or of its address as
//! routed when the proxy knows no `run_id` (a pool file's servers). Both
//! are the same on every proxy routing from the same view and across proxy
//! restarts, unlike anything a proxy learns by itself. A cursor whose tag
//! is not the shard's current server's walks that shard again from 0 (keys
//! it returned come twice, which SCAN allows). Two servers share a tag one
//! time in 511: that failover goes unnoticed, as before tags. A Redis
//! restarted at the same address is noticed only when its `run_id` is
//! registered. Proxies that name a server differently (`localhost` and
//! `127.0.0.1` in their pool files) restart each other's walks.
//!
//! A reply that comes after the routing demoted the backend asked may come
//! from its successor (a demoted backend hands the requests it has not
//! written on): the shard is owed a whole second walk, as for a migration
//! above, whatever cursor the reply has. Only for a demotion while the
//! request was in flight, so that a backend left demoted cannot owe walks
//! for ever; one demoted already when asked was in the table loaded just
//! before the change, and the next call, on the new table, finds the tag
//! changed.
//!
//! Tag 0 is no tag: a shard cursor of 0 needs none, and cursors of proxies
//! from before tags have none. Such a cursor is accepted as before,
//! resuming where it is (restarting it would make a scan that alternates
//! between old and new proxies during an upgrade start the shard again at
//! every other call, and never end). Cursors from before the owed walks
//! read the same. Those of the proxies before tags that owe walks do not:
//! their owed bits 0-8 read as a tag (the shard under way is walked again
//! from 0) and 9-18 as bits 0-9, so a migration's target owed then may not
//! be walked again: only for a scan owing walks while proxies are upgraded.

use crate::protocol::{encode_array_header, encode_bulk, encode_request, reply_frame_len};
use crate::proxy::backend::Backend;
use crate::proxy::fanout::{self, array_parts};
use crate::proxy::pending::Pending;
use crate::proxy::router::RoutingTable;
use crate::proxy::session::Session;
use bytes::{Bytes, BytesMut};

/// Bits of the client's cursor that hold the shard's position.
const POSITION_BITS: u32 = 10;
/// Bits above them for the shard's own cursor.
const SHARD_CURSOR_BITS: u32 = 34;
/// Bits above those for the tag of the server that returned it.
const SERVER_BITS: u32 = 9;
/// Where the tag starts.
const SERVER_SHIFT: u32 = POSITION_BITS + SHARD_CURSOR_BITS;
/// How many tags there are (1 to 511; 0 is no tag).
const SERVER_TAGS: u64 = (1 << SERVER_BITS) - 1;
/// Bits above the tag for the shards owed a second walk.
const OWED_BITS: u32 = 10;
/// Where the owed walks start.
const OWED_SHIFT: u32 = SERVER_SHIFT + SERVER_BITS;
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
    // Another server than the one that returned the shard's cursor (a
    // failover): its walk starts again.
    if !at.resumes_on(server_tag(&table.shard(shards[at.position]).backend)) {
        at.shard_cursor = 0;
    }
    let mut request: Vec<Bytes> = args.to_vec();
    let (proto, affinity) = (session.proto, session.affinity);
    // The answer, the backend asked, and whether it was demoted already.
    let ask = move |request: &mut Vec<Bytes>, at: &Cursor| {
        request[1] = Bytes::from(at.shard_cursor.to_string());
        let mut raw = BytesMut::new();
        encode_request(request, &mut raw);
        let shard = table.shard(shards[at.position]);
        let demoted = shard.backend.is_demoted();
        let answer = fanout::ask(shard, proto, affinity, raw.freeze());
        (answer, shard.backend.clone(), demoted)
    };
    // The first shard is asked now, not when the reply is first awaited:
    // the requests the client sent after SCAN are dispatched before then,
    // and must not run first. A shard that turns out to be done is
    // followed by the next one in the same call (no empty pages); that
    // request may come after later ones, which SCAN's guarantee allows
    // (keys written during an iteration may or may not be returned).
    let (mut answer, mut asked, mut was_demoted) = ask(&mut request, &at);
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
            if !was_demoted && asked.is_demoted() {
                // Demoted in flight: perhaps its successor's reply to the
                // cursor of another server.
                at.owe_again();
            }
            let client_cursor = if next != 0 {
                at.shard_cursor = next;
                at.server = server_tag(&asked);
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
                    (answer, asked, was_demoted) = ask(&mut request, &at);
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
    /// The tag of the server that returned `shard_cursor` (0: none, as for
    /// a shard cursor of 0 or a cursor from before tags).
    server: u16,
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
            server: field(SERVER_SHIFT, SERVER_BITS) as u16,
            owed: field(OWED_SHIFT, OWED_BITS) as u32,
            rewalking: cursor >> 63 == 1,
        }
    }

    /// The client's cursor, if the shard's cursor fits.
    fn pack(&self) -> Option<u64> {
        if self.shard_cursor >> SHARD_CURSOR_BITS != 0 {
            return None;
        }
        // A walk from the start needs no tag.
        let server = match self.shard_cursor {
            0 => 0,
            _ => u64::from(self.server),
        };
        debug_assert!(server <= SERVER_TAGS);
        Some(
            u64::from(self.rewalking) << 63
                | u64::from(self.owed) << OWED_SHIFT
                | server << SERVER_SHIFT
                | self.shard_cursor << POSITION_BITS
                | self.position as u64,
        )
    }

    /// Whether the shard's walk goes on on the server tagged `server`: it
    /// starts from 0, or that server returned its cursor, or the cursor has
    /// no tag (a proxy from before tags made it: accepted as before, see
    /// the module's documentation).
    fn resumes_on(&self, server: u16) -> bool {
        self.shard_cursor == 0 || self.server == 0 || self.server == server
    }

    /// The walk under way cannot be trusted: its shard is owed a whole
    /// walk again, after the last shard (in the second walks: next).
    fn owe_again(&mut self) {
        self.owed |= 1 << self.position.min(OWED_FROM);
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
            server: 0,
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

/// The tag of the server `backend` reaches, 1 to 511: a hash of the
/// `run_id` the routing expects of it, else of its address.
fn server_tag(backend: &Backend) -> u16 {
    match backend.expected_run_id() {
        Some(run_id) => tag_of(b"run_id", run_id.as_bytes()),
        None => tag_of(b"addr", backend.addr.as_bytes()),
    }
}

/// 64-bit FNV-1a of `kind:id`, folded to 1..=511. Spelled out here: every
/// proxy version must compute the same tags.
fn tag_of(kind: &[u8], id: &[u8]) -> u16 {
    let hash = kind
        .iter()
        .chain(b":")
        .chain(id)
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (hash % SERVER_TAGS) as u16 + 1
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
            server: 0,
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
            server: 511,
            ..at(1023, (1 << 10) - 1, true)
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
    fn the_server_tag_sits_below_the_owed_walks() {
        let tagged = Cursor {
            shard_cursor: 12345,
            server: 300,
            ..at(7, 0, false)
        };
        let packed = tagged.pack().unwrap();
        assert_eq!(packed, (300 << 44) | (12345 * 1024 + 7));
        assert_eq!(Cursor::unpack(packed), tagged);
        // Owing no walk, below 2^53 (exact as a double).
        let highest = Cursor {
            shard_cursor: (1 << 34) - 1,
            server: 511,
            ..at(1023, 0, false)
        };
        assert_eq!(highest.pack(), Some((1 << 53) - 1));
        // A walk from the start carries no tag: `0` stays the start.
        let start = Cursor {
            server: 300,
            ..at(0, 0, false)
        };
        assert_eq!(start.pack(), Some(0));
        let owing = Cursor {
            shard_cursor: 5,
            server: 1,
            ..at(2, 0b11, true)
        };
        assert_eq!(Cursor::unpack(owing.pack().unwrap()), owing);
    }

    #[test]
    fn a_walk_resumes_only_on_the_server_that_returned_its_cursor() {
        let walk = |shard_cursor, server| Cursor {
            shard_cursor,
            server,
            ..at(1, 0, false)
        };
        assert!(walk(99, 17).resumes_on(17));
        assert!(!walk(99, 17).resumes_on(18));
        // From the start, anywhere; untagged (an older proxy's), as before.
        assert!(walk(0, 17).resumes_on(18));
        assert!(walk(99, 0).resumes_on(18));
        let old = Cursor::unpack(99 * 1024 + 1);
        assert_eq!(old, walk(99, 0));
    }

    #[test]
    fn tags_are_fixed_and_never_zero() {
        // The same on every proxy version: FNV-1a 64 of "addr:127.0.0.1:6379".
        assert_eq!(
            tag_of(b"addr", b"127.0.0.1:6379"),
            tag_of(b"addr", b"127.0.0.1:6379")
        );
        let expected = b"addr:127.0.0.1:6379"
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        assert_eq!(
            u64::from(tag_of(b"addr", b"127.0.0.1:6379")),
            expected % 511 + 1
        );
        let tags: std::collections::BTreeSet<u16> = (0..5000)
            .map(|port| tag_of(b"addr", format!("10.0.0.1:{port}").as_bytes()))
            .collect();
        assert_eq!(tags.first(), Some(&1));
        assert_eq!(tags.last(), Some(&511));
        assert_ne!(
            tag_of(b"run_id", b"0123456789abcdef0123456789abcdef01234567"),
            tag_of(b"run_id", b"76543210fedcba9876543210fedcba9876543210")
        );
    }

    #[test]
    fn a_walk_owed_again_comes_after_the_last_shard_or_next() {
        let mut first = at(0, 0, false);
        first.owe_again();
        assert_eq!(first.owed, 1);
        assert_eq!(first.following(0), Some(at(0, 0, true)));
        let mut again = at(1, 0b100, true);
        again.owe_again();
        assert_eq!(again.following(2), Some(at(1, 0b100, true)));
        let mut far = at(30, 0, true);
        far.owe_again();
        assert_eq!(far.owed, 1 << 9);
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
        assert_eq!(far.owed, 1 << 9);
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
            at(last, 1 << 9, false).following(last),
            Some(at(9, 0, true))
        );
        assert_eq!(at(9, 0, true).following(last), Some(at(10, 0, true)));
        assert_eq!(at(20, 0, true).following(last), None);
        // A second walk's cursor is never 0, which would end the scan.
        assert_ne!(at(0, 0, true).pack(), Some(0));
    }
}
