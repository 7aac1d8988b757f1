//! A small async Redis client for control connections (the watchdog's
//! checks and failover steps, the proxy's SCRIPT KILL): one connection, one
//! command at a time, every step bounded by a timeout.
//!
//! It speaks RESP through [`crate::protocol`] (`encode_request`,
//! `reply_frame_len`, `parse_reply`) rather than a client library: the
//! watchdog sends a handful of admin commands (PING, INFO, REPLICAOF,
//! CLIENT PAUSE) and must never hang on a Redis that stopped answering.

use crate::protocol::{encode_request, parse_reply, reply_frame_len, ProtocolError, Value};
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The value of `key` in INFO text (`key:value` lines): the watchdog's
/// checks, and the proxy's reading of its servers' `run_id` and version.
pub fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then_some(v.trim())
    })
}

/// The largest reply accepted unless raised ([`RedisConn::accept_replies_up_to`]);
/// INFO, the biggest the watchdog asks for, is a few kilobytes.
const MAX_REPLY: usize = 1 << 20;

/// Why a command did not get a usable reply. Each names the Redis.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("{addr}: cannot connect: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("{addr}: connection closed")]
    Closed { addr: String },
    #[error("{addr}: bad reply: {source}")]
    Protocol { addr: String, source: ProtocolError },
    #[error("{addr}: reply larger than {limit} bytes")]
    TooBig { addr: String, limit: usize },
    /// Redis answered with an error, e.g. `-NOAUTH`.
    #[error("{addr}: {command}: {message}")]
    Reply {
        addr: String,
        command: String,
        message: String,
    },
    /// Redis answered, but not what the command should get.
    #[error("{addr}: {command}: unexpected reply {reply}")]
    Unexpected {
        addr: String,
        command: String,
        reply: String,
    },
}

/// True for a server address that is a unix socket's path, as the pool
/// file writes it (`/path/to/socket:weight`).
pub fn is_unix_path(addr: &str) -> bool {
    addr.starts_with('/')
}

/// How long a unix connect refused for a full queue waits to try again.
const UNIX_CONNECT_RETRY: Duration = Duration::from_millis(10);

/// A connect's outcome as [`RedisError`]: `None` is the timeout expiring.
fn connect_outcome<T>(
    addr: &str,
    timeout: Duration,
    outcome: Option<std::io::Result<T>>,
) -> Result<T, RedisError> {
    match outcome {
        Some(Ok(stream)) => Ok(stream),
        Some(Err(source)) => Err(RedisError::Connect {
            addr: addr.to_string(),
            source,
        }),
        None => Err(RedisError::Timeout {
            addr: addr.to_string(),
            timeout,
        }),
    }
}

/// Connects to the unix socket at `path` within `limit` (`None` past it).
/// A listener whose queue is full (a stalled Redis) fails a unix connect at
/// once with `EAGAIN`, where a TCP connect waits: it is tried again until
/// `limit`, so clients see the timeout they would over TCP (review: an
/// immediate "Resource temporarily unavailable").
pub(crate) async fn connect_unix(
    path: &str,
    limit: Duration,
) -> Option<std::io::Result<tokio::net::UnixStream>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::net::UnixStream::connect(path).await {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if tokio::time::Instant::now() + UNIX_CONNECT_RETRY >= deadline {
                    return None;
                }
                tokio::time::sleep(UNIX_CONNECT_RETRY).await;
            }
            done => return Some(done),
        }
    }
}

/// A plain or TLS connection: one command at a time, so a boxed stream
/// costs nothing that matters.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// One connection to a Redis instance.
pub struct RedisConn {
    addr: String,
    stream: Box<dyn Duplex>,
    buf: BytesMut,
    timeout: Duration,
    max_reply: usize,
}

