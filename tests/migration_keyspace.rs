//! The commands over every shard (DBSIZE, KEYS, SCAN, SCRIPT LOAD,
//! FLUSHALL) while a range is half moved to a new shard, one that owns no
//! range until the move commits: the keys already moved are on that shard
//! only, and the proxies must count, list, script and flush them there too.

mod common;

use common::migration::{cluster, dbsize, exists, interrupted_move, preload, run_admin, Cluster};
use common::redis::RawClient;
use common::wait_until;
use common::zk_cluster::{keys_in, start_proxy_with, wait_for_view};
use std::collections::BTreeSet;
use std::time::Duration;

fn connect(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    client.get_connection().unwrap()
}

/// One SCAN call: the next cursor and the keys.
fn scan(con: &mut redis::Connection, cursor: &str, count: usize) -> (String, Vec<String>) {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query(con)
        .unwrap()
}

/// Every key SCAN returns through `port`, from cursor 0 to the end.
fn scan_all(port: u16) -> BTreeSet<String> {
    let mut con = connect(port);
    let mut cursor = "0".to_string();
    let mut seen = BTreeSet::new();
    for _ in 0..10_000 {
        let (next, keys) = scan(&mut con, &cursor, 500);
        seen.extend(keys);
        if next == "0" {
            return seen;
        }
        cursor = next;
    }
    panic!("SCAN through {port} does not end");
}

