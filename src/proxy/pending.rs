//! The replies a session owes its client, in request order: built by the
//! proxy, forwarded from one backend, or put together from several.

use crate::command::Command;
use crate::proxy::backend::reply::{Dropped, TryRecvError};
use crate::proxy::backend::ReplyReceiver;
use crate::proxy::outbuf::OutBuf;
use crate::proxy::pool::Pool;
use crate::proxy::router::ShardName;
use crate::proxy::split::{PartHandle, SplitReply};
use crate::proxy::stats::PoolStats;
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// A reply the session owes, in request order.
pub enum Pending {
    /// Built by the proxy, already encoded in the client's protocol.
    Ready(Bytes),
    /// Forwarded to one backend; the frame comes back untouched.
    Forward {
        reply: ReplyReceiver,
        shard: ShardName,
    },
    /// Put together from several backends' replies (split commands,
    /// DBSIZE, INFO's keyspace); resolves to the encoded reply.
    Assembling(Pin<Box<dyn Future<Output = Bytes> + Send>>),
    /// A split command's reply, put together from its parts (`parts`: the
    /// shards the client's window waits on, see `HeadWait`, and how to
    /// abandon them when the client closes).
    Split {
        reply: Pin<Box<dyn Future<Output = Bytes> + Send>>,
        parts: Box<[PartHandle]>,
    },
}

impl Pending {
    /// A split command's reply, assembled once every part has answered.
    pub fn split(split: SplitReply, pool: Arc<Pool>) -> Pending {
        let parts = split.part_handles();
        Pending::Split {
            reply: Box::pin(async move {
                let mut out = BytesMut::new();
                split.write_to(&mut out, &pool).await;
                out.freeze()
            }),
            parts,
        }
    }

    /// Appends the reply to `out` in the client's protocol once it is
    /// complete; its size in bytes.
    ///
    /// With `cx` `None` it only looks: a forwarded reply is taken if it has
    /// arrived, without registering a waker (cheaper than polling with a
    /// no-op waker, which the next real poll would replace).
    pub fn poll_into(
        &mut self,
        cx: Option<&mut Context<'_>>,
        out: &mut OutBuf,
        pool: &Pool,
    ) -> Poll<usize> {
        match self {
            Pending::Ready(bytes) => {
                let len = bytes.len();
                out.push(std::mem::take(bytes));
                Poll::Ready(len)
            }
            Pending::Forward { reply, shard } => {
                let reply = match cx {
                    Some(cx) => ready!(Pin::new(reply).poll(cx)),
                    None => match reply.try_recv() {
                        Ok(reply) => Ok(reply),
                        Err(TryRecvError::Empty) => return Poll::Pending,
                        Err(TryRecvError::Dropped) => Err(Dropped),
                    },
                };
                if !matches!(reply, Ok(Ok(_))) {
                    PoolStats::bump(&pool.stats.errors);
                    PoolStats::bump(&pool.stats.forward_errors);
                }
                let frame = pool.client_frame(reply, shard);
                let len = frame.len();
                out.push(frame);
                Poll::Ready(len)
            }
            Pending::Assembling(assembling)
            | Pending::Split {
                reply: assembling, ..
            } => {
                let bytes = match cx {
                    Some(cx) => ready!(assembling.as_mut().poll(cx)),
                    None => ready!(assembling
                        .as_mut()
                        .poll(&mut Context::from_waker(std::task::Waker::noop()))),
                };
                let len = bytes.len();
                out.push(bytes);
                Poll::Ready(len)
            }
        }
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
