//! Pub/sub through the proxy, against real redis-servers: what a
//! subscriber sees is compared byte for byte with what a Redis server
//! sends, across shards and proxies. Subscriptions across a failover or a
//! range move in ZooKeeper: `zk_proxy.rs`.

mod common;

use common::proxy::Proxy;
use common::pubsub::{cmd, numsub, numsub_is, read_frames, replies, PONG};
use common::redis::{RawClient, Redis};
use common::wait_until;
use common::zk_cluster::*;
use std::io::Read;
use std::time::{Duration, Instant};

/// A pool of two shards, range form (md5, 4096 slots), with `extra` keys.
fn start_proxy(shards: &[&Redis; 2], extra: &str) -> Proxy {
    Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  timeout: 1000\n{extra}  servers:\n   - {}:0-2047\n   - {}:2048-4095\n",
        shards[0].addr(),
        shards[1].addr()
    ))
}

/// Two shards and two proxies over them: a fleet.
struct Fleet {
    shards: [Redis; 2],
    proxies: [Proxy; 2],
}

fn fleet() -> Fleet {
    let shards = [Redis::start(), Redis::start()];
    let proxies = [
        start_proxy(&[&shards[0], &shards[1]], ""),
        start_proxy(&[&shards[0], &shards[1]], ""),
    ];
    Fleet { shards, proxies }
}

/// `n` channel names per shard (by slot, as the proxy hashes keys).
fn channels_on_both_shards(tag: &str, n: usize) -> Vec<String> {
    let mut names = keys_in(0, 2047, n, tag);
    names.extend(keys_in(2048, 4095, n, tag));
    names
}

