//! redis-rs 0.32 (the `redis` crate) through the proxy, with its default
//! options and its own helpers: pub/sub across two proxies in RESP2 and RESP3,
//! the `redis::transaction` WATCH/MULTI retry loop, the SCAN iterator over
//! 100,000 keys on three shards, EVALSHA after SCRIPT LOAD on every shard,
//! and a blocked BLPOP and a subscription through a ZooKeeper failover of a
//! shard's master.

mod common;

use common::proxy::Proxy;
use common::redis::Redis;
use common::wait_until;
use common::zk_cluster::{add_member, create_shard, keys_in, start_proxy_with, wait_for_view};
use common::zookeeper::ZooKeeper;
use redis::{Commands, PushKind, Value};
use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

/// The slot ranges of the three shards (md5, 4096 slots).
const RANGES: [(u32, u32); 3] = [(0, 1364), (1365, 2729), (2730, 4095)];

/// Three redis-servers and two proxies over them (hash tags `{...}`).
struct Fleet {
    shards: Vec<Redis>,
    proxies: [Proxy; 2],
}

fn fleet() -> Fleet {
    let shards: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let mut body =
        "  redis: true\n  hash: md5\n  distribution: modula\n  hash_tag: \"{}\"\n  servers:\n"
            .to_string();
    for (shard, (lo, hi)) in shards.iter().zip(RANGES) {
        body += &format!("   - {}:{lo}-{hi}\n", shard.addr());
    }
    let proxies = [Proxy::start(&body), Proxy::start(&body)];
    Fleet { shards, proxies }
}

fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection()
        .expect("connect")
}

fn direct(shard: &Redis) -> redis::Connection {
    connect(&format!("redis://{}/", shard.addr()))
}

/// `n` names per shard of [`RANGES`], by the slot the proxy hashes them to.
fn names_on_every_shard(tag: &str, n: usize) -> Vec<String> {
    RANGES
        .iter()
        .flat_map(|&(lo, hi)| keys_in(lo, hi, n, tag))
        .collect()
}

/// Waits until the fleet counts one subscriber on each of `channels` and
/// `patterns` patterns: redis-rs returns from SUBSCRIBE on the first
/// confirmation, and the others (from other shards) may still be on the way.
fn wait_subscribed(proxy: &Proxy, channels: &[String], patterns: i64) {
    let mut con = connect(&proxy.url());
    wait_until(
        "every subscription confirmed",
        Duration::from_secs(5),
        || {
            let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channels)
                .query(&mut con)
                .unwrap();
            let numpat: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut con).unwrap();
            counts.iter().all(|(_, n)| *n == 1) && numpat == patterns
        },
    );
}

