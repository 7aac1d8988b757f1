//! The state of one client connection, which the session loop
//! ([`super::client`]), the commands answered locally and INFO share.

use crate::protocol::{encode_error, Proto};
use crate::proxy::acl::User;
use crate::proxy::backend::ReplyReceiver;
use crate::proxy::dedicated::Dedicated;
use crate::proxy::migration::lane::Lane as MigrationLane;
use crate::proxy::pending::Pending;
use crate::proxy::pool::Pool;
use crate::proxy::pubsub::PubSub;
use crate::proxy::router::{RoutingTable, Shard, ShardName};
use crate::proxy::stats::PoolStats;
use crate::proxy::window::HeadWait;
use crate::proxy::workers;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

/// The state of one client connection.
pub struct Session {
    pub pool: Arc<Pool>,
    pub id: u64,
    /// Picks this client's connection to each backend, among its worker's:
    /// every request of the client takes the same one, so they run in
    /// order. Sessions of one worker count up, so they spread evenly over
    /// `server_connections`.
    pub affinity: usize,
    pub proto: Proto,
    pub name: Option<Bytes>,
    pub authenticated: bool,
    /// Who the client is: set once it has authenticated (or from the
    /// start when no password is configured).
    pub user: Option<Arc<User>>,
    /// Failed AUTH attempts on this connection ([`crate::proxy::acl::MAX_AUTH_FAILURES`]).
    pub auth_failures: u32,
    /// Requests refused for want of a login
    /// ([`crate::proxy::acl::MAX_UNAUTHENTICATED_REFUSALS`]).
    pub refused_unauthenticated: u32,
    /// Set by QUIT: close after this batch's replies.
    pub closing: bool,
    /// The client's own backend connection, if it has needed one.
    pub dedicated: Option<Box<Dedicated>>,
    /// A second dedicated connection, for a blocking command to another
    /// server while a transaction holds `dedicated`; parked once answered.
    pub side: Option<Box<Dedicated>>,
    /// WATCH or MULTI in progress.
    pub tx: Option<Box<Transaction>>,
    /// The connection the last backend request went on: a request for the
    /// other kind waits until the ones before it are answered.
    pub lane: Lane,
    /// A blocking command is owed: nothing more is dispatched until it is
    /// answered, as Redis runs nothing else for a blocked client.
    pub blocked: bool,
    /// A (un)subscription's confirmation is owed: the next request waits
    /// for it, since the subscription is not in place (or gone) on the
    /// shards until they confirm (a pipelined PUBLISH would miss it).
    pub settling: bool,
    /// The shard of the last keyed request, by name (WAIT goes there): a
    /// shard of the table, or the target of a moving range whose request
    /// the lane ran there, which the table may not list yet.
    pub last_shard: ShardName,
    /// The client's subscriptions; `Some` in subscribed mode.
    pub pubsub: Option<Box<PubSub>>,
    /// Requests on a moving range, in order ([`crate::proxy::migration`]).
    pub migration_lane: Option<MigrationLane>,
    /// When the session loop's current pass began dispatching: the
    /// timeouts of the requests it forwards run from here (one clock read
    /// per pass, not per request).
    pub accepted: Instant,
    /// The shards the client's shut window waited on, and since when: a
    /// request for one of them is timed from then.
    pub head_wait: HeadWait,
    /// The routing table the request being dispatched goes by: the one
    /// the session loop checked against the replies still owed
    /// ([`Session::take_table`]).
    pub pinned: Option<arc_swap::Guard<Arc<RoutingTable>>>,
}

/// A WATCH or MULTI in progress ([`super::transaction`]).
#[derive(Debug, Default)]
pub struct Transaction {
    /// MULTI was sent (else the client has only WATCHed so far).
    pub multi: bool,
    /// Keyless commands queued before the transaction's shard is known;
    /// sent after MULTI once it is.
    pub waiting: Vec<Bytes>,
    /// A command was refused while queueing: EXEC discards the transaction.
    pub aborted: bool,
    /// The dedicated connection holding the transaction's WATCHes or
    /// queued commands was lost. Nothing more is sent for the transaction:
    /// later commands up to EXEC are answered `+QUEUED` and dropped, and
    /// EXEC fails (`aborted`: `-EXECABORT`; WATCHes lost before MULTI: a
    /// null reply, as when a watched key changed), so none of them can run
    /// outside the transaction the client asked for.
    pub lost: bool,
    /// Set while the transaction is bound to the session's dedicated
    /// connection (its WATCH or first keyed command went there): the
    /// routing version, and the bound shard's place in it, when it was
    /// bound. A change of that place (a range moved to or from the shard)
    /// makes the transaction lost as well, since its keys may no longer
    /// live where its connection is.
    pub bound_at: Option<(u64, Footprint)>,
}

impl Transaction {
    /// Bound to the session's dedicated connection.
    pub fn bound(&self) -> bool {
        self.bound_at.is_some()
    }
}

/// A shard's inclusive slot range, in range form.
type Range = Option<(u32, u32)>;

/// Where a shard stands in a routing table: its ranges and their servers,
/// and a migration from or to it still served through the lane (range,
/// phase). A table without ranges (ketama, modula by weight) places every
/// key by all of its servers and weights, so there the whole placement
/// counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Footprint {
    ranges: Vec<(Range, Arc<str>)>,
    unranged: Option<crate::proxy::router::Placement>,
    migration: Option<(u32, u32, crate::zk::migration::Phase)>,
}

