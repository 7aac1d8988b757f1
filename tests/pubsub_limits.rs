//! The cap on subscriber connections (`max_subscriber_connections`): a
//! subscribed client holds one backend connection per shard it uses, so
//! without a cap enough subscribers would fill every Redis's `maxclients`
//! (review). Past the cap a subscription gets a clear error, all or
//! nothing, and the client stays as it was.

mod common;

use common::proxy::Proxy;
use common::redis::{encode_command, RawClient, Redis};
use common::wait_until;
use common::zk_cluster::keys_in;
use std::time::Duration;

fn two_shards(extra: &str) -> (Proxy, [Redis; 2]) {
    let shards = [Redis::start(), Redis::start()];
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  timeout: 1000\n{extra}  servers:\n   - {}:0-2047\n   - {}:2048-4095\n",
        shards[0].addr(),
        shards[1].addr()
    ));
    (proxy, shards)
}

/// Sends `args` and reads `n` replies, concatenated.
fn replies(client: &mut RawClient, args: &[&str], n: usize) -> String {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    client.send_raw(&encode_command(&args));
    (0..n)
        .map(|_| String::from_utf8_lossy(&client.read_reply()).into_owned())
        .collect()
}

/// Subscriber connections the Redis servers count, together.
fn subscribers_on(shards: &[Redis; 2]) -> usize {
    shards
        .iter()
        .map(|s| {
            let list = s.connect().cmd_str(&["CLIENT", "LIST", "TYPE", "pubsub"]);
            list.matches("id=").count()
        })
        .sum()
}

fn held(client: &mut RawClient) -> Option<u64> {
    client.info_number("clients", "subscriber_connections")
}

#[test]
fn subscriptions_past_the_cap_get_a_clear_error_and_change_nothing() {
    let (proxy, shards) = two_shards("  max_subscriber_connections: 3\n");
    let mut watcher = RawClient::connect(proxy.port);
    let on_first = keys_in(0, 2047, 2, "cap");
    let on_second = keys_in(2048, 4095, 1, "cap").remove(0);

    // A pattern is held on both shards: two connections.
    let mut patterns = RawClient::connect(proxy.port);
    assert_eq!(
        replies(&mut patterns, &["PSUBSCRIBE", "cap*"], 1),
        "*3\r\n$10\r\npsubscribe\r\n$4\r\ncap*\r\n:1\r\n"
    );
    assert_eq!(held(&mut watcher), Some(2));

    // Another pattern would need two more, and one is left: refused whole,
    // and the client is not left in subscribed mode.
    let mut refused = RawClient::connect(proxy.port);
    let reply = replies(&mut refused, &["PSUBSCRIBE", "other*"], 1);
    assert_eq!(
        reply,
        "-ERR shardproxy: all 3 subscriber backend connections (max_subscriber_connections) \
         are held by subscribed clients; try again later\r\n"
    );
    assert_eq!(refused.cmd_str(&["PING"]), "+PONG\r\n");
    assert_eq!(refused.cmd_str(&["SET", &on_second, "v"]), "+OK\r\n");
    // Two channels of one shard need one connection: room for that.
    let mut channels = RawClient::connect(proxy.port);
    let reply = replies(&mut channels, &["SUBSCRIBE", &on_first[0], &on_first[1]], 2);
    assert!(reply.ends_with(":2\r\n"), "{reply}");
    assert_eq!(held(&mut watcher), Some(3));
    // At the cap, a channel of a shard the client already holds needs
    // nothing new; one of the other shard is refused.
    let reply = replies(&mut channels, &["SUBSCRIBE", &on_first[0]], 1);
    assert!(reply.ends_with(":2\r\n"), "{reply}");
    let reply = replies(&mut channels, &["SUBSCRIBE", &on_second], 1);
    assert!(
        reply.starts_with("-ERR shardproxy: all 3 subscriber"),
        "{reply}"
    );
    wait_until(
        "the servers to count 3 subscribers",
        Duration::from_secs(5),
        || subscribers_on(&shards) == 3,
    );

    // The subscriptions that were made work: a message reaches each.
    let mut publisher = RawClient::connect(proxy.port);
    assert_eq!(
        publisher.cmd_str(&["PUBLISH", &on_first[1], "hi"]),
        ":2\r\n"
    );
    let message = format!("${}\r\n{}\r\n$2\r\nhi\r\n", on_first[1].len(), on_first[1]);
    let got = String::from_utf8_lossy(&channels.read_reply()).into_owned();
    assert_eq!(got, format!("*3\r\n$7\r\nmessage\r\n{message}"));
    let got = String::from_utf8_lossy(&patterns.read_reply()).into_owned();
    assert!(
        got.starts_with("*4\r\n$8\r\npmessage\r\n") && got.ends_with(&message),
        "{got}"
    );

    // A client that leaves gives its connections back; then the refused
    // subscription fits.
    drop(patterns);
    wait_until(
        "the pattern's connections given back",
        Duration::from_secs(5),
        || held(&mut watcher) == Some(1),
    );
    let reply = replies(&mut refused, &["PSUBSCRIBE", "other*"], 1);
    assert!(reply.ends_with(":1\r\n"), "{reply}");
    assert_eq!(held(&mut watcher), Some(3));
    // Unsubscribing gives back a connection left holding nothing: with a
    // channel on the first shard kept, the second shard's goes.
    let reply = replies(&mut refused, &["SUBSCRIBE", &on_first[0]], 1);
    assert!(reply.ends_with(":2\r\n"), "{reply}");
    let reply = replies(&mut refused, &["PUNSUBSCRIBE"], 1);
    assert!(reply.ends_with(":1\r\n"), "{reply}");
    wait_until(
        "the idle connection given back",
        Duration::from_secs(5),
        || held(&mut watcher) == Some(2),
    );
    wait_until(
        "the servers to count 2 subscribers",
        Duration::from_secs(5),
        || subscribers_on(&shards) == 2,
    );
    // The one kept still delivers.
    assert_eq!(
        publisher.cmd_str(&["PUBLISH", &on_first[0], "yo"]),
        ":2\r\n"
    );
    let got = String::from_utf8_lossy(&refused.read_reply()).into_owned();
    assert!(got.ends_with("$2\r\nyo\r\n"), "{got}");
    let reply = replies(&mut refused, &["UNSUBSCRIBE"], 1);
    assert!(reply.ends_with(":0\r\n"), "{reply}");
    wait_until(
        "the last connection given back",
        Duration::from_secs(5),
        || held(&mut watcher) == Some(1),
    );
    wait_until(
        "the servers to count 1 subscriber",
        Duration::from_secs(5),
        || subscribers_on(&shards) == 1,
    );
}

