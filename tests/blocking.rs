//! Blocking commands through the proxy, against real redis-servers: each
//! runs on the client's dedicated connection, holds up nobody else, answers
//! exactly as Redis does, and is released the moment its client goes.

mod common;

use common::proxy::Proxy;
use common::redis::{encode_command, RawClient, Redis};
use common::wait_until;
use common::zk_cluster::{add_member, keys_in, replicated_shard, ReplicatedShard};
use std::time::{Duration, Instant};

/// A proxy over two redis-servers (one shared connection each), with
/// `extra` pool keys.
fn two_shards(extra: &str) -> (Proxy, Vec<Redis>) {
    let shards = vec![Redis::start(), Redis::start()];
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  hash_tag: \"{{}}\"\n  server_connections: 1\n{extra}  servers:\n   - {}:0-2047\n   - {}:2048-4095\n",
        shards[0].addr(),
        shards[1].addr()
    ));
    (proxy, shards)
}

fn args(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn send(client: &mut RawClient, words: &[&str]) {
    let words = args(words);
    let refs: Vec<&[u8]> = words.iter().map(|w| &w[..]).collect();
    client.send_raw(&encode_command(&refs));
}

/// How many clients of `redis` are blocked in a command.
fn blocked_clients(redis: &Redis) -> u64 {
    redis
        .connect()
        .info_number("clients", "blocked_clients")
        .unwrap_or(0)
}

fn total_blocked(shards: &[Redis]) -> u64 {
    shards.iter().map(blocked_clients).sum()
}

/// A client blocked on an empty list holds up nobody: other clients'
/// requests, on the same shard and the same shared connection, are answered
/// at once; a push then wakes the blocked client with Redis's own reply.
#[test]
fn a_blocked_client_holds_up_nobody() {
    let (proxy, shards) = two_shards("");
    let mut blocked = RawClient::connect(proxy.port);
    send(&mut blocked, &["BLPOP", "jobs", "0"]);
    wait_until("BLPOP blocked on a backend", Duration::from_secs(5), || {
        total_blocked(&shards) == 1
    });
    let mut other = RawClient::connect(proxy.port);
    let started = Instant::now();
    for i in 0..200 {
        let value = i.to_string();
        assert_eq!(other.cmd_str(&["SET", "jobs:last", &value]), "+OK\r\n");
        assert_eq!(
            other.cmd_str(&["GET", "jobs:last"]),
            format!("${}\r\n{value}\r\n", value.len())
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "400 requests beside a blocked client took {:?}",
        started.elapsed()
    );
    assert_eq!(other.cmd_str(&["RPUSH", "jobs", "job-1"]), ":1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&blocked.read_reply()),
        "*2\r\n$4\r\njobs\r\n$5\r\njob-1\r\n"
    );
    // The dedicated connection is reused: a second BLPOP works the same.
    send(&mut blocked, &["BLPOP", "jobs", "0"]);
    wait_until("second BLPOP blocked", Duration::from_secs(5), || {
        total_blocked(&shards) == 1
    });
    assert_eq!(other.cmd_str(&["LPUSH", "jobs", "job-2"]), ":1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&blocked.read_reply()),
        "*2\r\n$4\r\njobs\r\n$5\r\njob-2\r\n"
    );
}

/// Every blocking command answers through the proxy byte for byte as Redis
/// does, both when it times out and when data is there, and waits its own
/// timeout (not the pool's).
#[test]
fn blocking_commands_reply_as_redis_does() {
    let (proxy, _shards) = two_shards("  timeout: 200\n");
    let direct = Redis::start();
    // Keys share a hash tag, so multi-key commands stay on one shard.
    let setup: &[&[&str]] = &[
        &["RPUSH", "{t}list", "a", "b", "c"],
        &["ZADD", "{t}zset", "1", "one", "2", "two", "3", "three"],
        &["XADD", "{t}stream", "1-1", "f", "v"],
        &["XGROUP", "CREATE", "{t}stream", "g", "0"],
        &["XGROUP", "CREATE", "{t}stream", "block", "$"],
    ];
    let cases: &[&[&str]] = &[
        // Times out: the pool timeout is 200 ms, the command's own 0.5 s.
        &["BLPOP", "{t}none", "0.5"],
        &["BZPOPMIN", "{t}none", "0.3"],
        &["XREAD", "BLOCK", "300", "STREAMS", "{t}stream", "$"],
        // A group and a consumer named like the option: BLOCK is 400 ms.
        &[
            "XREADGROUP",
            "GROUP",
            "block",
            "5",
            "BLOCK",
            "400",
            "STREAMS",
            "{t}stream",
            ">",
        ],
        // Data there.
        &["BLPOP", "{t}none", "{t}list", "1"],
        &["BRPOP", "{t}list", "1"],
        &["BLMOVE", "{t}list", "{t}other", "LEFT", "RIGHT", "1"],
        &["BRPOPLPUSH", "{t}other", "{t}list", "1"],
        &[
            "BLMPOP", "1", "2", "{t}none", "{t}list", "LEFT", "COUNT", "2",
        ],
        &["BZPOPMIN", "{t}zset", "1"],
        &["BZPOPMAX", "{t}zset", "1"],
        &["BZMPOP", "1", "1", "{t}zset", "MIN"],
        &["XREAD", "BLOCK", "100", "STREAMS", "{t}stream", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "100",
            "STREAMS",
            "{t}stream",
            ">",
        ],
        // Redis's own argument errors.
        &["BLPOP", "{t}list", "notanumber"],
        &["BLPOP", "{t}list", "-1"],
    ];
    let mut through = RawClient::connect(proxy.port);
    let mut plain = direct.connect();
    for command in setup {
        assert_eq!(
            through.cmd_str(command),
            plain.cmd_str(command),
            "{command:?}"
        );
    }
    for command in cases {
        let started = Instant::now();
        let want = plain.cmd_str(command);
        let direct_took = started.elapsed();
        let started = Instant::now();
        let got = through.cmd_str(command);
        let took = started.elapsed();
        assert_eq!(got, want, "{command:?}");
        if direct_took >= Duration::from_millis(250) {
            assert!(
                took + Duration::from_millis(100) >= direct_took
                    && took < direct_took + Duration::from_millis(500),
                "{command:?}: {took:?} through the proxy, {direct_took:?} direct"
            );
        }
    }
}

/// The keys of one blocking command must be on one shard.
#[test]
fn blocking_keys_on_two_shards_are_refused() {
    let (proxy, _shards) = two_shards("");
    let mut client = RawClient::connect(proxy.port);
    let (a, b) = keys_on_two_shards();
    let reply = client.cmd_str(&["BLPOP", &a, &b, "1"]);
    assert!(reply.starts_with("-CROSSSLOT"), "{reply}");
    assert_eq!(client.cmd_str(&["PING"]), "+PONG\r\n");
}

/// Two keys that this test pool puts on different shards: the first on
/// shard 0 (slots 0-2047), the second on shard 1.
fn keys_on_two_shards() -> (String, String) {
    (
        keys_in(0, 2047, 1, "low").remove(0),
        keys_in(2048, 4095, 1, "high").remove(0),
    )
}

/// A client that disconnects while blocked is gone from its backend at
/// once: nothing stays blocked, and a later push is not eaten by a ghost.
#[test]
fn a_client_that_leaves_while_blocked_releases_its_backend() {
    leaves_while_blocked(&encode_command(&[b"BLPOP", b"queue", b"0"]));
}

/// The same for a client that pipelined more than the proxy reads ahead
/// (30 KB of GETs) behind its BLPOP before leaving: its close was not
/// seen behind the unread requests, and the BLPOP stayed blocked for a
/// client that had gone, taking the next push to its list.
#[test]
fn a_client_that_leaves_while_blocked_behind_a_long_pipeline_releases_its_backend() {
    let mut pipeline = encode_command(&[b"BLPOP", b"queue", b"0"]);
    for _ in 0..1000 {
        pipeline.extend(encode_command(&[b"GET", b"some-key"]));
    }
    leaves_while_blocked(&pipeline);
}

/// A client sends `pipeline` (a BLPOP on the empty list `queue` first),
/// blocks, and disconnects: its backend is freed, INFO counts nobody
/// blocked, and a later push stays in the list.
fn leaves_while_blocked(pipeline: &[u8]) {
    let (proxy, shards) = two_shards("");
    let mut blocked = RawClient::connect(proxy.port);
    blocked.send_raw(pipeline);
    wait_until("BLPOP blocked on a backend", Duration::from_secs(5), || {
        total_blocked(&shards) == 1
    });
    drop(blocked);
    wait_until("the backend side released", Duration::from_secs(2), || {
        total_blocked(&shards) == 0
    });
    let mut other = RawClient::connect(proxy.port);
    wait_until(
        "INFO counts no blocked client",
        Duration::from_secs(2),
        || {
            other
                .cmd_str(&["INFO", "clients"])
                .contains("blocked_clients:0\r\n")
        },
    );
    assert_eq!(other.cmd_str(&["RPUSH", "queue", "x"]), ":1\r\n");
    assert_eq!(other.cmd_str(&["LLEN", "queue"]), ":1\r\n");
}

/// SIGTERM does not wait the whole drain for a client blocked without a
/// timeout: what other clients are owed is answered, the blocked client is
/// let go as Redis lets go of its clients at SHUTDOWN, and nothing it
/// waited for is taken.
#[test]
fn sigterm_lets_go_of_a_client_blocked_for_ever() {
    let (mut proxy, shards) = two_shards("");
    let mut blocked = RawClient::connect(proxy.port);
    send(&mut blocked, &["BLPOP", "forever", "0"]);
    wait_until("BLPOP blocked on a backend", Duration::from_secs(5), || {
        total_blocked(&shards) == 1
    });
    let mut busy = RawClient::connect(proxy.port);
    let mut batch = Vec::new();
    for i in 0..2000 {
        batch.extend(encode_command(&[b"SET", format!("s{i}").as_bytes(), b"v"]));
    }
    busy.send_raw(&batch);
    assert_eq!(busy.read_reply(), b"+OK\r\n");
    let signalled = Instant::now();
    proxy.guard.signal("TERM");
    for _ in 1..2000 {
        assert_eq!(busy.read_reply(), b"+OK\r\n", "replies owed are answered");
    }
    assert!(
        blocked.is_closed(),
        "the blocked client's connection closes"
    );
    assert_eq!(proxy.guard.wait_exit(Duration::from_secs(15)), Some(0));
    let took = signalled.elapsed();
    eprintln!("exited {took:?} after SIGTERM");
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}: the 10 s drain"
    );
    wait_until("the backend side released", Duration::from_secs(2), || {
        total_blocked(&shards) == 0
    });
    for shard in &shards {
        let mut direct = shard.connect();
        assert_eq!(direct.cmd_str(&["RPUSH", "forever", "x"]), ":1\r\n");
        assert_eq!(
            direct.cmd_str(&["LLEN", "forever"]),
            ":1\r\n",
            "nobody took it"
        );
    }
}

