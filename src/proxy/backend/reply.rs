//! One-shot reply channels whose slots are reused.
//!
//! Every forwarded request needs a place its reply lands in. A fresh
//! `tokio::sync::oneshot` per request costs an allocation and a free, which
//! measured about a tenth of the proxy's user-space instructions per
//! pipelined request. Here a channel is a slot (`Arc<Slot>`) taken from a
//! per-thread spare list and put back once both ends are done with it, so a
//! steady stream of requests allocates nothing.
//!
//! The semantics are those of a oneshot: the sender sends at most once; a
//! sender dropped without sending makes the receiver resolve to
//! [`Dropped`]; a reply sent to a receiver that is gone is dropped.

use super::Reply;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// How many spare slots a thread keeps: enough for every request in flight
/// of a busy worker, small next to its buffers (a slot is about 80 bytes).
const SPARE_MAX: usize = 4096;

thread_local! {
    static SPARE: RefCell<Vec<Arc<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// The receiver's sender went away without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped;

/// The frame a client gets for what a receiver delivered: the backend's
/// reply as it is, or the error that says why there is none, naming
/// `shard`.
pub fn client_frame(reply: Result<Reply, Dropped>, shard: &str) -> bytes::Bytes {
    let reason = match reply {
        Ok(Ok(frame)) => return frame,
        Ok(Err(e)) => e.to_string(),
        Err(Dropped) => "request dropped".to_string(),
    };
    error_frame(shard, &reason)
}

/// The error a client gets when `shard` gave no reply, for `reason`.
pub fn error_frame(shard: &str, reason: &str) -> bytes::Bytes {
    let mut out = bytes::BytesMut::new();
    crate::protocol::encode_error(&format!("ERR shard '{shard}': {reason}"), &mut out);
    out.freeze()
}

/// Why [`ReplyReceiver::try_recv`] has no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Not yet.
    Empty,
    /// Never: the sender went away without one.
    Dropped,
}

/// A channel's shared state; a short lock, never held across an await.
struct Slot {
    state: Mutex<State>,
    /// The receiver's client closed its connection: it still gets the
    /// reply if it reads, but the backend's queue may weigh the request
    /// as one of a client that left.
    abandoned: AtomicBool,
}

enum State {
    /// No reply yet; the receiver's waker if it has looked.
    Waiting(Option<Waker>),
    Ready(Reply),
    /// The receiver took the reply.
    Taken,
    SenderGone,
    ReceiverGone,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still
        // consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }

    fn is_waiting(&self) -> bool {
        matches!(*self.lock(), State::Waiting(_))
    }
}

/// A new channel, on a spare slot of this thread when there is one.
pub fn channel() -> (ReplySender, ReplyReceiver) {
    let spare = SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten();
    let slot = spare.unwrap_or_else(|| {
        Arc::new(Slot {
            state: Mutex::new(State::Waiting(None)),
            abandoned: AtomicBool::new(false),
        })
    });
    (
        ReplySender {
            slot: Some(slot.clone()),
        },
        ReplyReceiver { slot: Some(slot) },
    )
}

/// The sending end: [`ReplySender::send`] once, or drop.
pub struct ReplySender {
    slot: Option<Arc<Slot>>,
}

