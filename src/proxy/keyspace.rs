//! The commands over the whole keyspace, which no single shard holds:
//! SCAN walks the shards one after the other under one cursor, KEYS joins
//! every shard's keys, RANDOMKEY asks a random shard, and FLUSHALL/FLUSHDB
//! empty every shard when the pool file allows it.
//!
//! The shards are the distinct backends of the routing table, in table
//! order, with a migration's end that owns no range yet where its name
//! sorts ([`crate::proxy::router::RoutingTable::distinct_shards`]). SCAN
//! is [`crate::proxy::scan`]'s.

use crate::command::{Command, KeyspaceOp};
use crate::protocol::{
    encode_array_header, encode_request, is_error_reply, reply_frame_len, Proto,
};
use crate::proxy::fanout::{self, array_parts};
use crate::proxy::pending::{unsupported_error, Pending};
use crate::proxy::router::RoutingTable;
use crate::proxy::session::Session;
use crate::proxy::stats::PoolStats;
use bytes::{Bytes, BytesMut};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Runs a keyspace-wide command.
pub fn run(
    session: &Session,
    op: KeyspaceOp,
    cmd: &Command,
    args: &[Bytes],
    raw: Bytes,
) -> Pending {
    match op {
        KeyspaceOp::Scan => crate::proxy::scan::run(session, args),
        KeyspaceOp::Keys => keys(session, raw),
        KeyspaceOp::RandomKey => random_key(session, raw),
        KeyspaceOp::Flush if session.pool.config().allow_flush => all_ok(session, raw),
        // Refused by default: one stray FLUSHALL would empty every shard.
        // Said so, with the setting that allows it (the generic refusal
        // read as if it could never work; review).
        KeyspaceOp::Flush => session.error(&format!(
            "{} unless the pool sets 'allow_flush: true' (it then empties every shard)",
            unsupported_error(cmd, args)
        )),
    }
}

