//! Pub/sub through the proxy: a client's subscriptions, held on the shards'
//! masters by connections of its own, and the replies and messages it gets.
//!
//! A channel belongs to a shard exactly as a key does (`shard_of`, hash tags
//! included), for SUBSCRIBE and SSUBSCRIBE alike, and PUBLISH and SPUBLISH
//! go to that shard's master: every proxy of a fleet meets on the same
//! Redis, so a message published through any of them reaches the
//! subscribers of all of them. A pattern may match channels of any shard,
//! so PSUBSCRIBE subscribes on every shard; each message is published on
//! one shard only, so it still arrives once. Redis publishes its keyspace
//! notifications on the server of the key: `__keyspace@N__:key` belongs to
//! the key's shard, and `__keyevent@N__:event` is subscribed on every shard.
//!
//! A session enters subscribed mode with its first subscription: it gets a
//! [`PubSub`], which opens one connection ([`link`]) per shard in use, to
//! that shard's master. Since a client's subscriptions are spread over
//! several connections, the proxy builds every confirmation itself, with
//! the counts Redis would give (channels and patterns together; shard
//! channels apart). A confirmation is sent once the backend confirmed, so a
//! message published after the client saw it is delivered; messages wait
//! while a confirmation is owed, so none overtakes one. When the routing
//! changes (a failover), every link follows its shard to the new master
//! and subscribes there again, unseen by the client.
//!
//! [`introspect`] holds PUBLISH and the PUBSUB subcommands.

mod commands;
pub mod introspect;
mod link;
mod placement;

use commands::{after_confirmations, confirm_deadline};
pub use commands::{run, Client};

use crate::command::Command;
use crate::protocol::{encode, Proto, Value};
use crate::proxy::conn_cap::CapSlot;
use crate::proxy::outbuf::OutBuf;
use crate::proxy::pending::Pending;
use crate::proxy::pool::Pool;
use crate::proxy::router::{RoutingTable, ShardName};
use bytes::{Bytes, BytesMut};
use indexmap::IndexSet;
use link::{Order, Sink};
pub(crate) use placement::home_shard;
use placement::{channel_shard, keyspace_key, KEYEVENT};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, watch};

/// Messages handed to the session at a time, at most (about): enough for
/// one write to carry many small ones.
const BATCH_BYTES: usize = 64 * 1024;

/// What a subscription is to: the three name spaces of Redis pub/sub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Channel = 0,
    Pattern = 1,
    Shard = 2,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Channel, Kind::Pattern, Kind::Shard];

    fn subscribe_command(self) -> &'static str {
        match self {
            Kind::Channel => "subscribe",
            Kind::Pattern => "psubscribe",
            Kind::Shard => "ssubscribe",
        }
    }

    fn unsubscribe_command(self) -> &'static str {
        match self {
            Kind::Channel => "unsubscribe",
            Kind::Pattern => "punsubscribe",
            Kind::Shard => "sunsubscribe",
        }
    }
}

/// What the session loop must do after a pub/sub event.
pub enum Flow {
    Go,
    /// Write what is owed, then close (a subscription failed).
    Finish,
    /// Close at once: the client does not read its messages.
    Close,
}

/// What [`PubSub::next_event`] hands the session loop.
pub enum Event {
    /// Message frames as the backend sent them (RESP2), in order: those
    /// that had arrived, so that they leave in one write.
    Messages(Vec<Bytes>),
    Overflow,
    Failed,
}

/// One subscriber connection, as the session sees it.
struct Link {
    addr: Arc<str>,
    orders: mpsc::UnboundedSender<Order>,
    /// The names the link holds, per kind.
    held: [HashSet<Bytes>; 3],
    /// Its place under `max_subscriber_connections`.
    _slot: CapSlot,
}

impl Link {
    fn order(&mut self, order: Order) {
        match &order {
            Order::Subscribe { kind, names, .. } => {
                self.held[*kind as usize].extend(names.iter().cloned())
            }
            Order::Unsubscribe { kind, names, .. } => {
                for name in names {
                    self.held[*kind as usize].remove(name);
                }
            }
            Order::Move(addr) => self.addr = addr.clone(),
        }
        // The task ends only when this handle is dropped.
        let _ = self.orders.send(order);
    }

