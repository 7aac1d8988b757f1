//! `shardproxy-watchdog` against real processes: a ZooKeeper server,
//! redis-server instances and the watchdog binary, all on loopback: a
//! shard's first master and replicas, failover, rejoin, switchover, busy
//! masters and scripts, with proxies in front. Restarts:
//! `watchdog_restart.rs`; faults (ZooKeeper cut off or frozen, replicas
//! behind or frozen): `watchdog_faults.rs`; watchdogs and members started
//! wrong: `watchdog_strays.rs`.
//!
//! Each test runs its own ZooKeeper and Redis instances. Watchdogs run with
//! a 100 ms interval, down after 3 failed checks, and 1 s sessions, so a
//! failover takes well under a second and a session expiry about one.
//! Times measured (failover, switchover pause) are printed; run with
//! `--nocapture` to see them.

mod common;
#[allow(dead_code)]
#[path = "watchdog/harness.rs"]
mod harness;

use common::proxy::Proxy;
use common::redis::Redis;
use common::zookeeper::ZooKeeper;
use common::{free_port, temp_dir, wait_until, ProcessGuard};
use harness::*;
use shardproxy::watchdog::request_switchover;
use shardproxy::zk::Role;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn empty_shard_first_becomes_master_second_joins_after_first_sync() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/join");
    let (a, b) = (start_redis(), start_redis());
    let wa = Watchdog::start(&zookeeper.hosts(), &a, &shard);
    wait_until("a to register", DEADLINE, || zk.line(&shard) == [a.addr()]);
    let first = &zk.members(&shard)[0];
    assert_eq!(first.data.role, Role::Master);
    assert_eq!(first.data.addr, a.addr());
    assert!(!first.data.run_id.is_empty());
    assert!(is_master(&a));

    fill(&a, "k", 2000);
    // Hold the first sync back 1 s so there is a window to look at.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg("1")
        .query(&mut redis_conn(a.port))
        .unwrap();
    let wb = Watchdog::start(&zookeeper.hosts(), &b, &shard);
    let mut seen_unsynced_outside = false;
    wait_until("b to join the line", DEADLINE, || {
        let line = zk.line(&shard);
        let synced = is_synced_replica_of(&b, &a);
        if line.contains(&b.addr()) {
            assert!(synced, "b joined the line before its first sync");
            return true;
        }
        let info = replication(b.port);
        seen_unsynced_outside |= field(&info, "role") == "slave" && !synced;
        false
    });
    assert!(
        seen_unsynced_outside,
        "b was never seen replicating before it joined"
    );
    let members = zk.members(&shard);
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].addr, a.addr());
    assert!(members[1].seq > members[0].seq);
    assert_eq!(members[1].data.role, Role::Replica);
    assert_eq!(dbsize(&b), 2000);
    wb.wait_for_log("joined the line as a replica");
    wa.wait_for_log("registered as its master");

    // SIGTERM: the watchdog exits with its session open, so a restart can
    // take its place back; stopped for good, its member goes when the
    // session expires.
    let mut wb = wb;
    wb.guard.signal("TERM");
    assert_eq!(wb.guard.wait_exit(DEADLINE), Some(0));
    assert_eq!(zk.line(&shard), [a.addr(), b.addr()]);
    wait_until("b's member to expire", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
}

