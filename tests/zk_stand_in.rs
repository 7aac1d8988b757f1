//! A proxy started while a shard's ZooKeeper data is junk, against real
//! processes: the slots no readable shard owns go to a stand-in, which
//! routes by the pool file only where the file agrees with ZooKeeper and
//! otherwise answers every command on them with why; the readable shards
//! follow ZooKeeper, failovers included, and the mended data puts the
//! shard back.

mod common;

use common::redis::{RawClient, Redis};
use common::wait_until;
use common::zk_cluster::*;
use common::zookeeper::ZooKeeper;
use std::time::Duration;
use zookeeper_client as zk;

/// How long a routing change may take on a busy 2-core machine.
const DEADLINE: Duration = Duration::from_secs(10);

/// The pool file's `timeout`, so a refused request never waits long.
const TIMEOUT: &str = "  timeout: 1000\n";

/// Why the stand-in's keys are refused (its error's start).
const UNPLACED: &str = "no shard whose data in ZooKeeper can be read owns these slots, and the \
                        pool file's ranges are not ZooKeeper's";

/// A proxy whose file has weights (2048 and 2048: the same split as the
/// ranges), started while the last shard's data is junk: the shard it can
/// read tiles a smaller slot space, which would move every key, so it
/// routes by its file until the data is mended, then takes ZooKeeper's
/// view (review: it took 0-2047 as the space, sent the last shard's keys
/// to the first, and refused the mended view until restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_whose_file_has_weights_waits_for_a_junk_last_shard() {
    let zookeeper = ZooKeeper::start();
    let (a, b) = (Redis::start(), Redis::start());
    let ops = zookeeper.client().await;
    two_shards_led_by(&ops, &a, &b).await;
    ops.set_data(&shard_path("redis-0001"), b"{junk", None)
        .await
        .unwrap();
    let timeout = "  timeout: 1000\n";
    let weighted = start_proxy_weighted(&zookeeper.hosts(), &[(&a, 2048), (&b, 2048)], timeout);
    wait_for_view(
        &weighted,
        &format!("last_error:{}", shard_path("redis-0001")),
    );
    let text = info(&weighted);
    assert!(
        text.contains("state_valid:0") && !text.contains("name=redis-0000"),
        "{text}"
    );
    let key = &keys_in(2048, 4095, 1, "weighted")[0];
    let mut client = RawClient::connect(weighted.port);
    assert_eq!(client.cmd_str(&["SET", key, "1"]), "+OK\r\n");
    assert!(holds(&b, key) && !holds(&a, key));
    mend(&ops, "redis-0001", 2048, 4095).await;
    wait_for_view(
        &weighted,
        &format!("name=redis-0001,range=2048-4095,master={}", b.addr()),
    );
    assert!(
        info(&weighted).contains("state_valid:1"),
        "{}",
        info(&weighted)
    );
    assert_eq!(client.cmd_str(&["GET", key]), "$1\r\n1\r\n");
}