    /// Unsubscribes `names`; the receiver answers once the session took
    /// the messages the shard sent before its confirmation
    /// ([`PubSub::left`]).
    fn unsubscribe(&mut self, kind: Kind, names: Vec<Bytes>) -> oneshot::Receiver<Confirmed> {
        let (ack, confirmed) = oneshot::channel();
        self.order(Order::Unsubscribe {
            kind,
            names,
            ack: Some(ack),
        });
        confirmed
    }
}

/// A link's answer to an order with an acknowledgement.
type Confirmed = Result<(), String>;

/// A session's subscriptions: present while it has at least one.
pub struct PubSub {
    pool: Arc<Pool>,
    /// In subscription order: a bare (P|S)UNSUBSCRIBE confirms them so,
    /// as Redis 7.0 does patterns.
    names: [IndexSet<Bytes>; 3],
    /// Names unsubscribed whose shards have not confirmed yet, with how
    /// many links still owe it: their messages are delivered until then,
    /// as Redis delivers what it published before the UNSUBSCRIBE ran
    /// (a message the client published to itself just before). Not past
    /// the confirmation deadline, when the client is told it is done
    /// whether the shard confirmed or not.
    draining: [HashMap<Bytes, (usize, Instant)>; 3],
    /// By shard name.
    links: HashMap<ShardName, Link>,
    /// Places under the cap taken for the links a subscription is about
    /// to open.
    spare: Vec<CapSlot>,
    sink: Sink,
    events: mpsc::UnboundedReceiver<link::Event>,
    /// Subscribe confirmations dispatched and not written yet: messages
    /// wait meanwhile.
    unconfirmed: Arc<AtomicUsize>,
    /// A subscription could not be made: the session ends.
    failed: Arc<AtomicBool>,
    routes: watch::Receiver<u64>,
    /// The routing table the links follow.
    version: u64,
}

impl PubSub {
    fn new(pool: &Arc<Pool>) -> PubSub {
        let (events_tx, events) = mpsc::unbounded_channel();
        // Watching before any table is loaded: no change can slip by.
        let mut routes = pool.router.watch();
        routes.mark_unchanged();
        PubSub {
            pool: pool.clone(),
            names: Default::default(),
            draining: Default::default(),
            links: HashMap::new(),
            spare: Vec::new(),
            sink: Sink {
                events: events_tx,
                queued: Arc::new(AtomicUsize::new(0)),
                limit: pool.client_output_limit,
            },
            events,
            unconfirmed: Arc::new(AtomicUsize::new(0)),
            failed: Arc::new(AtomicBool::new(false)),
            routes,
            version: 0,
        }
    }