#[test]
fn a_cap_of_zero_refuses_every_subscription_but_not_publishing() {
    let (proxy, _shards) = two_shards("  max_subscriber_connections: 0\n");
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(
        replies(&mut client, &["SUBSCRIBE", "news"], 1),
        "-ERR shardproxy: subscriptions are turned off on this proxy \
         (max_subscriber_connections is 0)\r\n"
    );
    assert_eq!(client.cmd_str(&["PUBLISH", "news", "x"]), ":0\r\n");
    assert_eq!(held(&mut client), Some(0));
}

/// Well under the cap, a connection left holding nothing is kept for the
/// client's next subscription on its shard (review: closed at once, a
/// client toggling one channel opened a connection per toggle, 998 left in
/// TIME_WAIT after 1,000 toggles).
#[test]
fn a_client_toggling_a_channel_reuses_its_connection() {
    let (proxy, shards) = two_shards("");
    let kept = keys_in(0, 2047, 1, "toggle").remove(0);
    let toggled = keys_in(2048, 4095, 1, "toggle").remove(0);
    let mut client = RawClient::connect(proxy.port);
    let reply = replies(&mut client, &["SUBSCRIBE", &kept], 1);
    assert!(reply.ends_with(":1\r\n"), "{reply}");
    let connections = |redis: &Redis| {
        redis
            .connect()
            .info_number("stats", "total_connections_received")
            .unwrap()
    };
    let before = connections(&shards[1]);
    for _ in 0..50 {
        let reply = replies(&mut client, &["SUBSCRIBE", &toggled], 1);
        assert!(reply.ends_with(":2\r\n"), "{reply}");
        let reply = replies(&mut client, &["UNSUBSCRIBE", &toggled], 1);
        assert!(reply.ends_with(":1\r\n"), "{reply}");
    }
    // One connection for the toggles, and one for the count itself.
    let opened = connections(&shards[1]) - before;
    assert!(opened <= 2, "{opened} connections opened for 50 toggles");
    let mut watcher = RawClient::connect(proxy.port);
    assert_eq!(held(&mut watcher), Some(2));
}