impl Footprint {
    pub fn of(table: &crate::proxy::router::RoutingTable, shard: ShardName) -> Footprint {
        // The server too: a reload may put another one behind the same
        // name and range, and the transaction's keys are not there.
        let ranges: Vec<_> = table
            .shards
            .iter()
            .filter(|s| s.name == shard)
            .map(|s| (s.range, s.backend.addr.clone()))
            .collect();
        let unranged = ranges
            .iter()
            .all(|(range, _)| range.is_none())
            .then(|| table.placement());
        // A committed migration routes nothing any more: its record being
        // removed later changes nothing for the shard.
        let migration = table
            .active_migration()
            .filter(|m| m.source_name == shard || m.target_name == shard)
            .map(|m| (m.lo, m.hi, m.phase));
        Footprint {
            ranges,
            unranged,
            migration,
        }
    }
}

/// Which connections a session's requests travel on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The pool's shared, pipelined connections.
    Shared,
    /// The session's dedicated connection.
    Dedicated,
}

impl Session {
    pub fn new(pool: Arc<Pool>) -> Session {
        Session {
            id: pool.next_client_id(),
            affinity: workers::next_affinity(),
            authenticated: pool.users.initial().is_some(),
            user: pool.users.initial(),
            auth_failures: 0,
            refused_unauthenticated: 0,
            pool,
            proto: Proto::Resp2,
            name: None,
            closing: false,
            dedicated: None,
            side: None,
            tx: None,
            lane: Lane::Shared,
            blocked: false,
            settling: false,
            last_shard: "",
            pubsub: None,
            migration_lane: None,
            accepted: Instant::now(),
            head_wait: HeadWait::default(),
            pinned: None,
        }
    }

    /// The routing table to dispatch the current request by: the one the
    /// session loop pinned for it (a newer one may carry it on other
    /// connections than the replies owed, which it could then overtake),
    /// else the current one.
    pub(crate) fn take_table(&mut self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.pinned
            .take()
            .unwrap_or_else(|| self.pool.router.load())
    }

    /// Sends `raw` to `shard`'s backend, timed from when the proxy
    /// accepted it: this pass, or earlier if it waited in the input on
    /// that very shard ([`HeadWait`]). One that already waited its whole
    /// timeout is answered so at once and never written: the backend would
    /// run it after its client was told it timed out.
    pub fn forward_to(&self, shard: &Shard, raw: Bytes) -> ReplyReceiver {
        let charged = self.head_wait.since(shard.name, || {
            shard.backend.stats.responses.load(Ordering::Relaxed)
        });
        let Some(since) = charged else {
            return shard
                .backend
                .send_since(self.proto, self.affinity, raw, self.accepted);
        };
        match shard.backend.timeout() {
            Some(timeout) if since + timeout <= self.accepted => shard.backend.expired(),
            _ => shard
                .backend
                .send_since(self.proto, self.affinity, raw, since),
        }
    }

    /// Sends a request whose keys (`keys`) all lie in the moving range of
    /// the migration from shard `source` through the session's lane.
    pub fn through_migration(
        &mut self,
        source: ShardName,
        keys: Vec<Bytes>,
        raw: Bytes,
    ) -> Pending {
        let pool = &self.pool;
        let lane = self
            .migration_lane
            .get_or_insert_with(|| MigrationLane::new(pool));
        Pending::Forward {
            reply: lane.submit(keys, raw, self.proto, self.affinity),
            shard: source,
        }
    }

    /// Marks the client blocked or not, counting blocked clients for INFO.
    pub fn set_blocked(&mut self, blocked: bool) {
        if blocked != self.blocked {
            self.blocked = blocked;
            let counter = &self.pool.stats.blocked_clients;
            if blocked {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                counter.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Gives the dedicated connection back to the pool once nothing is
    /// owed on it and no transaction lives on it, so an idle client holds
    /// none ([`crate::proxy::dedicated`]). A MULTI not bound yet has left
    /// nothing on it: it may have followed the last EXEC on the connection
    /// (see [`Session::follows_on_held_connection`]), but it takes one
    /// again when it binds (review: an idle client holding such a MULTI
    /// kept the connection from everyone).
    pub fn park_dedicated(&mut self) {
        let unbound = self.tx.as_ref().is_none_or(|tx| !tx.bound());
        if self.dedicated.is_some() && unbound {
            let conn = self.dedicated.take().expect("checked");
            self.pool.dedicated.park(*conn);
        }
        if let Some(conn) = self.side.take() {
            self.pool.dedicated.park(*conn);
        }
    }

    /// RESET: the state of a new connection, as Redis restores it (RESP2,
    /// no name, the default user, authenticated only if no password is set, no
    /// subscriptions: the caller lets go of those first, with
    /// [`crate::proxy::pubsub::PubSub::leave`]).
    pub fn reset(&mut self) {
        self.proto = Proto::Resp2;
        self.name = None;
        // Back to the default user, as Redis does; the AUTH failures
        // counted so far stay (RESET must not restart the guessing).
        self.user = self.pool.users.initial();
        self.authenticated = self.user.is_some();
        self.pubsub = None;
        // Ends a transaction and its WATCHes (closing the dedicated
        // connection discards them on the backend too).
        self.tx = None;
        self.dedicated = None;
        self.side = None;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.set_blocked(false);
    }
}

impl Session {
    /// An error reply built by the proxy (`msg` without the leading '-').
    pub fn error(&self, msg: &str) -> Pending {
        PoolStats::bump(&self.pool.stats.errors);
        let mut out = BytesMut::with_capacity(msg.len() + 3);
        encode_error(msg, &mut out);
        Pending::Ready(out.freeze())
    }
}
