//! Blocking commands (BLPOP & co., XREAD/XREADGROUP with BLOCK, WAIT): each
//! runs on the client's dedicated connection to the shard of its keys, so a
//! command that waits minutes holds up nobody else.
//!
//! The session dispatches a blocking command only once every reply before
//! it has been answered, and nothing after it until it is answered (a
//! blocked Redis client runs nothing else either), so the switch between the
//! shared connections and the dedicated one never reorders a client's
//! requests.

use crate::command::Command;
use crate::protocol::{encode_error, encode_request, Proto};
use crate::proxy::backend::reply::client_frame;
use crate::proxy::backend::ReplyReceiver;
use crate::proxy::dedicated::{block_timeout, Dedicated, DedicatedLimit};
use crate::proxy::pending::Pending;
use crate::proxy::router::{RoutingTable, Shard, ShardName};
use crate::proxy::session::Session;
use bytes::BytesMut;
use tokio::time::Instant;

/// The channel the proxy publishes to before WAIT (see [`Session::blocking`]).
const WAIT_CHANNEL: &[u8] = b"__shardproxy__:wait";

impl Session {
    /// Sends a blocking command on the dedicated connection to its keys'
    /// shard. Its deadline is its own timeout plus the pool's `timeout`
    /// (none for a timeout of 0, or without a pool `timeout`).
    ///
    /// WAIT has no key: it goes to the shard of the client's last keyed
    /// request. Redis counts the replicas that acknowledged the last write
    /// *on the connection WAIT arrives on*; the client's writes went on a
    /// shared connection, so the proxy first publishes to an unused channel
    /// on the dedicated one (SPUBLISH replicates, and its offset is past
    /// every write answered before it), then sends WAIT.
    pub(crate) fn blocking(
        &mut self,
        cmd: &'static Command,
        request: crate::protocol::Request,
    ) -> Pending {
        let table = self.take_table();
        let lane_target;
        let target = match self.dedicated_shard_of_keys(&table, cmd, &request.args) {
            Ok(Some(shard)) => &table.shards[shard],
            Ok(None) if cmd.name == "wait" => match self.wait_shard(&table) {
                WaitOn::Table(shard) => &table.shards[shard],
                WaitOn::LaneTarget(shard) => {
                    lane_target = shard;
                    &lane_target
                }
            },
            Ok(None) => {
                return self.error(&format!(
                    "ERR '{}' without a key cannot be routed by shardproxy",
                    cmd.name
                ))
            }
            Err(e) => return self.error(&e),
        };
        let deadline = block_timeout(cmd, &request.args).and_then(|wait| {
            let backend_timeout = target.backend.timeout()?;
            Some(Instant::now() + wait + backend_timeout)
        });
        let conn = match self.blocking_conn(target) {
            Ok(conn) => conn,
            Err(e) => return self.error(&e),
        };
        // A shard channel: no pattern subscriber sees it (a PUBLISH reached
        // every `PSUBSCRIBE *` client).
        let published = (cmd.name == "wait").then(|| {
            let mut publish = BytesMut::new();
            encode_request(&[&b"SPUBLISH"[..], WAIT_CHANNEL, b""], &mut publish);
            // WAIT's own deadline: the connection expires requests oldest
            // first, so one without a deadline ahead of WAIT would keep
            // WAIT from ever timing out on a stalled backend.
            conn.send(publish.freeze(), deadline)
        });
        // Ended with TRYAGAIN if a range holding one of its keys starts
        // moving away: the positions its keys span (slots, or hashes on a
        // ketama ring; all of them where keys have no position, as with
        // random).
        let keys = cmd.key_indexes(&request.args).unwrap_or_default();
        let span = keys
            .iter()
            .try_fold(None, |span: Option<(u32, u32)>, &key| {
                let at = table.position_of(&request.args[key])?;
                Some(Some(
                    span.map_or((at, at), |(lo, hi)| (lo.min(at), hi.max(at))),
                ))
            });
        let span = span.unwrap_or(Some((0, u32::MAX)));
        let reply = conn.send_blocking(request.raw, deadline, span);
        let shard = conn.shard;
        self.set_blocked(true);
        match published {
            Some(published) => wait_after_publish(published, reply, shard),
            None => Pending::Forward { reply, shard },
        }
    }