    /// Channels and patterns: the count SUBSCRIBE, PSUBSCRIBE and their
    /// UNSUBSCRIBEs report.
    fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.names[Kind::Shard as usize].len(),
            _ => {
                self.names[Kind::Channel as usize].len() + self.names[Kind::Pattern as usize].len()
            }
        }
    }

    /// RESET: lets go of every subscription and answers `reply` once the
    /// shards confirmed, as Redis answers once it has, after the messages
    /// (in `proto`) they sent before.
    pub fn leave(mut self: Box<Self>, reply: Bytes, proto: Proto) -> Pending {
        let mut acks = Vec::new();
        let mut leaving = Vec::new();
        for link in self.links.values_mut() {
            for kind in Kind::ALL {
                let names: Vec<Bytes> = link.held[kind as usize].iter().cloned().collect();
                if !names.is_empty() {
                    leaving.push((kind, names.clone()));
                    acks.push(link.unsubscribe(kind, names));
                }
            }
        }
        for (kind, names) in leaving {
            self.drain(kind, &names);
        }
        self.names = Default::default();
        let pool = self.pool.clone();
        after_confirmations(acks, Some(self), Vec::new(), &pool, reply, proto)
    }

    /// One link was asked to let go of `names`.
    fn drain(&mut self, kind: Kind, names: &[Bytes]) {
        let now = Instant::now();
        let until = now + confirm_deadline(&self.pool);
        let draining = &mut self.draining[kind as usize];
        // Those a shard never confirmed go with the next unsubscription.
        draining.retain(|_, (_, expiry)| *expiry > now);
        for name in names {
            let entry = draining.entry(name.clone()).or_insert((0, until));
            entry.0 += 1;
            entry.1 = until;
        }
    }

    /// A link's shard let go of `names`: the messages it sent before were
    /// taken, so the unsubscription is confirmed. (`ack` is `None` for a
    /// link following a routing change, which drained nothing.)
    fn left(&mut self, kind: Kind, names: &[Bytes], ack: Option<link::Ack>) {
        let Some(ack) = ack else { return };
        let draining = &mut self.draining[kind as usize];
        for name in names {
            if let Some((owed, _)) = draining.get_mut(name) {
                *owed -= 1;
                if *owed == 0 {
                    draining.remove(name);
                }
            }
        }
        let _ = ack.send(Ok(()));
    }

    fn total(&self) -> usize {
        self.names.iter().map(IndexSet::len).sum()
    }

    /// The shards a name is held on (indexes for [`RoutingTable::shard`]):
    /// its own, or all (a new shard receiving a range too) for a pattern
    /// and for a keyevent notification channel. While a key's range moves,
    /// its keyspace notifications come from whichever end holds it: that
    /// channel is held on both ends. (A plain channel is published on its
    /// home shard only, moving or not.)
    fn shards_of(kind: Kind, name: &[u8], table: &RoutingTable) -> Vec<usize> {
        let every = || (0..table.shards.len() + usize::from(table.receiving.is_some())).collect();
        match kind {
            Kind::Pattern => every(),
            Kind::Channel if name.starts_with(KEYEVENT) => every(),
            Kind::Channel => {
                let moving = keyspace_key(name).is_some_and(|key| {
                    table
                        .active_migration()
                        .is_some_and(|m| m.covers(table.slot_of(key)))
                });
                match table.migration_ends().filter(|_| moving) {
                    Some((source, target)) if source != target => vec![source, target],
                    _ => vec![channel_shard(table, name)],
                }
            }
            Kind::Shard => vec![table.shard_of(name)],
        }
    }

    /// Takes the places under the cap for the links subscribing `names`
    /// would open, all or none ([`PubSub::spare`]).
    ///
    /// # Errors
    /// The error text when the cap has too few left.
    fn room_for(
        &mut self,
        kind: Kind,
        names: &[Bytes],
        table: &RoutingTable,
    ) -> Result<(), String> {
        let mut opened = HashSet::new();
        for name in names
            .iter()
            .filter(|n| !self.names[kind as usize].contains(*n))
        {
            for i in Self::shards_of(kind, name, table) {
                if !self.links.contains_key(&table.shard(i).name) {
                    opened.insert(i);
                }
            }
        }
        let cap = &self.pool.subscribers;
        let Some(slots) = cap.take(opened.len() as u32) else {
            if cap.max() == 0 {
                return Err(
                    "ERR shardproxy: subscriptions are turned off on this proxy \
                     (max_subscriber_connections is 0)"
                        .to_string(),
                );
            }
            return Err(format!(
                "ERR shardproxy: all {} subscriber backend connections (max_subscriber_connections) \
                 are held by subscribed clients; try again later",
                cap.max()
            ));
        };
        self.spare = slots;
        Ok(())
    }

    /// The link of shard `i` of `table`, opened if the session has none.
    /// Its place under the cap was taken beforehand ([`PubSub::spare`]),
    /// or is taken past it: a routing change must not lose a subscription.
    fn link(&mut self, table: &RoutingTable, i: usize) -> &mut Link {
        let shard = table.shard(i);
        let sink = &self.sink;
        let (spare, cap) = (&mut self.spare, &self.pool.subscribers);
        self.links.entry(shard.name).or_insert_with(|| {
            let slot = spare.pop().unwrap_or_else(|| cap.take_anyway());
            let (orders, rx) = mpsc::unbounded_channel();
            let spec = link::Spec {
                shard: shard.name,
                addr: shard.backend.addr.clone(),
                settings: shard.backend.settings().clone(),
                sink: sink.clone(),
                stand_in: shard
                    .backend
                    .unplaced_reason()
                    .map(|reason| (shard.backend.addr.clone(), reason.clone())),
            };
            tokio::spawn(link::run(spec, rx));
            Link {
                addr: shard.backend.addr.clone(),
                orders,
                held: Default::default(),
                _slot: slot,
            }
        })
    }

    /// Moves the links to the routing of `table` when it is newer than
    /// the one they follow: each shard's names to its current master,
    /// names whose shard changed to their new shard.
    fn follow(&mut self, table: &RoutingTable) {
        if table.version <= self.version {
            return;
        }
        self.version = table.version;
        let mut want: HashMap<usize, [HashSet<Bytes>; 3]> = HashMap::new();
        for kind in Kind::ALL {
            for name in &self.names[kind as usize] {
                for i in Self::shards_of(kind, name, table) {
                    want.entry(i).or_default()[kind as usize].insert(name.clone());
                }
            }
        }
        let named: HashSet<&ShardName> = want.keys().map(|&i| &table.shard(i).name).collect();
        self.links.retain(|name, _| named.contains(name));
        for (i, wanted) in want {
            let shard = table.shard(i);
            let link = self.link(table, i);
            if link.addr != shard.backend.addr {
                link.order(Order::Move(shard.backend.addr.clone()));
            }
            for kind in Kind::ALL {
                let k = kind as usize;
                let gone: Vec<Bytes> = link.held[k].difference(&wanted[k]).cloned().collect();
                let new: Vec<Bytes> = wanted[k].difference(&link.held[k]).cloned().collect();
                if !gone.is_empty() {
                    link.order(Order::Unsubscribe {
                        kind,
                        names: gone,
                        ack: None,
                    });
                }
                if !new.is_empty() {
                    link.order(Order::Subscribe {
                        kind,
                        names: new,
                        ack: None,
                    });
                }
            }
        }
    }

    /// The next thing the session must act on: a message (held back while
    /// a confirmation is owed), an overflow, or a failed subscription.
    /// Follows routing changes meanwhile. Cancel safe.
    pub async fn next_event(&mut self) -> Event {
        loop {
            if self.failed.load(Ordering::Relaxed) {
                self.failed.store(false, Ordering::Relaxed);
                return Event::Failed;
            }
            let deliver = self.unconfirmed.load(Ordering::Relaxed) == 0;
            tokio::select! {
                biased;
                changed = self.routes.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                    let table = self.pool.router.load_full();
                    self.follow(&table);
                }
                event = self.events.recv(), if deliver => {
                    let mut batch = Vec::new();
                    let mut bytes = 0;
                    let mut next = event;
                    loop {
                        match next {
                            Some(link::Event::Push(frame)) => {
                                self.sink.queued.fetch_sub(frame.len(), Ordering::Relaxed);
                                if self.wants(&frame) {
                                    bytes += frame.len();
                                    batch.push(frame);
                                }
                            }
                            Some(link::Event::Overflow) => return Event::Overflow,
                            Some(link::Event::Left { kind, names, ack }) => {
                                self.left(kind, &names, ack);
                                // What came before goes out before the
                                // confirmation is collected.
                                if !batch.is_empty() {
                                    break;
                                }
                            }
                            // The session holds a sender itself.
                            None => std::future::pending::<()>().await,
                        }
                        if bytes >= BATCH_BYTES {
                            break;
                        }
                        match self.events.try_recv() {
                            Ok(event) => next = Some(event),
                            Err(_) => break,
                        }
                    }
                    if !batch.is_empty() {
                        return Event::Messages(batch);
                    }
                }
            }
        }
    }

    /// True when the message is for a name the client still holds, or
    /// whose unsubscription its shard has not confirmed: one that arrives
    /// after the confirmation is dropped.
    fn wants(&self, frame: &Bytes) -> bool {
        let Ok(Value::Array(items)) = crate::protocol::parse_reply_bytes(frame) else {
            return false;
        };
        let (kind, name) = match (items.first(), items.get(1)) {
            (Some(Value::Bulk(kind)), Some(Value::Bulk(name))) => (kind, name),
            _ => return false,
        };
        let kind = match &kind[..] {
            b"message" => Kind::Channel,
            b"pmessage" => Kind::Pattern,
            b"smessage" => Kind::Shard,
            _ => return false,
        };
        self.names[kind as usize].contains(name)
            || self.draining[kind as usize]
                .get(name)
                .is_some_and(|(_, until)| Instant::now() < *until)
    }

    /// For a session that delivers no more messages (it is finishing):
    /// drops those that arrived, and confirms the unsubscriptions behind
    /// them, which would otherwise wait for their deadline. Always pending;
    /// woken by the next event.
    pub fn poll_discard(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        while let std::task::Poll::Ready(Some(event)) = self.events.poll_recv(cx) {
            match event {
                link::Event::Push(frame) => {
                    self.sink.queued.fetch_sub(frame.len(), Ordering::Relaxed);
                }
                link::Event::Left { kind, names, ack } => self.left(kind, &names, ack),
                link::Event::Overflow => {}
            }
        }
        std::task::Poll::Pending
    }

    /// Takes the messages, in `proto`, until the shards confirmed the
    /// unsubscription `acks` wait for (or `deadline`): the session has let
    /// go of this `PubSub` and no longer reads its messages itself.
    async fn drain_messages(
        &mut self,
        acks: Vec<oneshot::Receiver<Confirmed>>,
        deadline: Duration,
        proto: Proto,
    ) -> Vec<u8> {
        let mut messages = Vec::new();
        let until = tokio::time::Instant::now() + deadline;
        // Only this unsubscription's confirmations count: a shard that
        // confirms an earlier one late (past its deadline) must not end it.
        let mut waiting = acks;
        loop {
            waiting.retain_mut(|ack| ack.try_recv().is_err_and(|e| e == TryRecvError::Empty));
            if waiting.is_empty() {
                break;
            }
            match tokio::time::timeout_at(until, self.events.recv()).await {
                // Still counted as queued: the links' bound on what waits
                // for the client holds for what gathers here too.
                Ok(Some(link::Event::Push(frame))) => {
                    if self.wants(&frame) {
                        push_message(&frame, proto, &mut messages);
                    }
                }
                Ok(Some(link::Event::Left { kind, names, ack })) => self.left(kind, &names, ack),
                Ok(Some(link::Event::Overflow) | None) | Err(_) => break,
            }
        }
        messages
    }
}

