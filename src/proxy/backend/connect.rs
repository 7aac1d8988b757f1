//! Opening a backend connection: TCP (with keepalive), TLS with
//! `server_tls`, and the handshake (`AUTH`, `HELLO 3`, `SELECT`), each
//! within the connect timeout.

use super::BackendSettings;
use crate::protocol::{encode_request, is_error_reply, reply_frame_len, Proto};
use crate::proxy::stream::BackendStream;
use crate::redis_client::{connect_unix, is_unix_path};
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Opens a connection to `addr` prepared as the pool's backend connections
/// are (keepalive, TLS with `server_tls`, `AUTH`, `HELLO 3`, `SELECT`),
/// within the connect timeout; the error text says what failed. Also used
/// for the connections that carry a client's subscriptions.
///
/// With `run_id`, the server must still be the Redis its watchdog
/// registered: one killed and restarted at once on its port (a
/// supervisor's `Restart=always`) comes back empty, or with an old
/// snapshot, before its watchdog notices; writes it acknowledged would be
/// lost when the shard fails over, so it is refused instead.
pub(crate) async fn connect_to(
    addr: &str,
    settings: &BackendSettings,
    proto: Proto,
    run_id: Option<&str>,
) -> Result<BackendStream, String> {
    let limit = settings.connect_timeout();
    let handshake = handshake_commands(settings, proto);
    if is_unix_path(addr) {
        // No TLS here: the pool file refuses it for unix sockets.
        let mut stream = match connect_unix(addr, limit).await {
            Some(Ok(stream)) => stream,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err(format!("connect timed out after {} ms", limit.as_millis())),
        };
        make_ready(&mut stream, addr, &handshake, run_id, limit).await?;
        return Ok(BackendStream::Unix(stream));
    }
    let stream = match timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("connect timed out after {} ms", limit.as_millis())),
    };
    let _ = stream.set_nodelay(true);
    if settings.tcpkeepalive {
        if let Err(e) = socket2::SockRef::from(&stream).set_keepalive(true) {
            tracing::debug!(backend = %addr, error = %e, "cannot set keepalive");
        }
    }
    let Some(tls) = &settings.tls else {
        let mut stream = stream;
        make_ready(&mut stream, addr, &handshake, run_id, limit).await?;
        return Ok(BackendStream::Plain(stream));
    };
    let mut stream = match timeout(limit, tls.connect(addr, stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(format!(
                "TLS handshake timed out after {} ms",
                limit.as_millis()
            ))
        }
    };
    make_ready(&mut stream, addr, &handshake, run_id, limit).await?;
    Ok(BackendStream::Tls(Box::new(stream)))
}

/// What every new connection goes through before it serves, whatever its
/// transport: the handshake (AUTH, SELECT, HELLO), then the run_id check.
async fn make_ready<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: &str,
    handshake: &[Vec<Vec<u8>>],
    run_id: Option<&str>,
    limit: Duration,
) -> Result<(), String> {
    prepare(stream, addr, handshake, limit).await?;
    check_run_id(stream, addr, run_id, limit).await
}

/// Checks that the server's `run_id` (INFO server) is `expected`, if one
/// is. A server that will not say (an ACL without INFO, INFO renamed away)
/// or not yet (loading, busy with a script) is taken as it is: the check
/// is a safeguard, not a condition of service. Any other error (`max
/// number of clients reached`) fails the connect, which is then retried
/// after a backoff, not at once.
async fn check_run_id<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: &str,
    expected: Option<&str>,
    limit: Duration,
) -> Result<(), String> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let info = vec![b"INFO".to_vec(), b"server".to_vec()];
    let reply = match timeout(limit, run_commands(stream, &[info])).await {
        Ok(Ok(mut replies)) => replies.pop().unwrap_or_default(),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(format!("INFO timed out after {} ms", limit.as_millis())),
    };
    if is_error_reply(&reply) {
        let text = String::from_utf8_lossy(&reply[1..]);
        let text = text.trim_end();
        let not_now = ["NOPERM", "LOADING", "BUSY", "ERR unknown command"];
        if !not_now.iter().any(|prefix| text.starts_with(prefix)) {
            return Err(text.to_string());
        }
        tracing::debug!(backend = %addr, reply = %text, "cannot read the server's run_id; not checked");
        return Ok(());
    }
    let text = String::from_utf8_lossy(&reply);
    match crate::redis_client::info_field(&text, "run_id") {
        Some(found) if found != expected => Err(format!(
            "restarted since its watchdog registered it (run_id {found}, registered {expected}): \
             not served until the shard's line in ZooKeeper changes"
        )),
        _ => Ok(()),
    }
}

/// Runs the `handshake` commands, if any, within `limit`.
async fn prepare<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: &str,
    handshake: &[Vec<Vec<u8>>],
    limit: Duration,
) -> Result<(), String> {
    if handshake.is_empty() {
        return Ok(());
    }
    match timeout(limit, run_handshake(stream, addr, handshake)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "handshake timed out after {} ms",
            limit.as_millis()
        )),
    }
}