/// A reply put together once the shards have answered; errors count in
/// the pool's stats.
pub(super) fn assembling(
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

/// KEYS pattern: every shard's keys, in table order.
fn keys(session: &Session, raw: Bytes) -> Pending {
    let table = session.pool.router.load();
    let asked = fanout::ask_all(session, &table, &raw);
    assembling(session, async move {
        let answers = asked.await;
        if let Some(error) = fanout::failure(&answers) {
            return error;
        }
        let bodies: Vec<(usize, std::borrow::Cow<[u8]>)> = answers
            .iter()
            .map(|answer| {
                let (count, body) = array_parts(&answer.frame).unwrap_or((0, b""));
                without_reserved(count, body)
            })
            .collect();
        let total = bodies.iter().map(|(count, _)| count).sum();
        let size = bodies.iter().map(|(_, body)| body.len()).sum::<usize>();
        let mut out = BytesMut::with_capacity(size + 16);
        encode_array_header(total, &mut out);
        for (_, body) in &bodies {
            out.extend_from_slice(body);
        }
        out.freeze()
    })
}

/// RANDOMKEY: a random shard's random key; while a shard is empty the next
/// one is asked, so nil means every shard is empty. Each non-empty shard is
/// as likely as another, whatever its size. A key of the proxies' own (a
/// migration's lock or import) is no client's: that shard is asked again,
/// and one that gives nothing else in [`RESERVED_RETRIES`] tries answers
/// with the first client's key SCAN finds there, or counts as empty.
fn random_key(session: &Session, raw: Bytes) -> Pending {
    let table = session.pool.router.load_full();
    let shards = table.distinct_shards();
    let start = RandomState::new().hash_one(session.id) as usize % shards.len();
    let order: Vec<usize> = (0..shards.len())
        .map(|i| shards[(start + i) % shards.len()])
        .collect();
    let (proto, affinity) = (session.proto, session.affinity);
    // Every shard is asked now, not one after another as the replies come:
    // the requests the client sent after RANDOMKEY are dispatched before
    // then, and must not run first.
    let answers: Vec<_> = order
        .iter()
        .map(|&shard| fanout::ask(table.shard(shard), proto, affinity, raw.clone()))
        .collect();
    assembling(session, async move {
        let mut last = None;
        for (answer, shard) in answers.into_iter().zip(order) {
            let mut frame = answer.await.frame;
            for _ in 0..RESERVED_RETRIES {
                if !is_reserved_key(&frame) {
                    break;
                }
                let again = fanout::ask(table.shard(shard), proto, affinity, raw.clone());
                frame = again.await.frame;
            }
            if is_reserved_key(&frame) {
                match first_client_key(&table, shard, proto, affinity).await {
                    Some(key) => return key,
                    None => continue,
                }
            }
            if !is_nil(&frame) {
                return frame;
            }
            last = Some(frame);
        }
        last.unwrap_or_else(|| match proto {
            Proto::Resp3 => Bytes::from_static(b"_\r\n"),
            Proto::Resp2 => Bytes::from_static(b"$-1\r\n"),
        })
    })
}

/// How often RANDOMKEY asks a shard again that answered with a key of the
/// proxies' own, before it looks for a client's key with SCAN.
const RESERVED_RETRIES: usize = 3;

/// The first client's key of `shard` in SCAN's order: RANDOMKEY's answer
/// when the shard keeps answering with the proxies' own keys (review: 40
/// of them beside one client key, and RANDOMKEY said nil half the time).
/// `None` when it holds no client's key (or does not answer as Redis does).
async fn first_client_key(
    table: &RoutingTable,
    shard: usize,
    proto: Proto,
    affinity: usize,
) -> Option<Bytes> {
    let mut cursor = 0u64;
    loop {
        let mut raw = BytesMut::new();
        let at = cursor.to_string();
        encode_request(&["SCAN", at.as_str(), "COUNT", "1000"], &mut raw);
        let answer = fanout::ask(table.shard(shard), proto, affinity, raw.freeze()).await;
        let (next, keys) = crate::proxy::scan::scan_reply(&answer.frame)?;
        let (count, listed) = array_parts(keys)?;
        let (kept, clients) = without_reserved(count, listed);
        if kept > 0 {
            let len = reply_frame_len(&clients).ok()??;
            return Some(Bytes::copy_from_slice(&clients[..len]));
        }
        if next == 0 {
            return None;
        }
        cursor = next;
    }
}

/// A bulk-string reply naming a key of the proxies' own.
fn is_reserved_key(frame: &[u8]) -> bool {
    use crate::proxy::migration::scripts::RESERVED_PREFIX;
    frame.first() == Some(&b'$')
        && frame
            .iter()
            .position(|&b| b == b'\n')
            .is_some_and(|eol| frame[eol + 1..].starts_with(RESERVED_PREFIX))
}

/// The `count` key frames of `body` (the elements of a KEYS or SCAN
/// reply) without the proxies' own keys
/// ([`crate::proxy::migration::scripts::RESERVED_PREFIX`]), which clients
/// cannot use: a migration's locks and imports are not clients' keys.
/// Borrowed as it came when it holds none (the prefix is looked for
/// first).
pub(super) fn without_reserved(count: usize, body: &[u8]) -> (usize, std::borrow::Cow<'_, [u8]>) {
    use crate::proxy::migration::scripts::RESERVED_PREFIX;
    if !body
        .windows(RESERVED_PREFIX.len())
        .any(|w| w == RESERVED_PREFIX)
    {
        return (count, std::borrow::Cow::Borrowed(body));
    }
    let (mut kept, mut out, mut rest) = (0, Vec::with_capacity(body.len()), body);
    for _ in 0..count {
        let Ok(Some(len)) = crate::protocol::reply_frame_len(rest) else {
            break;
        };
        let (element, after) = rest.split_at(len);
        rest = after;
        if !is_reserved_key(element) {
            out.extend_from_slice(element);
            kept += 1;
        }
    }
    (kept, std::borrow::Cow::Owned(out))
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
    fn the_proxys_own_keys_are_left_out_of_listings() {
        let body = b"$1\r\na\r\n$19\r\n__shardproxy_lock:a\r\n$1\r\nb\r\n";
        let (count, kept) = without_reserved(3, body);
        assert_eq!((count, &kept[..]), (2, &b"$1\r\na\r\n$1\r\nb\r\n"[..]));
        // A key that only holds the prefix further on stays.
        let body = b"$16\r\nx__shardproxy_yz\r\n";
        let (count, kept) = without_reserved(1, body);
        assert_eq!((count, &kept[..]), (1, &body[..]));
        assert!(matches!(
            without_reserved(0, b""),
            (0, std::borrow::Cow::Borrowed(_))
        ));
    }

    #[test]
    fn nil_in_both_protocols() {
        assert!(is_nil(b"$-1\r\n") && is_nil(b"_\r\n"));
        assert!(!is_nil(b"$1\r\na\r\n"));
    }
}
