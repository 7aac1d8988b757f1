//! Big keys moved by `shardproxy-admin migrate` against real processes
//! (ZooKeeper, redis-servers, proxies) while neither Redis stops answering
//! for long: a stream copied in chunks with its IDs, metadata, consumer
//! groups, consumers and pending entries; a 1,000,000-field hash and a long
//! list in chunks; a hash, a list and a set of few large or many 2.5 KB
//! elements in steps of about 512 KiB.

mod common;

use common::migration::{
    cluster, exists, longest_event, longest_stall, preload, record_latency, run_admin, Cluster,
};
use common::redis::RawClient;
use common::zk_cluster::keys_in;
use redis::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const ENTRIES: usize = 1_000_000;

fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection()
        .unwrap()
}

fn query(con: &mut redis::Connection, args: &[&str]) -> Value {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Nil => "nil".into(),
        other => format!("{other:?}"),
    }
}

fn items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

/// `name` of an XINFO reply (a flat field-value array).
fn field(info: &[Value], name: &str) -> String {
    info.chunks(2)
        .find(|pair| text(&pair[0]) == name)
        .map(|pair| text(&pair[1]))
        .unwrap_or_else(|| panic!("no {name} in {info:?}"))
}

/// Everything of the stream a client can observe except idle times, as
/// lines to compare; and each pending entry's idle time (ms), by group
/// and ID.
fn observe(port: u16, key: &str) -> (Vec<String>, Vec<(String, i64)>) {
    let mut con = connect(port);
    let mut lines = vec![format!("XLEN {}", text(&query(&mut con, &["XLEN", key])))];
    for ends in [["XRANGE", "-", "+"], ["XREVRANGE", "+", "-"]] {
        let edge = query(&mut con, &[ends[0], key, ends[1], ends[2], "COUNT", "1"]);
        lines.push(format!("{} {edge:?}", ends[0]));
    }
    let info = items(query(&mut con, &["XINFO", "STREAM", key]));
    for name in [
        "length",
        "last-generated-id",
        "max-deleted-entry-id",
        "entries-added",
        "recorded-first-entry-id",
        "groups",
    ] {
        lines.push(format!("{name} {}", field(&info, name)));
    }
    let mut idle = Vec::new();
    for group in items(query(&mut con, &["XINFO", "GROUPS", key])) {
        let group = items(group);
        let name = field(&group, "name");
        for f in [
            "consumers",
            "pending",
            "last-delivered-id",
            "entries-read",
            "lag",
        ] {
            lines.push(format!("{name} {f} {}", field(&group, f)));
        }
        let summary = query(&mut con, &["XPENDING", key, &name]);
        lines.push(format!("{name} XPENDING {summary:?}"));
        for entry in items(query(
            &mut con,
            &["XPENDING", key, &name, "-", "+", "100000"],
        )) {
            let entry = items(entry);
            let id = text(&entry[0]);
            lines.push(format!(
                "{name} pending {id} {} delivered {}",
                text(&entry[1]),
                text(&entry[3])
            ));
            let ms = text(&entry[2]).parse().unwrap();
            idle.push((format!("{name} {id}"), ms));
        }
        for consumer in items(query(&mut con, &["XINFO", "CONSUMERS", key, &name])) {
            let consumer = items(consumer);
            lines.push(format!(
                "{name} consumer {} pending {}",
                field(&consumer, "name"),
                field(&consumer, "pending")
            ));
        }
    }
    (lines, idle)
}

/// The IDs of `count` entries from `start` (inclusive).
fn ids(con: &mut redis::Connection, key: &str, start: &str, count: usize) -> Vec<String> {
    items(query(
        con,
        &["XRANGE", key, start, "+", "COUNT", &count.to_string()],
    ))
    .into_iter()
    .map(|entry| text(&items(entry)[0]))
    .collect()
}

