//! The keyspace-wide commands through a proxy over three redis-servers:
//! SCAN walks every shard under one cursor that a second proxy with the same
//! pool accepts, KEYS joins every shard's keys, RANDOMKEY finds a key on any
//! shard, and FLUSHALL/FLUSHDB are refused unless the pool allows them.

mod common;

use common::proxy::Proxy;
use common::redis::{encode_command, RawClient, Redis};
use common::wait_until;
use common::zk_cluster::{add_member, keys_in, replicated_shard, wait_for_view, ReplicatedShard};
use std::collections::BTreeSet;
use std::time::Duration;

/// Three shards in range form, keys hashed with md5.
fn pool_body(shards: &[Redis], extra: &str) -> String {
    format!(
        "  redis: true\n  hash: md5\n  distribution: modula\n{extra}  servers:\n   - {}:0-1364\n   - {}:1365-2729\n   - {}:2730-4095\n",
        shards[0].addr(),
        shards[1].addr(),
        shards[2].addr()
    )
}

fn start_shards() -> Vec<Redis> {
    (0..3).map(|_| Redis::start()).collect()
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

fn dbsize(shard: &Redis) -> i64 {
    redis::cmd("DBSIZE").query(&mut direct(shard)).unwrap()
}

/// Writes 150 strings, 30 hashes and 20 sets through the proxy; returns
/// their names, and checks that every shard got some.
fn fill(con: &mut redis::Connection, shards: &[Redis]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for i in 0..150 {
        let key = format!("key:{i}");
        let _: () = redis::cmd("SET").arg(&key).arg(i).query(con).unwrap();
        names.insert(key);
    }
    for i in 0..30 {
        let key = format!("hash:{i}");
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("f")
            .arg(i)
            .query(con)
            .unwrap();
        names.insert(key);
    }
    for i in 0..20 {
        let key = format!("set:{i}");
        let _: () = redis::cmd("SADD").arg(&key).arg(i).query(con).unwrap();
        names.insert(key);
    }
    for shard in shards {
        assert!(
            dbsize(shard) > 10,
            "shard {} holds too few keys",
            shard.addr()
        );
    }
    names
}

/// Scans to the end, alternating between the connections for every call;
/// returns every key seen and how many calls it took.
fn scan_all(cons: &mut [&mut redis::Connection], options: &[&str]) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut calls = 0;
    loop {
        let con = &mut cons[calls % cons.len()];
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(&cursor);
        for option in options {
            cmd.arg(*option);
        }
        let (next, keys): (String, Vec<String>) = cmd.query(*con).unwrap();
        calls += 1;
        assert!(next.parse::<u64>().is_ok(), "cursor {next} is not a u64");
        seen.extend(keys);
        if next == "0" {
            return (seen, calls);
        }
        assert!(calls < 10_000, "SCAN does not end");
        cursor = next;
    }
}

#[test]
fn scan_returns_every_key_and_any_proxy_continues_the_cursor() {
    let shards = start_shards();
    let body = pool_body(&shards, "");
    let (a, b) = (Proxy::start(&body), Proxy::start(&body));
    let mut con_a = connect(&a.url());
    let mut con_b = connect(&b.url());
    let names = fill(&mut con_a, &shards);

    let (seen, calls) = scan_all(&mut [&mut con_a, &mut con_b], &["COUNT", "10"]);
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), names);
    assert!(calls > 3, "COUNT 10 over 200 keys took only {calls} calls");

    let (seen, _) = scan_all(
        &mut [&mut con_b, &mut con_a],
        &["MATCH", "key:1*", "COUNT", "7"],
    );
    let want: BTreeSet<String> = names
        .iter()
        .filter(|k| k.starts_with("key:1"))
        .cloned()
        .collect();
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), want);

    let (seen, _) = scan_all(&mut [&mut con_a, &mut con_b], &["TYPE", "hash"]);
    let want: BTreeSet<String> = names
        .iter()
        .filter(|k| k.starts_with("hash:"))
        .cloned()
        .collect();
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), want);

    // In RESP3 too.
    let mut con3 = connect(&format!("{}?protocol=resp3", a.url()));
    let (seen, _) = scan_all(&mut [&mut con3, &mut con_b], &["COUNT", "25"]);
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), names);
}