/// Shards 0-1023 (a), 1024-2047 (b, its data junk) and 2048-4095 (c). A
/// proxy started with the file from before 1024-2047 moved to b (a for
/// 0-2047) answers that range's keys with an error instead of writing
/// them to a, where no other proxy looks (review: it routed every slot by
/// its file); one whose file has ZooKeeper's ranges routes that range by
/// its file, and the others by ZooKeeper's masters, not its file's (d, a
/// master failed over since). Both follow a failover meanwhile, and take
/// the shard once its data is mended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_started_while_a_shard_is_unreadable_trusts_its_file_only_where_it_agrees() {
    let zookeeper = ZooKeeper::start();
    let (a, b, c, d, c2) = (
        Redis::start(),
        Redis::start(),
        Redis::start(),
        Redis::start(),
        Redis::start(),
    );
    let ops = zookeeper.client().await;
    let [_, _, member_c] = three_shards_the_middle_junk(&ops, [&a, &b, &c]).await;
    let hosts = zookeeper.hosts();
    let timeout = "  timeout: 1000\n";
    let stale = start_proxy_ranged(&hosts, &[(&a, 0, 2047), (&c, 2048, 4095)], timeout, &[]);
    let agreeing = start_proxy_ranged(
        &hosts,
        &[(&d, 0, 1023), (&b, 1024, 2047), (&c, 2048, 4095)],
        timeout,
        &[],
    );
    for proxy in [&stale, &agreeing] {
        wait_for_view(
            proxy,
            &format!("name=redis-0002,range=2048-4095,master={}", c.addr()),
        );
        assert!(info(proxy).contains("state_valid:0"), "{}", info(proxy));
    }
    let [low, moved, high] = [
        (0, 1023, "low"),
        (1024, 2047, "moved"),
        (2048, 4095, "high"),
    ]
    .map(|(lo, hi, tag)| keys_in(lo, hi, 1, tag).remove(0));
    let mut client = RawClient::connect(stale.port);
    assert_eq!(client.cmd_str(&["SET", &low, "1"]), "+OK\r\n");
    assert!(holds(&a, &low));
    let refused = client.cmd_str(&["SET", &moved, "1"]);
    assert!(
        refused.starts_with(
            "-ERR shard 'redis-0001': no shard whose data in ZooKeeper can be read owns these \
             slots, and the pool file's ranges are not ZooKeeper's"
        ),
        "{refused}"
    );
    assert_eq!(client.cmd_str(&["GET", &moved]), refused);
    assert!(!holds(&a, &moved) && !holds(&b, &moved));
    assert_eq!(client.cmd_str(&["SET", &high, "1"]), "+OK\r\n");
    assert!(holds(&c, &high));
    // Keyless scripts stay on the shard whose name sorts first, as on
    // every other proxy (review: the stand-in sorted first and took them).
    let keyless = ["EVAL", "return redis.call('incr', 'keyless')", "0"];
    assert_eq!(client.cmd_str(&keyless), ":1\r\n");
    assert_eq!(a.connect().cmd_str(&["GET", "keyless"]), "$1\r\n1\r\n");

    let mut client = RawClient::connect(agreeing.port);
    for (key, owner) in [(&low, &a), (&moved, &b), (&high, &c)] {
        assert_eq!(client.cmd_str(&["SET", key, "2"]), "+OK\r\n");
        assert_eq!(owner.connect().cmd_str(&["GET", key]), "$1\r\n2\r\n");
    }
    assert!(!holds(&d, &low));

    // c fails over to c2 while the data is still junk: both follow.
    add_member(&ops, "redis-0002", &c2.addr()).await;
    ops.delete(&member_c, None).await.unwrap();
    for (proxy, value) in [(&stale, "3"), (&agreeing, "4")] {
        wait_for_view(
            proxy,
            &format!("name=redis-0002,range=2048-4095,master={}", c2.addr()),
        );
        let mut client = RawClient::connect(proxy.port);
        assert_eq!(client.cmd_str(&["SET", &high, value]), "+OK\r\n");
        let stored = format!("$1\r\n{value}\r\n");
        assert_eq!(c2.connect().cmd_str(&["GET", &high]), stored);
    }

    mend(&ops, "redis-0001", 1024, 2047).await;
    wait_for_view(&stale, "state_valid:1");
    assert!(
        info(&stale).contains(&format!(
            "name=redis-0001,range=1024-2047,master={},",
            b.addr()
        )),
        "{}",
        info(&stale)
    );
    let mut client = RawClient::connect(stale.port);
    assert_eq!(client.cmd_str(&["GET", &moved]), "$1\r\n2\r\n");
}