/// `commands` encoded for one write.
fn pipeline(commands: &[&[&str]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for args in commands {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        bytes.extend(common::redis::encode_command(&args));
    }
    bytes
}

/// `n` messages, sorted. Messages published on different shards travel
/// different connections, so their order across shards is not Redis's (a
/// shard slow to write its message lets another shard's overtake it); the
/// tests that publish one message per channel compare them as a set.
fn read_messages_sorted(client: &mut RawClient, n: usize) -> Vec<String> {
    let mut messages: Vec<String> = (0..n).map(|_| read_frames(client, 1)).collect();
    messages.sort();
    messages
}

#[test]
fn a_message_through_any_proxy_reaches_every_subscriber_as_redis_sends_it() {
    let fleet = fleet();
    let oracle = Redis::start();
    let channels = channels_on_both_shards("news", 3);
    let mut args = vec!["SUBSCRIBE"];
    args.extend(channels.iter().map(String::as_str));
    let mut want_sub = oracle.connect();
    let confirmations = replies(&mut want_sub, &args, channels.len());
    let mut subscribers: Vec<RawClient> = fleet
        .proxies
        .iter()
        .map(|p| RawClient::connect(p.port))
        .collect();
    for subscriber in &mut subscribers {
        assert_eq!(replies(subscriber, &args, channels.len()), confirmations);
    }
    // Each channel is held on its own shard only, once per proxy.
    for channel in &channels {
        let on: Vec<bool> = fleet
            .shards
            .iter()
            .map(|s| numsub_is(s.port, channel, 2))
            .collect();
        assert_eq!(on.iter().filter(|&&b| b).count(), 1, "{channel}: {on:?}");
        assert_eq!(on[0], slot(channel) < 2048, "{channel} on its slot's shard");
    }

    let mut oracle_publisher = oracle.connect();
    let mut want = Vec::new();
    for (i, channel) in channels.iter().enumerate() {
        let message = format!("hello {i}");
        assert_eq!(
            oracle_publisher.cmd_str(&["PUBLISH", channel, &message]),
            ":1\r\n"
        );
        want.push(read_frames(&mut want_sub, 1));
        // Through either proxy: both subscribers get it.
        let publisher = &fleet.proxies[i % 2];
        assert_eq!(
            RawClient::connect(publisher.port).cmd_str(&["PUBLISH", channel, &message]),
            ":2\r\n"
        );
    }
    want.sort();
    for subscriber in &mut subscribers {
        assert_eq!(read_messages_sorted(subscriber, channels.len()), want);
        assert_eq!(replies(subscriber, &["PING"], 1), PONG);
    }
}

#[test]
fn a_pattern_subscriber_gets_each_message_once_from_every_shard() {
    let fleet = fleet();
    let oracle = Redis::start();
    let mut subscriber = RawClient::connect(fleet.proxies[0].port);
    let mut want_sub = oracle.connect();
    let args = ["PSUBSCRIBE", "ev.*", "other.*"];
    assert_eq!(
        replies(&mut subscriber, &args, 2),
        replies(&mut want_sub, &args, 2)
    );
    for shard in &fleet.shards {
        assert_eq!(
            RawClient::connect(shard.port).cmd_str(&["PUBSUB", "NUMPAT"]),
            ":2\r\n",
            "patterns are held on every shard"
        );
    }
    let channels = channels_on_both_shards("ev.", 4);
    let mut oracle_publisher = oracle.connect();
    let mut publisher = RawClient::connect(fleet.proxies[1].port);
    let mut want = Vec::new();
    for channel in &channels {
        assert_eq!(
            oracle_publisher.cmd_str(&["PUBLISH", channel, "x"]),
            ":1\r\n"
        );
        want.push(read_frames(&mut want_sub, 1));
        assert_eq!(publisher.cmd_str(&["PUBLISH", channel, "x"]), ":1\r\n");
    }
    // Each message exactly once.
    want.sort();
    assert_eq!(read_messages_sorted(&mut subscriber, channels.len()), want);
    assert_eq!(
        replies(&mut subscriber, &["PING", "done"], 1),
        "*2\r\n$4\r\npong\r\n$4\r\ndone\r\n"
    );
    // The largest shard's count, not the sum over shards.
    assert_eq!(publisher.cmd_str(&["PUBSUB", "NUMPAT"]), ":2\r\n");
}

#[test]
fn shard_channels_work_as_on_redis() {
    let fleet = fleet();
    let oracle = Redis::start();
    let channels = channels_on_both_shards("orders", 1);
    let mut subscriber = RawClient::connect(fleet.proxies[0].port);
    let mut want_sub = oracle.connect();
    let mut args = vec!["SSUBSCRIBE"];
    args.extend(channels.iter().map(String::as_str));
    assert_eq!(
        replies(&mut subscriber, &args, 2),
        replies(&mut want_sub, &args, 2)
    );
    let mut publisher = RawClient::connect(fleet.proxies[1].port);
    let mut oracle_publisher = oracle.connect();
    for channel in &channels {
        assert_eq!(publisher.cmd_str(&["SPUBLISH", channel, "m"]), ":1\r\n");
        assert_eq!(
            oracle_publisher.cmd_str(&["SPUBLISH", channel, "m"]),
            ":1\r\n"
        );
        assert_eq!(
            read_frames(&mut subscriber, 1),
            read_frames(&mut want_sub, 1)
        );
    }
    let mut listed = publisher.cmd_str(&["PUBSUB", "SHARDCHANNELS"]);
    let mut want_listed = oracle_publisher.cmd_str(&["PUBSUB", "SHARDCHANNELS"]);
    assert_eq!(sorted_lines(&mut listed), sorted_lines(&mut want_listed));
    let ask = ["PUBSUB", "SHARDNUMSUB", &channels[1], "none", &channels[0]];
    assert_eq!(publisher.cmd_str(&ask), oracle_publisher.cmd_str(&ask));
    let args = ["SUNSUBSCRIBE", &channels[1], &channels[0]];
    assert_eq!(
        replies(&mut subscriber, &args, 2),
        replies(&mut want_sub, &args, 2)
    );
    assert_eq!(
        subscriber.cmd_str(&["GET", "k"]),
        "$-1\r\n",
        "left subscribed mode"
    );
}

fn sorted_lines(text: &mut str) -> Vec<String> {
    let mut lines: Vec<String> = text.split("\r\n").map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn subscribed_mode_replies_match_redis() {
    let fleet = fleet();
    let oracle = Redis::start();
    let mut proxy = RawClient::connect(fleet.proxies[0].port);
    let mut redis = oracle.connect();
    let channels = channels_on_both_shards("mode", 1);
    let (a, b) = (channels[0].as_str(), channels[1].as_str());
    let script: &[(&[&str], usize)] = &[
        (&["UNSUBSCRIBE"], 1),
        (&["PUNSUBSCRIBE"], 1),
        (&["SUNSUBSCRIBE"], 1),
        (&["SUBSCRIBE", a, b, a], 3),
        (&["PSUBSCRIBE", "p*"], 1),
        (&["SSUBSCRIBE", "s"], 1),
        (&["GET", "x"], 1),
        (&["CLIENT", "ID"], 1),
        (&["PUBLISH", a, "m"], 1),
        (&["PING"], 1),
        (&["PING", "hi"], 1),
        (&["UNSUBSCRIBE", a, "zz"], 2),
        (&["UNSUBSCRIBE"], 1),
        (&["PUNSUBSCRIBE"], 1),
        // A bare PUNSUBSCRIBE confirms patterns in subscription order.
        (&["PSUBSCRIBE", "p6*", "p1*", "p5*", "p2*", "p4*", "p3*"], 6),
        (&["PUNSUBSCRIBE", "p5*"], 1),
        (&["PUNSUBSCRIBE"], 5),
        // A shard channel still holds the connection in subscribed mode.
        (&["GET", "x"], 1),
        (&["SUNSUBSCRIBE"], 1),
        (&["UNSUBSCRIBE"], 1),
        (&["GET", "x"], 1),
        (&["PING"], 1),
        (&["SUBSCRIBE", a], 1),
        (&["RESET"], 1),
        (&["GET", "x"], 1),
    ];
    for (args, n) in script {
        assert_eq!(
            replies(&mut proxy, args, *n),
            replies(&mut redis, args, *n),
            "{args:?}"
        );
    }
    // RESET answered once the shard let go.
    assert!(
        numsub_is(fleet.proxies[1].port, a, 0),
        "{}",
        numsub(fleet.proxies[1].port, a)
    );
}

#[test]
fn resp3_messages_are_pushes_between_whole_replies() {
    let fleet = fleet();
    let oracle = Redis::start();
    let channel = &keys_in(0, 2047, 1, "push")[0];
    let mut proxy = RawClient::connect(fleet.proxies[0].port);
    let mut redis = oracle.connect();
    for client in [&mut proxy, &mut redis] {
        client.cmd(&[b"HELLO", b"3"]);
    }
    let args = ["SUBSCRIBE", channel.as_str()];
    assert_eq!(replies(&mut proxy, &args, 1), replies(&mut redis, &args, 1));
    assert_eq!(proxy.cmd_str(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(proxy.cmd_str(&["PING"]), "+PONG\r\n");
    assert_eq!(
        oracle.connect().cmd_str(&["PUBLISH", channel, "m"]),
        ":1\r\n"
    );
    let push = read_frames(&mut redis, 1);
    assert!(push.starts_with(">3\r\n"), "{push}");

    // Messages published while the client pipelines GETs: every frame
    // whole, the replies in order, the pushes in order.
    let n = 200;
    let port = fleet.proxies[1].port;
    let publishing = {
        let channel = channel.clone();
        std::thread::spawn(move || {
            let mut publisher = RawClient::connect(port);
            for _ in 0..n {
                assert_eq!(publisher.cmd_str(&["PUBLISH", &channel, "m"]), ":1\r\n");
            }
        })
    };
    for _ in 0..n {
        cmd(&mut proxy, &["GET", "k"]);
    }
    publishing.join().unwrap();
    let (mut values, mut pushes) = (0, 0);
    while values < n || pushes < n {
        let frame = read_frames(&mut proxy, 1);
        if frame == "$1\r\nv\r\n" {
            values += 1;
        } else {
            assert_eq!(frame, push);
            pushes += 1;
        }
    }
    assert_eq!(proxy.cmd_str(&["PING"]), "+PONG\r\n", "nothing more");
}

/// A PUBLISH pipelined right behind a SUBSCRIBE (RESP3 allows it) finds
/// the subscription in place, and one behind an UNSUBSCRIBE finds it gone,
/// as on Redis: the next request waits for the shards' confirmation. Each
/// round is a new client, whose first subscription opens the shard's
/// subscriber connection. (A message may come before or after the
/// PUBLISH's reply: they travel different connections.)
#[test]
fn a_publish_pipelined_behind_a_subscription_change_sees_it() {
    let fleet = fleet();
    let oracle = Redis::start();
    let channels = channels_on_both_shards("piped", 1);
    let round_trip = |port: u16, channel: &str| {
        let mut client = RawClient::connect(port);
        client.cmd(&[b"HELLO", b"3"]);
        client.send_raw(&pipeline(&[
            &["SUBSCRIBE", channel],
            &["PUBLISH", channel, "hi"],
        ]));
        let mut subscribed: Vec<String> = (0..3).map(|_| read_frames(&mut client, 1)).collect();
        subscribed[1..].sort();
        client.send_raw(&pipeline(&[
            &["UNSUBSCRIBE", channel],
            &["PUBLISH", channel, "bye"],
        ]));
        let unsubscribed = read_frames(&mut client, 2);
        (subscribed, unsubscribed)
    };
    for round in 0..20 {
        let channel = &channels[round % channels.len()];
        assert_eq!(
            round_trip(fleet.proxies[0].port, channel),
            round_trip(oracle.port, channel),
            "round {round}"
        );
    }
}

/// A SUBSCRIBE or UNSUBSCRIBE pipelined behind a PUBLISH (RESP3) does not
/// overtake it: the PUBLISH counts the client as Redis does (the proxy
/// answered :1 and then pushed the message published before the client
/// subscribed, or :0 before an UNSUBSCRIBE).
#[test]
fn a_subscription_change_does_not_overtake_a_publish_before_it() {
    let fleet = fleet();
    let oracle = Redis::start();
    let channels = keys_in(0, 2047, 2, "order");
    let (held, ch) = (channels[0].as_str(), channels[1].as_str());
    let run = |port: u16| {
        let mut client = RawClient::connect(port);
        client.cmd(&[b"HELLO", b"3"]);
        // A subscription on the same shard: its link is already open.
        replies(&mut client, &["SUBSCRIBE", held], 1);
        client.send_raw(&pipeline(&[&["PUBLISH", ch, "before"], &["SUBSCRIBE", ch]]));
        let subscribed = read_frames(&mut client, 2);
        client.send_raw(&pipeline(&[&["PUBLISH", ch, "m"], &["UNSUBSCRIBE", ch]]));
        // The message the client published to itself comes before the
        // UNSUBSCRIBE's confirmation, as on Redis; where it falls against
        // the PUBLISH's reply differs (Redis 7.0 pushes it first, 7.2
        // after; through the proxy they travel different connections).
        let unsubscribed = self_published_then_replies(&mut client, ch, "m", 2);
        (subscribed, unsubscribed)
    };
    for round in 0..5 {
        assert_eq!(
            run(fleet.proxies[0].port),
            run(oracle.port),
            "round {round}"
        );
    }
}

/// Reads RESP3 frames until `replies` that are not the message `text` on
/// `channel`, which must come exactly once, before the last of them; the
/// replies are returned, the message's place among the others aside.
fn self_published_then_replies(
    client: &mut RawClient,
    channel: &str,
    text: &str,
    replies: usize,
) -> Vec<String> {
    let message = format!(
        ">3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n${}\r\n{text}\r\n",
        channel.len(),
        text.len()
    );
    let (mut others, mut seen) = (Vec::new(), 0);
    while others.len() < replies {
        let frame = read_frames(client, 1);
        if frame == message {
            assert_eq!(seen, 0, "the message came twice");
            assert!(others.len() < replies, "the message came after {others:?}");
            seen += 1;
        } else {
            others.push(frame);
        }
    }
    assert_eq!(seen, 1, "the message never came before {others:?}");
    others
}

/// A message the client published to itself, with the UNSUBSCRIBE (or
/// RESET) that leaves subscribed mode pipelined right behind the PUBLISH:
/// Redis pushes the message before it confirms, and so does the proxy
/// (it was lost: the session dropped messages for names it had let go of
/// before their shard confirmed). Over both shards, 20 rounds each, with
/// the same replies as Redis.
#[test]
fn a_message_published_to_itself_comes_before_leaving_subscribed_mode() {
    let fleet = fleet();
    let oracle = Redis::start();
    let channels = channels_on_both_shards("selfpub", 1);
    let run = |port: u16, channel: &str, leave: &[&str]| {
        let mut client = RawClient::connect(port);
        client.cmd(&[b"HELLO", b"3"]);
        replies(&mut client, &["SUBSCRIBE", channel], 1);
        client.send_raw(&pipeline(&[
            &["PUBLISH", channel, "own"],
            &["PING"],
            leave,
            &["PING", "after"],
        ]));
        self_published_then_replies(&mut client, channel, "own", 4)
    };
    for round in 0..20 {
        let channel = channels[round % channels.len()].as_str();
        for leave in [&["UNSUBSCRIBE"][..], &["UNSUBSCRIBE", channel], &["RESET"]] {
            assert_eq!(
                run(fleet.proxies[0].port, channel, leave),
                run(oracle.port, channel, leave),
                "round {round}, {leave:?}"
            );
        }
    }
}

/// A subscriber that unsubscribes from one of its channels and closes its
/// side at once is still confirmed at once: finishing, the session takes
/// no more messages, yet the shard's confirmation behind them still
/// reaches the UNSUBSCRIBE (it would wait for the confirmation deadline,
/// seconds, with nobody taking the link's events).
#[test]
fn an_unsubscribe_before_the_client_closes_is_confirmed_at_once() {
    let fleet = fleet();
    let channels = keys_in(0, 2047, 2, "closing");
    let mut client = RawClient::connect(fleet.proxies[0].port);
    replies(&mut client, &["SUBSCRIBE", &channels[0], &channels[1]], 2);
    cmd(&mut client, &["UNSUBSCRIBE", &channels[0]]);
    client.half_close();
    let started = Instant::now();
    let confirmed = read_frames(&mut client, 1);
    assert_eq!(
        confirmed,
        format!(
            "*3\r\n$11\r\nunsubscribe\r\n${}\r\n{}\r\n:1\r\n",
            channels[0].len(),
            channels[0]
        )
    );
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "confirmed after {:?}",
        started.elapsed()
    );
}

/// A shard slower than the confirmation deadline: the UNSUBSCRIBE is
/// confirmed at the deadline, and a message the shard sends after that
/// (published before the shard saw the UNSUBSCRIBE) is not delivered, as
/// nothing comes for a name after its confirmation.
#[test]
fn nothing_comes_for_a_name_after_its_unsubscribe_was_confirmed() {
    let fleet = fleet();
    let (stopped, other) = (
        &keys_in(0, 2047, 1, "late")[0],
        &keys_in(2048, 4095, 1, "late")[0],
    );
    let mut client = RawClient::connect(fleet.proxies[0].port);
    replies(&mut client, &["SUBSCRIBE", stopped, other], 2);
    let mut publisher = fleet.shards[0].connect();
    fleet.shards[0].guard.signal("STOP");
    cmd(&mut publisher, &["PUBLISH", stopped, "late"]);
    cmd(&mut client, &["UNSUBSCRIBE", stopped]);
    let confirmed = read_frames(&mut client, 1);
    assert_eq!(
        confirmed,
        format!(
            "*3\r\n$11\r\nunsubscribe\r\n${}\r\n{stopped}\r\n:1\r\n",
            stopped.len()
        )
    );
    fleet.shards[0].guard.signal("CONT");
    // The shard has run the PUBLISH (to this client's link, or not).
    let published = read_frames(&mut publisher, 1);
    assert!(
        published == ":1\r\n" || published == ":0\r\n",
        "{published}"
    );
    assert_eq!(replies(&mut client, &["PING"], 1), PONG);
}

#[test]
fn a_disconnected_subscriber_releases_its_backend_subscriptions() {
    let fleet = fleet();
    let channels = channels_on_both_shards("gone", 2);
    let mut subscriber = RawClient::connect(fleet.proxies[0].port);
    let mut args = vec!["SUBSCRIBE"];
    args.extend(channels.iter().map(String::as_str));
    replies(&mut subscriber, &args, channels.len());
    replies(&mut subscriber, &["PSUBSCRIBE", "*"], 1);
    let other = fleet.proxies[1].port;
    for channel in &channels {
        assert!(numsub_is(other, channel, 1), "{}", numsub(other, channel));
    }
    drop(subscriber);
    let closed = Instant::now();
    wait_until("the subscriptions to go", Duration::from_secs(5), || {
        channels.iter().all(|c| numsub_is(other, c, 0))
            && RawClient::connect(other).cmd_str(&["PUBSUB", "NUMPAT"]) == ":0\r\n"
    });
    eprintln!(
        "backend subscriptions released {:?} after the client closed",
        closed.elapsed()
    );
}

/// Leaving subscribed mode (the last UNSUBSCRIBE, or RESET) is confirmed
/// only once the shards let go, as Redis confirms once it has: a PUBLISH
/// sent right after the confirmation reaches nobody.
#[test]
fn leaving_subscribed_mode_is_confirmed_after_the_shards_let_go() {
    let fleet = fleet();
    let channels = channels_on_both_shards("leave", 1);
    let publisher = fleet.proxies[1].port;
    let mut subscriber = RawClient::connect(fleet.proxies[0].port);
    for round in 0..30 {
        let mut args = vec!["SUBSCRIBE"];
        args.extend(channels.iter().map(String::as_str));
        replies(&mut subscriber, &args, channels.len());
        replies(&mut subscriber, &["PSUBSCRIBE", "leave*"], 1);
        let how = if round % 2 == 0 {
            replies(&mut subscriber, &["UNSUBSCRIBE"], channels.len());
            let last = replies(&mut subscriber, &["PUNSUBSCRIBE"], 1);
            assert_eq!(last, "*3\r\n$12\r\npunsubscribe\r\n$6\r\nleave*\r\n:0\r\n");
            "PUNSUBSCRIBE"
        } else {
            assert_eq!(replies(&mut subscriber, &["RESET"], 1), "+RESET\r\n");
            "RESET"
        };
        for channel in &channels {
            let mut other = RawClient::connect(publisher);
            assert_eq!(
                other.cmd_str(&["PUBLISH", channel, "late"]),
                ":0\r\n",
                "round {round}: a PUBLISH right after {how} reached the client"
            );
        }
    }
    assert_eq!(
        subscriber.cmd_str(&["PING"]),
        "+PONG\r\n",
        "nothing was delivered"
    );
}

#[test]
fn a_subscriber_that_never_reads_is_disconnected_with_bounded_memory() {
    let shards = [Redis::start(), Redis::start()];
    let limit = 1024 * 1024;
    let proxy = start_proxy(
        &[&shards[0], &shards[1]],
        &format!("  client_output_limit: {limit}\n"),
    );
    let channel = &keys_in(0, 2047, 1, "firehose")[0];
    let mut slow = RawClient::connect(proxy.port);
    replies(&mut slow, &["SUBSCRIBE", channel], 1);
    // A second, reading subscriber on the same shard keeps getting messages.
    let mut reader = RawClient::connect(proxy.port);
    replies(&mut reader, &["SUBSCRIBE", channel], 1);
    let pid = proxy.guard.pid();
    let before = common::rss_kib(pid);
    let payload = "x".repeat(64 * 1024);
    let mut publisher = RawClient::connect(proxy.port);
    let mut peak = before;
    let total = 600;
    let mut last_reply = String::new();
    for i in 0..total {
        last_reply = publisher.cmd_str(&["PUBLISH", channel, &payload]);
        let frame = reader.read_reply();
        assert!(
            frame.len() > payload.len(),
            "message {i} reached the reader"
        );
        if i % 20 == 0 {
            peak = peak.max(common::rss_kib(pid));
        }
    }
    peak = peak.max(common::rss_kib(pid));
    eprintln!(
        "{} MB published to a subscriber that never reads: proxy RSS {} KiB before, peak {} KiB (client_output_limit {} KiB)",
        total * payload.len() / (1024 * 1024),
        before,
        peak,
        limit / 1024
    );
    assert_eq!(last_reply, ":1\r\n", "the slow subscriber was dropped");
    assert!(
        peak < before + 16 * 1024,
        "proxy RSS grew from {before} KiB to {peak} KiB"
    );
    // The slow client reads what was written, then the end of the stream.
    slow.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    slow.reader
        .read_to_end(&mut rest)
        .expect("closed by the proxy");
    assert!(proxy.log_text().contains("over client_output_limit"));
    assert!(numsub_is(proxy.port, channel, 1), "only the reader is left");
}

#[test]
fn subscribing_on_an_unreachable_shard_is_an_error_and_closes() {
    let up = Redis::start();
    let down_port = common::free_port();
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  timeout: 1000\n  servers:\n   - {}:0-2047\n   - 127.0.0.1:{down_port}:2048-4095\n",
        up.addr()
    ));
    let up_channel = &keys_in(0, 2047, 1, "up")[0];
    let down_channel = &keys_in(2048, 4095, 1, "down")[0];
    let mut subscriber = RawClient::connect(proxy.port);
    assert_eq!(
        replies(&mut subscriber, &["SUBSCRIBE", up_channel], 1),
        format!(
            "*3\r\n$9\r\nsubscribe\r\n${}\r\n{up_channel}\r\n:1\r\n",
            up_channel.len()
        )
    );
    let started = Instant::now();
    let reply = replies(&mut subscriber, &["SUBSCRIBE", down_channel], 1);
    assert!(
        reply.starts_with("-ERR shard '127.0.0.1:")
            && reply.contains(&format!(
                "cannot subscribe: backend 127.0.0.1:{down_port} is unavailable"
            )),
        "{reply}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "fails fast");
    assert!(
        subscriber.is_closed(),
        "the client is told by closing, as Redis would"
    );
    wait_until(
        "the other subscription to go",
        Duration::from_secs(5),
        || numsub_is(up.port, up_channel, 0),
    );
}

/// redis-py's pub/sub API with default options, RESP2 and RESP3, compared
/// with Redis directly by tests/clients/pubsub.py (installed by
/// deploy/install-client-libs.sh, as for tests/client_libraries.rs).
#[test]
fn redis_py_pubsub_sees_what_it_sees_on_redis() {
    let direct = Redis::start();
    let fleet = fleet();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/clients/venv/bin/python");
    assert!(
        python.exists(),
        "client libraries missing: run deploy/install-client-libs.sh (deploy/test.sh does)"
    );
    let out = std::process::Command::new(python)
        .arg(root.join("tests/clients/pubsub.py"))
        .arg(direct.port.to_string())
        .arg(fleet.proxies[0].port.to_string())
        .output()
        .expect("run tests/clients/pubsub.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(", 0 mismatches"), "{stdout}");
}

/// Keyspace notifications, which each Redis publishes about its own keys
/// only: a keyevent channel gets the events of every shard, a keyspace
/// channel those of its key wherever the key lives, as from one Redis.
#[test]
fn keyspace_notifications_arrive_from_every_shard() {
    let shards = [Redis::start(), Redis::start()];
    for shard in &shards {
        assert_eq!(
            shard
                .connect()
                .cmd_str(&["CONFIG", "SET", "notify-keyspace-events", "KE$"]),
            "+OK\r\n"
        );
    }
    let proxy = start_proxy(&[&shards[0], &shards[1]], "");
    let keys = channels_on_both_shards("notified", 3);
    let mut events = RawClient::connect(proxy.port);
    let mut per_key = RawClient::connect(proxy.port);
    assert_eq!(
        replies(&mut events, &["SUBSCRIBE", "__keyevent@0__:set"], 1),
        "*3\r\n$9\r\nsubscribe\r\n$18\r\n__keyevent@0__:set\r\n:1\r\n"
    );
    let channels: Vec<String> = keys.iter().map(|k| format!("__keyspace@0__:{k}")).collect();
    let mut subscribe = vec!["SUBSCRIBE"];
    subscribe.extend(channels.iter().map(String::as_str));
    let confirmed = replies(&mut per_key, &subscribe, channels.len());
    assert!(
        confirmed.ends_with(&format!(":{}\r\n", channels.len())),
        "{confirmed}"
    );
    for channel in &channels {
        assert!(
            numsub_is(proxy.port, channel, 1),
            "{}",
            numsub(proxy.port, channel)
        );
    }
    let mut writer = RawClient::connect(proxy.port);
    for key in &keys {
        assert_eq!(writer.cmd_str(&["SET", key, "v"]), "+OK\r\n");
    }
    let mut want: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "*3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n${}\r\n{k}\r\n",
                k.len()
            )
        })
        .collect();
    want.sort();
    assert_eq!(read_messages_sorted(&mut events, keys.len()), want);
    let mut want: Vec<String> = channels
        .iter()
        .map(|c| {
            format!(
                "*3\r\n$7\r\nmessage\r\n${}\r\n{c}\r\n$3\r\nset\r\n",
                c.len()
            )
        })
        .collect();
    want.sort();
    assert_eq!(read_messages_sorted(&mut per_key, keys.len()), want);
}