#[test]
fn resp2_pubsub_messages_published_through_one_proxy_reach_a_subscriber_of_another() {
    let fleet = fleet();
    let channels = names_on_every_shard("news", 2);
    let mut subscriber = connect(&fleet.proxies[0].url());
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe(&channels).unwrap();
    pubsub.psubscribe("alerts.*").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    wait_subscribed(&fleet.proxies[1], &channels, 1);

    let mut publisher = connect(&fleet.proxies[1].url());
    let mut want = BTreeSet::new();
    for (i, channel) in channels.iter().enumerate() {
        let text = format!("hello {i}");
        let receivers: i64 = publisher.publish(channel, &text).unwrap();
        assert_eq!(receivers, 1, "{channel}");
        want.insert((None, channel.clone(), text));
    }
    let alerts = names_on_every_shard("alerts.", 1);
    for channel in &alerts {
        let receivers: i64 = publisher.publish(channel, "fire").unwrap();
        assert_eq!(receivers, 1, "{channel}");
        want.insert((Some("alerts.*".to_string()), channel.clone(), "fire".into()));
    }
    // Channels of different shards arrive over different connections: each
    // channel keeps its order, the whole is compared as a set.
    let mut got = BTreeSet::new();
    for _ in 0..want.len() {
        let message = pubsub.get_message().expect("a message within 5 s");
        let pattern = message
            .from_pattern()
            .then(|| message.get_pattern().unwrap());
        got.insert((
            pattern,
            message.get_channel_name().to_string(),
            message.get_payload().unwrap(),
        ));
    }
    assert_eq!(got, want);
    // Dropping the PubSub unsubscribes from everything (redis-rs sends
    // UNSUBSCRIBE and PUNSUBSCRIBE and reads until both counts are 0).
    drop(pubsub);
    let pong: String = redis::cmd("PING").query(&mut subscriber).unwrap();
    assert_eq!(pong, "PONG", "out of subscribed mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_pushes_reach_a_subscriber_that_keeps_sending_commands() {
    let fleet = fleet();
    let channels = names_on_every_shard("push", 2);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = redis::AsyncConnectionConfig::new().set_push_sender(tx);
    let url = |proxy: &Proxy| format!("{}?protocol=resp3", proxy.url());
    let mut subscriber = redis::Client::open(url(&fleet.proxies[0]))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    subscriber.subscribe(&channels).await.unwrap();
    subscriber.psubscribe("push:*").await.unwrap();
    wait_subscribed(&fleet.proxies[1], &channels, 1);
    // Under RESP3 the subscribed connection still runs commands.
    let _: () = redis::cmd("SET")
        .arg(&channels[0])
        .arg("v")
        .query_async(&mut subscriber)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg(&channels[0])
        .query_async(&mut subscriber)
        .await
        .unwrap();
    assert_eq!(value, "v");

    let mut publisher = redis::Client::open(url(&fleet.proxies[1]))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut want = BTreeSet::new();
    for (i, channel) in channels.iter().enumerate() {
        let text = format!("m{i}");
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(&text)
            .query_async(&mut publisher)
            .await
            .unwrap();
        // The channel and the pattern `push:*` of one client.
        assert_eq!(receivers, 2, "{channel}");
        want.insert(vec!["message".to_string(), channel.clone(), text.clone()]);
        want.insert(vec![
            "pmessage".into(),
            "push:*".into(),
            channel.clone(),
            text,
        ]);
    }
    let mut got = BTreeSet::new();
    while got.len() < want.len() {
        let push = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {got:?} within 5 s"))
            .expect("connection open");
        let kind = match push.kind {
            PushKind::Message => "message",
            PushKind::PMessage => "pmessage",
            PushKind::Subscribe | PushKind::PSubscribe => continue,
            other => panic!("unexpected push {other:?}: {:?}", push.data),
        };
        let mut fields = vec![kind.to_string()];
        fields.extend(push.data.iter().map(|v| match v {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).unwrap(),
            other => panic!("unexpected field {other:?}"),
        }));
        got.insert(fields);
    }
    assert_eq!(got, want);
}

/// The `redis::transaction` helper (WATCH, read, MULTI/EXEC, again on a
/// nil EXEC) from several threads at once, on keys with one hash tag: every
/// increment lands exactly once.
#[test]
fn watch_multi_retry_loops_lose_no_increment() {
    let fleet = fleet();
    let (threads, rounds) = (4, 40);
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            // Half the threads on each proxy.
            let url = fleet.proxies[t % 2].url();
            std::thread::spawn(move || {
                let mut con = connect(&url);
                let mut attempts = 0;
                for _ in 0..rounds {
                    let _: () = redis::transaction(&mut con, &["{c}counter"], |con, pipe| {
                        attempts += 1;
                        let n: Option<i64> = con.get("{c}counter")?;
                        let next = n.unwrap_or(0) + 1;
                        pipe.set("{c}counter", next)
                            .ignore()
                            .rpush("{c}log", next)
                            .ignore()
                            .query(con)
                    })
                    .unwrap();
                }
                attempts
            })
        })
        .collect();
    let attempts: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    eprintln!(
        "{} increments in {attempts} attempts, {:?}",
        threads * rounds,
        started.elapsed()
    );
    let mut con = connect(&fleet.proxies[0].url());
    let counter: i64 = con.get("{c}counter").unwrap();
    assert_eq!(counter, (threads * rounds) as i64);
    let log: Vec<i64> = con.lrange("{c}log", 0, -1).unwrap();
    assert_eq!(log, (1..=counter).collect::<Vec<_>>(), "each value once");
}

