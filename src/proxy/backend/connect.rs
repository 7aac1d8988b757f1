//! Opening a backend connection: TCP (with keepalive), TLS with
//! `server_tls`, and the handshake (`AUTH`, `HELLO 3`, `SELECT`), each
//! within the connect timeout.

use super::BackendSettings;
use crate::protocol::{encode_request, is_error_reply, reply_frame_len, Proto};
use crate::proxy::stream::BackendStream;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Opens a connection to `addr` prepared as the pool's backend connections
/// are (keepalive, TLS with `server_tls`, `AUTH`, `HELLO 3`, `SELECT`),
/// within the connect timeout; the error text says what failed. Also used
/// for the connections that carry a client's subscriptions.
pub(crate) async fn connect_to(
    addr: &str,
    settings: &BackendSettings,
    proto: Proto,
) -> Result<BackendStream, String> {
    let limit = settings.connect_timeout();
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
    let handshake = handshake_commands(settings, proto);
    let Some(tls) = &settings.tls else {
        let mut stream = stream;
        prepare(&mut stream, &handshake, limit).await?;
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
    prepare(&mut stream, &handshake, limit).await?;
    Ok(BackendStream::Tls(Box::new(stream)))
}

/// Runs the `handshake` commands, if any, within `limit`.
async fn prepare<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    handshake: &[Vec<Vec<u8>>],
    limit: Duration,
) -> Result<(), String> {
    if handshake.is_empty() {
        return Ok(());
    }
    match timeout(limit, run_handshake(stream, handshake)).await {
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
    commands: &[Vec<Vec<u8>>],
) -> Result<(), String> {
    let mut out = BytesMut::new();
    for command in commands {
        encode_request(command, &mut out);
    }
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(1024);
    for command in commands {
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
        if is_error_reply(&frame) {
            let name = String::from_utf8_lossy(&command[0]);
            let text = String::from_utf8_lossy(&frame[1..]);
            return Err(format!("{name} failed: {}", text.trim_end()));
        }
    }
    Ok(())
}