/// A range half moved to the new shard redis-0002: 6,000 keys of slots
/// 0-1023 (and 500 elsewhere) written, a slow mover killed once it has
/// moved some, so the range stays served through the migration lane.
/// Returns every key and one that has moved.
async fn half_moved(c: &Cluster) -> (BTreeSet<String>, String) {
    let [source, _, new] = &c.redis;
    let moving = keys_in(0, 1023, 6000, "m");
    let staying = keys_in(2048, 4095, 500, "s");
    preload(&c.proxies[0], &moving);
    preload(&c.proxies[0], &staying);
    let everything: BTreeSet<String> = moving.iter().chain(&staying).cloned().collect();
    interrupted_move(&c.conf, "0-1023", "redis-0002", new, 500);
    let moved = dbsize(new);
    assert!(moved < moving.len() as u64, "the mover finished: {moved}");
    let on_new = moving.iter().find(|k| exists(new, k)).unwrap().clone();
    assert!(!exists(source, &on_new));
    (everything, on_new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_moved_range_is_counted_listed_scripted_and_flushed_on_the_new_shard() {
    let c = cluster().await;
    let new = &c.redis[2];
    let (everything, on_new) = half_moved(&c).await;
    let on_new = on_new.as_str();

    let total = everything.len();
    for proxy in &c.proxies {
        let mut client = RawClient::connect(proxy.port);
        assert_eq!(client.cmd_str(&["DBSIZE"]), format!(":{total}\r\n"));
        assert!(
            client
                .cmd_str(&["KEYS", "*"])
                .starts_with(&format!("*{total}\r\n")),
            "KEYS through {}",
            proxy.port
        );
        assert_eq!(
            scan_all(proxy.port),
            everything,
            "SCAN through {}",
            proxy.port
        );
        // A script loaded now runs on a key that has moved.
        let script = "return redis.call('GET', KEYS[1])";
        let sha = client.cmd_str(&["SCRIPT", "LOAD", script]);
        let sha = sha.trim_start_matches("$40\r\n").trim_end();
        assert_eq!(
            client.cmd_str(&["EVALSHA", sha, "1", on_new]),
            format!("${}\r\n{on_new}\r\n", on_new.len())
        );
        assert_eq!(
            new.connect().cmd_str(&["SCRIPT", "EXISTS", sha]),
            "*1\r\n:1\r\n"
        );
    }

    // FLUSHALL empties the new shard too: nothing comes back when the move
    // is finished.
    let flusher = start_proxy_with(
        &c.zookeeper,
        &[&c.redis[0], &c.redis[1]],
        "  timeout: 1000\n  allow_flush: true\n",
    );
    let mut client = RawClient::connect(flusher.port);
    assert_eq!(client.cmd_str(&["DBSIZE"]), format!(":{total}\r\n"));
    assert_eq!(client.cmd_str(&["FLUSHALL"]), "+OK\r\n");
    assert_eq!(dbsize(new), 0);
    let (code, text) = run_admin(&c.conf, &["migrate", "0-1023", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    wait_for_view(&c.proxies[0], "0-1023");
    for redis in &c.redis {
        assert_eq!(dbsize(redis), 0, "{}", redis.addr());
    }
    assert_eq!(client.cmd_str(&["DBSIZE"]), ":0\r\n");
}

/// Keyspace notifications of the moving range's keys come from the new
/// shard once a key has moved there: keyevent channels and patterns are
/// held on it too, and a key's keyspace channel on both shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_of_a_half_moved_range_reach_subscribers() {
    let c = cluster().await;
    let (_, on_new) = half_moved(&c).await;
    let not_moved = keys_in(0, 1023, 6000, "m")
        .into_iter()
        .find(|k| exists(&c.redis[0], k))
        .unwrap();
    for redis in &c.redis {
        let set = ["CONFIG", "SET", "notify-keyspace-events", "KE$"];
        assert_eq!(redis.connect().cmd_str(&set), "+OK\r\n");
    }
    let proxy = c.proxies[1].port;
    let mut events = RawClient::connect(proxy);
    assert_eq!(
        events.cmd_str(&["SUBSCRIBE", "__keyevent@0__:set"]),
        "*3\r\n$9\r\nsubscribe\r\n$18\r\n__keyevent@0__:set\r\n:1\r\n"
    );
    let mut pattern = RawClient::connect(proxy);
    assert_eq!(
        pattern.cmd_str(&["PSUBSCRIBE", "__keyspace@0__:m:*"]),
        "*3\r\n$10\r\npsubscribe\r\n$18\r\n__keyspace@0__:m:*\r\n:1\r\n"
    );
    let mut per_key = RawClient::connect(proxy);
    let channels = [on_new.as_str(), not_moved.as_str()].map(|k| format!("__keyspace@0__:{k}"));
    for (i, channel) in channels.iter().enumerate() {
        assert_eq!(
            per_key.cmd_str(&["SUBSCRIBE", channel]),
            subscribed(channel, i + 1)
        );
    }
    let mut writer = RawClient::connect(c.proxies[0].port);
    for (key, channel) in [on_new.as_str(), not_moved.as_str()].iter().zip(&channels) {
        assert_eq!(writer.cmd_str(&["SET", key, "v2"]), "+OK\r\n");
        assert_eq!(
            String::from_utf8_lossy(&events.read_reply()),
            format!(
                "*3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n${}\r\n{key}\r\n",
                key.len()
            )
        );
        assert_eq!(
            String::from_utf8_lossy(&per_key.read_reply()),
            format!(
                "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n$3\r\nset\r\n",
                channel.len()
            )
        );
        assert_eq!(
            String::from_utf8_lossy(&pattern.read_reply()),
            format!(
                "*4\r\n$8\r\npmessage\r\n$18\r\n__keyspace@0__:m:*\r\n${}\r\n{channel}\r\n$3\r\nset\r\n",
                channel.len()
            )
        );
    }
}

/// `abort` of a half-done move to a new shard turns it around: the new
/// shard, now the source, is still counted and flushed. A SCAN paused
/// before the commit of a move to a new shard continues after it and
/// finds every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_move_and_a_scan_across_the_commit_miss_no_key() {
    let c = cluster().await;
    let new = &c.redis[2];
    let (everything, _) = half_moved(&c).await;
    let total = everything.len();
    let (code, text) = run_admin(&c.conf, &["abort"]);
    assert_eq!(code, 0, "{text}");
    for proxy in &c.proxies {
        wait_until(
            "the turned-around migration",
            Duration::from_secs(10),
            || common::zk_cluster::info(proxy).contains("source=redis-0002"),
        );
        let mut client = RawClient::connect(proxy.port);
        assert_eq!(client.cmd_str(&["DBSIZE"]), format!(":{total}\r\n"));
        assert_eq!(
            scan_all(proxy.port),
            everything,
            "SCAN through {}",
            proxy.port
        );
    }
    let (code, text) = run_admin(&c.conf, &["migrate", "0-1023", "--to", "redis-0000"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(dbsize(new), 0);

    // Again to the new shard, with a SCAN paused in the first shard.
    interrupted_move(&c.conf, "0-1023", "redis-0002", new, 200);
    let mut con = connect(c.proxies[0].port);
    let (mut cursor, mut seen) = scan(&mut con, "0", 100);
    assert_ne!(cursor, "0");
    let (code, text) = run_admin(&c.conf, &["migrate", "0-1023", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    wait_for_view(&c.proxies[0], "0-1023");
    while cursor != "0" {
        let (next, keys) = scan(&mut con, &cursor, 500);
        seen.extend(keys);
        cursor = next;
    }
    let seen: BTreeSet<String> = seen.into_iter().collect();
    assert_eq!(seen, everything);
}

/// A move toward a shard the scan walked already (redis-0001's lower half
/// to redis-0000, which sorts first): the keys carried over while the scan
/// is past redis-0000 are still returned, by a second walk of redis-0000
/// (review: 224 of 2,000 keys missed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_finds_the_keys_moved_behind_it() {
    let c = cluster().await;
    let [first, second, _] = &c.redis;
    let moving = keys_in(2048, 3071, 2000, "m");
    let mut staying = keys_in(0, 2047, 300, "a");
    staying.extend(keys_in(3072, 4095, 300, "b"));
    preload(&c.proxies[0], &moving);
    preload(&c.proxies[0], &staying);
    interrupted_move(&c.conf, "2048-3071", "redis-0000", first, 500);
    let mut con = connect(c.proxies[0].port);
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    // Through redis-0000, until the cursor names redis-0001.
    while cursor.parse::<u64>().unwrap() % 1024 != 1 {
        let (next, keys) = scan(&mut con, &cursor, 100);
        seen.extend(keys);
        assert_ne!(next, "0", "the scan ended in redis-0000");
        cursor = next;
    }
    // Every key of the range still on redis-0001 moves now, read through
    // the other proxy.
    let left: Vec<&String> = moving.iter().filter(|k| exists(second, k)).collect();
    assert!(left.len() > 100, "{} keys left to move", left.len());
    let mut reader = RawClient::connect(c.proxies[1].port);
    for key in &left {
        let value = format!("${}\r\n{key}\r\n", key.len());
        assert_eq!(reader.cmd_str(&["GET", key]), value);
        assert!(!exists(second, key), "{key} did not move");
    }
    while cursor != "0" {
        let (next, keys) = scan(&mut con, &cursor, 100);
        seen.extend(keys);
        cursor = next;
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    let everything: BTreeSet<String> = moving.iter().chain(&staying).cloned().collect();
    assert_eq!(unique.len(), everything.len());
    assert_eq!(unique, everything);
    // Only redis-0000 is walked twice. A second walk of redis-0001 would
    // return its 300 staying keys again; Redis itself may return a few of
    // them twice, as the keys leaving shrink its table mid-walk (once in
    // about 20 runs: "b:294").
    let twice = staying
        .iter()
        .filter(|k| k.starts_with('b'))
        .filter(|key| seen.iter().filter(|k| k == key).count() > 1)
        .count();
    assert!(
        twice < 30,
        "{twice} of redis-0001's 300 staying keys came twice"
    );
}

/// Every key SCAN returns through `con` from `cursor` on, until the cursor
/// names the shard at `position` (or the scan ends).
fn scan_until(
    con: &mut redis::Connection,
    cursor: &mut String,
    seen: &mut Vec<String>,
    position: u64,
) {
    loop {
        let (next, keys) = scan(con, cursor, 50);
        seen.extend(keys);
        *cursor = next;
        if cursor == "0" || cursor.parse::<u64>().unwrap() % 1024 == position {
            return;
        }
    }
}

/// Two moves during one scan toward shards it walked already, to two
/// targets (redis-0001's lower half to redis-0000, then redis-0002's to
/// redis-0001), each seen by one SCAN call and finished before the scan
/// goes on: every key of both is returned (review: the second target was
/// not owed a walk, 800 of 800 keys missed; and a second walk limited to
/// the latest move's range missed 1,200 of 1,500 keys of the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_finds_the_keys_of_two_moves_behind_it() {
    let c = cluster().await;
    let [first, second, _] = &c.redis;
    let (code, text) = run_admin(&c.conf, &["migrate", "3072-4095", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    wait_for_view(&c.proxies[0], "range=3072-4095");
    let one = keys_in(2048, 2559, 800, "m");
    let two = keys_in(3072, 3583, 800, "p");
    let mut staying = keys_in(0, 2047, 200, "a");
    staying.extend(keys_in(2560, 3071, 200, "b"));
    staying.extend(keys_in(3584, 4095, 200, "c"));
    for keys in [&one, &two, &staying] {
        preload(&c.proxies[0], keys);
    }
    let mut con = connect(c.proxies[0].port);
    let (mut cursor, mut seen) = ("0".to_string(), Vec::new());
    for (position, range, to, target) in [
        (1, "2048-2559", "redis-0000", first),
        (2, "3072-3583", "redis-0001", second),
    ] {
        scan_until(&mut con, &mut cursor, &mut seen, position);
        assert_ne!(cursor, "0");
        interrupted_move(&c.conf, range, to, target, dbsize(target) + 100);
        let (next, keys) = scan(&mut con, &cursor, 50);
        seen.extend(keys);
        cursor = next;
        let (code, text) = run_admin(&c.conf, &["migrate", range, "--to", to]);
        assert_eq!(code, 0, "{text}");
    }
    scan_until(&mut con, &mut cursor, &mut seen, u64::MAX);
    let unique: BTreeSet<String> = seen.into_iter().collect();
    let everything: BTreeSet<String> = one.iter().chain(&two).chain(&staying).cloned().collect();
    assert_eq!(unique.len(), everything.len());
    assert_eq!(unique, everything);
}

/// During a move a plain channel is held on its home shard only, so the
/// move's target being down does not refuse it; after `abort` of a move to
/// a new shard, a key still there is heard from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_during_a_move_follow_where_keys_are() {
    let mut c = cluster().await;
    let (_, on_new) = half_moved(&c).await;
    for redis in &c.redis {
        let set = ["CONFIG", "SET", "notify-keyspace-events", "KEx"];
        assert_eq!(redis.connect().cmd_str(&set), "+OK\r\n");
    }
    let (code, text) = run_admin(&c.conf, &["abort"]);
    assert_eq!(code, 0, "{text}");
    let proxy = c.proxies[1].port;
    wait_until(
        "the turned-around migration",
        Duration::from_secs(10),
        || common::zk_cluster::info(&c.proxies[1]).contains("source=redis-0002"),
    );
    let channel = format!("__keyspace@0__:{on_new}");
    let mut per_key = RawClient::connect(proxy);
    assert_eq!(
        per_key.cmd_str(&["SUBSCRIBE", &channel]),
        subscribed(&channel, 1)
    );
    let new = c.redis[2].connect().cmd_str(&["PEXPIRE", &on_new, "50"]);
    assert_eq!(new, ":1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&per_key.read_reply()),
        format!(
            "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n$7\r\nexpired\r\n",
            channel.len()
        )
    );

    // The new shard down: a plain channel of the range is still served.
    c.redis[2].guard.kill();
    let plain = keys_in(0, 1023, 1, "chan").remove(0);
    let mut subscriber = RawClient::connect(proxy);
    assert_eq!(
        subscriber.cmd_str(&["SUBSCRIBE", &plain]),
        subscribed(&plain, 1)
    );
    let mut publisher = RawClient::connect(c.proxies[0].port);
    assert_eq!(publisher.cmd_str(&["PUBLISH", &plain, "hi"]), ":1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&subscriber.read_reply()),
        format!(
            "*3\r\n$7\r\nmessage\r\n${}\r\n{plain}\r\n$2\r\nhi\r\n",
            plain.len()
        )
    );
}

/// Redis's confirmation of a SUBSCRIBE to `channel`, the client's `count`th.
fn subscribed(channel: &str, count: usize) -> String {
    format!(
        "*3\r\n$9\r\nsubscribe\r\n${}\r\n{channel}\r\n:{count}\r\n",
        channel.len()
    )
}