/// Appends a message frame (RESP2, as the backend sent it) in `proto`.
fn push_message(frame: &Bytes, proto: Proto, out: &mut Vec<u8>) {
    if proto == Proto::Resp3 {
        // The same array, as a push frame: only the type byte differs.
        out.push(b'>');
        out.extend_from_slice(&frame[1..]);
    } else {
        out.extend_from_slice(frame);
    }
}

/// Writes what [`PubSub::next_event`] returned to the client.
pub fn deliver(event: Event, out: &mut OutBuf, proto: Proto, pool: &Pool, id: u64) -> Flow {
    match event {
        Event::Messages(frames) => {
            for frame in frames {
                if proto == Proto::Resp3 {
                    // The same array, as a push frame: only the type byte
                    // differs.
                    out.extend_from_slice(b">");
                    out.push(frame.slice(1..));
                } else {
                    out.push(frame);
                }
            }
            if out.len() > pool.client_output_limit {
                overflow(pool, id);
                return Flow::Close;
            }
            Flow::Go
        }
        Event::Overflow => {
            overflow(pool, id);
            Flow::Close
        }
        Event::Failed => Flow::Finish,
    }
}

fn overflow(pool: &Pool, id: u64) {
    tracing::warn!(client = id, pool = %pool.name, limit = pool.client_output_limit,
        "subscriber does not read its messages: over client_output_limit, disconnected");
}

/// Redis 7.0's refusal of a command in RESP2 subscribed mode, if `cmd` is
/// one it refuses.
pub fn refusal(subscribed: bool, proto: Proto, cmd: &Command) -> Option<String> {
    if !subscribed || proto != Proto::Resp2 {
        return None;
    }
    let allowed = [
        "subscribe",
        "psubscribe",
        "ssubscribe",
        "unsubscribe",
        "punsubscribe",
        "sunsubscribe",
        "ping",
        "quit",
        "reset",
    ];
    if allowed.contains(&cmd.name) {
        return None;
    }
    Some(format!(
        "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
        cmd.name
    ))
}

/// PING's reply in RESP2 subscribed mode: `pong` and the message (empty
/// without one), as an array.
pub fn pong(message: Option<&Bytes>) -> Pending {
    let value = Value::Array(vec![
        Value::Bulk(Bytes::from_static(b"pong")),
        Value::Bulk(message.cloned().unwrap_or_default()),
    ]);
    encoded(&value, Proto::Resp2)
}

fn encoded(value: &Value, proto: Proto) -> Pending {
    let mut out = BytesMut::new();
    encode(value, proto, &mut out);
    Pending::Ready(out.freeze())
}

#[cfg(test)]
mod tests;