/// The pool caps the dedicated connections; past the cap a blocking
/// command gets a clear error at once, and a freed slot is usable again.
#[test]
fn the_dedicated_connection_cap_gives_a_clear_error() {
    let (proxy, shards) = two_shards("  max_dedicated_connections: 2\n");
    let mut holders: Vec<RawClient> = (0..2)
        .map(|i| {
            let mut client = RawClient::connect(proxy.port);
            send(&mut client, &["BLPOP", &format!("held{i}"), "0"]);
            client
        })
        .collect();
    wait_until("two clients blocked", Duration::from_secs(5), || {
        total_blocked(&shards) == 2
    });
    let mut third = RawClient::connect(proxy.port);
    let info = third.cmd_str(&["INFO", "clients"]);
    assert!(info.contains("blocked_clients:2\r\n"), "{info}");
    assert!(info.contains("dedicated_connections:2\r\n"), "{info}");
    let started = Instant::now();
    let reply = third.cmd_str(&["BLPOP", "held2", "0"]);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        reply.starts_with(
            "-ERR shardproxy: all 2 dedicated backend connections (max_dedicated_connections)"
        ),
        "{reply}"
    );
    // Ordinary commands still work for that client.
    assert_eq!(third.cmd_str(&["RPUSH", "held0", "v"]), ":1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&holders[0].read_reply()),
        "*2\r\n$5\r\nheld0\r\n$1\r\nv\r\n"
    );
    // Answered, holders[0] holds no connection any more, though it stays
    // connected: the third client gets the slot at once.
    assert_eq!(third.cmd_str(&["BLPOP", "held2", "0.01"]), "*-1\r\n");
    assert_eq!(third.info_number("clients", "blocked_clients"), Some(1));
    assert_eq!(
        third.info_number("clients", "dedicated_connections"),
        Some(1)
    );
    // The last holder's connection is taken back the same way once its
    // command is answered.
    assert_eq!(third.cmd_str(&["RPUSH", "held1", "w"]), ":1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&holders[1].read_reply()),
        "*2\r\n$5\r\nheld1\r\n$1\r\nw\r\n"
    );
    wait_until("no connection held", Duration::from_secs(5), || {
        third.info_number("clients", "dedicated_connections") == Some(0)
    });
}

