//! Redis servers and their watchdogs restarted, with real processes (a
//! ZooKeeper, redis-servers, their watchdogs and a proxy): a master's
//! watchdog restarted at once is no failover; a master restarted at once
//! (empty, from an old snapshot, with an AOF, with or without its
//! watchdog) is failed over to a replica that has its data, and a proxy
//! refuses it meanwhile (its `run_id` is not the one its watchdog
//! registered), but leads again when it is alone with its data; a shard
//! emptied by such a restart is not led empty, nor by a replica back from
//! an old snapshot.

mod common;
#[allow(dead_code)]
#[path = "watchdog/harness.rs"]
mod harness;

use common::proxy::Proxy;
use common::redis::Redis;
use common::zookeeper::ZooKeeper;
use common::{free_port, temp_dir, wait_until};
use harness::*;
use std::time::{Duration, Instant};

/// A master's watchdog stopped with SIGTERM and started again with the
/// same arguments soon after: no failover, and no write fails. The test
/// server caps sessions at 2 s, so the restart comes after 0.5 s (with the
/// default 6 s session, a second is well within it).
#[test]
fn restarting_a_masters_watchdog_is_no_failover() {
    let mut pair = Pair::start_timed("restart", |zookeeper, _| zookeeper.hosts(), 2000);
    let first = pair.zk.members(&pair.shard)[0].seq;
    let mut writer = Writer::start([pair.a.port, pair.a.port]);
    wait_until("writes", DEADLINE, || writer.acked().len() > 100);
    // nutcracker's other signals: the log is reopened (logrotate), the
    // rest ignored; none stops the watchdog (SIGHUP and SIGUSR1 did, and a
    // master's watchdog gone is a failover).
    let rotated = pair.wa.log.with_extension("log.1");
    std::fs::rename(&pair.wa.log, &rotated).unwrap();
    pair.wa.guard.signal("HUP");
    pair.wa.wait_for_log("SIGHUP: log file reopened");
    for signal in ["USR1", "USR2"] {
        pair.wa.guard.signal(signal);
        pair.wa.wait_for_log(&format!("signal=\"SIG{signal}\""));
    }
    pair.wa.guard.signal("TERM");
    assert_eq!(pair.wa.guard.wait_exit(DEADLINE), Some(0));
    std::thread::sleep(Duration::from_millis(500));
    let log = pair.wa.log.clone();
    pair.wa = Watchdog::spawn(pair.wa.args.clone(), log);
    // The old member expires; the new one leads, the replica behind it.
    wait_until("the restarted watchdog to lead the line", DEADLINE, || {
        let members = pair.zk.members(&pair.shard);
        members.len() == 2 && members[0].addr == pair.a.addr() && members[0].seq > first
    });
    let done = writer.acked().len();
    wait_until("writes after the restart", DEADLINE, || {
        writer.acked().len() > done + 100
    });
    let acked = writer.stop();
    let attempts = acked.last().map_or(0, |(i, _)| *i);
    println!(
        "watchdog restart: {} writes acknowledged of {attempts}, longest gap {:?}",
        acked.len(),
        longest_gap(&acked)
    );
    assert_eq!(acked.len() as u64, attempts, "a write failed");
    assert!(is_master(&pair.a), "the master stayed master");
    assert!(is_synced_replica_of(&pair.b, &pair.a));
    assert!(!pair.wb.log_text().contains("promoted to master"));
    assert!(missing(&pair.a, &acked).is_empty());
}

/// A master killed and restarted at once on its port (a supervisor's
/// `Restart=always`), empty, with Redis's default 5 s diskless-sync delay:
/// its watchdog sees the new `run_id` and leaves, and the replica, which
/// the restarted master does not make "behind" (it holds less, on another
/// history), is promoted with every key (review: with the first version
/// of the behind check it was refused, then wiped by a full sync).
#[test]
fn a_master_restarted_at_once_is_failed_over_to_its_replica() {
    let mut pair = Pair::start_filled("fastrestart");
    let port = pair.a.port;
    pair.a.guard.kill();
    pair.a = restart_redis_with(port, &["--repl-diskless-sync-delay", "5"]);
    wait_until("b to be promoted", DEADLINE, || {
        pair.line().first() == Some(&pair.b.addr()) && is_master(&pair.b)
    });
    assert_eq!(dbsize(&pair.b), 100);
}

