//! One subscriber connection: a task that holds one session's channels,
//! patterns and shard channels on one shard's master, and hands the
//! messages it receives to the session.
//!
//! The task remembers everything it holds, so a new connection (the old
//! one broke, or the session moved the link to a new master after a
//! failover) subscribes to all of it again; the confirmations Redis sends
//! are counted and swallowed here, since the session builds the client's
//! own. It ends, closing its connection, when the session drops its
//! handle: the backend forgets the subscriptions at once.

use super::Kind;
use crate::protocol::{encode_request, parse_reply_bytes, reply_frame_len, Proto, Value};
use crate::proxy::backend::{connect_to, BackendSettings};
use crate::proxy::outbuf::OutBuf;
use crate::proxy::router::ShardName;
use crate::proxy::stream::{poll_read_or_writable, BackendStream, Io};
use bytes::{Bytes, BytesMut};
use std::collections::{HashSet, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Pause after a failed connect before the next attempt.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 16 * 1024;

/// Where a subscription's confirmation goes: `Err` carries why the
/// backend could not take it.
pub(super) type Ack = oneshot::Sender<Result<(), String>>;

/// What the session asks of a link.
pub(super) enum Order {
    /// Subscribe to names the link does not hold yet; `ack` is answered
    /// once the backend confirmed them.
    Subscribe {
        kind: Kind,
        names: Vec<Bytes>,
        ack: Option<Ack>,
    },
    /// Unsubscribe; once the backend confirmed it (or the connection is
    /// gone, which drops the subscriptions anyway), [`Event::Left`] says
    /// so behind the messages that came before the confirmation.
    Unsubscribe {
        kind: Kind,
        names: Vec<Bytes>,
        ack: Option<Ack>,
    },
    /// The shard has a new master: subscribe there, leave the old one.
    Move(Arc<str>),
}

/// What a link tells its session.
pub(super) enum Event {
    /// A `message`, `pmessage` or `smessage` frame, as RESP2.
    Push(Bytes),
    /// The messages waiting for the session passed the client's output
    /// limit; the link stopped.
    Overflow,
    /// The backend let go of `names`: every message it sent for them came
    /// before this, on the same queue, so the session can deliver those
    /// and then confirm the unsubscription (`ack`), as Redis does on one
    /// connection.
    Left {
        kind: Kind,
        names: Vec<Bytes>,
        ack: Option<Ack>,
    },
}

impl Sink {
    /// Tells the session the backend let go of `names`.
    fn left(&self, kind: Kind, names: Vec<Bytes>, ack: Option<Ack>) {
        let _ = self.events.send(Event::Left { kind, names, ack });
    }
}

/// Where a link's messages go, shared by the links of one session.
#[derive(Clone)]
pub(super) struct Sink {
    pub events: mpsc::UnboundedSender<Event>,
    /// Bytes sent as `Event::Push` and not taken by the session yet.
    pub queued: Arc<AtomicUsize>,
    pub limit: usize,
}

/// A link as its task knows it.
pub(super) struct Spec {
    pub shard: ShardName,
    pub addr: Arc<str>,
    pub settings: Arc<BackendSettings>,
    pub sink: Sink,
    /// Set when the link was opened on the stand-in for slots no known
    /// server owns: its name (the `addr` above until a move) and why.
    /// Nothing connects to it; a subscription gets the reason.
    pub stand_in: Option<(Arc<str>, Arc<str>)>,
}

impl Spec {
    /// Why the current address is no server's, if it is the stand-in's.
    fn unplaced(&self) -> Option<&Arc<str>> {
        let (name, reason) = self.stand_in.as_ref()?;
        (*name == self.addr).then_some(reason)
    }
}

/// Why a connection ended.
enum Outcome {
    /// The session is gone, or the messages overflowed: the task ends.
    Done,
    Moved(Arc<str>),
    Broken(String),
}

/// The names the link holds, per kind, and the confirmations it waits for.
#[derive(Default)]
struct Held {
    names: [HashSet<Bytes>; 3],
    /// Acks of subscriptions made while disconnected: answered once a
    /// connection subscribed everything.
    waiting: Vec<Ack>,
}

impl Held {
    /// Applies an order received while there is no connection; `Some`
    /// new address for a move.
    fn apply_offline(&mut self, order: Order, sink: &Sink) -> Option<Arc<str>> {
        match order {
            Order::Subscribe { kind, names, ack } => {
                self.names[kind as usize].extend(names);
                self.waiting.extend(ack);
                None
            }
            Order::Unsubscribe { kind, names, ack } => {
                for name in &names {
                    self.names[kind as usize].remove(name);
                }
                sink.left(kind, names, ack);
                None
            }
            Order::Move(addr) => Some(addr),
        }
    }
}

/// Runs the link until the session drops its handle or the messages
/// overflow, reconnecting (with backoff) whenever the connection breaks.
pub(super) async fn run(mut spec: Spec, mut orders: mpsc::UnboundedReceiver<Order>) {
    let mut held = Held::default();
    let mut backoff = MIN_BACKOFF;
    loop {
        let (addr, settings) = (spec.addr.clone(), spec.settings.clone());
        let unplaced = spec.unplaced().cloned();
        let connecting = async move {
            match unplaced {
                Some(reason) => Err(reason.to_string()),
                None => connect_to(&addr, &settings, Proto::Resp2, None).await,
            }
        };
        tokio::pin!(connecting);
        let connected = loop {
            tokio::select! {
                result = &mut connecting => break Some(result),
                order = orders.recv() => match order {
                    None => return,
                    Some(order) => if let Some(addr) = held.apply_offline(order, &spec.sink) {
                        spec.addr = addr;
                        break None;
                    },
                },
            }
        };
        let outcome = match connected {
            // Moved while connecting: connect to the new master at once.
            None => continue,
            Some(Ok(stream)) => {
                backoff = MIN_BACKOFF;
                let mut expected = VecDeque::new();
                let outcome = match stream {
                    BackendStream::Plain(tcp) => {
                        serve(&spec, tcp, &mut held, &mut expected, &mut orders).await
                    }
                    BackendStream::Tls(tls) => {
                        serve(&spec, *tls, &mut held, &mut expected, &mut orders).await
                    }
                    BackendStream::Unix(unix) => {
                        serve(&spec, unix, &mut held, &mut expected, &mut orders).await
                    }
                };
                // Whoever waits for a subscription's confirmation gets it
                // from the next connection, which subscribes to everything
                // held; an unsubscription went with the connection.
                for pending in expected {
                    match pending.left {
                        Some((kind, names)) => {
                            let ack = pending.acks.into_iter().next();
                            spec.sink.left(kind, names, ack);
                        }
                        None => held.waiting.extend(pending.acks),
                    }
                }
                outcome
            }
            Some(Err(reason)) => {
                // A new subscription fails at once, as a request to a
                // backend that cannot be reached does; the ones already
                // confirmed are made again once a connection succeeds.
                let error = match spec.unplaced() {
                    Some(_) => reason.clone(),
                    None => format!("backend {} is unavailable: {reason}", spec.addr),
                };
                for ack in held.waiting.drain(..) {
                    let _ = ack.send(Err(error.clone()));
                }
                Outcome::Broken(reason)
            }
        };
        match outcome {
            Outcome::Done => return,
            Outcome::Moved(addr) => {
                tracing::info!(shard = %spec.shard, old_master = %spec.addr, new_master = %addr,
                    "subscriptions follow the shard to its new master");
                spec.addr = addr;
            }
            Outcome::Broken(reason) => {
                // The stand-in is no server: nothing to retry until the
                // shard moves to one, but a new subscription is refused
                // at once (it would wait for the retry otherwise).
                let standing_in = spec.unplaced().is_some();
                if !standing_in {
                    tracing::warn!(shard = %spec.shard, backend = %spec.addr, reason = %reason,
                        "subscriber connection lost; subscribing again");
                }
                let retry = tokio::time::sleep(if standing_in { MAX_BACKOFF } else { backoff });
                tokio::pin!(retry);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                loop {
                    tokio::select! {
                        () = &mut retry => break,
                        order = orders.recv() => match order {
                            None => return,
                            Some(order) => {
                                if let Some(addr) = held.apply_offline(order, &spec.sink) {
                                    spec.addr = addr;
                                    break;
                                }
                                if standing_in {
                                    break;
                                }
                            }
                        },
                    }
                }
            }
        }
    }
}

/// Confirmations still expected for one command sent, and who waits for
/// the last of them.
struct Expected {
    remaining: usize,
    acks: Vec<Ack>,
    /// For an unsubscription, what it let go of: told to the session
    /// ([`Event::Left`]) rather than answered directly.
    left: Option<(Kind, Vec<Bytes>)>,
}

impl Expected {
    /// The command is done (confirmed, or refused with `error`).
    fn done(self, sink: &Sink, error: Option<&str>) {
        match self.left {
            Some((kind, names)) => sink.left(kind, names, self.acks.into_iter().next()),
            None => self.acks.into_iter().for_each(|ack| {
                let _ = ack.send(error.map_or(Ok(()), |e| Err(e.to_string())));
            }),
        }
    }
}

/// Subscribes everything held on a new connection, then forwards messages
/// and carries out orders until the connection ends.
async fn serve<S: Io>(
    spec: &Spec,
    mut stream: S,
    held: &mut Held,
    expected: &mut VecDeque<Expected>,
    orders: &mut mpsc::UnboundedReceiver<Order>,
) -> Outcome {
    let mut out = OutBuf::for_requests();
    for kind in Kind::ALL {
        let names: Vec<Bytes> = held.names[kind as usize].iter().cloned().collect();
        if !names.is_empty() {
            expected.push_back(send(&mut out, kind.subscribe_command(), &names, None));
        }
    }
    let waiting = std::mem::take(&mut held.waiting);
    match expected.back_mut() {
        Some(last) => last.acks.extend(waiting),
        None => waiting.into_iter().for_each(|ack| {
            let _ = ack.send(Ok(()));
        }),
    }
    let mut input = BytesMut::new();
    loop {
        if let Err(e) = stream.write_now(&mut out) {
            return Outcome::Broken(e.to_string());
        }
        let unsent = !out.is_empty() || stream.holds_output();
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        tokio::select! {
            // Reads, then room to write, polled together: both need the
            // one stream.
            io = poll_fn(|cx| poll_read_or_writable(&mut stream, cx, &mut input, unsent)) => match io {
                // Writable (or failing: the next write tells).
                None => {}
                Some(Ok(0)) => return Outcome::Broken("closed by the backend".into()),
                Some(Ok(_)) => {
                    if let Err(outcome) = take_frames(spec, &mut input, expected) {
                        return outcome;
                    }
                }
                Some(Err(e)) => return Outcome::Broken(e.to_string()),
            },
            order = orders.recv() => match order {
                None => return Outcome::Done,
                Some(Order::Move(addr)) => return Outcome::Moved(addr),
                Some(Order::Subscribe { kind, names, ack }) => {
                    held.names[kind as usize].extend(names.iter().cloned());
                    expected.push_back(send(&mut out, kind.subscribe_command(), &names, ack));
                }
                Some(Order::Unsubscribe { kind, names, ack }) => {
                    for name in &names {
                        held.names[kind as usize].remove(name);
                    }
                    let mut sent = send(&mut out, kind.unsubscribe_command(), &names, ack);
                    sent.left = Some((kind, names));
                    expected.push_back(sent);
                }
            },
        }
    }
}

/// Appends `command names...` to `out`; the confirmations it will bring.
fn send(out: &mut OutBuf, command: &str, names: &[Bytes], ack: Option<Ack>) -> Expected {
    let mut args: Vec<&[u8]> = Vec::with_capacity(names.len() + 1);
    args.push(command.as_bytes());
    args.extend(names.iter().map(|n| &n[..]));
    out.encode_with(|buf| encode_request(&args, buf));
    Expected {
        remaining: names.len(),
        acks: ack.into_iter().collect(),
        left: None,
    }
}

/// Handles the complete frames at the head of `input`: messages go to the
/// session, confirmations and errors answer the commands sent.
fn take_frames(
    spec: &Spec,
    input: &mut BytesMut,
    expected: &mut VecDeque<Expected>,
) -> Result<(), Outcome> {
    loop {
        let len = match reply_frame_len(input) {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(()),
            Err(e) => return Err(Outcome::Broken(format!("bad reply: {e}"))),
        };
        let frame = input.split_to(len).freeze();
        match classify(&frame) {
            Frame::Message => {
                let queued = spec.sink.queued.fetch_add(len, Ordering::Relaxed) + len;
                if queued > spec.sink.limit {
                    let _ = spec.sink.events.send(Event::Overflow);
                    return Err(Outcome::Done);
                }
                if spec.sink.events.send(Event::Push(frame)).is_err() {
                    return Err(Outcome::Done);
                }
            }
            Frame::Confirmation => {
                if let Some(front) = expected.front_mut() {
                    front.remaining = front.remaining.saturating_sub(1);
                    if front.remaining == 0 {
                        let done = expected.pop_front().expect("front exists");
                        done.done(&spec.sink, None);
                    }
                }
            }
            Frame::Error(text) => {
                // A refused command sends one error instead of its
                // confirmations.
                if let Some(done) = expected.pop_front() {
                    done.done(&spec.sink, Some(&text));
                }
            }
            Frame::Other => {}
        }
    }
}

enum Frame {
    Message,
    Confirmation,
    Error(String),
    Other,
}

fn classify(frame: &Bytes) -> Frame {
    match parse_reply_bytes(frame) {
        Ok(Value::Array(items) | Value::Push(items)) => match items.first() {
            Some(Value::Bulk(kind)) => match &kind[..] {
                b"message" | b"pmessage" | b"smessage" => Frame::Message,
                b"subscribe" | b"psubscribe" | b"ssubscribe" | b"unsubscribe" | b"punsubscribe"
                | b"sunsubscribe" => Frame::Confirmation,
                _ => Frame::Other,
            },
            _ => Frame::Other,
        },
        Ok(Value::Error(text)) => Frame::Error(String::from_utf8_lossy(&text).into_owned()),
        _ => Frame::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        classify(&Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn messages_confirmations_and_errors_are_told_apart() {
        assert!(matches!(
            frame("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nm\r\n"),
            Frame::Message
        ));
        assert!(matches!(
            frame("*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\na\r\n$1\r\nm\r\n"),
            Frame::Message
        ));
        assert!(matches!(
            frame("*3\r\n$8\r\nsmessage\r\n$1\r\na\r\n$1\r\nm\r\n"),
            Frame::Message
        ));
        assert!(matches!(
            frame("*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n"),
            Frame::Confirmation
        ));
        assert!(matches!(frame("-NOPERM no\r\n"), Frame::Error(e) if e == "NOPERM no"));
        assert!(matches!(frame("+OK\r\n"), Frame::Other));
    }

    #[test]
    fn orders_while_disconnected_change_what_is_held() {
        let mut held = Held::default();
        let (events, mut told) = mpsc::unbounded_channel();
        let sink = Sink {
            events,
            queued: Arc::new(AtomicUsize::new(0)),
            limit: 1 << 20,
        };
        let (ack, _confirmed) = oneshot::channel();
        let names = vec![Bytes::from("a"), Bytes::from("b")];
        assert!(held
            .apply_offline(
                Order::Subscribe {
                    kind: Kind::Channel,
                    names,
                    ack: Some(ack),
                },
                &sink
            )
            .is_none());
        held.apply_offline(
            Order::Unsubscribe {
                kind: Kind::Channel,
                names: vec![Bytes::from("a")],
                ack: None,
            },
            &sink,
        );
        assert_eq!(held.names[Kind::Channel as usize].len(), 1);
        // Nothing to wait for offline: the session is told at once.
        assert!(
            matches!(told.try_recv(), Ok(Event::Left { names, .. }) if names == [Bytes::from("a")])
        );
        assert_eq!(held.waiting.len(), 1);
        let moved = held.apply_offline(Order::Move(Arc::from("127.0.0.1:2")), &sink);
        assert_eq!(moved.as_deref(), Some("127.0.0.1:2"));
    }
}