#[test]
fn scan_iterator_returns_each_of_100000_keys_on_three_shards() {
    let fleet = fleet();
    let mut con = connect(&fleet.proxies[0].url());
    let total = 100_000;
    let names: Vec<String> = (0..total).map(|i| format!("scan:{i}")).collect();
    // MSET of 1,000 keys at a time, pipelined: the proxy splits each by shard.
    let mut pipe = redis::pipe();
    for chunk in names.chunks(1000) {
        let pairs: Vec<(&str, &str)> = chunk.iter().map(|k| (k.as_str(), "v")).collect();
        pipe.mset(&pairs).ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    let sizes: Vec<usize> = fleet
        .shards
        .iter()
        .map(|s| redis::cmd("DBSIZE").query(&mut direct(s)).unwrap())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), total, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n > total / 5), "{sizes:?}");
    let started = Instant::now();
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for key in con.scan_match::<_, String>("scan:*").unwrap() {
        if !seen.insert(key) {
            duplicates += 1;
        }
    }
    eprintln!(
        "SCAN over {total} keys: {:?}, {duplicates} returned twice",
        started.elapsed()
    );
    assert_eq!(seen.len(), total);
    assert!(names.iter().all(|k| seen.contains(k)), "every key returned");
    // The second proxy's iterator, with COUNT, sees the same.
    let mut other = connect(&fleet.proxies[1].url());
    let options = redis::ScanOptions::default()
        .with_pattern("scan:*")
        .with_count(1000);
    let seen_too: HashSet<String> = other.scan_options(options).unwrap().collect();
    assert_eq!(seen_too, seen);
}

#[test]
fn evalsha_after_script_load_runs_on_every_shard() {
    let fleet = fleet();
    let mut con = connect(&fleet.proxies[0].url());
    let script = "redis.call('set', KEYS[1], ARGV[1]) return redis.call('strlen', KEYS[1])";
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(script)
        .query(&mut con)
        .unwrap();
    for shard in &fleet.shards {
        let exists: Vec<bool> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query(&mut direct(shard))
            .unwrap();
        assert_eq!(exists, [true], "loaded on {}", shard.addr());
    }
    // From the other proxy, on a key of each shard.
    let mut other = connect(&fleet.proxies[1].url());
    let keys = names_on_every_shard("evalsha", 1);
    for (key, shard) in keys.iter().zip(&fleet.shards) {
        let len: i64 = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(key)
            .arg("value")
            .query(&mut other)
            .unwrap();
        assert_eq!(len, 5, "{key}");
        let held: Option<String> = direct(shard).get(key).unwrap();
        assert_eq!(held.as_deref(), Some("value"), "{key} on its shard");
    }
    let exists: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg("0000000000000000000000000000000000000000")
        .query(&mut other)
        .unwrap();
    assert_eq!(exists, [true, false]);
}

