//! Accepting connections without spinning: when `accept` fails (out of
//! file descriptors, out of memory), the pending connection stays in the
//! backlog and the listener stays readable, so retrying at once would burn
//! a core. Each failure in a row doubles a pause, from 5 ms up to 1 s.

use crate::proxy::descriptors;
use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A listening socket: TCP, or a pool's unix socket.
pub trait Listening: Send + 'static {
    type Stream;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Stream>>;
}

impl Listening for TcpListener {
    type Stream = TcpStream;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<TcpStream>> {
        TcpListener::poll_accept(self, cx).map_ok(|(stream, _)| stream)
    }
}

impl Listening for UnixListener {
    type Stream = UnixStream;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<UnixStream>> {
        UnixListener::poll_accept(self, cx).map_ok(|(stream, _)| stream)
    }
}

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
/// Refusals for want of descriptors are logged this often at most.
const TELL_EVERY: Duration = Duration::from_secs(10);

/// Accepts from one listener, pausing after failures.
pub struct Acceptor<L: Listening = TcpListener> {
    listener: L,
    /// What the listener is for, in logs.
    what: &'static str,
    pause: Duration,
    /// When refusing for want of descriptors was last logged.
    told_short: Option<Instant>,
}

impl<L: Listening> Acceptor<L> {
    pub fn new(listener: L, what: &'static str) -> Acceptor<L> {
        Acceptor {
            listener,
            what,
            pause: FIRST_PAUSE,
            told_short: None,
        }
    }

    /// The next connection; failures are logged and waited out. One taken
    /// on the spare descriptor (the process had none left) is closed at
    /// once: a stats or metrics reader tries again.
    pub async fn accept(&mut self) -> L::Stream {
        loop {
            match self.accept_client().await {
                Accepted::Open(stream) => return stream,
                Accepted::NoDescriptors(stream) => drop(stream),
            }
        }
    }

    /// The next connection, or one accepted on the spare descriptor when
    /// the process had none left, for the caller to turn away in words
    /// (`-ERR max number of clients reached`, as Redis) rather than leave
    /// it waiting in the backlog with no answer (review: redis-cli hung).
    pub async fn accept_client(&mut self) -> Accepted<L::Stream> {
        descriptors::restore_spare();
        loop {
            let e = match poll_fn(|cx| self.listener.poll_accept(cx)).await {
                Ok(stream) => {
                    self.pause = FIRST_PAUSE;
                    return Accepted::Open(stream);
                }
                Err(e) => e,
            };
            if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                descriptors::descriptors_short().notify_waiters();
                match self.accept_on_spare().await {
                    OnSpare::Taken(stream) => return Accepted::NoDescriptors(stream),
                    // Accept fails for want of a descriptor before it looks
                    // at the backlog: nobody was waiting, and the listener
                    // is now known idle.
                    OnSpare::NobodyWaiting => continue,
                    OnSpare::Failed => {}
                }
            }
            if self.pause == FIRST_PAUSE {
                tracing::warn!(listener = self.what, error = %e, "accept failed; backing off");
            }
            tokio::time::sleep(self.pause).await;
            self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        }
    }

    /// Accepts on the spare descriptor, if it is there, and opens the
    /// spare again unless a client now holds its number.
    async fn accept_on_spare(&mut self) -> OnSpare<L::Stream> {
        if !descriptors::release_spare() {
            return OnSpare::Failed;
        }
        // Unconstrained: a task out of its budget would be told "not
        // ready" and take the waiting client for nobody.
        let retry = tokio::task::unconstrained(poll_fn(|cx| match self.listener.poll_accept(cx) {
            Poll::Ready(accepted) => Poll::Ready(Some(accepted)),
            Poll::Pending => Poll::Ready(None),
        }))
        .await;
        match retry {
            Some(Ok(stream)) => {
                if self.told_short.is_none_or(|at| at.elapsed() >= TELL_EVERY) {
                    self.told_short = Some(Instant::now());
                    tracing::warn!(
                        listener = self.what,
                        "out of file descriptors: connections are refused"
                    );
                }
                OnSpare::Taken(stream)
            }
            None => {
                descriptors::restore_spare();
                OnSpare::NobodyWaiting
            }
            Some(Err(_)) => {
                descriptors::restore_spare();
                OnSpare::Failed
            }
        }
    }
}

/// What an accept on the spare descriptor gave.
enum OnSpare<S> {
    Taken(S),
    NobodyWaiting,
    Failed,
}

/// A connection taken from a listener.
pub enum Accepted<S> {
    Open(S),
    /// Taken on the spare descriptor: there is no room for it.
    NoDescriptors(S),
}