impl RedisConn {
    /// Connects to `addr` (`host:port`) and sends `AUTH` when a password is
    /// given. `timeout` bounds the connect and each later command. Speaks
    /// TLS when the process set [`crate::tls::set_control_tls`] (a
    /// watchdog's or admin's `--tls-ca`).
    ///
    /// # Errors
    /// Connection failures, a timeout, or the `AUTH` error reply.
    pub async fn connect(
        addr: &str,
        auth: Option<&str>,
        timeout: Duration,
    ) -> Result<RedisConn, RedisError> {
        RedisConn::connect_tls(addr, auth, timeout, crate::tls::control_tls()).await
    }

    /// Selects database `db` (nothing to do for 0, where a connection
    /// starts).
    ///
    /// # Errors
    /// SELECT's error reply, or the connection failing.
    pub async fn select(&mut self, db: u32) -> Result<(), RedisError> {
        if db != 0 {
            self.call(&["SELECT", db.to_string().as_str()]).await?;
        }
        Ok(())
    }

    /// [`RedisConn::connect`] with the TLS settings given (the proxy's:
    /// its pool's `server_tls`).
    ///
    /// # Errors
    /// Connection failures, a failed TLS handshake, a timeout, or the
    /// `AUTH` error reply.
    pub async fn connect_tls(
        addr: &str,
        auth: Option<&str>,
        timeout: Duration,
        tls: Option<&crate::tls::ServerTls>,
    ) -> Result<RedisConn, RedisError> {
        if is_unix_path(addr) {
            // A server on a unix socket (the pool file refuses TLS to one).
            let stream = connect_outcome(addr, timeout, connect_unix(addr, timeout).await)?;
            return RedisConn::handshake(addr, Box::new(stream), auth, timeout).await;
        }
        let connecting = tokio::time::timeout(timeout, TcpStream::connect(addr));
        let stream = connect_outcome(addr, timeout, connecting.await.ok())?;
        // Commands are tiny and answers awaited one by one: no batching to
        // wait for.
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Duplex> = match tls {
            None => Box::new(stream),
            Some(tls) => {
                let handshake = tokio::time::timeout(timeout, tls.connect(addr, stream)).await;
                let outcome = handshake.ok().map(|r| r.map_err(std::io::Error::other));
                Box::new(connect_outcome(addr, timeout, outcome)?)
            }
        };
        RedisConn::handshake(addr, stream, auth, timeout).await
    }

    /// The connection over `stream`, logged in with `auth` if given.
    async fn handshake(
        addr: &str,
        stream: Box<dyn Duplex>,
        auth: Option<&str>,
        timeout: Duration,
    ) -> Result<RedisConn, RedisError> {
        let mut conn = RedisConn {
            addr: addr.to_string(),
            stream,
            buf: BytesMut::with_capacity(4096),
            timeout,
            max_reply: MAX_REPLY,
        };
        if let Some(pass) = auth {
            conn.ok(&["AUTH", pass]).await?;
        }
        Ok(conn)
    }

    /// Raises (or lowers) the largest reply this connection accepts: a
    /// connection that reads the data itself (the migration mover, one
    /// element of up to Redis's 512 MB bulk limit at a time) needs more
    /// than the control commands' default.
    pub fn accept_replies_up_to(&mut self, bytes: usize) {
        self.max_reply = bytes;
    }

    /// The address this connection goes to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one command and returns its reply; an error reply is
    /// [`RedisError::Reply`].
    ///
    /// # Errors
    /// I/O failure, timeout, a malformed reply, or an error reply. After an
    /// error other than `Reply` the connection is unusable: drop it.
    pub async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, RedisError> {
        let mut out = BytesMut::new();
        encode_request(args, &mut out);
        let reply = self.exchange(&out, 1).await?.pop().expect("one reply");
        self.checked(args, reply)
    }