    /// The connection a blocking command to `shard` runs on: the session's
    /// dedicated one, unless a transaction lives on it and it goes to
    /// another server; then a second one, held until the command is
    /// answered, so that the transaction's WATCHes stay where they are.
    fn blocking_conn(&mut self, target: &Shard) -> Result<&Dedicated, String> {
        let bound = self.tx_bound();
        let elsewhere = self
            .dedicated
            .as_ref()
            .is_some_and(|conn| !conn.is_broken() && !conn.serves(&target.backend, self.proto));
        if !(bound && elsewhere) {
            return self.dedicated_to_shard(target);
        }
        reopened(&mut self.side, &self.pool.dedicated, target, self.proto)
    }

    /// Where WAIT goes: the shard of the client's last keyed request, or,
    /// while a transaction holds a dedicated connection, that connection's
    /// shard, so that WAIT does not close it and lose the WATCHes. After a
    /// request of a moving range, the shard the lane ran it on: the range's
    /// target, which the table may not list yet.
    fn wait_shard(&self, table: &RoutingTable) -> WaitOn {
        let bound = self.tx_bound();
        let held = self.dedicated.as_ref().filter(|_| bound).and_then(|conn| {
            table.shards.iter().position(|shard| {
                shard.name == conn.shard && conn.serves(&shard.backend, self.proto)
            })
        });
        if let Some(shard) = held {
            return WaitOn::Table(shard);
        }
        let name = self.last_shard;
        if let Some(shard) = table.shards.iter().position(|shard| shard.name == name) {
            return WaitOn::Table(shard);
        }
        if let Some(m) = table.migration.as_ref().filter(|m| m.target_name == name) {
            return WaitOn::LaneTarget(Shard {
                name,
                backend: m.target.clone(),
                range: None,
            });
        }
        // No keyed request yet, or its shard left the table.
        WaitOn::Table(0)
    }

    /// The session's dedicated connection to `shard`'s backend, opened (in
    /// place of one to another backend) if needed. Only called when nothing
    /// is in flight on the old one.
    ///
    /// # Errors
    /// The error reply text when the pool's cap is reached.
    pub(crate) fn dedicated_to(
        &mut self,
        table: &RoutingTable,
        shard: usize,
    ) -> Result<&Dedicated, String> {
        self.dedicated_to_shard(&table.shards[shard])
    }

    /// [`Session::dedicated_to`], for a shard the table may not list.
    fn dedicated_to_shard(&mut self, target: &Shard) -> Result<&Dedicated, String> {
        if !serves(&self.dedicated, target, self.proto) {
            // A transaction's WATCHes live on the connection replaced here
            // (a blocking command on another shard, or the connection
            // broke): EXEC must not run as if they still held.
            self.forget_transaction_connection();
        }
        reopened(
            &mut self.dedicated,
            &self.pool.dedicated,
            target,
            self.proto,
        )
    }
}

/// Where a WAIT goes.
enum WaitOn {
    /// A shard of the routing table.
    Table(usize),
    /// A moving range's target, not in the table yet.
    LaneTarget(Shard),
}

/// Whether `slot` holds a connection to `target`'s backend in `proto`.
fn serves(slot: &Option<Box<Dedicated>>, target: &Shard, proto: Proto) -> bool {
    slot.as_ref()
        .is_some_and(|conn| conn.serves(&target.backend, proto))
}

/// `slot`'s connection when it serves `target`'s backend, else a new one
/// in its place.
///
/// # Errors
/// The error reply text when the pool's cap is reached.
fn reopened<'a>(
    slot: &'a mut Option<Box<Dedicated>>,
    limit: &DedicatedLimit,
    target: &Shard,
    proto: Proto,
) -> Result<&'a Dedicated, String> {
    if !serves(slot, target, proto) {
        // Closed first, so its place under the cap is free for the new one.
        *slot = None;
        *slot = Some(Box::new(limit.open(target.name, &target.backend, proto)?));
    }
    Ok(slot.as_ref().expect("just set"))
}

/// WAIT's reply, unless the SPUBLISH before it failed: then WAIT would
/// count replicas against an offset that misses the client's writes (a
/// Redis before 7.0 has no SPUBLISH), so the client gets the error instead.
fn wait_after_publish(published: ReplyReceiver, wait: ReplyReceiver, shard: ShardName) -> Pending {
    Pending::Assembling(Box::pin(async move {
        let refused = match published.await {
            Ok(Ok(frame)) if frame.first() == Some(&b'-') => Some(frame),
            _ => None,
        };
        let waited = client_frame(wait.await, shard);
        let Some(frame) = refused else {
            return waited;
        };
        let text = String::from_utf8_lossy(&frame[1..]);
        let mut out = BytesMut::new();
        encode_error(
            &format!(
                "ERR shard '{shard}': WAIT needs SPUBLISH (Redis 7.0 or later): {}",
                text.trim_end()
            ),
            &mut out,
        );
        out.freeze()
    }))
}
