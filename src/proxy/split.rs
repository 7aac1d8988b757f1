//! Multi-key commands over several shards: cut a request into one
//! sub-request per shard, then put the replies back together as one Redis
//! would have answered (MGET values in key order, MSET's +OK, summed
//! counts). DBSIZE's fan-out to every shard uses the same machinery.

use crate::command::SplitKind;
use crate::protocol::{
    encode_array_header, encode_bulk, encode_error, encode_integer, is_error_reply,
    reply_frame_len, Proto,
};
use crate::proxy::backend::{AbandonHandle, ReplyReceiver};
use crate::proxy::pool::Pool;
use crate::proxy::router::{RoutingTable, ShardName};
use crate::proxy::stats::PoolStats;
use bytes::{Bytes, BytesMut};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

/// How a split command is sent.
pub enum Plan {
    /// Every key is on this shard: forward the request as it is.
    Single(usize),
    /// (shard, sub-request, positions of its keys among the request's keys).
    Parts(Vec<(usize, Bytes, Vec<usize>)>),
}

/// Groups the keys of a split command by shard. `keys` are the argument
/// indexes of the keys (for MSET the value follows each key). Keys of a
/// moving range form a group of their own, numbered `table.shards.len()`
/// ([`RoutingTable::split_index`]).
pub fn plan(table: &RoutingTable, kind: SplitKind, args: &[Bytes], keys: &[usize]) -> Plan {
    let shards: Vec<usize> = if table.migration.is_some() {
        keys.iter().map(|&k| table.split_index(&args[k])).collect()
    } else {
        keys.iter().map(|&k| table.shard_of(&args[k])).collect()
    };
    let first = shards.first().copied().unwrap_or(0);
    if shards.iter().all(|&shard| shard == first) {
        return Plan::Single(first);
    }
    // (shard, key positions), in order of first use; `group_of` finds a
    // shard's group without searching, so a huge DEL stays linear.
    let mut group_of: Vec<Option<usize>> = vec![None; table.shards.len() + 1];
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (position, &shard) in shards.iter().enumerate() {
        let group = *group_of[shard].get_or_insert_with(|| {
            groups.push((shard, Vec::new()));
            groups.len() - 1
        });
        groups[group].1.push(position);
    }
    let per_key = if kind == SplitKind::Mset { 2 } else { 1 };
    let parts = groups
        .into_iter()
        .map(|(shard, positions)| {
            let sub_args = positions
                .iter()
                .flat_map(|&p| &args[keys[p]..keys[p] + per_key]);
            // Each argument's header takes at most 24 bytes; the arguments
            // come from a request that passed the size limit.
            let size: usize = sub_args.clone().map(|a| a.len() + 24).sum();
            let mut out = BytesMut::with_capacity(args[0].len() + size + 48);
            encode_array_header(1 + positions.len() * per_key, &mut out);
            encode_bulk(&args[0], &mut out);
            for arg in sub_args {
                encode_bulk(arg, &mut out);
            }
            (shard, out.freeze(), positions)
        })
        .collect();
    Plan::Parts(parts)
}

/// One sub-request in flight.
pub struct Part {
    pub reply: ReplyReceiver,
    pub shard: ShardName,
    /// Positions (among the request's keys) of the keys it carries.
    pub positions: Vec<usize>,
}

/// What a split reply keeps of a part outside the future that merges it:
/// the shard, which the client's window may wait on, and a way to mark the
/// part's request as its client's that closed.
pub struct PartHandle {
    pub shard: ShardName,
    abandon: Option<AbandonHandle>,
}

impl PartHandle {
    pub fn abandon(&self) {
        if let Some(handle) = &self.abandon {
            handle.abandon();
        }
    }

    /// True while the part's reply has not arrived.
    pub fn is_waiting(&self) -> bool {
        self.abandon.as_ref().is_some_and(AbandonHandle::is_waiting)
    }
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
    /// The command's name when it writes (MSET, DEL, UNLINK): an error
    /// then says what the other shards did.
    writes: Option<&'static str>,
}

impl SplitReply {
    /// The shard of each part, and a handle to abandon it by.
    pub fn part_handles(&self) -> Box<[PartHandle]> {
        self.parts
            .iter()
            .map(|part| PartHandle {
                shard: part.shard,
                abandon: part.reply.abandon_handle(),
            })
            .collect()
    }

