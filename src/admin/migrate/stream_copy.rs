//! A big stream, copied in chunks under the big-key lock
//! ([`super::big_key`]) with everything a consumer can observe: its
//! entries with their IDs, the last generated ID, entries-added and the
//! max deleted ID (the group lag depends on them), its consumer groups
//! with their last delivered ID and entries-read, their consumers, and
//! their pending entries with owner, idle time and delivery count. One
//! MIGRATE would carry all that too, but blocks both Redis for seconds on
//! a million entries; every step here is one chunk.
//!
//! The order follows Redis's own AOF rewrite of a stream (XADD, XSETID,
//! XGROUP CREATE, XCLAIM ... FORCE JUSTID, XGROUP CREATECONSUMER), with
//! one addition: XCLAIM cannot make a pending entry for a message that is
//! gone (XDEL'd or trimmed after delivery), which the rewrite drops. Such
//! IDs are copied as placeholder entries, claimed, then deleted again, and
//! XSETID comes last to set the metadata those deletions touched.

use super::big_key::{bulks, unexpected, Job, CHUNK};
use crate::protocol::Value;
use crate::redis_client::RedisError;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::fmt;

/// The field of a placeholder entry; it lives only in the import key.
const PLACEHOLDER_FIELD: &[u8] = b"__shardproxy_placeholder";
/// What one XRANGE chunk should come to: its entries may be of any size,
/// and a reply over the control connection's limit (1 MiB) fails the
/// move. The first chunk asks for [`FIRST_COUNT`] entries, each next one
/// for as many of the last chunk's average size as fit here, up to
/// [`CHUNK`].
const CHUNK_BYTES: usize = 256 * 1024;
const FIRST_COUNT: usize = 16;

/// A stream entry ID, ordered as Redis orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Id(u64, u64);