/// The master killed and restarted at once with disk-based full syncs
/// (no delay), its watchdog dead and its member living on for the session
/// (8 s). It comes back from the snapshot its replica's first sync left in
/// its directory, taken before the writes. The replica follows it, and a
/// full sync empties it before the member expires: its watchdog refuses to
/// promote it and leaves the line (review: promoted in 15 of 18 runs,
/// every key gone, `status` ok). The master's watchdog, restarted, does
/// not lead the emptied shard from that snapshot either (review: with the
/// history's offset recorded 10 intervals late, the snapshot passed for
/// the whole history). The shard stops with no eligible master.
#[test]
fn a_shard_emptied_by_a_master_restarted_at_once_is_not_led_empty() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/emptied");
    let dir = temp_dir("snapshot");
    let disk_sync = ["--dir", dir.to_str().unwrap(), "--repl-diskless-sync", "no"];
    let a = Redis::start_with(&disk_sync);
    let b = start_redis();
    // Checks every second, the watchdog's default.
    let every_second = ["--interval-ms", "1000", "--session-timeout-ms", "8000"];
    let mut wa = Watchdog::start_with(&zookeeper.hosts(), &a, &shard, &every_second);
    wait_until("a to be the master", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
    let wb = Watchdog::start_timed(&zookeeper.hosts(), &b, &shard, 8000);
    wait_until("b to join the line", DEADLINE, || {
        zk.line(&shard) == [a.addr(), b.addr()]
    });
    assert!(
        dir.join("dump.rdb").exists(),
        "the first sync left no snapshot"
    );
    fill(&a, "k", 100);
    wait_until("b to have the data", DEADLINE, || dbsize(&b) == 100);
    let offset: u64 = field(&replication(a.port), "master_repl_offset")
        .parse()
        .unwrap();
    // Within a few intervals, not ten.
    let recorded_within = Duration::from_millis(3500);
    wait_until(
        "the history's offset to be recorded",
        recorded_within,
        || {
            zk.shard_data(&shard)
                .master
                .is_some_and(|record| record.offset >= offset)
        },
    );
    let (port, mut a) = (a.port, a);
    wa.guard.kill();
    a.guard.kill();
    let a = restart_redis_with(port, &disk_sync);
    wait_until(
        "the restarted master's full sync to empty b",
        DEADLINE,
        || dbsize(&b) == 0 && is_synced_replica_of(&b, &a),
    );
    wb.wait_for_log("its data is not the shard's history");
    wait_until("b to leave the line", DEADLINE, || {
        zk.line(&shard).is_empty()
    });
    wa.restart();
    wa.wait_for_log("its data holds only the start of the history recorded");
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        assert!(zk.line(&shard).is_empty(), "led: {:?}", zk.line(&shard));
        assert_eq!(field(&replication(b.port), "role"), "slave");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same restart, the master coming back with its data (an AOF synced
/// at every write): the replica's full sync from it puts the same keys on
/// a history of its own, and it is promoted with every key when the dead
/// watchdog's member expires (review: the first version of the check
/// refused it, and the shard stopped until `promote --force`).
#[test]
fn a_replica_given_its_restarted_masters_data_is_promoted() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/aof");
    let dir = temp_dir("aof");
    let persist = [
        "--dir",
        dir.to_str().unwrap(),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--repl-diskless-sync",
        "no",
    ];
    let a = Redis::start_with(&persist);
    let b = start_redis();
    let wa = Watchdog::start_timed(&zookeeper.hosts(), &a, &shard, 8000);
    wait_until("a to be the master", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
    let wb = Watchdog::start_timed(&zookeeper.hosts(), &b, &shard, 8000);
    wait_until("b to join the line", DEADLINE, || {
        zk.line(&shard) == [a.addr(), b.addr()]
    });
    fill(&a, "k", 100);
    wait_until("b to have the data", DEADLINE, || dbsize(&b) == 100);
    wait_until("the history's keys to be recorded", DEADLINE, || {
        zk.shard_data(&shard)
            .master
            .is_some_and(|record| record.keys == Some(100))
    });
    let old_history = field(&replication(b.port), "master_replid");
    let (port, mut a, mut wa) = (a.port, a, wa);
    wa.guard.kill();
    a.guard.kill();
    let a = restart_redis_with(port, &persist);
    wait_until("a to load its data", DEADLINE, || dbsize(&a) == 100);
    wait_until("b to take the restarted master's copy", DEADLINE, || {
        let history = field(&replication(b.port), "master_replid");
        is_synced_replica_of(&b, &a)
            && history != old_history
            && history == field(&replication(a.port), "master_replid")
    });
    wait_until("b to be promoted", DEADLINE, || {
        zk.line(&shard).first() == Some(&b.addr()) && is_master(&b)
    });
    assert_eq!(dbsize(&b), 100);
    assert!(!wb.log_text().contains("not the shard's history"));
}

/// The same restart seen through a proxy that routes from ZooKeeper:
/// until the master's watchdog notices the new `run_id`, the proxy finds
/// it on reconnecting and refuses the restarted Redis (an error reply), so
/// no write it acknowledges is lost when the shard fails over (review:
/// 45-64 acknowledged writes went to the empty restarted master).
#[test]
fn a_proxy_acknowledges_no_write_to_a_master_restarted_at_once() {
    let (_pair, proxy) = writes_through_a_proxy_survive_a_fast_restart("fastproxy", |pair| {
        let port = pair.a.port;
        pair.a.guard.kill();
        pair.a = restart_redis_with(port, &["--repl-diskless-sync-delay", "5"]);
    });
    assert!(
        proxy
            .log_text()
            .contains("restarted since its watchdog registered it"),
        "the proxy never met the restarted master: the test proves nothing"
    );
}

/// Likewise with the master's watchdog killed and restarted along with its
/// Redis (a host or container restart): the new watchdog finds the old
/// member, whose session still lives, at the head for its address. It
/// names the Redis before the restart (another `run_id`), so it is deleted
/// and the shard fails over (review: the new watchdog took that member's
/// place, the proxy then served the empty Redis, and 26,813 acknowledged
/// writes were lost).
#[test]
fn a_master_restarted_at_once_with_its_watchdog_is_failed_over() {
    let (pair, _proxy) = writes_through_a_proxy_survive_a_fast_restart("fasthost", |pair| {
        let port = pair.a.port;
        pair.wa.guard.kill();
        pair.a.guard.kill();
        pair.a = restart_redis_with(port, &["--repl-diskless-sync-delay", "5"]);
        pair.wa.restart();
    });
    assert!(pair
        .wa
        .log_text()
        .contains("names an earlier run of our Redis"));
}

/// A shard with no replica, its master restarted with its watchdog (a
/// host restart) and its data kept by an AOF: nobody else could lead, so
/// the new watchdog takes the old member's place as before the `run_id`
/// check, and the shard is served again with every key (review: with the
/// old member deleted, the shard stayed down until `promote --force`).
#[test]
fn a_lone_master_restarted_with_its_watchdog_leads_again() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/lone");
    let dir = temp_dir("lone");
    let dir = dir.to_str().unwrap();
    let persist = [
        "--dir",
        dir,
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let a = Redis::start_with(&persist);
    let mut wa = Watchdog::start(&zookeeper.hosts(), &a, &shard);
    wait_until("a to be the master", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
    fill(&a, "k", 100);
    let (port, mut a) = (a.port, a);
    wa.guard.kill();
    a.guard.kill();
    let a = restart_redis_with(port, &persist);
    wa.restart();
    let run_id = common::zk_cluster::run_id_at(&a.addr());
    wait_until("a to lead again as its new run", DEADLINE, || {
        let members = zk.members(&shard);
        members.len() == 1 && members[0].data.run_id == run_id && is_master(&a)
    });
    assert_eq!(dbsize(&a), 100);
    assert!(wa.log_text().contains("no other Redis is in line"));
}

/// Writes through a proxy routing from ZooKeeper while `restart` kills and
/// restarts the master `a`: `b` must be promoted, and every write
/// acknowledged after the kill must be on it; then `a` follows `b`.
fn writes_through_a_proxy_survive_a_fast_restart(
    cluster: &str,
    restart: impl FnOnce(&mut Pair),
) -> (Pair, Proxy) {
    let mut pair = Pair::start(cluster);
    let port = free_port();
    let yaml = format!(
        "{cluster}:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: md5\n  \
         distribution: modula\n  timeout: 1000\n  zookeeper_host: {}\n  \
         zookeeper_path: /redis/proxy/{cluster}/127.0.0.1:{port}\n  \
         zookeeper_redis_path: /redis/cluster/{cluster}\n  servers:\n   - {}:0-4095\n",
        pair._zookeeper.hosts(),
        pair.a.addr()
    );
    let proxy = Proxy::start_yaml(port, &yaml);
    wait_until("the proxy to route from ZooKeeper", DEADLINE, || {
        proxy_info(&proxy).contains(&format!("range=0-4095,master={}", pair.a.addr()))
    });
    let mut writer = ProxyWriter::start(proxy.port, "fr");
    let acked_since = |writer: &ProxyWriter, since: Instant| {
        writer
            .attempts()
            .iter()
            .filter(|a| a.ok && a.sent > since)
            .count()
    };
    // Past the first sync: a streams writes to b (Redis starts once b
    // has acknowledged its copy, up to a second later).
    let started = Instant::now();
    wait_until("writes to flow to a and on to b", DEADLINE, || {
        acked_since(&writer, started) > 300 && dbsize(&pair.b) > 300
    });
    let killed = Instant::now();
    restart(&mut pair);
    wait_until("b to be promoted", DEADLINE, || {
        pair.line().first() == Some(&pair.b.addr()) && is_master(&pair.b)
    });
    let promoted = Instant::now();
    wait_until("writes to flow to b", DEADLINE, || {
        acked_since(&writer, promoted) > 300
    });
    // Writes acknowledged by the killed master may not have reached its
    // replica (replication is asynchronous): those sent after the kill
    // went to the restarted Redis or to b.
    let attempts: Vec<Attempt> = writer
        .stop()
        .into_iter()
        .filter(|a| a.sent > killed)
        .collect();
    let lost = lost_writes(&attempts, [&pair.b, &pair.b]);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        attempts.iter().filter(|a| a.ok).count(),
        &lost[..lost.len().min(5)]
    );
    assert!(is_master(&pair.b), "b lost the shard: {:?}", pair.line());
    wait_until("a to follow b", DEADLINE, || {
        pair.line() == [pair.b.addr(), pair.a.addr()] && is_synced_replica_of(&pair.a, &pair.b)
    });
    (pair, proxy)
}

/// A replica's host goes down, then the master dies: the shard is empty.
/// The replica comes back from the snapshot of its first sync, which holds
/// none of the writes since but names the master's history (Redis keeps it
/// as `master_replid2`). It must not lead the shard (review: it did, with
/// 0 keys, and the old master, back with its data, was then wiped by a full
/// sync from it); its watchdog says why.
#[test]
fn a_replica_back_from_an_old_snapshot_does_not_lead_the_emptied_shard() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/snapshot");
    let a = start_redis();
    let wa = Watchdog::start(&zookeeper.hosts(), &a, &shard);
    wait_until("a to be the master", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
    let dir = temp_dir("snapshot");
    let keep = [
        "--repl-diskless-sync-delay",
        "0",
        "--dir",
        dir.to_str().unwrap(),
    ];
    let b = Redis::start_with(&keep);
    let wb = Watchdog::start(&zookeeper.hosts(), &b, &shard);
    wait_until("b to join the line in sync", DEADLINE, || {
        zk.line(&shard) == [a.addr(), b.addr()] && is_synced_replica_of(&b, &a)
    });
    assert!(dir.join("dump.rdb").exists(), "b keeps its first sync");
    fill(&a, "k", 500);
    let offset: u64 = field(&replication(a.port), "master_repl_offset")
        .parse()
        .unwrap();
    wait_until("the recorded history to reach the writes", DEADLINE, || {
        zk.shard_data(&shard)
            .master
            .is_some_and(|m| m.addr == a.addr() && m.offset >= offset)
    });
    // b's host goes down, then a's.
    let (b_port, mut b, mut wb) = (b.port, b, wb);
    wb.guard.kill();
    b.guard.kill();
    let (mut a, mut wa) = (a, wa);
    wa.guard.kill();
    a.guard.kill();
    wait_until("the line to empty", DEADLINE, || zk.line(&shard).is_empty());
    // b comes back from its snapshot, with its watchdog.
    let b = restart_redis_with(b_port, &keep);
    assert_eq!(dbsize(&b), 0, "the snapshot of the first sync has no key");
    wb.restart();
    wait_until("b's watchdog to refuse the shard", DEADLINE, || {
        wb.log_text()
            .contains("holds only the start of the history")
    });
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        assert!(zk.line(&shard).is_empty(), "b took the shard");
        std::thread::sleep(Duration::from_millis(50));
    }
}