/// Of two replicas, the one holding less of the master's data is never
/// promoted, though it is first in line: it is stopped while the master
/// takes 40 MB of writes, the master is killed, and it resumes with only
/// what its socket held. It steps back; the other replica, which has
/// everything, is promoted.
#[test]
fn the_replica_with_the_most_data_is_promoted() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/best");
    let (mut m, r1, r2) = (start_redis(), start_redis(), start_redis());
    let hosts = zookeeper.hosts();
    let _wm = Watchdog::start(&hosts, &m, &shard);
    wait_until("m to be the master", DEADLINE, || {
        zk.line(&shard) == [m.addr()]
    });
    let w1 = Watchdog::start(&hosts, &r1, &shard);
    wait_until("r1 in line", DEADLINE, || {
        zk.line(&shard) == [m.addr(), r1.addr()]
    });
    let w2 = Watchdog::start(&hosts, &r2, &shard);
    wait_until("r2 in line", DEADLINE, || {
        zk.line(&shard) == [m.addr(), r1.addr(), r2.addr()]
    });
    r1.guard.signal("STOP");
    let value = "v".repeat(100 * 1024);
    let mut pipe = redis::pipe();
    for i in 0..400 {
        pipe.cmd("SET").arg(format!("big:{i}")).arg(&value).ignore();
    }
    let mut conn = redis_conn(m.port);
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    pipe.query::<()>(&mut conn).unwrap();
    let offset = |port: u16, key: &str| field(&replication(port), key).parse::<u64>().unwrap_or(0);
    wait_until("r2 to have all of it", DEADLINE, || {
        offset(r2.port, "slave_repl_offset") == offset(m.port, "master_repl_offset")
    });
    m.guard.kill();
    wait_until("m's member to go", DEADLINE, || {
        zk.line(&shard) == [r1.addr(), r2.addr()]
    });
    r1.guard.signal("CONT");
    wait_until("r2 to be promoted", DEADLINE, || {
        zk.line(&shard) == [r2.addr(), r1.addr()] && is_master(&r2)
    });
    let lagged = offset(r1.port, "slave_repl_offset");
    println!(
        "best replica: r1 had {lagged} of {} bytes of history; r2 promoted",
        offset(r2.port, "master_repl_offset")
    );
    w1.wait_for_log("stepping back");
    assert!(!w1.log_text().contains("promoted to master"));
    w2.wait_for_log("promoted to master");
    assert_eq!(
        dbsize(&r2),
        400,
        "every acknowledged write is on the new master"
    );
    wait_until("r1 to follow r2", DEADLINE, || {
        is_synced_replica_of(&r1, &r2)
    });
}

/// A master that is alive but busy for 10 s (a slow command: it accepts
/// connections and answers nothing) is not failed over with the default
/// busy limit, though the watchdogs check every 100 ms and take a refused
/// Redis for down after 3 checks; a write sent meanwhile completes.
#[test]
fn a_busy_master_is_not_failed_over() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/busy");
    let debug = [
        "--repl-diskless-sync-delay",
        "0",
        "--enable-debug-command",
        "yes",
    ];
    let (a, b) = (Redis::start_with(&debug), Redis::start_with(&debug));
    let wa = Watchdog::start(&zookeeper.hosts(), &a, &shard);
    wait_until("a to be the master", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
    let wb = Watchdog::start(&zookeeper.hosts(), &b, &shard);
    wait_until("b to join the line", DEADLINE, || {
        zk.line(&shard) == [a.addr(), b.addr()]
    });
    // Connected before: a busy Redis answers no handshake.
    let mut writer = redis_conn(a.port);
    writer
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut conn = redis_conn(a.port);
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let sleeper = std::thread::spawn(move || {
        let _: () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(10)
            .query(&mut conn)
            .unwrap();
    });
    wait_until("a's watchdog to see it busy", DEADLINE, || {
        wa.log_text().contains("redis is busy")
    });
    // A write sent while the master is busy.
    let started = Instant::now();
    let _: () = redis::cmd("SET")
        .arg("during")
        .arg("busy")
        .query(&mut writer)
        .unwrap();
    println!(
        "busy master: a write sent meanwhile completed after {:?}",
        started.elapsed()
    );
    sleeper.join().unwrap();
    wait_until("a to answer again", DEADLINE, || {
        wa.log_text().contains("redis answers again")
    });
    assert_eq!(zk.line(&shard), [a.addr(), b.addr()], "no failover");
    assert!(is_master(&a));
    assert!(!wb.log_text().contains("promoted to master"));
    wait_until("the write to reach the replica", DEADLINE, || {
        redis::cmd("GET")
            .arg("during")
            .query::<Option<String>>(&mut redis_conn(b.port))
            .unwrap()
            == Some("busy".to_string())
    });
}

/// A script that keeps the master -BUSY is a busy Redis, not a dead one: no
/// failover; with `--script-kill-after-ms` the watchdog stops it with
/// SCRIPT KILL, and the client that ran it gets Redis's error.
#[test]
fn a_busy_script_is_killed_not_failed_over() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/script");
    let (a, b) = (start_redis(), start_redis());
    let kill = [
        "--interval-ms",
        "100",
        "--down-after",
        "3",
        "--script-kill-after-ms",
        "1500",
    ];
    let wa = Watchdog::start_with(&zookeeper.hosts(), &a, &shard, &kill);
    wait_until("a to be the master", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
    let wb = Watchdog::start(&zookeeper.hosts(), &b, &shard);
    wait_until("b to join the line", DEADLINE, || {
        zk.line(&shard) == [a.addr(), b.addr()]
    });
    // -BUSY after 100 ms of script instead of Redis's default 5 s.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg(100)
        .query(&mut redis_conn(a.port))
        .unwrap();
    let mut conn = redis_conn(a.port);
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let result: redis::RedisResult<()> = redis::cmd("EVAL")
        .arg("while true do end")
        .arg(0)
        .query(&mut conn);
    let ran = started.elapsed();
    let error = result
        .expect_err("the script never ends by itself")
        .to_string();
    println!("busy script: stopped after {ran:?}: {error}");
    assert!(error.contains("SCRIPT KILL"), "{error}");
    wa.wait_for_log("stopped a long script");
    wa.wait_for_log("redis is busy");
    assert_eq!(zk.line(&shard), [a.addr(), b.addr()], "no failover");
    assert!(is_master(&a));
    assert!(!wb.log_text().contains("promoted to master"));
}