/// The shard a SCAN is walking fails over (its replica promoted through
/// ZooKeeper, no key changed): the scan walks the new master from the
/// start, and every key comes back. A Redis cursor means nothing to another
/// server, which hashes keys with a seed of its own: the old master's
/// cursor resumed on the new one missed 653 of 6,015 keys (review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_across_a_failover_of_its_shard_returns_every_key() {
    // ZooKeeper first: bindings drop in reverse, so it stops last.
    let ReplicatedShard {
        zookeeper: _zookeeper,
        proxy,
        ops,
        member_old,
        old,
        new,
    } = replicated_shard(&[]).await;
    let names: BTreeSet<String> = (0..3000).map(|i| format!("key:{i}")).collect();
    let mut load = redis::pipe();
    for name in &names {
        load.cmd("SET").arg(name).arg("v").ignore();
    }
    let () = load.query(&mut direct(&old)).unwrap();
    wait_until(
        "the replica to hold every key",
        Duration::from_secs(10),
        || dbsize(&new) == 3000,
    );

    let mut con = connect(&proxy.url());
    let mut scan = |cursor: &str| -> (String, Vec<String>) {
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(50)
            .query(&mut con)
            .unwrap()
    };
    let (mut cursor, mut seen) = ("0".to_string(), Vec::new());
    for _ in 0..20 {
        let (next, keys) = scan(&cursor);
        seen.extend(keys);
        cursor = next;
    }
    assert_ne!(cursor, "0", "the scan ended before the failover");

    // Failover, as the watchdogs would do it.
    assert_eq!(
        new.connect().cmd_str(&["REPLICAOF", "NO", "ONE"]),
        "+OK\r\n"
    );
    add_member(&ops, "redis-0000", &new.addr()).await;
    ops.delete(&member_old, None).await.unwrap();
    wait_for_view(&proxy, &format!("master={}", new.addr()));

    let mut calls = 0;
    while cursor != "0" {
        let (next, keys) = scan(&cursor);
        seen.extend(keys);
        cursor = next;
        calls += 1;
        assert!(calls < 1000, "SCAN does not end");
    }
    let unique: BTreeSet<String> = seen.into_iter().collect();
    let missed: Vec<&String> = names.difference(&unique).collect();
    let some = &missed[..missed.len().min(10)];
    assert!(
        missed.is_empty(),
        "{} keys missed: {some:?}...",
        missed.len()
    );
    assert_eq!(unique, names);
}

#[test]
fn scan_of_an_empty_keyspace_ends_at_once() {
    let shards = start_shards();
    let proxy = Proxy::start(&pool_body(&shards, ""));
    let mut c = RawClient::connect(proxy.port);
    assert_eq!(c.cmd_str(&["SCAN", "0"]), "*2\r\n$1\r\n0\r\n*0\r\n");
}

/// SCAN and RANDOMKEY run before the requests the client pipelined after
/// them, as in Redis: a key written after them in the same pipeline is not
/// seen, one deleted after them is.
#[test]
fn keyspace_commands_keep_their_place_in_a_pipeline() {
    let shards = start_shards();
    let proxy = Proxy::start(&pool_body(&shards, ""));
    let key = keys_in(0, 1364, 1, "later").remove(0);
    let mut c = RawClient::connect(proxy.port);
    c.send_raw(
        &[
            encode_command(&[b"SCAN", b"0", b"COUNT", b"1000"]),
            encode_command(&[b"SET", key.as_bytes(), b"v"]),
        ]
        .concat(),
    );
    // The first shard is done at once: the later ones are empty.
    assert_eq!(c.read_reply(), b"*2\r\n$1\r\n0\r\n*0\r\n");
    assert_eq!(c.read_reply(), b"+OK\r\n");
    assert_eq!(c.cmd_str(&["DEL", &key]), ":1\r\n");
    c.send_raw(
        &[
            encode_command(&[b"SET", key.as_bytes(), b"v"]),
            encode_command(&[b"RANDOMKEY"]),
            encode_command(&[b"DEL", key.as_bytes()]),
        ]
        .concat(),
    );
    assert_eq!(c.read_reply(), b"+OK\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.read_reply()),
        format!("${}\r\n{key}\r\n", key.len())
    );
    assert_eq!(c.read_reply(), b":1\r\n");
}