/// A ZooKeeper-routed fleet: shard redis-0000 (slots 0-2047) with master
/// `old` and its replica `new`, shard redis-0001 on `other`, two proxies.
/// A client blocked in BLPOP and two subscribers on shard 0 (RESP2 on one
/// proxy, RESP3 on the other) are through the failover that makes `new` the
/// master: BLPOP fails with "outcome is unknown", the next BLPOP gets a
/// value pushed on the new master, and both subscribers get a message
/// published after the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_blpop_and_a_subscription_through_a_master_failover() {
    let zookeeper = ZooKeeper::start();
    let (old, new, other) = (Redis::start(), Redis::start(), Redis::start());
    let ops = zookeeper.client().await;
    create_shard(&ops, "redis-0000", 0, 2047).await;
    create_shard(&ops, "redis-0001", 2048, 4095).await;
    let member_old = add_member(&ops, "redis-0000", &old.addr()).await;
    add_member(&ops, "redis-0001", &other.addr()).await;
    let mut replica = direct(&new);
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(old.port)
        .query(&mut replica)
        .unwrap();
    let proxies = [
        start_proxy_with(&zookeeper, &[&other], ""),
        start_proxy_with(&zookeeper, &[&other], ""),
    ];
    for proxy in &proxies {
        wait_for_view(proxy, &format!("master={}", old.addr()));
    }
    let queue = keys_in(0, 2047, 1, "queue")[0].clone();
    let channel = keys_in(0, 2047, 1, "events")[0].clone();

    let mut subscriber = connect(&proxies[0].url());
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe(&channel).unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
    let config = redis::AsyncConnectionConfig::new().set_push_sender(tx);
    let mut resp3_subscriber = redis::Client::open(format!("{}?protocol=resp3", proxies[1].url()))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    resp3_subscriber.subscribe(&channel).await.unwrap();
    let blocked = {
        let (url, queue) = (proxies[0].url(), queue.clone());
        std::thread::spawn(move || {
            let mut con = connect(&url);
            let first: redis::RedisResult<Option<(String, String)>> = con.blpop(&queue, 0.0);
            (con, first)
        })
    };
    let mut old_direct = direct(&old);
    wait_until(
        "BLPOP blocked on the old master",
        Duration::from_secs(5),
        || {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query(&mut old_direct)
                .unwrap();
            info.contains("blocked_clients:1\r\n")
        },
    );
    wait_until("both subscriptions", Duration::from_secs(5), || {
        numsub(&mut old_direct, &channel) == 2
    });
    let mut publisher = connect(&proxies[1].url());
    let receivers: i64 = publisher.publish(&channel, "before").unwrap();
    assert_eq!(receivers, 2);
    let message = pubsub.get_message().unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "before");
    assert_eq!(next_message(&mut pushes).await, [&channel, "before"]);

    // The replica becomes the master; its member replaces the old one.
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut replica)
        .unwrap();
    add_member(&ops, "redis-0000", &new.addr()).await;
    ops.delete(&member_old, None).await.unwrap();
    for proxy in &proxies {
        wait_for_view(proxy, &format!("master={}", new.addr()));
    }

    let (mut con, first) = tokio::task::spawn_blocking(move || blocked.join().unwrap())
        .await
        .unwrap();
    let error = first.expect_err("the blocked BLPOP fails");
    assert!(
        error.to_string().contains("its outcome is unknown"),
        "{error}"
    );
    // The next BLPOP blocks on the new master and gets what is pushed there.
    let pusher = {
        let url = proxies[1].url();
        let queue = queue.clone();
        let new_port = new.port;
        std::thread::spawn(move || {
            let mut new_direct = connect(&format!("redis://127.0.0.1:{new_port}/"));
            wait_until(
                "BLPOP blocked on the new master",
                Duration::from_secs(5),
                || {
                    let info: String = redis::cmd("INFO")
                        .arg("clients")
                        .query(&mut new_direct)
                        .unwrap();
                    info.contains("blocked_clients:1\r\n")
                },
            );
            let pushed: i64 = connect(&url).rpush(&queue, "job").unwrap();
            assert_eq!(pushed, 1);
        })
    };
    let popped: Option<(String, String)> = con.blpop(&queue, 10.0).unwrap();
    assert_eq!(popped, Some((queue.clone(), "job".to_string())));
    pusher.join().unwrap();

    // The subscriptions moved to the new master unseen: a message published
    // after the switch arrives.
    let mut new_direct = direct(&new);
    wait_until(
        "the subscriptions on the new master",
        Duration::from_secs(5),
        || numsub(&mut new_direct, &channel) == 2,
    );
    let receivers: i64 = publisher.publish(&channel, "after").unwrap();
    assert_eq!(receivers, 2);
    let message = pubsub.get_message().unwrap();
    assert_eq!(message.get_channel_name(), channel);
    assert_eq!(message.get_payload::<String>().unwrap(), "after");
    assert_eq!(next_message(&mut pushes).await, [&channel, "after"]);
    // Still a working RESP3 connection.
    let pong: String = redis::cmd("PING")
        .query_async(&mut resp3_subscriber)
        .await
        .unwrap();
    assert_eq!(pong, "PONG");
}

/// PUBSUB NUMSUB of one channel on a Redis.
fn numsub(con: &mut redis::Connection, channel: &str) -> i64 {
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(con)
        .unwrap();
    counts[0].1
}

/// The next RESP3 `message` push (channel, text), within 5 s; confirmations
/// are skipped.
async fn next_message(
    pushes: &mut tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
) -> Vec<String> {
    loop {
        let push = tokio::time::timeout(Duration::from_secs(5), pushes.recv())
            .await
            .expect("a push within 5 s")
            .expect("connection open");
        match push.kind {
            PushKind::Subscribe => continue,
            PushKind::Message => {
                return push
                    .data
                    .iter()
                    .map(|v| redis::from_redis_value(v).unwrap())
                    .collect()
            }
            other => panic!("unexpected push {other:?}: {:?}", push.data),
        }
    }
}