/// A stream of [`ENTRIES`] entries with all the state a move must keep:
/// deleted and trimmed entries, two groups (one started half-way with
/// ENTRIESREAD), consumers with and without pending entries, entries
/// delivered up to three times, acknowledged ones, and pending entries
/// whose message was deleted or trimmed since.
fn build_stream(port: u16, key: &str) {
    let mut con = connect(port);
    // In scripts of 50,000 XADDs: the build itself must not time out.
    let fill = "for i = 1, tonumber(ARGV[1]) do redis.call('xadd', KEYS[1], '*', 'n', i, 'p', 'payload-' .. i) end return 1";
    let step = 50_000;
    for _ in 0..ENTRIES / step {
        query(&mut con, &["EVAL", fill, "1", key, &step.to_string()]);
    }
    let head = ids(&mut con, key, "-", 1000);
    query(&mut con, &["XGROUP", "CREATE", key, "g1", "0"]);
    for consumer in ["c1", "c2", "c3"] {
        let args = [
            "XREADGROUP",
            "GROUP",
            "g1",
            consumer,
            "COUNT",
            "200",
            "STREAMS",
            key,
            ">",
        ];
        query(&mut con, &args);
    }
    // Delivered again: c1's first 50 go to c2 (twice for the first 20).
    for (from, to) in [(0, 50), (0, 20)] {
        let mut args = vec!["XCLAIM", key, "g1", "c2", "0"];
        args.extend(head[from..to].iter().map(String::as_str));
        query(&mut con, &args);
    }
    // c3 acknowledged half of its entries.
    let mut ack = vec!["XACK", key, "g1"];
    ack.extend(head[400..500].iter().map(String::as_str));
    query(&mut con, &ack);
    query(
        &mut con,
        &["XGROUP", "CREATECONSUMER", key, "g1", "idle-one"],
    );
    // Pending messages gone: deleted in the middle, trimmed at the head.
    let mut del = vec!["XDEL", key];
    del.extend(head[300..310].iter().map(String::as_str));
    del.extend(head[900..905].iter().map(String::as_str));
    query(&mut con, &del);
    query(&mut con, &["XTRIM", key, "MINID", &head[10]]);
    // g2 starts half-way and has read 1,000 entries since.
    let nth = "local r = redis.call('xrange', KEYS[1], '-', '+', 'COUNT', ARGV[1]) return r[#r][1]";
    let middle = text(&query(
        &mut con,
        &["EVAL", nth, "1", key, &(ENTRIES / 2).to_string()],
    ));
    let read = (ENTRIES / 2).to_string();
    query(
        &mut con,
        &["XGROUP", "CREATE", key, "g2", &middle, "ENTRIESREAD", &read],
    );
    for consumer in ["d1", "d2"] {
        let args = [
            "XREADGROUP",
            "GROUP",
            "g2",
            consumer,
            "COUNT",
            "500",
            "STREAMS",
            key,
            ">",
        ];
        query(&mut con, &args);
    }
    query(&mut con, &["EXPIRE", key, "7200"]);
}