#[test]
fn invalid_cursors_get_the_error_redis_gives() {
    let shards = start_shards();
    let proxy = Proxy::start(&pool_body(&shards, ""));
    let mut ours = RawClient::connect(proxy.port);
    let mut theirs = shards[0].connect();
    for cursor in ["abc", "1x", " 1", "+", "18446744073709551616"] {
        let want = theirs.cmd_str(&["SCAN", cursor]);
        assert_eq!(want, "-ERR invalid cursor\r\n", "{cursor:?}");
        assert_eq!(ours.cmd_str(&["SCAN", cursor]), want, "{cursor:?}");
    }
    // A cursor naming a fourth shard: this pool has three.
    assert_eq!(ours.cmd_str(&["SCAN", "3"]), "-ERR invalid cursor\r\n");
    // Options are checked by the shards, as Redis does.
    assert_eq!(
        ours.cmd_str(&["SCAN", "0", "COUNT", "0"]),
        theirs.cmd_str(&["SCAN", "0", "COUNT", "0"])
    );
}

#[test]
fn keys_joins_every_shard() {
    let shards = start_shards();
    let proxy = Proxy::start(&pool_body(&shards, ""));
    let mut con = connect(&proxy.url());
    let names = fill(&mut con, &shards);
    let all: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert_eq!(all.len(), names.len(), "no key twice");
    assert_eq!(all.into_iter().collect::<BTreeSet<_>>(), names);
    let sets: Vec<String> = redis::cmd("KEYS").arg("set:*").query(&mut con).unwrap();
    let want: BTreeSet<String> = names
        .iter()
        .filter(|k| k.starts_with("set:"))
        .cloned()
        .collect();
    assert_eq!(sets.into_iter().collect::<BTreeSet<_>>(), want);
    let none: Vec<String> = redis::cmd("KEYS").arg("nope*").query(&mut con).unwrap();
    assert!(none.is_empty());
    // RESP3: the same array.
    let mut c = RawClient::connect(proxy.port);
    c.cmd_str(&["HELLO", "3"]);
    assert_eq!(c.cmd_str(&["KEYS", "key:149"]), "*1\r\n$7\r\nkey:149\r\n");
}

#[test]
fn randomkey_is_nil_only_when_every_shard_is_empty() {
    let shards = start_shards();
    let proxy = Proxy::start(&pool_body(&shards, ""));
    let mut c = RawClient::connect(proxy.port);
    assert_eq!(c.cmd_str(&["RANDOMKEY"]), "$-1\r\n");
    let mut c3 = RawClient::connect(proxy.port);
    c3.cmd_str(&["HELLO", "3"]);
    assert_eq!(c3.cmd_str(&["RANDOMKEY"]), "_\r\n");
    // One key on one shard: every try finds it, whichever shard it starts on.
    assert_eq!(c.cmd_str(&["SET", "only", "1"]), "+OK\r\n");
    for _ in 0..20 {
        let mut fresh = RawClient::connect(proxy.port);
        assert_eq!(fresh.cmd_str(&["RANDOMKEY"]), "$4\r\nonly\r\n");
    }
    let mut con = connect(&proxy.url());
    let names = fill(&mut con, &shards);
    for _ in 0..20 {
        let key: String = redis::cmd("RANDOMKEY").query(&mut con).unwrap();
        assert!(key == "only" || names.contains(&key), "{key}");
    }
}

#[test]
fn flush_is_refused_by_default() {
    let shards = start_shards();
    let proxy = Proxy::start(&pool_body(&shards, ""));
    let mut con = connect(&proxy.url());
    fill(&mut con, &shards);
    let mut c = RawClient::connect(proxy.port);
    assert_eq!(
        c.cmd_str(&["FLUSHALL"]),
        "-ERR unsupported command 'FLUSHALL' through shardproxy unless the pool sets 'allow_flush: true' (it then empties every shard)\r\n"
    );
    assert_eq!(
        c.cmd_str(&["flushdb", "ASYNC"]),
        "-ERR unsupported command 'flushdb' through shardproxy unless the pool sets 'allow_flush: true' (it then empties every shard)\r\n"
    );
    for shard in &shards {
        assert!(dbsize(shard) > 10);
    }
}