/// Clients that ran a blocking command once and then sit idle hold no
/// backend connection: more of them than the cap allows each get their
/// reply in turn, and all stay connected. The connections are parked and
/// reused, not opened anew for every command, and a parked one makes room
/// for a client that needs another server.
#[test]
fn idle_clients_do_not_hold_dedicated_connections() {
    let (proxy, shards) = two_shards("  max_dedicated_connections: 2\n");
    let (first_shard_key, second_shard_key) = keys_on_two_shards();
    let connections_received = |redis: &Redis| {
        redis
            .connect()
            .info_number("stats", "total_connections_received")
            .unwrap()
    };
    let mut clients: Vec<RawClient> = (0..6).map(|_| RawClient::connect(proxy.port)).collect();
    // The shared connection to the shard is open before counting.
    assert_eq!(clients[0].cmd_str(&["LLEN", &first_shard_key]), ":0\r\n");
    let before = connections_received(&shards[0]);
    for round in 0..5 {
        for client in &mut clients {
            assert_eq!(
                client.cmd_str(&["BLPOP", &first_shard_key, "0.01"]),
                "*-1\r\n",
                "round {round}"
            );
        }
    }
    for client in &mut clients {
        assert_eq!(client.cmd_str(&["PING"]), "+PONG\r\n");
    }
    let info = clients[0].cmd_str(&["INFO", "clients"]);
    assert!(info.contains("dedicated_connections:0\r\n"), "{info}");
    assert!(
        info.contains("dedicated_connections_parked:1\r\n"),
        "{info}"
    );
    // 30 blocking commands, one after another, took one new connection
    // to the shard (the probe of `connections_received` is the other).
    assert_eq!(connections_received(&shards[0]) - before, 2);
    // A client holding a blocked connection and one needing the other
    // server: the parked connection is closed to make room.
    send(&mut clients[0], &["BLPOP", &first_shard_key, "0"]);
    wait_until("one client blocked", Duration::from_secs(5), || {
        total_blocked(&shards) == 1
    });
    assert_eq!(
        clients[1].cmd_str(&["BLPOP", &second_shard_key, "0.01"]),
        "*-1\r\n"
    );
    assert_eq!(
        clients[2].cmd_str(&["RPUSH", &first_shard_key, "v"]),
        ":1\r\n"
    );
    let reply = String::from_utf8_lossy(&clients[0].read_reply()).into_owned();
    assert_eq!(
        reply,
        format!(
            "*2\r\n${}\r\n{first_shard_key}\r\n$1\r\nv\r\n",
            first_shard_key.len()
        )
    );
}

