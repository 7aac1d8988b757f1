//! A big stream moved by `shardproxy-admin migrate` against real
//! processes (ZooKeeper, redis-servers, proxies): copied in chunks with
//! its IDs, metadata, consumer groups, consumers and pending entries,
//! while neither Redis stops answering for long.

mod common;

use common::migration::{cluster, exists, longest_event, longest_stall, record_latency, run_admin};
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
