//! The subscribe and unsubscribe commands of a client: confirmations
//! with Redis's counts, sent once the shards confirmed, and the places
//! under `max_subscriber_connections` the links they open take.

use super::link::Order;
use super::{introspect, Confirmed, Kind, Link, PubSub};
use crate::command::Command;
use crate::protocol::{encode, Proto, Value};
use crate::proxy::fanout::error_frame;
use crate::proxy::pending::Pending;
use crate::proxy::pool::Pool;
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Who a pub/sub command is for: the client's pool, protocol, id and
/// subscriptions, lent by its session (so that this module need not know
/// the session).
pub struct Client<'a> {
    pub pool: &'a Arc<Pool>,
    pub proto: Proto,
    pub id: u64,
    /// The session's backend-connection affinity.
    pub affinity: usize,
    pub subscriptions: &'a mut Option<Box<PubSub>>,
}

/// Runs a pub/sub command: the (P|S)(UN)SUBSCRIBEs here, PUBLISH and
/// PUBSUB in [`introspect`].
pub fn run(mut client: Client<'_>, cmd: &'static Command, args: &[Bytes], raw: Bytes) -> Pending {
    let client = &mut client;
    let names = args[1..].to_vec();
    match cmd.name {
        "subscribe" => subscribe(client, Kind::Channel, names),
        "psubscribe" => subscribe(client, Kind::Pattern, names),
        "ssubscribe" => subscribe(client, Kind::Shard, names),
        "unsubscribe" => unsubscribe(client, Kind::Channel, names),
        "punsubscribe" => unsubscribe(client, Kind::Pattern, names),
        "sunsubscribe" => unsubscribe(client, Kind::Shard, names),
        _ => introspect::run(client, cmd, args, raw),
    }
}

/// One confirmation: `[command, name or null, count]`, a push in RESP3.
pub(super) fn confirmation(
    command: &str,
    name: Option<&Bytes>,
    count: usize,
    proto: Proto,
    out: &mut BytesMut,
) {
    let value = Value::Push(vec![
        Value::Bulk(Bytes::copy_from_slice(command.as_bytes())),
        name.map_or(Value::Null, |n| Value::Bulk(n.clone())),
        Value::Integer(count as i64),
    ]);
    encode(&value, proto, out);
}

/// How long a subscription may wait for its shard's confirmation.
pub(super) fn confirm_deadline(pool: &Pool) -> Duration {
    let table = pool.router.load();
    let connect = table.shards.first().map_or(Duration::from_secs(3), |s| {
        s.backend.settings().connect_timeout()
    });
    2 * connect + Duration::from_secs(1)
}

fn subscribe(client: &mut Client<'_>, kind: Kind, names: Vec<Bytes>) -> Pending {
    let pool = client.pool.clone();
    let ps = client
        .subscriptions
        .get_or_insert_with(|| Box::new(PubSub::new(&pool)));
    let table = pool.router.load_full();
    ps.follow(&table);
    if let Err(refusal) = ps.room_for(kind, &names, &table) {
        // Nothing was subscribed: the client stays in the mode it was in.
        if ps.total() == 0 {
            *client.subscriptions = None;
        }
        return Pending::Ready(error_frame(&refusal));
    }
    let mut out = BytesMut::new();
    let mut new: HashMap<usize, Vec<Bytes>> = HashMap::new();
    for name in names {
        // Held for the subscription's life: a copy, not a slice that would
        // keep the whole read buffer it arrived in alive.
        let name = Bytes::copy_from_slice(&name);
        if ps.names[kind as usize].insert(name.clone()) {
            for i in PubSub::shards_of(kind, &name, &table) {
                new.entry(i).or_default().push(name.clone());
            }
        }
        confirmation(
            kind.subscribe_command(),
            Some(&name),
            ps.count(kind),
            client.proto,
            &mut out,
        );
    }
    if new.is_empty() {
        return Pending::Ready(out.freeze());
    }
    let mut acks = Vec::with_capacity(new.len());
    for (i, names) in new {
        let (ack, confirmed) = oneshot::channel();
        ps.link(&table, i).order(Order::Subscribe {
            kind,
            names,
            ack: Some(ack),
        });
        acks.push((table.shard(i).name, confirmed));
    }
    let unconfirmed = ps.unconfirmed.clone();
    let failed = ps.failed.clone();
    unconfirmed.fetch_add(1, Ordering::Relaxed);
    let deadline = confirm_deadline(&pool);
    Pending::Assembling(Box::pin(async move {
        let mut reply = out.freeze();
        for (shard, confirmed) in acks {
            let error = match tokio::time::timeout(deadline, confirmed).await {
                // Dropped: the client unsubscribed meanwhile.
                Ok(Ok(Ok(()))) | Ok(Err(_)) => continue,
                Ok(Ok(Err(e))) => e,
                Err(_) => format!("no confirmation within {} ms", deadline.as_millis()),
            };
            tracing::warn!(shard = %shard, error = %error, "subscription failed; closing the client");
            let mut text = BytesMut::new();
            crate::protocol::encode_error(
                &format!("ERR shard '{shard}': cannot subscribe: {error}"),
                &mut text,
            );
            failed.store(true, Ordering::Relaxed);
            reply = text.freeze();
            break;
        }
        unconfirmed.fetch_sub(1, Ordering::Relaxed);
        reply
    }))
}