#[test]
fn flush_with_allow_flush_empties_every_shard() {
    let shards = start_shards();
    let proxy = Proxy::start(&pool_body(&shards, "  allow_flush: true\n"));
    let mut con = connect(&proxy.url());
    let mut c = RawClient::connect(proxy.port);

    fill(&mut con, &shards);
    assert_eq!(c.cmd_str(&["FLUSHALL"]), "+OK\r\n");
    for shard in &shards {
        assert_eq!(dbsize(shard), 0, "shard {}", shard.addr());
    }

    fill(&mut con, &shards);
    assert_eq!(c.cmd_str(&["FLUSHDB", "SYNC"]), "+OK\r\n");
    for shard in &shards {
        assert_eq!(dbsize(shard), 0, "shard {}", shard.addr());
    }
    assert_eq!(c.cmd_str(&["DBSIZE"]), ":0\r\n");
    // Redis's own refusal of a bad option comes back as it is.
    let theirs = shards[0].connect().cmd_str(&["FLUSHALL", "NOW"]);
    assert_eq!(c.cmd_str(&["FLUSHALL", "NOW"]), theirs);
}

#[test]
fn allow_flush_follows_a_reload() {
    let shards = start_shards();
    let proxy = Proxy::start(&pool_body(&shards, ""));
    let mut c = RawClient::connect(proxy.port);
    assert_eq!(c.cmd_str(&["SET", "a", "1"]), "+OK\r\n");
    let text = std::fs::read_to_string(&proxy.conf).unwrap();
    let allowed = text.replace("  redis: true\n", "  redis: true\n  allow_flush: true\n");
    std::fs::write(&proxy.conf, allowed).unwrap();
    proxy.guard.signal("HUP");
    wait_until("FLUSHALL to be allowed", Duration::from_secs(10), || {
        c.cmd_str(&["FLUSHALL"]) == "+OK\r\n"
    });
    assert_eq!(c.cmd_str(&["DBSIZE"]), ":0\r\n");
}

#[test]
fn keyspace_commands_inside_multi_abort_the_transaction() {
    let shards = start_shards();
    let proxy = Proxy::start(&pool_body(&shards, ""));
    let mut c = RawClient::connect(proxy.port);
    assert_eq!(c.cmd_str(&["MULTI"]), "+OK\r\n");
    assert_eq!(c.cmd_str(&["SET", "a", "1"]), "+QUEUED\r\n");
    assert_eq!(
        c.cmd_str(&["SCAN", "0"]),
        "-ERR unsupported command 'SCAN' through shardproxy\r\n"
    );
    assert!(c.cmd_str(&["EXEC"]).starts_with("-EXECABORT"));
    assert_eq!(c.cmd_str(&["GET", "a"]), "$-1\r\n");
}

/// DBSIZE and INFO keyspace run after the client's own earlier requests,
/// whatever connection those took: with several connections per backend,
/// and in RESP3 (whose requests travel on connections of their own).
#[test]
fn dbsize_and_info_keyspace_see_the_clients_own_writes() {
    let shards = start_shards();
    let proxy = Proxy::start(&pool_body(&shards, "  server_connections: 4\n"));
    for round in 0..20 {
        for shard in &shards {
            assert_eq!(shard.connect().cmd_str(&["FLUSHALL"]), "+OK\r\n");
        }
        let mut c = RawClient::connect(proxy.port);
        let resp3 = round % 2 == 1;
        if resp3 {
            assert!(c.cmd_str(&["HELLO", "3"]).starts_with('%'));
        }
        let mut pipeline = Vec::new();
        for i in 0..50 {
            let key = format!("own:{round}:{i}");
            pipeline.extend(encode_command(&[b"SET", key.as_bytes(), &[b'x'; 100]]));
        }
        pipeline.extend(encode_command(&[b"DBSIZE"]));
        pipeline.extend(encode_command(&[b"INFO", b"keyspace"]));
        c.send_raw(&pipeline);
        for _ in 0..50 {
            assert_eq!(c.read_reply(), b"+OK\r\n");
        }
        assert_eq!(c.read_reply(), b":50\r\n", "round {round}");
        let info = String::from_utf8_lossy(&c.read_reply()).into_owned();
        assert!(info.contains("db0:keys=50,"), "round {round}: {info}");
    }
}