    /// Sends `commands` in one write and reads their replies in order:
    /// one round trip for many small writes (the mover's chunk copies).
    /// The timeout bounds the whole exchange.
    ///
    /// # Errors
    /// As [`RedisConn::call`]; an error reply to any command is
    /// [`RedisError::Reply`], returned after every reply was read so the
    /// connection stays usable.
    pub async fn pipeline<A: AsRef<[u8]>>(
        &mut self,
        commands: &[Vec<A>],
    ) -> Result<Vec<Value>, RedisError> {
        let mut out = BytesMut::new();
        for args in commands {
            encode_request(args, &mut out);
        }
        let replies = self.exchange(&out, commands.len()).await?;
        for (args, reply) in commands.iter().zip(&replies) {
            if let Value::Error(message) = reply {
                return Err(self.reply_error(args, message));
            }
        }
        Ok(replies)
    }

    /// Writes `out` and reads `count` replies, all within the timeout.
    async fn exchange(&mut self, out: &[u8], count: usize) -> Result<Vec<Value>, RedisError> {
        let timeout = self.timeout;
        let exchange = async {
            self.stream
                .write_all(out)
                .await
                .map_err(|source| RedisError::Io {
                    addr: self.addr.clone(),
                    source,
                })?;
            let mut replies = Vec::with_capacity(count);
            for _ in 0..count {
                replies.push(self.read_reply().await?);
            }
            Ok::<_, RedisError>(replies)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::Timeout {
                addr: self.addr.clone(),
                timeout,
            }),
        }
    }

    /// `reply`, or [`RedisError::Reply`] when it is an error reply.
    fn checked<A: AsRef<[u8]>>(&self, args: &[A], reply: Value) -> Result<Value, RedisError> {
        match reply {
            Value::Error(message) => Err(self.reply_error(args, &message)),
            value => Ok(value),
        }
    }

    fn reply_error<A: AsRef<[u8]>>(&self, args: &[A], message: &[u8]) -> RedisError {
        RedisError::Reply {
            addr: self.addr.clone(),
            command: command_name(args),
            message: String::from_utf8_lossy(message).into_owned(),
        }
    }

    /// Sends a command that answers with a status (`+OK`, `+PONG`, ...).
    ///
    /// # Errors
    /// As [`RedisConn::call`], and [`RedisError::Unexpected`] for any other
    /// kind of reply.
    pub async fn ok<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<(), RedisError> {
        match self.call(args).await? {
            Value::Simple(_) => Ok(()),
            other => Err(self.unexpected(args, &other)),
        }
    }

    /// Sends a command that answers with text (a bulk or verbatim string,
    /// e.g. INFO) and returns it.
    ///
    /// # Errors
    /// As [`RedisConn::call`], and [`RedisError::Unexpected`] for any other
    /// kind of reply.
    pub async fn text<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<String, RedisError> {
        match self.call(args).await? {
            Value::Bulk(text) | Value::Simple(text) | Value::Verbatim { text, .. } => {
                Ok(String::from_utf8_lossy(&text).into_owned())
            }
            other => Err(self.unexpected(args, &other)),
        }
    }

    fn unexpected<A: AsRef<[u8]>>(&self, args: &[A], reply: &Value) -> RedisError {
        RedisError::Unexpected {
            addr: self.addr.clone(),
            command: command_name(args),
            reply: format!("{reply:?}"),
        }
    }

    /// Reads until one whole reply frame is buffered, then parses it.
    async fn read_reply(&mut self) -> Result<Value, RedisError> {
        loop {
            let framed = reply_frame_len(&self.buf).map_err(|source| RedisError::Protocol {
                addr: self.addr.clone(),
                source,
            })?;
            if let Some(len) = framed {
                let value =
                    parse_reply(&self.buf[..len]).map_err(|source| RedisError::Protocol {
                        addr: self.addr.clone(),
                        source,
                    })?;
                self.buf.advance(len);
                return Ok(value);
            }
            if self.buf.len() > self.max_reply {
                return Err(RedisError::TooBig {
                    addr: self.addr.clone(),
                    limit: self.max_reply,
                });
            }
            let read = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|source| RedisError::Io {
                    addr: self.addr.clone(),
                    source,
                })?;
            if read == 0 {
                return Err(RedisError::Closed {
                    addr: self.addr.clone(),
                });
            }
        }
    }
}