/// Shards 0-1023 (a), 1024-2047 (b, its data junk) and 2048-4095 (c), and
/// a proxy whose file is from before 1024-2047 moved to b; b's member.
async fn a_proxy_beside_a_junk_middle_shard(
    zookeeper: &ZooKeeper,
    [a, b, c]: [&Redis; 3],
) -> (zk::Client, common::proxy::Proxy, String) {
    let ops = zookeeper.client().await;
    let [_, member_b, _] = three_shards_the_middle_junk(&ops, [a, b, c]).await;
    let proxy = start_proxy_ranged(
        &zookeeper.hosts(),
        &[(a, 0, 2047), (c, 2048, 4095)],
        TIMEOUT,
        &[],
    );
    wait_for_view(
        &proxy,
        &format!("name=redis-0002,range=2048-4095,master={}", c.addr()),
    );
    (ops, proxy, member_b)
}

/// Subscriptions to channels of the stand-in's slots, and pattern
/// subscriptions (every shard's), are refused with the stand-in's reason;
/// SCRIPT KILL, FUNCTION KILL and FUNCTION STATS ask the real shards only
/// (review: all of them tried to connect to the stand-in's name and got
/// `invalid socket address`). A reload of the pool file keeps the
/// stand-in, routes it once the file agrees with ZooKeeper (to the
/// unreadable shard's master, failovers included), and the mended data
/// puts the shard back, subscriptions included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_in_refuses_subscriptions_with_its_reason_and_survives_a_reload() {
    let zookeeper = ZooKeeper::start();
    let (a, b, c, b2) = (
        Redis::start(),
        Redis::start(),
        Redis::start(),
        Redis::start(),
    );
    let (ops, proxy, member_b) = a_proxy_beside_a_junk_middle_shard(&zookeeper, [&a, &b, &c]).await;
    let [low, moved, high] = [
        (0, 1023, "low"),
        (1024, 2047, "moved"),
        (2048, 4095, "high"),
    ]
    .map(|(lo, hi, tag)| keys_in(lo, hi, 1, tag).remove(0));
    let cannot_subscribe = format!("-ERR shard 'redis-0001': cannot subscribe: {UNPLACED}");
    for command in ["SUBSCRIBE", "SSUBSCRIBE"] {
        let mut subscriber = RawClient::connect(proxy.port);
        let reply = subscriber.cmd_str(&[command, &moved]);
        assert!(reply.starts_with(&cannot_subscribe), "{command}: {reply}");
    }
    let mut subscriber = RawClient::connect(proxy.port);
    let reply = subscriber.cmd_str(&["PSUBSCRIBE", "*"]);
    assert!(reply.starts_with(&cannot_subscribe), "{reply}");
    let mut subscriber = RawClient::connect(proxy.port);
    assert_eq!(
        subscriber.cmd_str(&["SUBSCRIBE", &high]),
        format!(
            "*3\r\n$9\r\nsubscribe\r\n${}\r\n{high}\r\n:1\r\n",
            high.len()
        )
    );
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["PUBLISH", &high, "hi"]), ":1\r\n");
    assert_eq!(
        String::from_utf8(subscriber.read_reply()).unwrap(),
        format!(
            "*3\r\n$7\r\nmessage\r\n${}\r\n{high}\r\n$2\r\nhi\r\n",
            high.len()
        )
    );
    let notbusy = "-NOTBUSY No scripts in execution right now.\r\n";
    assert_eq!(client.cmd_str(&["SCRIPT", "KILL"]), notbusy);
    assert_eq!(client.cmd_str(&["FUNCTION", "KILL"]), notbusy);
    let stats = a.connect().cmd_str(&["FUNCTION", "STATS"]);
    assert!(stats.starts_with("*4\r\n"), "{stats}");
    assert_eq!(client.cmd_str(&["FUNCTION", "STATS"]), stats);

    // The same file again: nothing changes.
    let text = std::fs::read_to_string(&proxy.conf).unwrap();
    reload(&proxy, &text);
    let refused = client.cmd_str(&["SET", &moved, "1"]);
    assert!(
        refused.starts_with(&format!("-ERR shard 'redis-0001': {UNPLACED}")),
        "{refused}"
    );
    assert_eq!(client.cmd_str(&["SET", &low, "1"]), "+OK\r\n");
    assert!(holds(&a, &low) && !holds(&a, &moved) && !holds(&b, &moved));

    // A file that agrees with ZooKeeper: the stand-in routes by it.
    let agreeing = text.replace(
        &format!("{}:0-2047", a.addr()),
        &format!("{}:0-1023\n   - {}:1024-2047", a.addr(), b.addr()),
    );
    assert_ne!(agreeing, text);
    reload(&proxy, &agreeing);
    assert_eq!(client.cmd_str(&["SET", &moved, "2"]), "+OK\r\n");
    assert_eq!(b.connect().cmd_str(&["GET", &moved]), "$1\r\n2\r\n");

    // The unreadable shard fails over to b2: its keys follow its line, as
    // on every other proxy, not the file's server (review: they stayed on
    // b until the data was mended).
    add_member(&ops, "redis-0001", &b2.addr()).await;
    ops.delete(&member_b, None).await.unwrap();
    wait_until("the stand-in to follow the failover", DEADLINE, || {
        client.cmd_str(&["SET", &moved, "3"]) == "+OK\r\n"
            && b2.connect().cmd_str(&["GET", &moved]) == "$1\r\n3\r\n"
    });

    // Mended: the shard is back, and its channels can be subscribed to.
    mend(&ops, "redis-0001", 1024, 2047).await;
    wait_for_view(&proxy, "state_valid:1");
    let mut subscriber = RawClient::connect(proxy.port);
    assert_eq!(
        subscriber.cmd_str(&["SUBSCRIBE", &moved]),
        format!(
            "*3\r\n$9\r\nsubscribe\r\n${}\r\n{moved}\r\n:1\r\n",
            moved.len()
        )
    );
    assert_eq!(client.cmd_str(&["PUBLISH", &moved, "back"]), ":1\r\n");
    assert_eq!(
        String::from_utf8(subscriber.read_reply()).unwrap(),
        format!(
            "*3\r\n$7\r\nmessage\r\n${}\r\n{moved}\r\n$4\r\nback\r\n",
            moved.len()
        )
    );
    assert_eq!(client.cmd_str(&["GET", &moved]), "$1\r\n3\r\n");
}

