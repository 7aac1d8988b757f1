//! The sockets the proxy's hot loops drive by hand: plain TCP (or a unix
//! socket), or TLS over TCP, behind one small trait so each loop is
//! compiled once per kind and the plain one stays exactly what it was tuned
//! to (readiness slots and non-blocking reads and writes on the socket
//! itself).
//!
//! TLS differs in two ways the trait makes explicit. Its reads can find
//! plaintext rustls already decrypted, with nothing left on the socket, so
//! readiness asks rustls first. And rustls holds encrypted bytes the socket
//! has not taken yet, so "everything is written" means the output buffer is
//! empty *and* rustls holds nothing ([`Io::holds_output`]).

use crate::proxy::outbuf::OutBuf;
use crate::tls::{ClientStream, ServerStream};
use bytes::BytesMut;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsFd;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// A connection the proxy reads and writes without blocking.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Ready when a read may return data (or the end).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Ready when the socket may take more bytes.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Writes from `out` what the socket takes now; the number of bytes of
    /// `out` taken. Never waits; `WouldBlock` is not an error.
    ///
    /// # Errors
    /// The socket failed.
    fn write_now(&mut self, out: &mut OutBuf) -> io::Result<usize>;
    /// True while bytes already taken from an [`OutBuf`] still wait to
    /// reach the socket (TLS records rustls holds).
    fn holds_output(&self) -> bool;
    /// Bytes the peer has sent that a read has not taken yet, as far as
    /// the socket tells.
    fn unread(&self) -> usize;
    /// True once the peer has closed its side (or the connection failed),
    /// even with bytes it sent before still unread: for a session that
    /// reads nothing while its window is shut.
    fn peer_closed(&self) -> bool;
}

/// True once the peer has sent its FIN or the connection failed,
/// whatever is still unread before it (`POLLRDHUP`, asked without waiting).
fn peer_closed(socket: &impl AsFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(socket, PollFlags::RDHUP)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&now)) {
        Ok(_) => fds[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR),
        Err(_) => false,
    }
}

/// [`Io`] on a plain socket: TCP, or a unix socket (a `listen` path).
macro_rules! plain_io {
    ($stream:ty) => {
        impl Io for $stream {
            #[inline]
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_read_ready(self, cx)
            }

            #[inline]
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_write_ready(self, cx)
            }

            #[inline]
            fn write_now(&mut self, out: &mut OutBuf) -> io::Result<usize> {
                let mut written = 0;
                while !out.is_empty() {
                    // One piece (the common case) goes out with a plain
                    // write, which the kernel takes a little cheaper than a
                    // vectored one.
                    match out.write_now(|slices| match slices {
                        [one] => self.try_write(one),
                        _ => self.try_write_vectored(slices),
                    }) {
                        Ok(n) => written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(written)
            }

            #[inline]
            fn holds_output(&self) -> bool {
                false
            }

            fn unread(&self) -> usize {
                rustix::io::ioctl_fionread(self)
                    .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
            }

            fn peer_closed(&self) -> bool {
                peer_closed(self)
            }
        }
    };
}

plain_io!(TcpStream);
plain_io!(UnixStream);

/// The TCP socket under a TLS stream, as `std::io::Write` for rustls's
/// `write_tls`: non-blocking writes, `WouldBlock` when full.
struct NonBlocking<'a>(&'a TcpStream);

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The TLS side of [`Io`], the same for both ends (client and server
/// connections differ only in type).
macro_rules! tls_io {
    ($stream:ty) => {
        impl Io for $stream {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let (tcp, conn) = self.get_ref();
                // Plaintext decrypted by an earlier read and not taken yet
                // (the read buffer was full), or the peer's close_notify:
                // a read answers now, whatever the socket says.
                if !conn.wants_read() {
                    return Poll::Ready(Ok(()));
                }
                tcp.poll_read_ready(cx)
            }

            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_ref().0.poll_write_ready(cx)
            }

            fn write_now(&mut self, out: &mut OutBuf) -> io::Result<usize> {
                let (tcp, conn) = self.get_mut();
                let mut taken = 0;
                loop {
                    // Records already made go first; more plaintext is
                    // taken only once the socket took them, so rustls
                    // holds at most one round of records.
                    while conn.wants_write() {
                        match conn.write_tls(&mut NonBlocking(tcp)) {
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(taken),
                            Err(e) => return Err(e),
                        }
                    }
                    if out.is_empty() {
                        return Ok(taken);
                    }
                    let n = out.write_now(|slices| conn.writer().write_vectored(slices))?;
                    if n == 0 {
                        return Ok(taken);
                    }
                    taken += n;
                }
            }

            fn holds_output(&self) -> bool {
                self.get_ref().1.wants_write()
            }

            /// The records the socket holds, counted as if plaintext (a
            /// record's few bytes of framing more), plus one for plaintext
            /// rustls decrypted and a read has not taken: enough to tell a
            /// client still writing from one that is done.
            fn unread(&self) -> usize {
                let (tcp, conn) = self.get_ref();
                let on_socket = tcp.unread();
                on_socket.saturating_add(usize::from(!conn.wants_read()))
            }

            fn peer_closed(&self) -> bool {
                peer_closed(self.get_ref().0)
            }
        }
    };
}

tls_io!(ServerStream);
tls_io!(ClientStream);

/// A connection to a backend: TLS when the pool says `server_tls`.
pub(crate) enum BackendStream {
    Plain(TcpStream),
    Tls(Box<ClientStream>),
    /// A server on a unix socket (`/path/to/socket:weight`).
    Unix(UnixStream),
}

/// Reads into `buf` what has arrived, registering for a wake-up when
/// nothing has: the poll form of `read_buf`, for loops that also wait for
/// other things on the same stream.
#[inline]
pub(crate) fn poll_read_buf<S: Io, B: bytes::BufMut>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut B,
) -> Poll<io::Result<usize>> {
    tokio_util::io::poll_read_buf(std::pin::Pin::new(stream), cx, buf)
}

/// Reads what has arrived into `buf`, or, with `unsent` bytes waiting,
/// notices room to write: both need the one stream, so a loop that waits
/// on other things too polls them together. `Some(read)` for a read,
/// `None` for writable, `Some(Err(_))` when waiting to write failed.
#[inline]
pub(crate) fn poll_read_or_writable<S: Io>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    unsent: bool,
) -> Poll<Option<io::Result<usize>>> {
    if let Poll::Ready(read) = poll_read_buf(stream, cx, buf) {
        return Poll::Ready(Some(read));
    }
    if unsent {
        if let Poll::Ready(ready) = stream.poll_write_ready(cx) {
            return Poll::Ready(ready.err().map(Err));
        }
    }
    Poll::Pending
}
