//! Multi-key commands over several shards: cut a request into one
//! sub-request per shard, then put the replies back together as one Redis
//! would have answered (MGET values in key order, MSET's +OK, summed
//! counts). DBSIZE's fan-out to every shard uses the same machinery.

use crate::backend::Reply;
use crate::command::SplitKind;
use crate::protocol::{encode_error, encode_integer, encode_request, reply_frame_len, Proto};
use crate::router::RoutingTable;
use crate::stats::PoolStats;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::sync::oneshot;

/// How a split command is sent.
pub enum Plan {
    /// Every key is on this shard: forward the request as it is.
    Single(usize),
    /// (shard, sub-request, positions of its keys among the request's keys).
    Parts(Vec<(usize, Bytes, Vec<usize>)>),
}

/// Groups the keys of a split command by shard. `keys` are the argument
/// indexes of the keys (for MSET the value follows each key).
pub fn plan(table: &RoutingTable, kind: SplitKind, args: &[Bytes], keys: &[usize]) -> Plan {
    let shards: Vec<usize> = keys.iter().map(|&k| table.shard_of(&args[k])).collect();
    if shards.windows(2).all(|w| w[0] == w[1]) {
        return Plan::Single(shards.first().copied().unwrap_or(0));
    }
    // (shard, argument indexes of the sub-request, key positions), by first use.
    let mut groups: Vec<(usize, Vec<usize>, Vec<usize>)> = Vec::new();
    for (position, (&key, &shard)) in keys.iter().zip(&shards).enumerate() {
        let group = match groups.iter().position(|g| g.0 == shard) {
            Some(i) => &mut groups[i],
            None => {
                groups.push((shard, vec![0], Vec::new()));
                groups.last_mut().expect("just pushed")
            }
        };
        group.1.push(key);
        if kind == SplitKind::Mset {
            group.1.push(key + 1);
        }
        group.2.push(position);
    }
    let parts = groups
        .into_iter()
        .map(|(shard, arg_indexes, positions)| {
            let sub: Vec<&[u8]> = arg_indexes.iter().map(|&i| &args[i][..]).collect();
            let mut out = BytesMut::new();
            encode_request(&sub, &mut out);
            (shard, out.freeze(), positions)
        })
        .collect();
    Plan::Parts(parts)
}

/// One sub-request in flight.
pub struct Part {
    pub reply: oneshot::Receiver<Reply>,
    pub shard: Arc<str>,
    /// Positions (among the request's keys) of the keys it carries.
    pub positions: Vec<usize>,
}

/// What to do with the sub-replies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Merge {
    Split(SplitKind),
    /// DBSIZE: sum the integers.
    Sum,
}

/// The replies of a split request, waiting to be merged.
pub struct SplitReply {
    merge: Merge,
    keys: usize,
    parts: Vec<Part>,
    proto: Proto,
}

impl SplitReply {
    pub fn new(kind: SplitKind, keys: usize, parts: Vec<Part>, proto: Proto) -> SplitReply {
        SplitReply {
            merge: Merge::Split(kind),
            keys,
            parts,
            proto,
        }
    }

    /// Waits for every part and appends the merged reply to `out`. The first
    /// error (backend failure or Redis error reply) becomes the reply.
    pub async fn write_to(self, out: &mut BytesMut, stats: &PoolStats) {
        let mut frames = Vec::with_capacity(self.parts.len());
        let mut error: Option<Bytes> = None;
        for part in self.parts {
            let frame = match part.reply.await {
                Ok(Ok(frame)) => frame,
                Ok(Err(e)) => {
                    let mut buf = BytesMut::new();
                    encode_error(&format!("ERR shard '{}': {e}", part.shard), &mut buf);
                    buf.freeze()
                }
                Err(_) => {
                    let mut buf = BytesMut::new();
                    encode_error(
                        &format!("ERR shard '{}': request dropped", part.shard),
                        &mut buf,
                    );
                    buf.freeze()
                }
            };
            if error.is_none() && matches!(frame.first(), Some(b'-') | Some(b'!')) {
                error = Some(frame);
                continue;
            }
            frames.push((frame, part.positions));
        }
        if let Some(error) = error {
            PoolStats::bump(&stats.errors);
            out.extend_from_slice(&error);
            return;
        }
        match self.merge {
            Merge::Split(SplitKind::Mget) => merge_mget(self.keys, &frames, self.proto, out),
            Merge::Split(SplitKind::Mset) => out.extend_from_slice(b"+OK\r\n"),
            Merge::Split(SplitKind::SumIntegers) | Merge::Sum => merge_sum(&frames, out),
        }
    }
}

/// Sends `args` (DBSIZE) to every distinct backend and sums the replies.
pub fn fan_out(table: &RoutingTable, proto: Proto, args: &[Bytes]) -> SplitReply {
    let mut request = BytesMut::new();
    encode_request(args, &mut request);
    let request = request.freeze();
    let mut seen: Vec<&str> = Vec::new();
    let mut parts = Vec::new();
    for shard in &table.shards {
        if seen.contains(&&*shard.backend.addr) {
            continue;
        }
        seen.push(&shard.backend.addr);
        parts.push(Part {
            reply: shard.backend.send(proto, request.clone()),
            shard: shard.name.clone(),
            positions: Vec::new(),
        });
    }
    SplitReply {
        merge: Merge::Sum,
        keys: 0,
        parts,
        proto,
    }
}

/// Places each MGET value back at its key's position.
fn merge_mget(keys: usize, frames: &[(Bytes, Vec<usize>)], proto: Proto, out: &mut BytesMut) {
    let mut values: Vec<Option<&[u8]>> = vec![None; keys];
    for (frame, positions) in frames {
        let elements = array_elements(frame);
        for (value, &position) in elements.into_iter().zip(positions) {
            values[position] = Some(value);
        }
    }
    out.extend_from_slice(format!("*{keys}\r\n").as_bytes());
    let null: &[u8] = match proto {
        Proto::Resp2 => b"$-1\r\n",
        Proto::Resp3 => b"_\r\n",
    };
    for value in values {
        out.extend_from_slice(value.unwrap_or(null));
    }
}

/// The element frames of an array frame (empty when it is not an array).
fn array_elements(frame: &[u8]) -> Vec<&[u8]> {
    let mut elements = Vec::new();
    if frame.first() != Some(&b'*') {
        return elements;
    }
    let Some(header_end) = frame.windows(2).position(|w| w == b"\r\n") else {
        return elements;
    };
    let mut rest = &frame[header_end + 2..];
    while let Ok(Some(len)) = reply_frame_len(rest) {
        elements.push(&rest[..len]);
        rest = &rest[len..];
    }
    elements
}

fn merge_sum(frames: &[(Bytes, Vec<usize>)], out: &mut BytesMut) {
    let total: i64 = frames.iter().map(|(frame, _)| parse_integer(frame)).sum();
    encode_integer(total, out);
}

/// The value of an integer frame `:n\r\n` (0 for anything else).
fn parse_integer(frame: &[u8]) -> i64 {
    frame
        .strip_prefix(b":")
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|text| text.trim_end().parse().ok())
        .unwrap_or(0)
}
