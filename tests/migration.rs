//! Online range migration against real processes: a ZooKeeper, redis-servers,
//! two proxies and `shardproxy-admin`, with clients writing and reading
//! through both proxies the whole time.
//!
//! What a user must see: no acknowledged write lost, no read older than a
//! write already acknowledged, every key of the moved ranges on the new
//! shard and none left behind, TTLs kept, and client-visible errors
//! counted (target 0). Big keys moved in chunks: `migration_streams.rs`;
//! proxies killed, cut off or started early: `migration_partition.rs`.

mod common;

use common::migration::{
    admin, cluster, cluster_with_source_replica, dbsize, exists, load, pool_file, preload,
    replica_caught_up, run_admin, start_admin, Tally,
};
use common::redis::{RawClient, Redis};
use common::wait_until;
use common::zk_cluster::{add_member, create_shard, keys_in, start_proxy, wait_for_view};
use common::zookeeper::ZooKeeper;
use common::ProcessGuard;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_from_two_to_three_shards_under_load_loses_nothing() {
    let c = cluster().await;
    // Keys of the two ranges that move, and of ranges that stay.
    let moving_a = keys_in(1366, 2047, 5000, "a");
    let moving_b = keys_in(2048, 2730, 5000, "b");
    let staying = [
        keys_in(0, 1365, 2000, "s0"),
        keys_in(2731, 4095, 2000, "s1"),
    ]
    .concat();
    for keys in [&moving_a, &moving_b, &staying] {
        preload(&c.proxies[0], keys);
    }

    // Writers and readers through both proxies, on keys of every range.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let hot = [
        keys_in(1366, 2047, 50, "hot-a"),
        keys_in(2048, 2730, 50, "hot-b"),
        keys_in(0, 1365, 50, "hot-s"),
    ];
    let ports = [c.proxies[0].port, c.proxies[1].port];
    let threads: Vec<_> = hot
        .iter()
        .enumerate()
        .map(|(i, keys)| {
            load(
                keys.clone(),
                ports[i % 2],
                ports[(i + 1) % 2],
                stop.clone(),
                tally.clone(),
            )
        })
        .collect();
    wait_until("load running", Duration::from_secs(10), || {
        tally.writes.load(Ordering::Relaxed) > 300
    });

    tally.during.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let (code, text) = run_admin(&c.conf, &["migrate", "1366-2047", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("committed"), "{text}");
    eprintln!("{text}");
    let (code, text) = run_admin(&c.conf, &["migrate", "2048-2730", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    eprintln!("{text}");
    let took = started.elapsed();
    let ((before, n0), (during, n1)) = (tally.p99(0), tally.p99(1));
    eprintln!("p99 latency of SET/GET: {before} us before the migration ({n0} requests), {during} us during it ({n1} requests)");
    let writes_during = tally.writes.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let finals: Vec<(String, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    tally.assert_clean(
        "two ranges (10,100 keys + hot keys) moved",
        took,
        writes_during,
    );

    // Every acknowledged write is there, read through either proxy.
    for proxy in &c.proxies {
        let mut client = RawClient::connect(proxy.port);
        for (key, value) in &finals {
            let want = format!("${}\r\n{value}\r\n", value.to_string().len());
            assert_eq!(client.cmd_str(&["GET", key]), want, "{key}");
        }
        for key in moving_a.iter().chain(&moving_b).chain(&staying).step_by(7) {
            let want = format!("${}\r\n{key}\r\n", key.len());
            assert_eq!(client.cmd_str(&["GET", key]), want, "{key}");
        }
    }
    // The moved keys live on the new shard only, with their TTLs; the
    // others stayed.
    for key in moving_a
        .iter()
        .chain(&moving_b)
        .chain(&hot[0])
        .chain(&hot[1])
    {
        assert!(exists(&c.redis[2], key), "{key} not on the new shard");
        assert!(
            !exists(&c.redis[0], key) && !exists(&c.redis[1], key),
            "{key} left behind"
        );
    }
    let mut target = c.redis[2].connect();
    for key in moving_a.iter().chain(&moving_b).step_by(10) {
        let ttl = target.cmd_str(&["TTL", key]);
        let secs: i64 = ttl[1..ttl.len() - 2].parse().unwrap();
        assert!(secs > 3000, "{key}: TTL {ttl:?}");
    }
    for key in &staying {
        assert!(
            !exists(&c.redis[2], key),
            "{key} moved although outside the ranges"
        );
    }
    // Routing and the pool-file export agree with the new layout.
    for proxy in &c.proxies {
        wait_for_view(proxy, "1366-2730");
    }
    let (code, text) = run_admin(&c.conf, &["export"]);
    assert_eq!(code, 0, "{text}");
    for line in [
        format!("- {}:0-1365", c.redis[0].addr()),
        format!("- {}:1366-2730", c.redis[2].addr()),
        format!("- {}:2731-4095", c.redis[1].addr()),
    ] {
        assert!(text.contains(&line), "{line} not in {text}");
    }
    drop(c.zookeeper);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_admin_is_rerun_and_finishes_the_move() {
    let c = cluster().await;
    let keys = keys_in(0, 1023, 20_000, "k");
    preload(&c.proxies[0], &keys);
    let conf = c.conf.clone();
    // A slow mover, killed once it has moved some keys.
    let child = admin(
        &conf,
        &["migrate", "0-1023", "--to", "redis-0002", "--rate", "2000"],
    )
    .spawn()
    .unwrap();
    let mut mover = ProcessGuard::new("shardproxy-admin migrate", child);
    wait_until("the mover to move keys", Duration::from_secs(20), || {
        dbsize(&c.redis[2]) > 2000
    });
    mover.signal("KILL");
    mover.wait_exit(Duration::from_secs(5));
    let moved = dbsize(&c.redis[2]);
    assert!(
        moved < keys.len() as u64,
        "the mover finished before it was killed"
    );
    // The stopped migration shows in status, INFO and the metrics.
    let (_, status) = run_admin(&conf, &["status"]);
    assert!(
        status.contains("slots 0-1023 from redis-0000 to redis-0002, phase moving"),
        "{status}"
    );
    let info = RawClient::connect(c.proxies[0].port).cmd_str(&["INFO", "zookeeper"]);
    assert!(
        info.contains("range=0-1023,source=redis-0000,target=redis-0002,phase=moving"),
        "{info}"
    );
    assert!(info.contains("lane=1"), "{info}");
    // Clients still get every key meanwhile, through the lane, also from
    // a proxy that starts now: it reads the migration before serving.
    let late = start_proxy(&c.zookeeper, &[&c.redis[0], &c.redis[1]]);
    for port in [c.proxies[1].port, late.port] {
        let mut client = RawClient::connect(port);
        for key in keys.iter().step_by(97) {
            let want = format!("${}\r\n{key}\r\n", key.len());
            assert_eq!(client.cmd_str(&["GET", key]), want, "{key} through {port}");
            assert!(!exists(&c.redis[0], key), "{key} read but not moved");
        }
    }
    drop(late);
    let (code, text) = run_admin(&conf, &["migrate", "0-1023", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("continuing migration"), "{text}");
    for key in &keys {
        assert!(exists(&c.redis[2], key), "{key} not on the new shard");
        assert!(!exists(&c.redis[0], key), "{key} left on the source");
    }
    for proxy in &c.proxies {
        wait_for_view(proxy, "0-1023");
        let mut client = RawClient::connect(proxy.port);
        for key in keys.iter().step_by(13) {
            let want = format!("${}\r\n{key}\r\n", key.len());
            assert_eq!(client.cmd_str(&["GET", key]), want, "{key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plans_are_refused_with_a_reason_and_change_nothing() {
    let c = cluster().await;
    for (args, why) in [
        (
            vec!["migrate", "100-200", "--to", "redis-0002"],
            "inside redis-0000's range 0-2047",
        ),
        (
            vec!["migrate", "2000-2100", "--to", "redis-0002"],
            "not all on one shard",
        ),
        (
            vec!["migrate", "0-100", "--to", "redis-0001"],
            "does not border",
        ),
        (
            vec!["migrate", "0-100", "--to", "redis-0000"],
            "on redis-0000 already",
        ),
        (
            vec!["migrate", "0-100", "--to", "redis-0009"],
            "no shard named redis-0009",
        ),
        (vec!["migrate", "100-5", "--to", "redis-0002"], "bad range"),
        (
            vec!["migrate", "4000-5000", "--to", "redis-0002"],
            "slots 4000-5000 go past the slot space: the shards own slots 0-4095",
        ),
    ] {
        let (code, text) = run_admin(&c.conf, &args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(why), "{args:?}: {text}");
    }
    let (code, text) = run_admin(
        &c.conf,
        &["migrate", "0-1023", "--to", "redis-0002", "--dry-run"],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("redis-0000: 0-2047 -> 1024-2047"), "{text}");
    assert!(text.contains("redis-0002: (none) -> 0-1023"), "{text}");
    assert!(text.contains("nothing changed"), "{text}");
    let (code, text) = run_admin(&c.conf, &["pause"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no migration is in progress"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_master_killed_mid_move_loses_no_acknowledged_write() {
    let mut c = cluster_with_source_replica().await;
    let [master, _, new] = &mut c.redis;
    let (replica, proxies, conf) = (c.replica.as_ref().unwrap(), &c.proxies, &c.conf);
    for proxy in proxies {
        wait_for_view(proxy, &format!("master={}", new.addr()));
    }
    let keys = keys_in(0, 1023, 20_000, "f");
    preload(&proxies[0], &keys);
    replica_caught_up(master);

    // Clients write and read keys of the moving range through both
    // proxies while the mover runs slowly.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let ports = [proxies[0].port, proxies[1].port];
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let hot = keys_in(0, 1023, 40, &format!("hot{i}"));
            load(hot, ports[i], ports[1 - i], stop.clone(), tally.clone())
        })
        .collect();
    let child = admin(
        conf,
        &["migrate", "0-1023", "--to", "redis-0002", "--rate", "4000"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mover = ProcessGuard::new("shardproxy-admin migrate", child);
    wait_until("the mover to move keys", Duration::from_secs(20), || {
        dbsize(new) > 3000
    });

    // kill -9 of the source's master; its replica takes over, as the
    // watchdogs would do it.
    master.guard.kill();
    assert_eq!(
        replica.connect().cmd_str(&["REPLICAOF", "NO", "ONE"]),
        "+OK\r\n"
    );
    c.members.delete(&c.source_member, None).await.unwrap();
    for proxy in proxies {
        wait_for_view(proxy, &format!("master={}", replica.addr()));
    }

    let mut mover = mover;
    let output = {
        let child = mover.child.take().unwrap();
        child.wait_with_output().unwrap()
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    stop.store(true, Ordering::Relaxed);
    let finals: Vec<(String, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    eprintln!(
        "source master killed mid-move: {} writes, errors {} (requests in flight on the dead master), stale {}\n{text}",
        tally.writes.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
        tally.stale.load(Ordering::Relaxed),
    );
    assert_eq!(tally.stale.load(Ordering::Relaxed), 0, "stale reads");
    for proxy in proxies {
        wait_for_view(proxy, "0-1023");
        let mut client = RawClient::connect(proxy.port);
        for (key, value) in &finals {
            let got = client.cmd_str(&["GET", key]);
            let v: u64 = got
                .split("\r\n")
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            assert!(v >= *value, "{key}: {got:?}, {value} was acknowledged");
        }
    }
    for key in &keys {
        assert!(exists(new, key), "{key} not on the new shard");
        assert!(!exists(replica, key), "{key} left on the source");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_proxies_move_keys_as_their_migration_user_only() {
    use shardproxy::watchdog::proxy_user::ProxyUser;
    let zookeeper = ZooKeeper::start();
    let redis = [Redis::start(), Redis::start(), Redis::start()];
    let password = "proxy-secret";
    let user = ProxyUser {
        name: "shardproxy".into(),
        password_sha256: sha256_hex(password),
    };
    for r in &redis {
        for command in [user.setuser_command(), user.migrator_setuser_command()] {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            assert_eq!(r.connect().cmd_str(&args), "+OK\r\n");
        }
    }
    let ops = zookeeper.client_with_session(Duration::from_secs(20)).await;
    create_shard(&ops, "redis-0000", 0, 2047).await;
    create_shard(&ops, "redis-0001", 2048, 4095).await;
    add_member(&ops, "redis-0000", &redis[0].addr()).await;
    add_member(&ops, "redis-0001", &redis[1].addr()).await;
    let conf = pool_file(&zookeeper, &[&redis[0], &redis[1]]);
    assert_eq!(run_admin(&conf, &["add-shard", "redis-0002"]).0, 0);
    add_member(&ops, "redis-0002", &redis[2].addr()).await;
    let keys_yaml = format!("  redis_user: shardproxy\n  redis_auth: {password}\n");
    let proxies = [
        common::zk_cluster::start_proxy_with(&zookeeper, &[&redis[0], &redis[1]], &keys_yaml),
        common::zk_cluster::start_proxy_with(&zookeeper, &[&redis[0], &redis[1]], &keys_yaml),
    ];
    for proxy in &proxies {
        let needle = format!("master={}", redis[1].addr());
        wait_until(
            "the proxy to route from ZooKeeper",
            Duration::from_secs(10),
            || {
                let mut client = RawClient::connect(proxy.port);
                client.cmd_str(&["AUTH", password]);
                client.cmd_str(&["INFO", "zookeeper"]).contains(&needle)
            },
        );
    }
    let keys = keys_in(0, 1023, 3000, "acl");
    let mut client = RawClient::connect(proxies[0].port);
    assert_eq!(client.cmd_str(&["AUTH", password]), "+OK\r\n");
    for key in &keys {
        assert_eq!(client.cmd_str(&["SET", key, key]), "+OK\r\n");
    }
    // Touched while the mover runs slowly: moved by the proxy as its
    // migration user.
    let child = admin(
        &conf,
        &["migrate", "0-1023", "--to", "redis-0002", "--rate", "1500"],
    )
    .spawn()
    .unwrap();
    let mut mover = ProcessGuard::new("shardproxy-admin migrate", child);
    wait_until("moving to start", Duration::from_secs(20), || {
        dbsize(&redis[2]) > 100
    });
    let mut reader = RawClient::connect(proxies[1].port);
    assert_eq!(reader.cmd_str(&["AUTH", password]), "+OK\r\n");
    for key in keys.iter().rev().take(500) {
        let want = format!("${}\r\n{key}\r\n", key.len());
        assert_eq!(reader.cmd_str(&["GET", key]), want, "{key}");
        assert!(exists(&redis[2], key), "{key} not moved on access");
    }
    // A client's script still cannot MIGRATE, during the migration too.
    let escape = format!(
        "return redis.call('migrate', '127.0.0.1', '{}', KEYS[1], 0, 1000)",
        redis[1].port
    );
    let reply = reader.cmd_str(&["EVAL", &escape, "1", &keys[0]]);
    assert!(reply.contains("can't run this command"), "{reply}");
    // The mover gone and the source's cached MIGRATE connection to the
    // target closed (idle 10 s): a proxy's move opens a new one, logged in
    // as the migration user, which may SELECT (review: as the main user,
    // every move failed with NOPERM, the key restored on the target anyway).
    mover.signal("KILL");
    mover.wait_exit(Duration::from_secs(5));
    wait_until(
        "the source's MIGRATE connection to close",
        Duration::from_secs(20),
        || {
            !redis[2]
                .connect()
                .cmd_str(&["CLIENT", "LIST"])
                .contains("cmd=restore")
        },
    );
    for key in keys.iter().take(300) {
        let want = format!("${}\r\n{key}\r\n", key.len());
        assert_eq!(reader.cmd_str(&["GET", key]), want, "{key}");
        assert!(exists(&redis[2], key) && !exists(&redis[0], key), "{key}");
    }
    let (code, text) = run_admin(&conf, &["migrate", "0-1023", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    for key in &keys {
        assert!(exists(&redis[2], key) && !exists(&redis[0], key), "{key}");
    }
}

fn sha256_hex(text: &str) -> String {
    let output = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&output.stdout)[..64].to_string()
}

/// A source replica that lags (stopped) while a range moves: a write on a
/// key of the range is refused with TRYAGAIN, naming the replicas, rather
/// than made on the target while the replica still holds the old key (a
/// promotion would hand the old value back to the mover, over the write).
/// Once the replica catches up, the write goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_source_replica_holds_writes_back_instead_of_losing_them() {
    let c = cluster_with_source_replica().await;
    let [master, _, new] = &c.redis;
    let (replica, proxy, conf) = (c.replica.as_ref().unwrap(), &c.proxies[0], &c.conf);
    wait_for_view(proxy, &format!("master={}", new.addr()));
    let keys = keys_in(0, 1023, 4000, "lag");
    preload(proxy, &keys);
    replica_caught_up(master);
    // A slow mover: the range stays moving for the whole test.
    let child = admin(
        conf,
        &["migrate", "0-1023", "--to", "redis-0002", "--rate", "50"],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let _mover = ProcessGuard::new("shardproxy-admin migrate", child);
    wait_until("the mover to move keys", Duration::from_secs(20), || {
        dbsize(new) > 0
    });
    let key = keys
        .iter()
        .rev()
        .find(|k| exists(master, k))
        .expect("a key not moved yet")
        .clone();
    let mut client = RawClient::connect(proxy.port);
    replica.guard.signal("STOP");
    let reply = client.cmd_str(&["SET", &key, "new"]);
    assert!(
        reply.starts_with("-TRYAGAIN ")
            && reply.contains("only 0 of the source's 1 replicas confirmed the move"),
        "{reply}"
    );
    // The key left the source, and the refused write is nowhere.
    assert!(!exists(master, &key), "{key} still on the source");
    assert_eq!(
        new.connect().cmd_str(&["GET", &key]),
        format!("${}\r\n{key}\r\n", key.len())
    );
    // Moved before: the fence still holds the write back.
    let reply = client.cmd_str(&["SET", &key, "new"]);
    assert!(reply.starts_with("-TRYAGAIN "), "{reply}");
    replica.guard.signal("CONT");
    wait_until(
        "the write once the replica is back",
        Duration::from_secs(10),
        || client.cmd_str(&["SET", &key, "new"]) == "+OK\r\n",
    );
    assert_eq!(client.cmd_str(&["GET", &key]), "$3\r\nnew\r\n");
    assert_eq!(replica.connect().cmd_str(&["EXISTS", &key]), ":0\r\n");
}

/// A pool with `redis_db: 2`: the mover scans and moves that database, not
/// database 0, so every key of the range reaches the new shard's database 2
/// and none stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_on_another_database_moves_its_keys() {
    let c = cluster().await;
    let [first, second, new] = &c.redis;
    let conf = &c.conf;
    let yaml = std::fs::read_to_string(conf)
        .unwrap()
        .replace("  redis: true\n", "  redis: true\n  redis_db: 2\n");
    std::fs::write(conf, yaml).unwrap();
    let proxy =
        common::zk_cluster::start_proxy_with(&c.zookeeper, &[first, second], "  redis_db: 2\n");
    wait_for_view(&proxy, &format!("master={}", new.addr()));
    let keys = keys_in(1024, 2047, 300, "db2");
    preload(&proxy, &keys);
    let in_db2 = |redis: &Redis, key: &str| {
        let mut conn = redis.connect();
        assert_eq!(conn.cmd_str(&["SELECT", "2"]), "+OK\r\n");
        conn.cmd_str(&["EXISTS", key]) == ":1\r\n"
    };
    assert!(keys.iter().all(|k| in_db2(first, k)));
    let (code, text) = run_admin(conf, &["migrate", "1024-2047", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    wait_for_view(&proxy, "1024-2047");
    let mut client = RawClient::connect(proxy.port);
    for key in &keys {
        assert_eq!(
            client.cmd_str(&["GET", key]),
            format!("${}\r\n{key}\r\n", key.len()),
            "{text}"
        );
        assert!(in_db2(new, key), "{key} not in database 2 of the new shard");
        assert!(!in_db2(first, key), "{key} left on the source");
    }
}

/// A transaction open on a range's source while the range moves away:
/// EXEC does not run the queued writes on the source, where nobody would
/// read them again; the client is told, and a WATCH-only transaction gets
/// EXEC's null reply (a retry), as when a watched key changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_across_a_move_is_discarded_not_run_on_the_source() {
    let c = cluster().await;
    let [first, _, new] = &c.redis;
    let (proxy, conf) = (&c.proxies[0], &c.conf);
    wait_for_view(proxy, &format!("master={}", new.addr()));
    let keys = keys_in(1024, 2047, 3, "tx");
    let (queued, watched, counter) = (&keys[0], &keys[1], &keys[2]);
    let mut client = RawClient::connect(proxy.port);
    let mut watcher = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", queued, "old"]), "+OK\r\n");
    assert_eq!(client.cmd_str(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.cmd_str(&["SET", queued, "new"]), "+QUEUED\r\n");
    assert_eq!(client.cmd_str(&["INCR", counter]), "+QUEUED\r\n");
    assert_eq!(watcher.cmd_str(&["WATCH", watched]), "+OK\r\n");
    let (code, text) = run_admin(conf, &["migrate", "1024-2047", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    wait_for_view(proxy, "1024-2047");
    let reply = client.cmd_str(&["EXEC"]);
    assert_eq!(
        reply,
        "-EXECABORT Transaction discarded: shard 'redis-0000': a range moved to or from the shard \
         while the transaction was open; the transaction and its WATCHes were discarded\r\n"
    );
    assert_eq!(client.cmd_str(&["GET", queued]), "$3\r\nold\r\n");
    assert_eq!(client.cmd_str(&["GET", counter]), "$-1\r\n");
    assert_eq!(first.connect().cmd_str(&["DBSIZE"]), ":0\r\n");
    assert_eq!(
        [
            watcher.cmd_str(&["MULTI"]),
            watcher.cmd_str(&["SET", watched, "v"]),
            watcher.cmd_str(&["EXEC"]),
        ],
        ["+OK\r\n", "+QUEUED\r\n", "*-1\r\n"]
    );
    // The retry, on the range's new shard, runs (once the proxy has seen
    // the migration's end, so that nothing moves under it).
    wait_until("the migration record gone", Duration::from_secs(10), || {
        !common::zk_cluster::info(proxy).contains("migration:")
    });
    assert_eq!(
        [
            watcher.cmd_str(&["WATCH", watched]),
            watcher.cmd_str(&["MULTI"]),
            watcher.cmd_str(&["SET", watched, "v"]),
            watcher.cmd_str(&["EXEC"]),
        ],
        ["+OK\r\n", "+OK\r\n", "+QUEUED\r\n", "*1\r\n+OK\r\n"]
    );
    assert_eq!(new.connect().cmd_str(&["GET", watched]), "$1\r\nv\r\n");
}

/// Moving a shard's whole range away (shrinking back) under load: the
/// emptied shard's master is not taken for a replaced one, so the last
/// moves on access finish normally and no client sees an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptying_a_shard_under_load_gives_no_client_an_error() {
    let c = cluster().await;
    for proxy in &c.proxies {
        wait_for_view(proxy, &format!("master={}", c.redis[2].addr()));
    }
    let (code, text) = run_admin(&c.conf, &["migrate", "0-1023", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    preload(&c.proxies[0], &keys_in(0, 1023, 3000, "e"));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let ports = [c.proxies[0].port, c.proxies[1].port];
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let hot = keys_in(0, 1023, 40, &format!("hot{i}"));
            load(
                hot,
                ports[i % 2],
                ports[1 - i % 2],
                stop.clone(),
                tally.clone(),
            )
        })
        .collect();
    wait_until("load running", Duration::from_secs(10), || {
        tally.writes.load(Ordering::Relaxed) > 300
    });
    for round in 0..4 {
        let (code, text) = run_admin(&c.conf, &["migrate", "0-1023", "--to", "redis-0000"]);
        assert_eq!(code, 0, "round {round}: {text}");
        let (code, text) = run_admin(&c.conf, &["migrate", "0-1023", "--to", "redis-0002"]);
        assert_eq!(code, 0, "round {round}: {text}");
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    let (writes, errors) = (
        tally.writes.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    eprintln!("emptying a shard 8 times: {writes} writes, {errors} errors");
    assert_eq!(errors, 0, "client errors while shards were emptied");
    assert_eq!(tally.stale.load(Ordering::Relaxed), 0, "stale reads");
}

/// A client blocked (BLPOP) on a key of a range when the range starts
/// moving away is told to retry at once, instead of waiting for ever while
/// pushes land on the new shard; its retry waits there and gets the
/// element. A client blocked on the source on a key outside the range
/// stays blocked and is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_blocked_on_a_moving_range_is_told_to_retry() {
    let c = cluster().await;
    let [first, _, new] = &c.redis;
    let (proxy, conf) = (&c.proxies[0], &c.conf);
    wait_for_view(proxy, &format!("master={}", new.addr()));
    let queue = keys_in(1024, 2047, 1, "queue").remove(0);
    let outside = keys_in(0, 1023, 1, "outside").remove(0);
    let blpop = |key: &str, timeout: &str| {
        common::redis::encode_command(&[b"BLPOP", key.as_bytes(), timeout.as_bytes()])
    };
    let mut blocked = RawClient::connect(proxy.port);
    let mut elsewhere = RawClient::connect(proxy.port);
    blocked.send_raw(&blpop(&queue, "0"));
    elsewhere.send_raw(&blpop(&outside, "0"));
    let blocked_on = |redis: &Redis| redis.connect().info_number("clients", "blocked_clients");
    wait_until(
        "both clients blocked on the source",
        Duration::from_secs(5),
        || blocked_on(first) == Some(2),
    );
    let (code, text) = run_admin(conf, &["migrate", "1024-2047", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        String::from_utf8_lossy(&blocked.read_reply()),
        "-TRYAGAIN the key's range started moving to another shard while the command was blocked; retry\r\n"
    );
    assert_eq!(blocked_on(first), Some(1));
    wait_for_view(proxy, "1024-2047");
    blocked.send_raw(&blpop(&queue, "5"));
    wait_until(
        "the retry blocked on the new shard",
        Duration::from_secs(5),
        || blocked_on(new) == Some(1),
    );
    let mut pusher = RawClient::connect(proxy.port);
    assert_eq!(pusher.cmd_str(&["RPUSH", &queue, "job"]), ":1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&blocked.read_reply()),
        format!("*2\r\n${}\r\n{queue}\r\n$3\r\njob\r\n", queue.len())
    );
    assert_eq!(pusher.cmd_str(&["RPUSH", &outside, "job"]), ":1\r\n");
    assert_eq!(
        String::from_utf8_lossy(&elsewhere.read_reply()),
        format!("*2\r\n${}\r\n{outside}\r\n$3\r\njob\r\n", outside.len())
    );
}

/// A master's watchdog rewrites its shard's znode now and then (its
/// record's offset moves as the range's keys arrive), so one can change
/// between the admin's read of the shards and its commit. Here the
/// target's znode is rewritten every few milliseconds for the whole move:
/// the commit reads again and goes through, keeping what was written,
/// instead of failing the move (CI: `mismatch version` in the local
/// cluster's check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_znode_rewritten_during_the_move_does_not_fail_it() {
    let c = cluster().await;
    let keys = keys_in(1024, 2047, 200, "rewritten");
    preload(&c.proxies[0], &keys);
    let path = common::zk_cluster::shard_path("redis-0002");
    let stop = Arc::new(AtomicBool::new(false));
    let rewriter = {
        let (ops, path, stop) = (c.members.clone(), path.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rewrites = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // Versioned, as the watchdog writes: never over the commit.
                let (data, stat) = ops.get_data(&path).await.unwrap();
                if ops.set_data(&path, &data, Some(stat.version)).await.is_ok() {
                    rewrites += 1;
                }
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            rewrites
        })
    };
    let conf = c.conf.clone();
    let (code, text) = tokio::task::spawn_blocking(move || {
        run_admin(&conf, &["migrate", "1024-2047", "--to", "redis-0002"])
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let rewrites = rewriter.await.unwrap();
    assert_eq!(code, 0, "{text}");
    assert!(rewrites > 10, "only {rewrites} rewrites during the move");
    let (data, _) = c.members.get_data(&path).await.unwrap();
    assert!(
        String::from_utf8_lossy(&data).contains("\"weight\":\"1024-2047\""),
        "{}",
        String::from_utf8_lossy(&data)
    );
    wait_for_view(&c.proxies[0], "1024-2047");
    let mut client = RawClient::connect(c.proxies[0].port);
    for key in &keys {
        assert_eq!(
            client.cmd_str(&["GET", key]),
            format!("${}\r\n{key}\r\n", key.len())
        );
        assert!(exists(&c.redis[2], key), "{key} not on the new shard");
    }
}

/// WAIT after a write to a moving range asks the target's replicas: the
/// lane ran the write on the target (review: WAIT went to the source, whose
/// replica never sees those writes, and answered 1 at once while the
/// target had none). Outside the range it asks the source as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_after_a_write_to_a_moving_range_counts_the_targets_replicas() {
    let c = cluster_with_source_replica().await;
    let [master, _, new] = &c.redis;
    for proxy in &c.proxies {
        wait_for_view(proxy, &format!("master={}", new.addr()));
    }
    let keys = keys_in(0, 1023, 5_000, "w");
    preload(&c.proxies[0], &keys);
    replica_caught_up(master);
    let (_mover, _log) = start_admin(
        &c,
        &["migrate", "0-1023", "--to", "redis-0002", "--rate", "200"],
        "slow mover",
    );
    wait_until("the mover to move keys", Duration::from_secs(20), || {
        dbsize(new) > 0
    });
    let moving = &keys_in(0, 1023, 1, "waited")[0];
    let staying = &keys_in(1024, 2047, 1, "kept")[0];
    for proxy in &c.proxies {
        let mut client = RawClient::connect(proxy.port);
        assert_eq!(client.cmd_str(&["SET", moving, "v"]), "+OK\r\n");
        assert!(exists(new, moving), "{moving} not written on the target");
        // The target has no replica.
        assert_eq!(client.cmd_str(&["WAIT", "1", "300"]), ":0\r\n");
        assert_eq!(client.cmd_str(&["SET", staying, "v"]), "+OK\r\n");
        assert_eq!(client.cmd_str(&["WAIT", "1", "5000"]), ":1\r\n");
    }
    assert!(dbsize(new) < 5_000, "the move ended during the test");
}