#[test]
fn killed_master_redis_fails_over_and_rejoins_as_replica() {
    let mut pair = Pair::start_filled("kill");

    let killed = Instant::now();
    pair.a.guard.kill();
    pair.wait_sole_master(&pair.b);
    let failover = killed.elapsed();
    println!("failover after kill -9 of the master redis: {failover:?}");
    assert!(failover < Duration::from_secs(5), "{failover:?}");
    pair.wa.wait_for_log("left the line");
    pair.wb.wait_for_log("promoted to master");

    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("failover")
        .query(&mut redis_conn(pair.b.port))
        .unwrap();
    pair.a = restart_redis(pair.a.port);
    wait_until("the old master to rejoin as a replica", DEADLINE, || {
        pair.line() == [pair.b.addr(), pair.a.addr()] && is_synced_replica_of(&pair.a, &pair.b)
    });
    assert_eq!(dbsize(&pair.a), 101);
    let after: String = redis::cmd("GET")
        .arg("after")
        .query(&mut redis_conn(pair.a.port))
        .unwrap();
    assert_eq!(after, "failover");
    assert!(is_master(&pair.b));
}

#[test]
fn killed_master_watchdog_fails_over_after_session_expiry() {
    let mut pair = Pair::start_filled("session");

    let killed = Instant::now();
    pair.wa.guard.kill();
    pair.wait_sole_master(&pair.b);
    let failover = killed.elapsed();
    println!(
        "failover after kill -9 of the master's watchdog: {failover:?} (session {SESSION_MS} ms)"
    );
    assert!(
        failover >= Duration::from_millis(SESSION_MS / 2),
        "promoted before the session could expire: {failover:?}"
    );
    assert!(failover < Duration::from_secs(6), "{failover:?}");
    // a still answered: b's watchdog fenced it, it replicates from b.
    wait_until("a to replicate from b", DEADLINE, || {
        is_synced_replica_of(&pair.a, &pair.b)
    });

    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("expiry")
        .query(&mut redis_conn(pair.b.port))
        .unwrap();
    pair.wa.restart();
    wait_until(
        "the restarted watchdog to rejoin as a replica",
        DEADLINE,
        || pair.line() == [pair.b.addr(), pair.a.addr()] && is_synced_replica_of(&pair.a, &pair.b),
    );
    // a was replicating before the write: it arrives in its own time
    // (CI: the link was up, the write not yet applied).
    wait_until("a to have the write made on b", DEADLINE, || {
        dbsize(&pair.a) == 101
    });
}