/// Reloads `text` and waits until the proxy says it did.
fn reload(proxy: &common::proxy::Proxy, text: &str) {
    let before = proxy.log_text().matches("pool file reloaded").count();
    std::fs::write(&proxy.conf, text).unwrap();
    proxy.guard.signal("HUP");
    wait_until("the reload", Duration::from_secs(10), || {
        proxy.log_text().matches("pool file reloaded").count() > before
    });
}

/// Gives shard `name` valid data again: the range `lo`-`hi`.
async fn mend(ops: &zk::Client, name: &str, lo: u32, hi: u32) {
    let data = shardproxy::zk::layout::ShardData::new(lo, hi).to_json();
    ops.set_data(&shard_path(name), &data, None).await.unwrap();
}

/// Shards 0-1023 (led by a), 1024-2047 (b, its data junk) and 2048-4095
/// (c); the znode of c's membership.
async fn three_shards_the_middle_junk(ops: &zk::Client, [a, b, c]: [&Redis; 3]) -> [String; 3] {
    create_shard(ops, "redis-0000", 0, 1023).await;
    create_shard(ops, "redis-0001", 1024, 2047).await;
    create_shard(ops, "redis-0002", 2048, 4095).await;
    let member_a = add_member(ops, "redis-0000", &a.addr()).await;
    let member_b = add_member(ops, "redis-0001", &b.addr()).await;
    let member_c = add_member(ops, "redis-0002", &c.addr()).await;
    ops.set_data(&shard_path("redis-0001"), b"{junk", None)
        .await
        .unwrap();
    [member_a, member_b, member_c]
}