impl ReplySender {
    /// Delivers the reply and wakes the receiver; a reply nobody waits for
    /// any more is dropped.
    pub fn send(mut self, reply: Reply) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut state = slot.lock();
        let waker = match &mut *state {
            State::Waiting(waker) => {
                let waker = waker.take();
                *state = State::Ready(reply);
                waker
            }
            _ => None,
        };
        drop(state);
        // Let go of the slot before waking: a receiver that runs at once on
        // another thread then finds itself the only holder and can reuse it.
        drop(slot);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// True once the receiver is gone, or its client closed its
    /// connection ([`ReplyReceiver::abandon`]).
    pub fn is_orphaned(&self) -> bool {
        // The receiver holds the only other reference while it lives.
        self.slot.as_ref().is_some_and(|slot| {
            Arc::strong_count(slot) == 1 || slot.abandoned.load(Ordering::Relaxed)
        })
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut state = slot.lock();
        if let State::Waiting(waker) = &mut *state {
            let waker = waker.take();
            *state = State::SenderGone;
            drop(state);
            drop(slot);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// Marks a receiver's request as its client's that closed
/// ([`ReplyReceiver::abandon_handle`]).
pub struct AbandonHandle(Arc<Slot>);

impl AbandonHandle {
    pub fn abandon(&self) {
        self.0.abandon();
    }

    /// True while the reply has not arrived.
    pub fn is_waiting(&self) -> bool {
        self.0.is_waiting()
    }
}

/// The receiving end: a future of the reply, or [`Dropped`].
pub struct ReplyReceiver {
    slot: Option<Arc<Slot>>,
}

impl ReplyReceiver {
    /// The client closed its connection (its replies are still written
    /// if it only half-closed): see [`ReplySender::is_orphaned`].
    pub fn abandon(&self) {
        if let Some(slot) = &self.slot {
            slot.abandon();
        }
    }

    /// True while the reply has not arrived.
    pub fn is_waiting(&self) -> bool {
        self.slot.as_deref().is_some_and(Slot::is_waiting)
    }

    /// A handle that can [`abandon`](Self::abandon) this receiver's
    /// request from elsewhere: the receivers of a split command's parts
    /// live inside the future that merges them.
    pub fn abandon_handle(&self) -> Option<AbandonHandle> {
        self.slot.clone().map(AbandonHandle)
    }

    /// The reply if it has arrived, without registering a waker.
    pub fn try_recv(&mut self) -> Result<Reply, TryRecvError> {
        let Some(slot) = &self.slot else {
            return Err(TryRecvError::Dropped);
        };
        let mut state = slot.lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Ready(reply) => Ok(reply),
            other @ State::Waiting(_) => {
                *state = other;
                Err(TryRecvError::Empty)
            }
            other => {
                *state = other;
                Err(TryRecvError::Dropped)
            }
        }
    }
}

impl Future for ReplyReceiver {
    type Output = Result<Reply, Dropped>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(slot) = &self.slot else {
            return Poll::Ready(Err(Dropped));
        };
        let mut state = slot.lock();
        match &mut *state {
            State::Ready(_) => match std::mem::replace(&mut *state, State::Taken) {
                State::Ready(reply) => Poll::Ready(Ok(reply)),
                _ => unreachable!("matched Ready"),
            },
            State::Waiting(waker) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            _ => Poll::Ready(Err(Dropped)),
        }
    }
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut state = slot.lock();
        // With the sender gone too, nobody else can reach the slot: it is
        // reset and kept for the next channel.
        if Arc::strong_count(&slot) == 1 {
            *state = State::Waiting(None);
            slot.abandoned.store(false, Ordering::Relaxed);
            drop(state);
            let _ = SPARE.try_with(|spare| {
                let mut spare = spare.borrow_mut();
                if spare.len() < SPARE_MAX {
                    spare.push(slot);
                }
            });
        } else if !matches!(*state, State::SenderGone) {
            // A reply still on its way is dropped on arrival.
            *state = State::ReceiverGone;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::backend::BackendError;
    use bytes::Bytes;

    fn ok(text: &'static str) -> Reply {
        Ok(Bytes::from_static(text.as_bytes()))
    }

    #[tokio::test]
    async fn a_sent_reply_is_received() {
        let (tx, rx) = channel();
        tx.send(ok("+OK\r\n"));
        assert_eq!(rx.await, Ok(ok("+OK\r\n")));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let (tx, rx) = channel();
        let waiter = tokio::spawn(rx);
        tokio::task::yield_now().await;
        tx.send(ok(":1\r\n"));
        assert_eq!(waiter.await.unwrap(), Ok(ok(":1\r\n")));
    }

    #[tokio::test]
    async fn a_sender_dropped_without_reply_ends_the_wait() {
        let (tx, rx) = channel();
        let waiter = tokio::spawn(rx);
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiter.await.unwrap(), Err(Dropped));
    }

    #[test]
    fn try_recv_tells_empty_from_dropped() {
        let (tx, mut rx) = channel();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        let error: Reply = Err(BackendError::Closed {
            addr: "127.0.0.1:1".into(),
            detail: String::new(),
        });
        tx.send(error.clone());
        assert_eq!(rx.try_recv(), Ok(error));
        let (tx, mut rx) = channel();
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Dropped));
    }

    #[test]
    fn a_reply_to_a_closed_receiver_is_dropped_at_once() {
        let (tx, rx) = channel();
        drop(rx);
        let frame = Bytes::from(b"+late\r\n".to_vec());
        tx.send(Ok(frame.clone()));
        // Nothing holds the late reply: its buffer is ours alone again.
        assert!(frame.is_unique());
    }

    /// Across threads, with slots recycled all the while: every receiver
    /// gets its own reply (or `Dropped` when its sender gave up), never
    /// another channel's, whatever the interleaving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_never_cross_channels_across_threads() {
        for round in 0..20u32 {
            let mut waiting = Vec::new();
            for i in 0..500u32 {
                let (tx, rx) = channel();
                let id = round * 1000 + i;
                tokio::spawn(async move {
                    if i % 7 == 0 {
                        drop(tx);
                    } else {
                        tokio::task::yield_now().await;
                        tx.send(Ok(Bytes::from(id.to_string())));
                    }
                });
                if i % 5 == 0 {
                    // Given up on before the reply: its slot must not be
                    // handed to a later channel while the send may still
                    // come.
                    drop(rx);
                } else {
                    waiting.push((id, i % 7 == 0, rx));
                }
            }
            for (id, dropped, rx) in waiting {
                let got = rx.await;
                if dropped {
                    assert_eq!(got, Err(Dropped), "channel {id}");
                } else {
                    assert_eq!(got, Ok(Ok(Bytes::from(id.to_string()))), "channel {id}");
                }
            }
        }
    }

    #[test]
    fn slots_are_reused_once_both_ends_are_done() {
        let (tx, mut rx) = channel();
        let first = Arc::as_ptr(rx.slot.as_ref().unwrap());
        tx.send(ok("+1\r\n"));
        assert_eq!(rx.try_recv(), Ok(ok("+1\r\n")));
        drop(rx);
        // The slot is back, reset: the next channel starts empty on it.
        let (tx, mut rx) = channel();
        assert_eq!(Arc::as_ptr(rx.slot.as_ref().unwrap()), first);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        // A receiver dropped while its sender lives does not give the slot
        // back, so a late reply can never land in another channel.
        drop(rx);
        let (_tx2, rx2) = channel();
        assert_ne!(Arc::as_ptr(rx2.slot.as_ref().unwrap()), first);
        tx.send(ok("+late\r\n"));
    }
}