/// A pipeline around a blocking command keeps its order: requests before
/// it are answered first and those after it run only once it returned.
#[test]
fn a_pipeline_around_a_blocking_command_keeps_its_order() {
    let (proxy, _shards) = two_shards("");
    let mut client = RawClient::connect(proxy.port);
    let mut pipeline = Vec::new();
    for command in [
        &["SET", "order", "1"][..],
        &["RPUSH", "order:list", "x"],
        &["BLPOP", "order:list", "0"],
        &["GET", "order"],
        &["BLPOP", "order:list", "0.1"],
        &["INCR", "order"],
    ] {
        let words = args(command);
        let refs: Vec<&[u8]> = words.iter().map(|w| &w[..]).collect();
        pipeline.extend(encode_command(&refs));
    }
    client.send_raw(&pipeline);
    let replies: Vec<String> = (0..6)
        .map(|_| String::from_utf8_lossy(&client.read_reply()).into_owned())
        .collect();
    assert_eq!(
        replies,
        [
            "+OK\r\n",
            ":1\r\n",
            "*2\r\n$10\r\norder:list\r\n$1\r\nx\r\n",
            "$1\r\n1\r\n",
            "*-1\r\n",
            ":2\r\n"
        ]
    );
}

/// WAIT counts the replicas that acknowledged the client's writes, made on
/// the shared connections: with its replica stopped, a write is not
/// acknowledged and WAIT says 0 after its timeout, as Redis does.
#[test]
fn wait_counts_the_replicas_that_have_the_clients_writes() {
    let (proxy, shards) = two_shards("");
    let replica = Redis::start();
    let mut link = replica.connect();
    let port = shards[0].addr().rsplit(':').next().unwrap().to_string();
    assert_eq!(link.cmd_str(&["REPLICAOF", "127.0.0.1", &port]), "+OK\r\n");
    wait_until("the replica in sync", Duration::from_secs(10), || {
        link.cmd_str(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    // A key on shard 0 (the one with the replica).
    let (key, _) = keys_on_two_shards();
    // What the proxy sends before WAIT reaches no subscriber.
    let mut watcher = shards[0].connect();
    assert_eq!(
        watcher.cmd_str(&["PSUBSCRIBE", "*"]),
        "*3\r\n$10\r\npsubscribe\r\n$1\r\n*\r\n:1\r\n"
    );
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", &key, "1"]), "+OK\r\n");
    assert_eq!(client.cmd_str(&["WAIT", "1", "2000"]), ":1\r\n");
    assert_eq!(watcher.cmd_str(&["PING"]), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    replica.guard.signal("STOP");
    assert_eq!(client.cmd_str(&["SET", &key, "2"]), "+OK\r\n");
    let started = Instant::now();
    assert_eq!(client.cmd_str(&["WAIT", "1", "300"]), ":0\r\n");
    assert!(started.elapsed() >= Duration::from_millis(250));
    replica.guard.signal("CONT");
}

/// With the pool's `timeout`, a blocking command on a stopped backend gets
/// the timeout error once its own timeout and the pool's have passed.
#[test]
fn a_blocking_command_on_a_stopped_backend_times_out() {
    let (proxy, shards) = two_shards("  timeout: 300\n");
    let mut client = RawClient::connect(proxy.port);
    // Connect the dedicated connection first.
    assert_eq!(client.cmd_str(&["BLPOP", "stall", "0.05"]), "*-1\r\n");
    for shard in &shards {
        shard.guard.signal("STOP");
    }
    let started = Instant::now();
    let reply = client.cmd_str(&["BLPOP", "stall", "0.5"]);
    let took = started.elapsed();
    for shard in &shards {
        shard.guard.signal("CONT");
    }
    assert!(reply.starts_with("-ERR shard '"), "{reply}");
    assert!(reply.contains("timed out"), "{reply}");
    assert!(
        took >= Duration::from_millis(750) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // The broken dedicated connection is replaced on the next use.
    assert_eq!(client.cmd_str(&["BLPOP", "stall", "0.05"]), "*-1\r\n");
}

/// WAIT on a stalled backend times out like any blocking command: the
/// PUBLISH the proxy sends ahead of it (see `Session::blocking`) carries
/// WAIT's deadline, so it cannot hold WAIT's timeout back.
#[test]
fn wait_on_a_stopped_backend_times_out() {
    let (proxy, shards) = two_shards("  timeout: 300\n");
    let (key, _) = keys_on_two_shards();
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", &key, "1"]), "+OK\r\n");
    // WAIT goes to the shard of the client's last keyed request.
    assert_eq!(client.cmd_str(&["WAIT", "0", "50"]), ":0\r\n");
    shards[0].guard.signal("STOP");
    let started = Instant::now();
    let reply = client.cmd_str(&["WAIT", "0", "100"]);
    let took = started.elapsed();
    shards[0].guard.signal("CONT");
    assert!(reply.starts_with("-ERR shard '"), "{reply}");
    assert!(reply.contains("timed out"), "{reply}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // The client is served again.
    assert_eq!(client.cmd_str(&["GET", &key]), "$1\r\n1\r\n");
}

/// A failover frees a client blocked on the old master at once, with the
/// error saying the outcome is unknown, and ends a transaction bound to it;
/// both clients then work on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_frees_blocked_clients_and_ends_transactions() {
    // ZooKeeper first: bindings drop in reverse, so it stops last.
    let ReplicatedShard {
        zookeeper: _zookeeper,
        proxy,
        ops,
        member_old,
        old,
        new,
    } = replicated_shard(&[]).await;

    let mut blocked = RawClient::connect(proxy.port);
    send(&mut blocked, &["BLPOP", "failover:q", "0"]);
    let mut tx = RawClient::connect(proxy.port);
    assert_eq!(tx.cmd_str(&["WATCH", "failover:k"]), "+OK\r\n");
    assert_eq!(tx.cmd_str(&["MULTI"]), "+OK\r\n");
    assert_eq!(tx.cmd_str(&["SET", "failover:k", "1"]), "+QUEUED\r\n");
    wait_until(
        "BLPOP blocked on the old master",
        Duration::from_secs(5),
        || blocked_clients(&old) == 1,
    );

    assert_eq!(
        new.connect().cmd_str(&["REPLICAOF", "NO", "ONE"]),
        "+OK\r\n"
    );
    add_member(&ops, "redis-0000", &new.addr()).await;
    ops.delete(&member_old, None).await.unwrap();
    let switched = Instant::now();
    let reply = String::from_utf8_lossy(&blocked.read_reply()).into_owned();
    assert!(
        reply.starts_with("-ERR shard 'redis-0000': backend ")
            && reply.contains("its outcome is unknown"),
        "{reply}"
    );
    assert!(switched.elapsed() < Duration::from_secs(2));
    let exec = tx.cmd_str(&["EXEC"]);
    assert!(
        exec.starts_with("-EXECABORT Transaction discarded: shard 'redis-0000'"),
        "{exec}"
    );
    assert!(!old
        .connect()
        .cmd_str(&["EXISTS", "failover:k"])
        .contains('1'));

    // Both go on, on the new master.
    assert_eq!(blocked.cmd_str(&["BLPOP", "failover:q", "0.05"]), "*-1\r\n");
    let replies: Vec<String> = ["MULTI", "INCR", "EXEC"]
        .iter()
        .map(|c| match *c {
            "INCR" => tx.cmd_str(&["INCR", "failover:k"]),
            c => tx.cmd_str(&[c]),
        })
        .collect();
    assert_eq!(replies, ["+OK\r\n", "+QUEUED\r\n", "*1\r\n:1\r\n"]);
    assert_eq!(new.connect().cmd_str(&["GET", "failover:k"]), "$1\r\n1\r\n");
}

/// A client that pipelines `RPUSH l x; GET a; BLPOP l 0; GET b` and
/// half-closes (as `nc -N` does) gets the four replies Redis gives: the
/// BLPOP does not block, the list has data. The proxy used to drop the
/// session as soon as it saw the close behind a blocking command, and the
/// client got two replies.
#[test]
fn a_half_closed_client_gets_a_blocking_command_that_does_not_block() {
    let (proxy, shards) = two_shards("");
    let pipeline = [
        encode_command(&[b"RPUSH", b"halfclosed", b"x"]),
        encode_command(&[b"GET", b"a"]),
        encode_command(&[b"BLPOP", b"halfclosed", b"0"]),
        encode_command(&[b"GET", b"b"]),
    ]
    .concat();
    let everything = |port: u16| {
        let mut client = RawClient::connect(port);
        client.send_raw(&pipeline);
        client.half_close();
        String::from_utf8_lossy(&client.read_to_end()).into_owned()
    };
    let expected = everything(shards[0].port);
    assert_eq!(
        expected,
        ":1\r\n$-1\r\n*2\r\n$10\r\nhalfclosed\r\n$1\r\nx\r\n$-1\r\n"
    );
    assert_eq!(everything(proxy.port), expected);
}

/// A client's own error as the first reply on its dedicated connection
/// (BLPOP on a string: WRONGTYPE) is its own: when the server later closes
/// that connection, what was in flight on it gets the connection's loss,
/// in the words of any lost connection (review: they got the WRONGTYPE, as
/// if it were Redis's refusal of the connection), for the same client and
/// for the next one the parked connection serves; and a transaction's
/// EXEC on it likewise.
#[test]
fn a_first_error_on_a_dedicated_connection_is_not_the_next_requests_reply() {
    let redis = Redis::start();
    let proxy = Proxy::start(&format!(
        "  redis: true\n  servers:\n   - {}:1\n",
        redis.addr()
    ));
    let mut admin = redis.connect();
    let lost = format!(
        "-ERR shard '{0}': backend {0} closed the connection before replying (",
        redis.addr()
    );
    let lost_connection = |reply: &str| assert!(reply.starts_with(&lost), "{reply}");
    for next_client in [false, true] {
        let mut client = RawClient::connect(proxy.port);
        assert_eq!(client.cmd_str(&["SET", "str", "x"]), "+OK\r\n");
        assert!(client
            .cmd_str(&["BLPOP", "str", "1"])
            .starts_with("-WRONGTYPE"));
        if next_client {
            // The dedicated connection is parked and serves the next one.
            drop(client);
            client = RawClient::connect(proxy.port);
        }
        send(&mut client, &["BLPOP", "empty", "5"]);
        wait_until("the BLPOP to block", Duration::from_secs(5), || {
            blocked_clients(&redis) == 1
        });
        let killed = admin.cmd_str(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
        assert!(killed.starts_with(':'), "{killed}");
        lost_connection(&String::from_utf8_lossy(&client.read_reply()));
    }
    // A transaction's EXEC, in flight on such a connection when the
    // server dies (stopped first, so that the EXEC cannot run).
    let mut client = RawClient::connect(proxy.port);
    assert!(client
        .cmd_str(&["BLPOP", "str", "1"])
        .starts_with("-WRONGTYPE"));
    assert_eq!(client.cmd_str(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.cmd_str(&["SET", "k", "v"]), "+QUEUED\r\n");
    let before = proxy.backend_requests("pool");
    redis.guard.signal("STOP");
    send(&mut client, &["EXEC"]);
    wait_until("the EXEC to be written", Duration::from_secs(5), || {
        proxy.backend_requests("pool") > before
    });
    let mut redis = redis;
    redis.guard.kill();
    lost_connection(&String::from_utf8_lossy(&client.read_reply()));
}