/// The commands that prepare a new connection, in the order that works:
/// `AUTH` first, as `AUTH user password` with `redis_user` (twemproxy
/// sends `SELECT` first and fails on protected
/// servers, its issue #457), then `HELLO 3` for RESP3 connections, then
/// `SELECT`.
fn handshake_commands(settings: &BackendSettings, proto: Proto) -> Vec<Vec<Vec<u8>>> {
    let mut commands = Vec::new();
    if let Some(auth) = &settings.auth {
        let mut command = vec![b"AUTH".to_vec()];
        command.extend(settings.user.iter().map(|u| u.as_bytes().to_vec()));
        command.push(auth.as_bytes().to_vec());
        commands.push(command);
    }
    if proto == Proto::Resp3 {
        commands.push(vec![b"HELLO".to_vec(), b"3".to_vec()]);
    }
    if settings.db != 0 {
        commands.push(vec![
            b"SELECT".to_vec(),
            settings.db.to_string().into_bytes(),
        ]);
    }
    commands
}

async fn run_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: &str,
    commands: &[Vec<Vec<u8>>],
) -> Result<(), String> {
    for (command, frame) in commands.iter().zip(run_commands(stream, commands).await?) {
        if command.len() == 2 && command[0] == b"AUTH" && no_password_set(&frame) {
            // A password set on the proxy only, in front of servers that
            // have none, is a common twemproxy set-up, and nutcracker
            // serves it: the server needs no AUTH, so it is served too.
            tracing::warn!(backend = %addr, "the server has no password: 'redis_auth' is not needed on it");
            continue;
        }
        if is_error_reply(&frame) {
            let name = String::from_utf8_lossy(&command[0]);
            let text = String::from_utf8_lossy(&frame[1..]);
            return Err(format!("{name} failed: {}", text.trim_end()));
        }
    }
    Ok(())
}

/// True for the error a server with no password answers `AUTH password`
/// with (Redis 6 and later, then Redis 5 and earlier).
fn no_password_set(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    text.starts_with("-ERR")
        && (text.contains("called without any password configured")
            || text.contains("but no password is set"))
}

/// Sends `commands` at once and reads one reply frame for each.
async fn run_commands<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    commands: &[Vec<Vec<u8>>],
) -> Result<Vec<BytesMut>, String> {
    let mut out = BytesMut::new();
    for command in commands {
        encode_request(command, &mut out);
    }
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut replies = Vec::with_capacity(commands.len());
    for _ in commands {
        let frame = loop {
            match reply_frame_len(&buf) {
                Ok(Some(n)) => break buf.split_to(n),
                Ok(None) => {}
                Err(e) => return Err(format!("bad handshake reply: {e}")),
            }
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed during handshake".into());
            }
        };
        replies.push(frame);
    }
    Ok(replies)
}

/// Asks the server, on a connection of its own, whether it is busy running
/// a script: `AUTH` (as the pool's connections do) and `PING`. While a
/// script runs, Redis reads no client until the script has run past its
/// `busy-reply-threshold`, then answers every command `-BUSY ...`: that
/// reply, Redis's own words, is returned. Any other answer (PONG: the
/// script is over, or Redis was held up by something else, a `CLIENT
/// PAUSE`, a slow command) gives `None`. It waits as long as the server
/// does (the caller drops it once its script's reply came); only the TCP
/// connect is timed.
pub(crate) async fn busy_reply(addr: &str, settings: &BackendSettings) -> Option<bytes::Bytes> {
    let limit = settings.connect_timeout();
    let mut commands = handshake_commands(settings, Proto::Resp2);
    // SELECT is no use here, and may not be allowed while busy.
    commands.retain(|command| command[0] == b"AUTH");
    commands.push(vec![b"PING".to_vec()]);
    if is_unix_path(addr) {
        let mut stream = connect_unix(addr, limit).await?.ok()?;
        let replies = run_commands(&mut stream, &commands).await;
        return busy_in(replies);
    }
    let stream = timeout(limit, TcpStream::connect(addr)).await.ok()?.ok()?;
    let _ = stream.set_nodelay(true);
    let replies = match &settings.tls {
        None => run_commands(&mut { stream }, &commands).await,
        Some(tls) => match tls.connect(addr, stream).await {
            Ok(mut stream) => run_commands(&mut stream, &commands).await,
            Err(_) => return None,
        },
    };
    busy_in(replies)
}

/// The `-BUSY` reply among `replies`, if any.
fn busy_in<E>(replies: Result<Vec<BytesMut>, E>) -> Option<bytes::Bytes> {
    replies
        .ok()?
        .into_iter()
        .find(|reply| reply.starts_with(b"-BUSY"))
        .map(BytesMut::freeze)
}
