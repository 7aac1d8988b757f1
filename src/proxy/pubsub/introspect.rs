//! PUBLISH and SPUBLISH, routed by their channel, and the PUBSUB
//! subcommands, which ask the shards and put their answers together.
//!
//! Through the proxy a client's subscription is one subscription of the
//! proxy's connection on the channel's shard, so the shards' counts are the
//! clients' counts: NUMSUB and SHARDNUMSUB take each channel's count from
//! its own shard, CHANNELS and SHARDCHANNELS the union over the shards.
//! Every pattern is subscribed on every shard, so summing NUMPAT would
//! count each one once per shard: the proxy reports the largest shard's
//! count instead, exact while every subscriber goes through proxies.

use super::Client;
use crate::command::Command;
use crate::protocol::{encode, encode_error, encode_request, parse_reply_bytes, Proto, Value};
use crate::proxy::backend::ReplyReceiver;
use crate::proxy::pending::{unsupported_error, Pending};
use crate::proxy::router::{RoutingTable, ShardName};
use crate::proxy::stats::PoolStats;
use bytes::{Bytes, BytesMut};
use std::collections::HashSet;

/// PUBLISH, SPUBLISH and PUBSUB.
pub fn run(client: &mut Client<'_>, cmd: &'static Command, args: &[Bytes], raw: Bytes) -> Pending {
    let table = client.pool.router.load_full();
    match cmd.name {
        "publish" | "spublish" => {
            let shard = &table.shards[super::home_shard(&table, &args[1], cmd.name == "spublish")];
            Pending::Forward {
                reply: shard.backend.send(client.proto, client.affinity, raw),
                shard: shard.name,
            }
        }
        "pubsub|channels" | "pubsub|shardchannels" => {
            let asked = every_backend(&table, client.proto, client.affinity, args);
            assemble(client.proto, async move {
                let mut seen = HashSet::new();
                let mut all = Vec::new();
                for (shard, reply) in asked {
                    for name in array(shard, reply).await? {
                        if let Value::Bulk(bytes) = &name {
                            if !seen.insert(bytes.clone()) {
                                continue;
                            }
                        }
                        all.push(name);
                    }
                }
                Ok(Value::Array(all))
            })
        }
        "pubsub|numpat" => {
            let asked = every_backend(&table, client.proto, client.affinity, args);
            assemble(client.proto, async move {
                let mut most = 0;
                for (shard, reply) in asked {
                    match value(shard, reply).await? {
                        Value::Integer(n) => most = most.max(n),
                        other => return Err(unexpected(shard, &other)),
                    }
                }
                Ok(Value::Integer(most))
            })
        }
        "pubsub|numsub" | "pubsub|shardnumsub" => numsub(client, &table, args),
        "pubsub|help" => {
            let shard = &table.shards[client.id as usize % table.shards.len()];
            Pending::Forward {
                reply: shard.backend.send(client.proto, client.affinity, raw),
                shard: shard.name,
            }
        }
        _ => {
            PoolStats::bump(&client.pool.stats.errors);
            let mut out = BytesMut::new();
            encode_error(&unsupported_error(cmd, args), &mut out);
            Pending::Ready(out.freeze())
        }
    }
}

/// NUMSUB ch...: each channel's pair from the reply of its own shard, in
/// the order asked.
fn numsub(client: &Client<'_>, table: &RoutingTable, args: &[Bytes]) -> Pending {
    let names = &args[2..];
    let shard_channels = args[1].eq_ignore_ascii_case(b"shardnumsub");
    let shards: Vec<usize> = names
        .iter()
        .map(|n| super::home_shard(table, n, shard_channels))
        .collect();
    let mut asked = Vec::new();
    for (i, shard) in table.shards.iter().enumerate() {
        let mine: Vec<&[u8]> = names
            .iter()
            .zip(&shards)
            .filter(|(_, &s)| s == i)
            .map(|(n, _)| &n[..])
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut request_args: Vec<&[u8]> = vec![&args[0], &args[1]];
        request_args.extend(mine);
        let mut request = BytesMut::new();
        encode_request(&request_args, &mut request);
        asked.push((
            i,
            shard.name,
            shard
                .backend
                .send(client.proto, client.affinity, request.freeze()),
        ));
    }
    assemble(client.proto, async move {
        let mut pairs: Vec<Option<(Value, Value)>> = vec![None; shards.len()];
        for (i, shard, reply) in asked {
            let mut got = array(shard, reply).await?.into_iter();
            for (slot, _) in shards.iter().enumerate().filter(|(_, &s)| s == i) {
                match (got.next(), got.next()) {
                    (Some(name), Some(count)) => pairs[slot] = Some((name, count)),
                    _ => return Err(format!("ERR shard '{shard}': short PUBSUB reply")),
                }
            }
        }
        Ok(Value::Array(
            pairs
                .into_iter()
                .flatten()
                .flat_map(|(name, count)| [name, count])
                .collect(),
        ))
    })
}

type Asked = Vec<(ShardName, ReplyReceiver)>;

fn every_backend(table: &RoutingTable, proto: Proto, affinity: usize, args: &[Bytes]) -> Asked {
    table.send_to_every_backend(proto, affinity, args)
}

/// A reply the proxy puts together: the value, or an error text.
fn assemble(
    proto: Proto,
    building: impl std::future::Future<Output = Result<Value, String>> + Send + 'static,
) -> Pending {
    Pending::Assembling(Box::pin(async move {
        let mut out = BytesMut::new();
        match building.await {
            Ok(value) => encode(&value, proto, &mut out),
            Err(text) => encode_error(&text, &mut out),
        }
        out.freeze()
    }))
}

async fn value(shard: &str, reply: ReplyReceiver) -> Result<Value, String> {
    let frame = match reply.await {
        Ok(Ok(frame)) => frame,
        Ok(Err(e)) => return Err(format!("ERR shard '{shard}': {e}")),
        Err(_) => return Err(format!("ERR shard '{shard}': request dropped")),
    };
    match parse_reply_bytes(&frame) {
        Ok(Value::Error(text)) => Err(String::from_utf8_lossy(&text).into_owned()),
        Ok(value) => Ok(value),
        Err(e) => Err(format!("ERR shard '{shard}': {e}")),
    }
}

async fn array(shard: &str, reply: ReplyReceiver) -> Result<Vec<Value>, String> {
    match value(shard, reply).await? {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(unexpected(shard, &other)),
    }
}

fn unexpected(shard: &str, value: &Value) -> String {
    format!("ERR shard '{shard}': unexpected PUBSUB reply {value:?}")
}