pub(super) fn unsubscribe(client: &mut Client<'_>, kind: Kind, mut names: Vec<Bytes>) -> Pending {
    let proto = client.proto;
    let mut out = BytesMut::new();
    let Some(ps) = client.subscriptions.as_mut() else {
        if names.is_empty() {
            confirmation(kind.unsubscribe_command(), None, 0, proto, &mut out);
        }
        for name in &names {
            confirmation(kind.unsubscribe_command(), Some(name), 0, proto, &mut out);
        }
        return Pending::Ready(out.freeze());
    };
    let table = client.pool.router.load_full();
    ps.follow(&table);
    if names.is_empty() {
        names = ps.names[kind as usize].iter().cloned().collect();
        if names.is_empty() {
            confirmation(
                kind.unsubscribe_command(),
                None,
                ps.count(kind),
                proto,
                &mut out,
            );
        }
    }
    let mut gone: HashMap<usize, Vec<Bytes>> = HashMap::new();
    for name in names {
        if ps.names[kind as usize].shift_remove(&name) {
            for i in PubSub::shards_of(kind, &name, &table) {
                gone.entry(i).or_default().push(name.clone());
            }
        }
        confirmation(
            kind.unsubscribe_command(),
            Some(&name),
            ps.count(kind),
            proto,
            &mut out,
        );
    }
    // Confirmed once the shards have let go, as Redis confirms once it has:
    // a PUBLISH sent after the confirmation must not count this client.
    let mut acks = Vec::new();
    for (i, names) in gone {
        let shard = table.shard(i).name;
        if ps.links.contains_key(&shard) {
            ps.drain(kind, &names);
            let link = ps.links.get_mut(&shard).expect("checked above");
            acks.push(link.unsubscribe(kind, names));
        }
    }
    // A link left holding nothing is kept for the client's next
    // subscription on its shard (closed at once, a client toggling one
    // channel opened a connection per toggle: review), unless the cap is
    // three quarters used: then it closes once its shard confirmed, and
    // gives its place back.
    let idle = if client.pool.subscribers.under_pressure() {
        ps.links
            .extract_if(|_, link| link.held.iter().all(HashSet::is_empty))
            .map(|(_, link)| link)
            .collect()
    } else {
        Vec::new()
    };
    // Out of subscribed mode once nothing is held.
    let leaving = (ps.total() == 0).then(|| client.subscriptions.take());
    after_confirmations(
        acks,
        leaving.flatten(),
        idle,
        client.pool,
        out.freeze(),
        proto,
    )
}

/// `reply` once every shard confirmed (or the confirmation deadline
/// passed). Links the session let go of (`leaving`, and `idle` ones whose
/// confirmations are among `acks`) close only then: Redis drops a closed
/// connection's subscriptions later, when it notices, and a PUBLISH sent
/// right after the reply could still count this client. The messages the
/// leaving links received before their shard confirmed come first, in
/// `proto`; while the session holds its `PubSub`, it delivers them itself.
pub(super) fn after_confirmations(
    acks: Vec<oneshot::Receiver<Confirmed>>,
    leaving: Option<Box<PubSub>>,
    idle: Vec<Link>,
    pool: &Pool,
    reply: Bytes,
    proto: Proto,
) -> Pending {
    if acks.is_empty() {
        return Pending::Ready(reply);
    }
    let deadline = confirm_deadline(pool);
    Pending::Assembling(Box::pin(async move {
        // Closed as the reply is handed over, whichever way it returns.
        let _idle = idle;
        if let Some(mut leaving) = leaving {
            let mut messages = leaving.drain_messages(acks, deadline, proto).await;
            drop(leaving);
            if !messages.is_empty() {
                messages.extend_from_slice(&reply);
                return Bytes::from(messages);
            }
            return reply;
        }
        // Any answer will do: a shard that failed or dropped the link no
        // longer holds the subscription either.
        for confirmed in acks {
            let _ = tokio::time::timeout(deadline, confirmed).await;
        }
        reply
    }))
}