    pub fn new(
        command: &'static str,
        kind: SplitKind,
        keys: usize,
        parts: Vec<Part>,
        proto: Proto,
    ) -> SplitReply {
        SplitReply {
            merge: Merge::Split(kind),
            keys,
            parts,
            proto,
            writes: matches!(command, "mset" | "del" | "unlink").then_some(command),
        }
    }

    /// Waits for the parts and appends the merged reply to `out`. The first
    /// error (backend failure or Redis error reply) becomes the reply; for a
    /// write, it says what the shards that succeeded did, since a client
    /// reads an error from Redis as "nothing was written". A command that
    /// does not write is answered with the first error to arrive, without
    /// waiting for the other parts: an MGET whose part for one stalled
    /// shard has timed out does not also wait out another's timeout.
    pub async fn write_to(mut self, out: &mut BytesMut, pool: &Pool) {
        let mut arrived: Vec<Option<Bytes>> = vec![None; self.parts.len()];
        let writes = self.writes;
        let early_error = poll_fn(|cx| {
            let mut waiting = false;
            for (part, arrived) in self.parts.iter_mut().zip(arrived.iter_mut()) {
                if arrived.is_some() {
                    continue;
                }
                match Pin::new(&mut part.reply).poll(cx) {
                    Poll::Ready(reply) => {
                        if !matches!(reply, Ok(Ok(_))) {
                            PoolStats::bump(&pool.stats.forward_errors);
                        }
                        let frame = pool.client_frame(reply, part.shard);
                        if writes.is_none() && is_error_reply(&frame) {
                            return Poll::Ready(Some(frame));
                        }
                        *arrived = Some(frame);
                    }
                    Poll::Pending => waiting = true,
                }
            }
            if waiting {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        })
        .await;
        if let Some(error) = early_error {
            PoolStats::bump(&pool.stats.errors);
            out.extend_from_slice(&error);
            return;
        }
        let mut frames = Vec::with_capacity(self.parts.len());
        let mut error: Option<Bytes> = None;
        for (part, frame) in self.parts.into_iter().zip(arrived) {
            let frame = frame.expect("every part arrived");
            if error.is_none() && is_error_reply(&frame) {
                error = Some(frame);
                continue;
            }
            frames.push((frame, part.positions));
        }
        if let Some(error) = error {
            PoolStats::bump(&pool.stats.errors);
            match self.writes.filter(|_| !frames.is_empty()) {
                Some(command) => partly_applied(&error, command, &frames, out),
                None => out.extend_from_slice(&error),
            }
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
pub fn fan_out(table: &RoutingTable, proto: Proto, affinity: usize, args: &[Bytes]) -> SplitReply {
    let parts = table
        .send_to_every_backend(proto, affinity, args)
        .into_iter()
        .map(|(shard, reply)| Part {
            reply,
            shard,
            positions: Vec::new(),
        })
        .collect();
    SplitReply {
        merge: Merge::Sum,
        keys: 0,
        parts,
        proto,
        writes: None,
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

/// `error` (a simple error), followed by what the shards that succeeded
/// did: MSET is not atomic across shards, and a DEL's count would be lost.
fn partly_applied(error: &[u8], command: &str, frames: &[(Bytes, Vec<usize>)], out: &mut BytesMut) {
    let Some(text) = error
        .strip_prefix(b"-")
        .and_then(|e| e.strip_suffix(b"\r\n"))
    else {
        out.extend_from_slice(error);
        return;
    };
    let done = match command {
        "mset" => {
            let keys: usize = frames.iter().map(|(_, positions)| positions.len()).sum();
            format!("{keys} of its keys, on other shards, were set")
        }
        _ => {
            let deleted: i64 = frames.iter().map(|(frame, _)| parse_integer(frame)).sum();
            format!("{deleted} of its keys, on other shards, were deleted")
        }
    };
    let text = String::from_utf8_lossy(text);
    encode_error(
        &format!(
            "{text} (shardproxy: {} is not atomic across shards: {done})",
            command.to_uppercase()
        ),
        out,
    );
}

/// The value of an integer frame `:n\r\n` (0 for anything else).
fn parse_integer(frame: &[u8]) -> i64 {
    frame
        .strip_prefix(b":")
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|text| text.trim_end().parse().ok())
        .unwrap_or(0)
}