#[test]
fn replica_without_first_sync_is_never_promoted() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/unsynced");
    let mut a = start_redis();
    let c = start_redis();
    let _wa = Watchdog::start(&zookeeper.hosts(), &a, &shard);
    wait_until("a to register", DEADLINE, || zk.line(&shard) == [a.addr()]);
    fill(&a, "k", 100);
    // Block every sync from a for a minute: c can never finish its first.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg("60")
        .query(&mut redis_conn(a.port))
        .unwrap();
    let wc = Watchdog::start(&zookeeper.hosts(), &c, &shard);
    wait_until("c to replicate from a", DEADLINE, || {
        field(&replication(c.port), "master_port") == a.port.to_string()
    });
    assert_eq!(
        zk.line(&shard),
        [a.addr()],
        "c joined before its first sync"
    );

    a.guard.kill();
    wait_until("a to leave the line", DEADLINE, || {
        zk.line(&shard).is_empty()
    });
    // Watch c for 15 intervals: it must neither register nor be promoted.
    let watch_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < watch_until {
        assert!(zk.line(&shard).is_empty(), "c was registered");
        assert_eq!(field(&replication(c.port), "role"), "slave");
        std::thread::sleep(Duration::from_millis(50));
    }
    wc.wait_for_log("first sync did not finish");

    // a comes back empty (no persistence): the shard's data was on a's
    // old history, which nobody holds now, so a does not lead it either.
    let a = restart_redis(a.port);
    let wa_log = _wa.log_text();
    wait_until("a's watchdog to refuse the shard", DEADLINE, || {
        _wa.log_text().len() > wa_log.len() && _wa.log_text().contains("not leading it")
    });
    assert!(zk.line(&shard).is_empty(), "an empty Redis took the shard");
    // The operator accepts the loss (what `shardproxy-admin promote
    // --force` records): a leads the empty shard, and c joins it.
    zk.runtime.block_on(async {
        let data = format!(
            r#"{{"weight":"0-4095","master":{{"addr":"{}","replid":"","offset":0}}}}"#,
            a.addr()
        );
        zk.client
            .set_data(&shard, data.as_bytes(), None)
            .await
            .unwrap();
    });
    wait_until("a to lead and c to join", DEADLINE, || {
        zk.line(&shard) == [a.addr(), c.addr()] && is_synced_replica_of(&c, &a)
    });
}

