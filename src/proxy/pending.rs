//! The replies a session owes its client, in request order: built by the
//! proxy, forwarded from one backend, or put together from several.

use crate::command::Command;
use crate::protocol::encode_error;
use crate::proxy::backend::Reply;
use crate::proxy::info::InfoReply;
use crate::proxy::session::Session;
use crate::proxy::split::SplitReply;
use crate::proxy::stats::PoolStats;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A reply the session owes, in request order.
pub enum Pending {
    /// Built by the proxy, already encoded in the client's protocol.
    Ready(Bytes),
    /// Forwarded to one backend; the frame comes back untouched.
    Forward {
        reply: oneshot::Receiver<Reply>,
        shard: Arc<str>,
    },
    /// Split over several backends and put back together.
    Split(Box<SplitReply>),
    /// INFO, waiting for the backends' keyspace sections.
    Info(Box<InfoReply>),
}

impl Pending {
    /// Waits for the reply and appends it to `out` in the client's protocol.
    pub async fn write_to(self, out: &mut BytesMut, stats: &PoolStats) {
        match self {
            Pending::Ready(bytes) => out.extend_from_slice(&bytes),
            Pending::Forward { reply, shard } => match reply.await {
                Ok(Ok(frame)) => out.extend_from_slice(&frame),
                Ok(Err(e)) => {
                    PoolStats::bump(&stats.errors);
                    encode_error(&format!("ERR shard '{shard}': {e}"), out);
                }
                Err(_) => {
                    PoolStats::bump(&stats.errors);
                    encode_error(&format!("ERR shard '{shard}': request dropped"), out);
                }
            },
            Pending::Split(split) => split.write_to(out, stats).await,
            Pending::Info(info) => info.write_to(out).await,
        }
    }
}

impl Session {
    /// An error reply built by the proxy (`msg` without the leading '-').
    pub fn error(&self, msg: &str) -> Pending {
        PoolStats::bump(&self.pool.stats.errors);
        let mut out = BytesMut::with_capacity(msg.len() + 3);
        encode_error(msg, &mut out);
        Pending::Ready(out.freeze())
    }
}

/// The refusal of a command that cannot work through a sharding proxy,
/// naming it as the client wrote it (with its subcommand, if any).
pub fn unsupported_error(cmd: &Command, args: &[Bytes]) -> String {
    let name = if cmd.name.contains('|') && args.len() > 1 {
        format!(
            "{} {}",
            String::from_utf8_lossy(&args[0]),
            String::from_utf8_lossy(&args[1])
        )
    } else {
        String::from_utf8_lossy(&args[0]).into_owned()
    };
    format!("ERR unsupported command '{name}' through shardproxy")
}
