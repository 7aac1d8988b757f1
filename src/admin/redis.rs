//! A small async Redis client for the admin tool: one connection, one
//! command at a time, and `INFO replication` read into [`Replication`].
//!
//! It reuses the proxy's RESP code ([`crate::protocol`]) to frame and parse
//! replies. Every step is bounded by a timeout, so an unreachable or stuck
//! Redis shows up as an error in the status table instead of a hang.

use crate::protocol::{encode_request, parse_reply, ReplyFramer, Value};
use bytes::BytesMut;
use serde::Serialize;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long connecting, and each command, may take.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest reply the tool accepts: INFO is a few KB; anything this big
/// is not a Redis answering our commands.
const MAX_REPLY: usize = 1024 * 1024;

/// One connection to a Redis server.
pub struct RedisConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl RedisConn {
    /// Connects to `addr` (`host:port`) and authenticates with `auth`.
    ///
    /// # Errors
    /// A text saying why: refused, timed out, or the AUTH reply.
    pub async fn connect(addr: &str, auth: Option<&str>) -> Result<RedisConn, String> {
        let stream = match tokio::time::timeout(REDIS_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(format!("cannot connect: {error}")),
            Err(_) => return Err("connect timed out".to_string()),
        };
        let mut conn = RedisConn {
            stream,
            buf: BytesMut::new(),
        };
        if let Some(password) = auth {
            conn.command(&["AUTH", password]).await?;
        }
        Ok(conn)
    }

    /// Sends one command and returns its reply; an error reply is an `Err`
    /// carrying Redis's text.
    ///
    /// # Errors
    /// I/O failure, timeout, a malformed reply, or an error reply.
    pub async fn command(&mut self, args: &[&str]) -> Result<Value, String> {
        let mut out = BytesMut::new();
        encode_request(args, &mut out);
        let exchange = async {
            self.stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
            self.read_reply().await
        };
        let reply = tokio::time::timeout(REDIS_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{} timed out", args[0]))??;
        match reply {
            Value::Error(text) => Err(String::from_utf8_lossy(&text).into_owned()),
            value => Ok(value),
        }
    }

    async fn read_reply(&mut self) -> Result<Value, String> {
        let mut framer = ReplyFramer::new();
        loop {
            if let Some(len) = framer
                .frame_len(&self.buf)
                .map_err(|e| format!("bad reply: {e}"))?
            {
                let frame = self.buf.split_to(len);
                return parse_reply(&frame).map_err(|e| format!("bad reply: {e}"));
            }
            if self.buf.len() > MAX_REPLY {
                return Err(format!("reply larger than {MAX_REPLY} bytes"));
            }
            let read = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if read == 0 {
                return Err("connection closed".to_string());
            }
        }
    }

    /// Runs `INFO replication` and parses it.
    ///
    /// # Errors
    /// As [`RedisConn::command`], or an INFO without the expected fields.
    pub async fn replication(&mut self) -> Result<Replication, String> {
        match self.command(&["INFO", "replication"]).await? {
            Value::Bulk(text) | Value::Verbatim { text, .. } => {
                Replication::parse(&String::from_utf8_lossy(&text))
            }
            other => Err(format!("unexpected INFO reply {other:?}")),
        }
    }
}

/// What a Redis says about its replication (`INFO replication`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replication {
    /// `master` or `replica` (Redis says `slave`).
    pub role: String,
    /// The replication offset: `slave_repl_offset` on a replica (what it
    /// has applied), else `master_repl_offset`.
    pub offset: u64,
    /// A replica's master, `host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// A replica's `master_link_status` is `up`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_up: Option<bool>,
    /// `connected_slaves`.
    pub connected_replicas: u32,
}

impl Replication {
    /// Parses the text of `INFO replication`.
    ///
    /// # Errors
    /// No `role` line, or an offset that is not a number.
    pub fn parse(text: &str) -> Result<Replication, String> {
        let field = |name: &str| {
            text.lines()
                .filter_map(|line| line.trim_end().split_once(':'))
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        let number = |name: &str| -> Result<Option<u64>, String> {
            field(name)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("INFO field {name} is not a number: {v:?}"))
                })
                .transpose()
        };
        let role = match field("role").as_deref() {
            Some("master") => "master",
            Some("slave") | Some("replica") => "replica",
            Some(other) => return Err(format!("unknown role {other:?} in INFO")),
            None => return Err("INFO replication has no role".to_string()),
        };
        let replica = role == "replica";
        let offset = match number("slave_repl_offset")?.filter(|_| replica) {
            Some(offset) => offset,
            None => number("master_repl_offset")?.unwrap_or(0),
        };
        let master = match (field("master_host"), field("master_port")) {
            (Some(host), Some(port)) if replica => Some(format!("{host}:{port}")),
            _ => None,
        };
        Ok(Replication {
            role: role.to_string(),
            offset,
            master,
            link_up: field("master_link_status")
                .filter(|_| replica)
                .map(|s| s == "up"),
            connected_replicas: number("connected_slaves")?.unwrap_or(0) as u32,
        })
    }
}

/// Connects to `addr` and reads its replication state.
///
/// # Errors
/// Why the Redis could not be read.
pub async fn read_replication(addr: &str, auth: Option<&str>) -> Result<Replication, String> {
    RedisConn::connect(addr, auth).await?.replication().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
        slave0:ip=127.0.0.1,port=7002,state=online,offset=1234,lag=0\r\n\
        master_replid:abc\r\nmaster_repl_offset:1234\r\nsecond_repl_offset:-1\r\n";

    const REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n\
        master_port:7001\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:1\r\n\
        master_sync_in_progress:0\r\nslave_read_repl_offset:1200\r\n\
        slave_repl_offset:1200\r\nslave_priority:100\r\nconnected_slaves:0\r\n\
        master_repl_offset:1200\r\n";

    #[test]
    fn parses_a_master() {
        let info = Replication::parse(MASTER).unwrap();
        assert_eq!(
            info,
            Replication {
                role: "master".into(),
                offset: 1234,
                master: None,
                link_up: None,
                connected_replicas: 1,
            }
        );
    }

    #[test]
    fn parses_a_replica() {
        let info = Replication::parse(REPLICA).unwrap();
        assert_eq!(info.role, "replica");
        assert_eq!(info.offset, 1200);
        assert_eq!(info.master.as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(info.link_up, Some(true));
    }

    #[test]
    fn replica_with_link_down() {
        let text = REPLICA.replace("master_link_status:up", "master_link_status:down");
        assert_eq!(Replication::parse(&text).unwrap().link_up, Some(false));
    }

    #[test]
    fn rejects_info_without_role() {
        assert!(Replication::parse("# Replication\r\n").is_err());
    }

    #[test]
    fn rejects_bad_offset() {
        let text = MASTER.replace("master_repl_offset:1234", "master_repl_offset:x");
        let err = Replication::parse(&text).unwrap_err();
        assert!(err.contains("master_repl_offset"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_redis_is_an_error() {
        // Port 1 on loopback: nothing listens there.
        let err = read_replication("127.0.0.1:1", None).await.unwrap_err();
        assert!(err.starts_with("cannot connect"), "{err}");
    }
}