#[test]
fn switchover_under_writes_loses_no_acknowledged_write() {
    let pair = Pair::start("switch");
    let mut writer = Writer::start([pair.a.port, pair.b.port]);
    wait_until("writes to flow", DEADLINE, || writer.acked().len() > 200);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(request_switchover(
            &pair.zk.hosts,
            None,
            &pair.shard,
            Duration::from_secs(1),
        ))
        .expect("switchover");
    assert_eq!(report.old_master, pair.a.addr());
    assert_eq!(report.new_master, pair.b.addr());
    let switched = Instant::now();
    wait_until("writes to flow to the new master", DEADLINE, || {
        writer
            .acked()
            .iter()
            .filter(|(_, at)| *at > switched)
            .count()
            > 200
    });
    let acked = writer.stop();
    let gap = longest_gap(&acked);
    let lost = missing(&pair.b, &acked);
    println!(
        "switchover: master paused {:?} before leaving; longest gap between acknowledged writes {gap:?}; \
         {} writes acknowledged, {} lost",
        report.pause,
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(report.pause < Duration::from_secs(1), "{:?}", report.pause);
    assert!(gap < Duration::from_secs(1), "writes stalled {gap:?}");
    assert!(is_master(&pair.b));
    wait_until("the old master to rejoin as a replica", DEADLINE, || {
        pair.line() == [pair.b.addr(), pair.a.addr()] && is_synced_replica_of(&pair.a, &pair.b)
    });
    // The request is gone once answered.
    let control = "/redis/control/switch/redis-0000";
    let left = pair
        .zk
        .runtime
        .block_on(pair.zk.client.check_stat(control))
        .unwrap();
    assert!(left.is_none(), "{control} left behind");
}

#[test]
fn switchover_is_refused_without_a_replica() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/alone");
    let a = start_redis();
    let _wa = Watchdog::start(&zookeeper.hosts(), &a, &shard);
    wait_until("a to register", DEADLINE, || zk.line(&shard) == [a.addr()]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime
        .block_on(request_switchover(
            &zk.hosts,
            None,
            &shard,
            Duration::from_secs(1),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("no replica in line"), "{err}");
    let missing_shard = format!("{shard}-nope");
    let err = runtime
        .block_on(request_switchover(
            &zk.hosts,
            None,
            &missing_shard,
            Duration::from_secs(1),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(is_master(&a));
    assert_eq!(zk.line(&shard), [a.addr()]);
}

/// The next in line's watchdog killed (its member lives on until its
/// session expires): a switchover is refused before writes pause, since
/// nobody would promote the replica (the shard refused writes for seconds,
/// then came back to the old master, and the admin tool said "done").
#[test]
fn switchover_is_refused_when_the_next_in_lines_watchdog_is_gone() {
    let mut pair = Pair::start_timed("orphan", |zookeeper, _| zookeeper.hosts(), 5000);
    pair.wb.guard.kill();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime
        .block_on(request_switchover(
            &pair.zk.hosts,
            None,
            &pair.shard,
            Duration::from_secs(2),
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("has no watchdog connected to it"),
        "{err}"
    );
    assert_eq!(pair.line(), [pair.a.addr(), pair.b.addr()]);
    assert!(is_master(&pair.a));
    let mut a = redis_conn(pair.a.port);
    let reply: String = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut a)
        .unwrap();
    assert_eq!(reply, "OK", "writes were not left paused");
}

#[test]
fn password_protected_redis_replicates_with_redis_auth() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/auth");
    // No masterauth in their configuration: the watchdog sets it.
    let secured = ["--repl-diskless-sync-delay", "0", "--requirepass", "s3cret"];
    let (a, b) = (Redis::start_with(&secured), Redis::start_with(&secured));
    let flags = ["--interval-ms", "100", "--redis-auth", "s3cret"];
    let _wa = Watchdog::start_with(&zookeeper.hosts(), &a, &shard, &flags);
    wait_until("a to register", DEADLINE, || zk.line(&shard) == [a.addr()]);
    let wb = Watchdog::start_with(&zookeeper.hosts(), &b, &shard, &flags);
    wait_until("b to join after its first sync", DEADLINE, || {
        zk.line(&shard) == [a.addr(), b.addr()]
    });
    let mut conn = b.connect();
    assert_eq!(conn.cmd_str(&["AUTH", "s3cret"]), "+OK\r\n");
    let info = conn.cmd_str(&["INFO", "replication"]);
    assert!(info.contains("master_link_status:up"), "{info}");
    assert!(!wb.log_text().contains("s3cret"), "the password was logged");
}

#[test]
fn watchdog_flags_and_file_are_checked() {
    let dir = temp_dir("watchdog-conf");
    let conf = dir.join("zoo-watchdog.conf");
    std::fs::write(&conf, "zkServersList = 127.0.0.1:1\nlogLevl = DEBUG\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_shardproxy-watchdog"))
        .arg("-f")
        .arg(&conf)
        .args([
            "--redis",
            "127.0.0.1:6379",
            "--shard",
            "/redis/cluster/x/redis-0000",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("zoo-watchdog.conf:2"), "{stderr}");
    assert!(stderr.contains("logLevl"), "{stderr}");

    // The shipped file parses; the watchdog then runs until stopped.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/zoo-watchdog.conf");
    let log = dir.join("w.log");
    // Nothing listens on either port: the watchdog only retries.
    let (zk_port, redis_port) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_shardproxy-watchdog"))
        .args(["-f", shipped, "--zk", &format!("127.0.0.1:{zk_port}")])
        .args(["--redis", &format!("127.0.0.1:{redis_port}")])
        .args(["--shard", "/redis/cluster/x/redis-0000"])
        .arg("-o")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ProcessGuard::new("watchdog", child);
    wait_until("the watchdog to log", DEADLINE, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("watchdog started"))
    });
    guard.signal("TERM");
    assert_eq!(guard.wait_exit(DEADLINE), Some(0));
}

/// The issue's end-to-end scenario: ZooKeeper, 2 shards x (master +
/// replica), 4 watchdogs with the default timings, 2 proxies, a writer
/// through each proxy. A master is killed -9, then the other shard is
/// switched over, both under the writes.
#[test]
fn end_to_end_failover_and_switchover_under_writes_through_two_proxies() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let root = "/redis/cluster/e2e";
    let shards = [
        zk.create_shard_range(root, "redis-0000", 0, 2047),
        zk.create_shard_range(root, "redis-0001", 2048, 4095),
    ];
    let mut m0 = start_redis();
    let (r0, m1, r1) = (start_redis(), start_redis(), start_redis());
    let hosts = zookeeper.hosts();
    // The default timings (1 s interval, down after 3 failed checks): the
    // failover time a deployment gets out of the box.
    let _watchdogs = [
        Watchdog::start_with(&hosts, &m0, &shards[0], &[]),
        Watchdog::start_with(&hosts, &m1, &shards[1], &[]),
    ];
    wait_until("both masters to register", DEADLINE, || {
        zk.line(&shards[0]) == [m0.addr()] && zk.line(&shards[1]) == [m1.addr()]
    });
    let _replica_watchdogs = [
        Watchdog::start_with(&hosts, &r0, &shards[0], &[]),
        Watchdog::start_with(&hosts, &r1, &shards[1], &[]),
    ];
    wait_until("both replicas to join", DEADLINE, || {
        zk.line(&shards[0]) == [m0.addr(), r0.addr()]
            && zk.line(&shards[1]) == [m1.addr(), r1.addr()]
    });
    let proxies: Vec<Proxy> = (0..2)
        .map(|_| {
            let port = free_port();
            let yaml = format!(
                "e2e:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: md5\n  \
                 distribution: modula\n  timeout: 1000\n  zookeeper_host: {hosts}\n  \
                 zookeeper_path: /redis/proxy/e2e/127.0.0.1:{port}\n  \
                 zookeeper_redis_path: {root}\n  servers:\n   - {}:0-2047\n   - {}:2048-4095\n",
                m0.addr(),
                m1.addr()
            );
            Proxy::start_yaml(port, &yaml)
        })
        .collect();
    let routed = |shard: &str, range: &str, master: &Redis| {
        format!("name={shard},range={range},master={}", master.addr())
    };
    for proxy in &proxies {
        wait_until("the proxy to route from ZooKeeper", DEADLINE, || {
            proxy_info(proxy).contains(&routed("redis-0000", "0-2047", &m0))
        });
    }
    let mut writers = [
        ProxyWriter::start(proxies[0].port, "p0"),
        ProxyWriter::start(proxies[1].port, "p1"),
    ];
    let acked_after = |w: &ProxyWriter, shard: usize, after: Instant| {
        w.attempts()
            .iter()
            .filter(|a| a.ok && a.shard == shard && a.done > after)
            .count()
    };
    wait_until("writes to flow through both proxies", DEADLINE, || {
        writers
            .iter()
            .all(|w| acked_after(w, 0, Instant::now() - DEADLINE) > 300)
    });

    // Automatic failover: kill -9 the master of shard 0.
    let killed = Instant::now();
    m0.guard.kill();
    wait_until(
        "writes to the killed shard to recover through both proxies",
        DEADLINE,
        || {
            writers.iter().all(|w| {
                recovery(&w.attempts(), 0, killed)
                    .is_some_and(|r| acked_after(w, 0, killed + r) > 100)
            })
        },
    );
    let recoveries: Vec<Duration> = writers
        .iter()
        .map(|w| recovery(&w.attempts(), 0, killed).unwrap())
        .collect();

    // Planned switchover of shard 1 under the same writes.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let switch = Instant::now();
    let report = runtime
        .block_on(request_switchover(
            &hosts,
            None,
            &shards[1],
            Duration::from_secs(1),
        ))
        .expect("switchover");
    assert_eq!(report.new_master, r1.addr());
    wait_until(
        "writes to flow to the new master of shard 1",
        DEADLINE,
        || {
            writers
                .iter()
                .all(|w| acked_after(w, 1, switch + Duration::from_millis(500)) > 100)
        },
    );
    let attempts: Vec<Attempt> = writers.iter_mut().flat_map(|w| w.stop()).collect();
    let gap = [0, 1].map(|p| {
        let ours: Vec<Attempt> = attempts
            .iter()
            .filter(|a| a.key.starts_with(&format!("e2e:p{p}:")))
            .cloned()
            .collect();
        longest_gap_on(&ours, 1, switch)
    });

    let lost = lost_writes(&attempts, [&r0, &r1]);
    let lost_on = |shard: usize| lost.iter().filter(|a| a.shard == shard).count();
    let acked = attempts.iter().filter(|a| a.ok).count();
    println!(
        "end to end, default watchdog timings: kill -9 of shard 0's master: writes to it work \
         again after {:?} (proxy 1) and {:?} (proxy 2); switchover of shard 1: master paused \
         {:?}, longest gap between acknowledged writes to it {:?} (proxy 1) and {:?} (proxy 2); \
         {acked} writes acknowledged; lost: {} on shard 0 (killed), {} on shard 1 (switched)",
        recoveries[0],
        recoveries[1],
        report.pause,
        gap[0],
        gap[1],
        lost_on(0),
        lost_on(1)
    );
    for proxy in &proxies {
        let info = proxy_info(proxy);
        assert!(
            info.contains(&routed("redis-0000", "0-2047", &r0)),
            "{info}"
        );
        assert!(
            info.contains(&routed("redis-0001", "2048-4095", &r1)),
            "{info}"
        );
    }
    assert!(
        recoveries.iter().all(|r| *r < Duration::from_secs(5)),
        "{recoveries:?}"
    );
    assert_eq!(lost_on(1), 0, "switchover lost acknowledged writes");
    assert!(gap.iter().all(|g| *g < Duration::from_secs(1)), "{gap:?}");
    // Asynchronous replication may lose what the dying master had not sent
    // yet, never anything acknowledged by the new master.
    for attempt in &lost {
        assert!(
            attempt.done < killed + Duration::from_millis(100),
            "lost a write acknowledged after the failover: {attempt:?}"
        );
    }
}