/// The command's name (and subcommand) for messages, never its arguments:
/// `AUTH` carries a password.
fn command_name<A: AsRef<[u8]>>(args: &[A]) -> String {
    let text = |a: &A| String::from_utf8_lossy(a.as_ref()).into_owned();
    match args {
        [cmd, sub, ..]
            if matches!(text(cmd).to_ascii_uppercase().as_str(), "CLIENT" | "CONFIG") =>
        {
            format!("{} {}", text(cmd), text(sub))
        }
        [cmd, ..] => text(cmd),
        [] => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A fake Redis that answers each request with the next canned reply.
    async fn fake(replies: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            for reply in replies {
                if socket.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                // Split the reply to prove frames are reassembled.
                let (a, b) = reply.split_at(reply.len() / 2);
                socket.write_all(a).await.unwrap();
                socket.flush().await.unwrap();
                socket.write_all(b).await.unwrap();
            }
            // Read on without answering, so later commands time out.
            while socket.read(&mut buf).await.unwrap_or(0) > 0 {}
        });
        addr
    }

    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn status_and_text_replies() {
        let addr = fake(vec![b"+PONG\r\n", b"$11\r\nrole:master\r\n"]).await;
        let mut conn = RedisConn::connect(&addr, None, SHORT).await.unwrap();
        conn.ok(&["PING"]).await.unwrap();
        assert_eq!(
            conn.text(&["INFO", "replication"]).await.unwrap(),
            "role:master"
        );
    }

    #[tokio::test]
    async fn auth_error_fails_the_connect_without_the_password() {
        let addr = fake(vec![b"-WRONGPASS invalid username-password pair\r\n"]).await;
        let err = match RedisConn::connect(&addr, Some("secret"), SHORT).await {
            Err(err) => err,
            Ok(_) => panic!("connected with a refused password"),
        };
        assert!(matches!(err, RedisError::Reply { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("AUTH: WRONGPASS"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[tokio::test]
    async fn a_pipeline_reads_every_reply_even_after_an_error() {
        let addr = fake(vec![b":1\r\n:2\r\n", b":1\r\n-ERR no\r\n", b"+PONG\r\n"]).await;
        let mut conn = RedisConn::connect(&addr, None, SHORT).await.unwrap();
        let two = vec![vec!["INCR", "a"], vec!["INCR", "a"]];
        let replies = conn.pipeline(&two).await.unwrap();
        assert_eq!(replies, vec![Value::Integer(1), Value::Integer(2)]);
        let err = conn.pipeline(&two).await.unwrap_err();
        assert!(err.to_string().contains("INCR: ERR no"), "{err}");
        // In step: the next reply is the next command's.
        conn.ok(&["PING"]).await.unwrap();
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let addr = fake(vec![]).await;
        let mut conn = RedisConn::connect(&addr, None, SHORT).await.unwrap();
        let err = conn.ok(&["PING"]).await.unwrap_err();
        assert!(matches!(err, RedisError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn wrong_reply_kind_is_unexpected() {
        let addr = fake(vec![b":1\r\n"]).await;
        let mut conn = RedisConn::connect(&addr, None, SHORT).await.unwrap();
        let err = conn.ok(&["CLIENT", "UNPAUSE"]).await.unwrap_err();
        assert!(matches!(err, RedisError::Unexpected { .. }), "{err}");
        assert!(err.to_string().contains("CLIENT UNPAUSE"), "{err}");
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = match RedisConn::connect(&addr, None, SHORT).await {
            Err(err) => err,
            Ok(_) => panic!("connected to a closed port"),
        };
        assert!(matches!(err, RedisError::Connect { .. }), "{err}");
    }
}
