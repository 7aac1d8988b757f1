//! Unit tests of the pub/sub replies and counts.

use super::commands::{confirmation, unsubscribe};
use super::*;
use crate::config::Config;

fn pool() -> Arc<Pool> {
    let config = Config::parse(
        "p:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n   - 127.0.0.1:1:1\n",
    )
    .unwrap();
    Arc::new(Pool::new(&config.pools[0]))
}

fn bytes(pending: Pending) -> Bytes {
    match pending {
        Pending::Ready(bytes) => bytes,
        _ => panic!("not ready"),
    }
}

#[test]
fn resp2_subscribed_mode_refuses_other_commands_as_redis_does() {
    let get = crate::command::lookup(b"get").unwrap();
    let ping = crate::command::lookup(b"ping").unwrap();
    let id = crate::command::lookup_args(&[Bytes::from("client"), Bytes::from("id")]).unwrap();
    assert_eq!(
        refusal(true, Proto::Resp2, get).unwrap(),
        "ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    );
    assert!(refusal(true, Proto::Resp2, id)
        .unwrap()
        .contains("'client|id'"));
    assert_eq!(refusal(true, Proto::Resp2, ping), None);
    assert_eq!(refusal(true, Proto::Resp3, get), None);
    assert_eq!(refusal(false, Proto::Resp2, get), None);
}

#[test]
fn confirmations_are_arrays_in_resp2_and_pushes_in_resp3() {
    let mut out = BytesMut::new();
    confirmation(
        "subscribe",
        Some(&Bytes::from("a")),
        2,
        Proto::Resp2,
        &mut out,
    );
    assert_eq!(&out[..], b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:2\r\n");
    out.clear();
    confirmation("unsubscribe", None, 0, Proto::Resp3, &mut out);
    assert_eq!(&out[..], b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n");
}

#[test]
fn pong_in_subscribed_mode_is_an_array() {
    assert_eq!(bytes(pong(None)), &b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"[..]);
    assert_eq!(
        bytes(pong(Some(&Bytes::from("hi")))),
        &b"*2\r\n$4\r\npong\r\n$2\r\nhi\r\n"[..]
    );
}

#[tokio::test]
async fn counts_follow_redis_channels_and_patterns_together_shard_channels_apart() {
    let pool = pool();
    let mut subscriptions = None;
    let mut client = Client {
        pool: &pool,
        proto: Proto::Resp2,
        id: 1,
        affinity: 0,
        subscriptions: &mut subscriptions,
    };
    let reply = bytes(unsubscribe(&mut client, Kind::Pattern, vec![]));
    assert_eq!(&reply[..], b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n");
    let ps = client
        .subscriptions
        .get_or_insert_with(|| Box::new(PubSub::new(&pool)));
    ps.names[Kind::Channel as usize].insert(Bytes::from("a"));
    ps.names[Kind::Pattern as usize].insert(Bytes::from("p*"));
    ps.names[Kind::Shard as usize].insert(Bytes::from("s"));
    assert_eq!((ps.count(Kind::Channel), ps.count(Kind::Pattern)), (2, 2));
    assert_eq!((ps.count(Kind::Shard), ps.total()), (1, 3));
    // The last subscription gone: out of subscribed mode.
    for kind in Kind::ALL {
        unsubscribe(&mut client, kind, vec![]);
    }
    assert!(client.subscriptions.is_none());
}