/// Polls the PTTL of `key`'s lock on the source until `stop`: the lowest
/// seen (None if never locked), and how long it was held. The mover
/// renews it as it copies, so it must never run down far.
fn watch_lock(
    port: u16,
    key: &str,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(Option<i64>, Duration)> {
    let lock = format!("__shardproxy_lock:{key}");
    thread::spawn(move || {
        let mut con = connect(port);
        let (mut lowest, mut first, mut last) = (None, None, Instant::now());
        while !stop.load(Ordering::Relaxed) {
            let ttl: i64 = text(&query(&mut con, &["PTTL", &lock])).parse().unwrap();
            if ttl > 0 {
                lowest = Some(lowest.map_or(ttl, |l: i64| l.min(ttl)));
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
            }
            thread::sleep(Duration::from_millis(20));
        }
        (lowest, first.map_or(Duration::ZERO, |f| last - f))
    })
}

/// A big stream of 4 KiB entries: 500 of them are more than one reply
/// the mover accepts, so its chunks must follow the entries' size.
fn build_wide_stream(port: u16, key: &str) {
    let fill = "for i = 1, 5100 do redis.call('xadd', KEYS[1], '*', 'body', string.rep('x', 4096) .. i) end return 1";
    query(&mut connect(port), &["EVAL", fill, "1", key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_entry_stream_moves_in_chunks_with_its_groups_and_pending_entries() {
    let c = cluster().await;
    let key = keys_in(0, 1023, 1, "stream").remove(0);
    let built = Instant::now();
    build_stream(c.redis[0].port, &key);
    eprintln!("built the stream in {:.1} s", built.elapsed().as_secs_f64());
    let wide = keys_in(0, 1023, 1, "widestream").remove(0);
    build_wide_stream(c.redis[0].port, &wide);
    let (before, idle_before) = observe(c.redis[0].port, &key);
    let (wide_before, _) = observe(c.redis[0].port, &wide);
    assert!(
        before.iter().any(|l| l.starts_with("g1 pending")),
        "{before:?}"
    );

    for redis in [&c.redis[0], &c.redis[2]] {
        record_latency(redis);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stalls = [
        longest_stall(c.redis[0].port, stop.clone()),
        longest_stall(c.redis[2].port, stop.clone()),
    ];
    let locks = [
        watch_lock(c.redis[0].port, &key, stop.clone()),
        watch_lock(c.redis[0].port, &wide, stop.clone()),
    ];
    let started = Instant::now();
    let (code, out) = run_admin(&c.conf, &["migrate", "0-1023", "--to", "redis-0002"]);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let [src, dst] = stalls.map(|t| t.join().unwrap());
    let [(lock_ttl, held), (_, wide_held)] = locks.map(|t| t.join().unwrap());
    assert_eq!(code, 0, "{out}");
    let busy = [longest_event(&c.redis[0]), longest_event(&c.redis[2])];
    eprintln!(
        "{out}a {ENTRIES}-entry stream with 2 groups and a 5,100-entry stream of 4 KiB entries \
         moved in {:.1} s; longest PING wait: source {} ms, target {} ms; longest event \
         Redis timed: source {} {} ms, target {} {} ms; locked for {:.1} s and {:.1} s",
        took.as_secs_f64(),
        src.as_millis(),
        dst.as_millis(),
        busy[0].0,
        busy[0].1,
        busy[1].0,
        busy[1].1,
        held.as_secs_f64(),
        wide_held.as_secs_f64(),
    );
    // What the issue asks: neither Redis busy more than ~100 ms at once.
    for (side, (event, ms)) in ["source", "target"].iter().zip(&busy) {
        assert!(*ms < 100, "{side} busy {ms} ms in one {event}");
    }
    // A PING's wait adds the time a loaded machine (2 shared cores here)
    // leaves Redis or the prober unscheduled: the hash test's bound.
    assert!(src < Duration::from_millis(500), "source stalled {src:?}");
    assert!(dst < Duration::from_millis(500), "target stalled {dst:?}");
    // The lock's TTL is 30 s, renewed every 2 s of the copy.
    let lock_ttl = lock_ttl.expect("the stream was never seen locked");
    assert!(lock_ttl > 25_000, "the lock ran down to {lock_ttl} ms");
    assert_eq!(observe(c.redis[2].port, &wide).0, wide_before);

    let (after, idle_after) = observe(c.redis[2].port, &key);
    for (want, got) in before.iter().zip(&after) {
        assert_eq!(want, got);
    }
    assert_eq!(before.len(), after.len());
    // Idle times go on from where they were, not from the move.
    for ((entry, was), (_, now)) in idle_before.iter().zip(&idle_after) {
        assert!(
            *now >= *was && *now <= *was + took.as_millis() as i64 + 2000,
            "{entry}: idle {was} ms before, {now} ms after"
        );
    }
    let ttl = c.redis[2].connect().cmd_str(&["TTL", &key]);
    let secs: i64 = ttl[1..ttl.len() - 2].parse().unwrap();
    assert!(secs > 7000, "TTL {ttl:?}");
    assert!(!exists(&c.redis[0], &key), "left on the source");
    let mut client = RawClient::connect(c.proxies[1].port);
    let len = client.cmd_str(&["XLEN", &key]);
    assert_eq!(len, format!(":{}\r\n", ENTRIES - 25), "through the proxy");
    // Nothing of the migration's own is left on either side.
    assert!(!exists(&c.redis[0], &wide), "left on the source");
    for redis in [&c.redis[0], &c.redis[2]] {
        let keys = redis.connect().cmd_str(&["KEYS", "__shardproxy_*"]);
        assert_eq!(keys, "*0\r\n", "{keys}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_element_hash_moves_in_chunks_without_stalling_either_redis() {
    let c = cluster().await;
    let big = keys_in(0, 1023, 1, "big").remove(0);
    let list = keys_in(0, 1023, 1, "biglist").remove(0);
    let small = keys_in(0, 1023, 2000, "small");
    preload(&c.proxies[0], &small);
    let mut source = c.redis[0].connect();
    let fill = "for i = 1, tonumber(ARGV[1]) do redis.call('hset', KEYS[1], 'f' .. i, 'v' .. i) end return 1";
    assert_eq!(
        source.cmd_str(&["EVAL", fill, "1", &big, "1000000"]),
        ":1\r\n"
    );
    let push = "for i = 1, tonumber(ARGV[1]) do redis.call('rpush', KEYS[1], i) end return 1";
    assert_eq!(
        source.cmd_str(&["EVAL", push, "1", &list, "20000"]),
        ":1\r\n"
    );
    assert_eq!(source.cmd_str(&["EXPIRE", &big, "7200"]), ":1\r\n");

    let stop = Arc::new(AtomicBool::new(false));
    let stalls = [
        longest_stall(c.redis[0].port, stop.clone()),
        longest_stall(c.redis[2].port, stop.clone()),
    ];
    let started = Instant::now();
    let (code, text) = run_admin(&c.conf, &["migrate", "0-1023", "--to", "redis-0002"]);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let [src, dst] = stalls.map(|t| t.join().unwrap());
    assert_eq!(code, 0, "{text}");
    eprintln!(
        "{text}a 1,000,000-field hash, a 20,000-element list and 2,000 small keys moved in {:.1} s; longest PING wait: source {} ms, target {} ms",
        took.as_secs_f64(),
        src.as_millis(),
        dst.as_millis()
    );
    assert!(src < Duration::from_millis(500), "source stalled {src:?}");
    assert!(dst < Duration::from_millis(500), "target stalled {dst:?}");

    let mut client = RawClient::connect(c.proxies[1].port);
    assert_eq!(client.cmd_str(&["HLEN", &big]), ":1000000\r\n");
    assert_eq!(
        client.cmd_str(&["HGET", &big, "f777777"]),
        "$7\r\nv777777\r\n"
    );
    assert_eq!(client.cmd_str(&["LLEN", &list]), ":20000\r\n");
    assert_eq!(
        client.cmd_str(&["LINDEX", &list, "12345"]),
        "$5\r\n12346\r\n"
    );
    assert_moved_whole(&c, &mut client, &big, &[&big, &list]);
}

/// `with_ttl` kept its 2-hour TTL through the move, every key of `moved`
/// is on the target and gone from the source, and nothing of the
/// migration's own is left on either side.
fn assert_moved_whole(c: &Cluster, client: &mut RawClient, with_ttl: &str, moved: &[&str]) {
    let ttl = client.cmd_str(&["TTL", with_ttl]);
    let secs: i64 = ttl[1..ttl.len() - 2].parse().unwrap();
    assert!(secs > 7000, "TTL {ttl:?}");
    for key in moved {
        assert!(
            exists(&c.redis[2], key) && !exists(&c.redis[0], key),
            "{key}"
        );
    }
    for redis in [&c.redis[0], &c.redis[2]] {
        let keys = redis.connect().cmd_str(&["KEYS", "__shardproxy_*"]);
        assert_eq!(keys, "*0\r\n", "{keys}");
    }
}

/// A hash and a list of few but large elements (120 MB in 200 fields,
/// 60 MB in 100 elements: under the 5,000-element mark) move a step of
/// about 512 KiB at a time: one MIGRATE of them kept the source busy for
/// 450 ms. A set of many 2.5 KB members moves too: its 500-member steps
/// were over the mover's 1 MiB reply limit, and the move failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_few_large_elements_move_in_steps_without_stalling_the_source() {
    let c = cluster().await;
    let hash = keys_in(0, 1023, 1, "widehash").remove(0);
    let list = keys_in(0, 1023, 1, "widelist").remove(0);
    let mut source = c.redis[0].connect();
    let fill = "local v = string.rep('x', 600000) for i = 1, tonumber(ARGV[1]) do \
                redis.call('hset', KEYS[1], 'f' .. i, i .. v) end return 1";
    assert_eq!(source.cmd_str(&["EVAL", fill, "1", &hash, "200"]), ":1\r\n");
    let push = "local v = string.rep('y', 600000) for i = 1, tonumber(ARGV[1]) do \
                redis.call('rpush', KEYS[1], i .. v) end return 1";
    assert_eq!(source.cmd_str(&["EVAL", push, "1", &list, "100"]), ":1\r\n");
    assert_eq!(source.cmd_str(&["EXPIRE", &hash, "7200"]), ":1\r\n");
    let set = keys_in(0, 1023, 1, "wideset").remove(0);
    let add = "local v = string.rep('z', 2500) for i = 1, tonumber(ARGV[1]) do \
               redis.call('sadd', KEYS[1], i .. v) end return 1";
    assert_eq!(source.cmd_str(&["EVAL", add, "1", &set, "6000"]), ":1\r\n");
    for redis in [&c.redis[0], &c.redis[2]] {
        record_latency(redis);
    }

    let (code, text) = run_admin(&c.conf, &["migrate", "0-1023", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    let busy = [longest_event(&c.redis[0]), longest_event(&c.redis[2])];
    eprintln!(
        "{text}longest event Redis timed: source {} {} ms, target {} {} ms",
        busy[0].0, busy[0].1, busy[1].0, busy[1].1
    );
    for (side, (event, ms)) in ["source", "target"].iter().zip(&busy) {
        assert!(*ms < 100, "{side} busy {ms} ms in one {event}");
    }

    let mut client = RawClient::connect(c.proxies[1].port);
    assert_eq!(client.cmd_str(&["HLEN", &hash]), ":200\r\n");
    assert_eq!(client.cmd_str(&["HSTRLEN", &hash, "f123"]), ":600003\r\n");
    let value = client.cmd_str(&["HGET", &hash, "f123"]);
    assert!(value.starts_with("$600003\r\n123xxx"), "{}", &value[..20]);
    assert_eq!(client.cmd_str(&["LLEN", &list]), ":100\r\n");
    let element = client.cmd_str(&["LINDEX", &list, "41"]);
    assert!(
        element.starts_with("$600002\r\n42yyy"),
        "{}",
        &element[..20]
    );
    assert_eq!(client.cmd_str(&["SCARD", &set]), ":6000\r\n");
    let member = format!("4321{}", "z".repeat(2500));
    assert_eq!(client.cmd_str(&["SISMEMBER", &set, &member]), ":1\r\n");
    assert_moved_whole(&c, &mut client, &hash, &[&hash, &list, &set]);
}