impl Id {
    fn parse(text: &[u8]) -> Option<Id> {
        let text = std::str::from_utf8(text).ok()?;
        let (ms, seq) = text.split_once('-')?;
        Some(Id(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// The stream-wide metadata XSETID restores (entries-added and the max
/// deleted ID are Redis 7's; without them only the last ID).
struct Meta {
    last_id: Bytes,
    entries_added: Option<i64>,
    max_deleted: Option<Bytes>,
}

struct Group {
    name: Bytes,
    last_delivered: Bytes,
    /// None when Redis does not know it (it answers nil after some
    /// deletions), which XGROUP CREATE without ENTRIESREAD reproduces.
    entries_read: Option<i64>,
    pending: i64,
}

fn text(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

fn owned(s: String) -> Bytes {
    Bytes::from(s.into_bytes())
}

/// Copies the stream `job.key` into `job.import`.
pub(super) async fn copy(job: &mut Job<'_>) -> Result<(), RedisError> {
    let meta = stream_meta(job).await?;
    let groups = groups(job).await?;
    let pending = pending_ids(job, &groups).await?;
    let (copied, placeholders) = copy_entries(job, &pending).await?;
    if copied == 0 && placeholders.is_empty() {
        // Redis's trick for an empty stream: an XADD trimmed away at once
        // leaves the key; XSETID below gives it its real last ID.
        let import = job.import.clone();
        job.write(&[
            &b"XADD"[..],
            &import,
            b"MAXLEN",
            b"0",
            b"0-1",
            PLACEHOLDER_FIELD,
            b"",
        ])
        .await?;
    }
    for group in &groups {
        let mut create = vec![
            text(b"XGROUP"),
            text(b"CREATE"),
            Bytes::copy_from_slice(&job.import),
            group.name.clone(),
            group.last_delivered.clone(),
        ];
        if let Some(n) = group.entries_read {
            create.extend([text(b"ENTRIESREAD"), owned(n.to_string())]);
        }
        job.write(&create).await?;
        restore_pending(job, group).await?;
        restore_consumers(job, group).await?;
    }
    for chunk in placeholders.chunks(CHUNK) {
        let mut del = vec![text(b"XDEL"), Bytes::copy_from_slice(&job.import)];
        del.extend(chunk.iter().map(|id| owned(id.to_string())));
        job.write(&del).await?;
        job.renew().await?;
    }
    let mut setid = vec![
        text(b"XSETID"),
        Bytes::copy_from_slice(&job.import),
        meta.last_id,
    ];
    if let (Some(added), Some(deleted)) = (meta.entries_added, meta.max_deleted) {
        setid.extend([
            text(b"ENTRIESADDED"),
            owned(added.to_string()),
            text(b"MAXDELETEDID"),
            deleted,
        ]);
    }
    job.write(&setid).await?;
    Ok(())
}

/// The field-value pairs of an XINFO reply (a flat array in RESP2).
fn pairs(reply: Value) -> Vec<(Bytes, Value)> {
    let flat = match reply {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    let mut items = flat.into_iter();
    while let (Some(Value::Bulk(name) | Value::Simple(name)), Some(value)) =
        (items.next(), items.next())
    {
        out.push((name, value));
    }
    out
}

fn field<'a>(pairs: &'a [(Bytes, Value)], name: &[u8]) -> Option<&'a Value> {
    pairs.iter().find(|(n, _)| &n[..] == name).map(|(_, v)| v)
}

fn bulk_field(pairs: &[(Bytes, Value)], name: &[u8]) -> Option<Bytes> {
    match field(pairs, name) {
        Some(Value::Bulk(b) | Value::Simple(b)) => Some(b.clone()),
        _ => None,
    }
}

fn int_field(pairs: &[(Bytes, Value)], name: &[u8]) -> Option<i64> {
    match field(pairs, name) {
        Some(Value::Integer(n)) => Some(*n),
        _ => None,
    }
}

async fn stream_meta(job: &mut Job<'_>) -> Result<Meta, RedisError> {
    let reply = job.src.call(&[&b"XINFO"[..], b"STREAM", job.key]).await?;
    let info = pairs(reply);
    let Some(last_id) = bulk_field(&info, b"last-generated-id") else {
        return Err(unexpected(job.src, "XINFO STREAM", &Value::Null));
    };
    Ok(Meta {
        last_id,
        entries_added: int_field(&info, b"entries-added"),
        max_deleted: bulk_field(&info, b"max-deleted-entry-id"),
    })
}

async fn groups(job: &mut Job<'_>) -> Result<Vec<Group>, RedisError> {
    let reply = job.src.call(&[&b"XINFO"[..], b"GROUPS", job.key]).await?;
    let Value::Array(items) = reply else {
        return Err(unexpected(job.src, "XINFO GROUPS", &reply));
    };
    let mut groups = Vec::with_capacity(items.len());
    for item in items {
        let info = pairs(item);
        let (Some(name), Some(last_delivered)) = (
            bulk_field(&info, b"name"),
            bulk_field(&info, b"last-delivered-id"),
        ) else {
            return Err(unexpected(job.src, "XINFO GROUPS", &Value::Null));
        };
        groups.push(Group {
            name,
            last_delivered,
            entries_read: int_field(&info, b"entries-read"),
            pending: int_field(&info, b"pending").unwrap_or(0),
        });
    }
    Ok(groups)
}

/// One chunk of a group's pending entries after `start` (`-` or an
/// exclusive `(id`): ID, consumer, idle ms, deliveries.
async fn pending_chunk(
    job: &mut Job<'_>,
    group: &Group,
    start: &Bytes,
) -> Result<Vec<(Bytes, Bytes, i64, i64)>, RedisError> {
    let count = CHUNK.to_string();
    let reply = job
        .src
        .call(&[
            &b"XPENDING"[..],
            job.key,
            &group.name,
            start,
            b"+",
            count.as_bytes(),
        ])
        .await?;
    let Value::Array(items) = reply else {
        return Err(unexpected(job.src, "XPENDING", &reply));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Array(parts) => match &parts[..] {
                [Value::Bulk(id), Value::Bulk(consumer), Value::Integer(idle), Value::Integer(n)] => {
                    out.push((id.clone(), consumer.clone(), *idle, *n))
                }
                _ => return Err(unexpected(job.src, "XPENDING", &Value::Array(parts))),
            },
            other => return Err(unexpected(job.src, "XPENDING", &other)),
        }
    }
    Ok(out)
}

fn after(id: &[u8]) -> Bytes {
    Bytes::from([&b"("[..], id].concat())
}

/// The IDs pending in any group: those whose message is gone need a
/// placeholder during the copy.
async fn pending_ids(job: &mut Job<'_>, groups: &[Group]) -> Result<BTreeSet<Id>, RedisError> {
    let mut ids = BTreeSet::new();
    for group in groups.iter().filter(|g| g.pending > 0) {
        let mut start = text(b"-");
        loop {
            let chunk = pending_chunk(job, group, &start).await?;
            let Some((last, ..)) = chunk.last() else {
                break;
            };
            start = after(last);
            for (id, ..) in &chunk {
                ids.insert(
                    Id::parse(id)
                        .ok_or_else(|| unexpected(job.src, "XPENDING", &Value::Bulk(id.clone())))?,
                );
            }
            job.renew().await?;
        }
    }
    Ok(ids)
}

fn placeholder(import: &[u8], id: Id) -> Vec<Bytes> {
    vec![
        text(b"XADD"),
        Bytes::copy_from_slice(import),
        owned(id.to_string()),
        text(PLACEHOLDER_FIELD),
        Bytes::new(),
    ]
}

/// XRANGE in chunks into pipelined XADDs with the same IDs, a
/// placeholder slotted in for each pending ID whose message is gone.
/// Returns the entries copied and the placeholders added.
async fn copy_entries(
    job: &mut Job<'_>,
    pending: &BTreeSet<Id>,
) -> Result<(usize, Vec<Id>), RedisError> {
    let mut count = FIRST_COUNT;
    let mut start = text(b"-");
    let mut pending = pending.iter().copied().peekable();
    let (mut copied, mut placeholders) = (0, Vec::new());
    loop {
        let asked = count.to_string();
        let reply = job
            .src
            .call(&[
                &b"XRANGE"[..],
                job.key,
                &start,
                b"+",
                b"COUNT",
                asked.as_bytes(),
            ])
            .await?;
        let Value::Array(entries) = reply else {
            return Err(unexpected(job.src, "XRANGE", &reply));
        };
        if entries.is_empty() {
            break;
        }
        let mut commands = Vec::with_capacity(entries.len());
        let (n, mut bytes) = (entries.len(), 0);
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                return Err(unexpected(job.src, "XRANGE", &entry));
            };
            let (Some(Value::Array(fields)), Some(Value::Bulk(raw_id))) =
                (parts.pop(), parts.pop())
            else {
                return Err(unexpected(job.src, "XRANGE", &Value::Array(parts)));
            };
            let id = Id::parse(&raw_id)
                .ok_or_else(|| unexpected(job.src, "XRANGE", &Value::Bulk(raw_id.clone())))?;
            while let Some(gone) = pending.next_if(|p| *p < id) {
                commands.push(placeholder(&job.import, gone));
                placeholders.push(gone);
            }
            pending.next_if_eq(&id);
            let mut xadd = vec![text(b"XADD"), Bytes::copy_from_slice(&job.import)];
            start = after(&raw_id);
            xadd.push(raw_id);
            xadd.extend(bulks(fields));
            // Each string's bytes and about its RESP framing.
            bytes += xadd[2..].iter().map(|b| b.len() + 8).sum::<usize>();
            commands.push(xadd);
            copied += 1;
        }
        // Sized from the last chunk's entries: the nearest to the next.
        count = (CHUNK_BYTES * n / bytes.max(1)).clamp(1, CHUNK);
        job.write_all(&commands).await?;
        job.renew().await?;
    }
    // Pending IDs past the last entry (it was deleted or trimmed too).
    let rest: Vec<Id> = pending.collect();
    for chunk in rest.chunks(CHUNK) {
        let commands: Vec<_> = chunk
            .iter()
            .map(|id| placeholder(&job.import, *id))
            .collect();
        job.write_all(&commands).await?;
        job.renew().await?;
    }
    placeholders.extend(rest);
    Ok((copied, placeholders))
}

/// A group's pending entries, each claimed on the target by its consumer
/// with its idle time and delivery count.
async fn restore_pending(job: &mut Job<'_>, group: &Group) -> Result<(), RedisError> {
    if group.pending == 0 {
        return Ok(());
    }
    let mut start = text(b"-");
    loop {
        let chunk = pending_chunk(job, group, &start).await?;
        let Some((last, ..)) = chunk.last() else {
            return Ok(());
        };
        start = after(last);
        let commands: Vec<Vec<Bytes>> = chunk
            .into_iter()
            .map(|(id, consumer, idle, deliveries)| {
                vec![
                    text(b"XCLAIM"),
                    Bytes::copy_from_slice(&job.import),
                    group.name.clone(),
                    consumer,
                    text(b"0"),
                    id,
                    text(b"IDLE"),
                    owned(idle.to_string()),
                    text(b"RETRYCOUNT"),
                    owned(deliveries.to_string()),
                    text(b"FORCE"),
                    text(b"JUSTID"),
                ]
            })
            .collect();
        let replies = job.write_all(&commands).await?;
        // Each claim names the one ID it made pending; an empty answer
        // would be a pending entry lost, which must fail the move.
        for reply in replies {
            if !matches!(&reply, Value::Array(ids) if ids.len() == 1) {
                return Err(unexpected(&job.dst, "XCLAIM", &reply));
            }
        }
        job.renew().await?;
    }
}

/// Consumers without pending entries exist only by name; XCLAIM made the
/// others already (CREATECONSUMER leaves those as they are).
async fn restore_consumers(job: &mut Job<'_>, group: &Group) -> Result<(), RedisError> {
    let reply = job
        .src
        .call(&[&b"XINFO"[..], b"CONSUMERS", job.key, &group.name])
        .await?;
    let Value::Array(items) = reply else {
        return Err(unexpected(job.src, "XINFO CONSUMERS", &reply));
    };
    let names: Vec<Bytes> = items
        .into_iter()
        .filter_map(|c| bulk_field(&pairs(c), b"name"))
        .collect();
    for chunk in names.chunks(CHUNK) {
        let commands: Vec<Vec<Bytes>> = chunk
            .iter()
            .map(|name| {
                vec![
                    text(b"XGROUP"),
                    text(b"CREATECONSUMER"),
                    Bytes::copy_from_slice(&job.import),
                    group.name.clone(),
                    name.clone(),
                ]
            })
            .collect();
        job.write_all(&commands).await?;
        job.renew().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_numerically_and_print_back() {
        let a = Id::parse(b"9-5").unwrap();
        let b = Id::parse(b"10-0").unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "10-0");
        assert_eq!(Id::parse(b"12"), None);
    }

    #[test]
    fn xinfo_pairs_read_resp2_flat_arrays() {
        let reply = Value::Array(vec![
            Value::Bulk(text(b"entries-added")),
            Value::Integer(7),
            Value::Bulk(text(b"last-generated-id")),
            Value::Bulk(text(b"5-1")),
            Value::Bulk(text(b"entries-read")),
            Value::Null,
        ]);
        let info = pairs(reply);
        assert_eq!(int_field(&info, b"entries-added"), Some(7));
        assert_eq!(bulk_field(&info, b"last-generated-id"), Some(text(b"5-1")));
        assert_eq!(int_field(&info, b"entries-read"), None);
    }
}
