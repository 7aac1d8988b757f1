//! Accepting connections without spinning: when `accept` fails (out of
//! file descriptors, out of memory), the pending connection stays in the
//! backlog and the listener stays readable, so retrying at once would burn
//! a core. Each failure in a row doubles a pause, from 5 ms up to 1 s.

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Notify;

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

/// Raised when an accept fails for want of file descriptors: sessions
/// whose client closed its connection while replies were owed (a stalled
/// backend, no `timeout`) let go of their sockets, as Redis drops a client
/// at once when it closes. Their requests still run on the backends.
static DESCRIPTORS_SHORT: Notify = Notify::const_new();

/// Resolves the next time the proxy runs out of file descriptors.
pub fn descriptors_short() -> &'static Notify {
    &DESCRIPTORS_SHORT
}

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// Accepts from one listener, pausing after failures.
pub struct Acceptor<L: Listening = TcpListener> {
    listener: L,
    /// What the listener is for, in logs.
    what: &'static str,
    pause: Duration,
}

impl<L: Listening> Acceptor<L> {
    pub fn new(listener: L, what: &'static str) -> Acceptor<L> {
        Acceptor {
            listener,
            what,
            pause: FIRST_PAUSE,
        }
    }

    /// The next connection; failures are logged and waited out.
    pub async fn accept(&mut self) -> L::Stream {
        loop {
            match poll_fn(|cx| self.listener.poll_accept(cx)).await {
                Ok(stream) => {
                    self.pause = FIRST_PAUSE;
                    return stream;
                }
                Err(e) => {
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        DESCRIPTORS_SHORT.notify_waiters();
                    }
                    if self.pause == FIRST_PAUSE {
                        tracing::warn!(listener = self.what, error = %e, "accept failed; backing off");
                    }
                    tokio::time::sleep(self.pause).await;
                    self.pause = (self.pause * 2).min(LONGEST_PAUSE);
                }
            }
        }
    }
}
