//! The watchdogs under faults, with real processes (a ZooKeeper, two
//! redis-servers and their watchdogs): a replica whose replication link
//! broke while its master went on taking writes is never promoted when
//! that master dies (it lacks the writes since), nor one cut off from its
//! master or frozen while it took writes; ZooKeeper frozen past the
//! sessions loses no acknowledged write and fails no healthy master over,
//! a short loss of it pauses nothing, and a master cut off from it is
//! paused by the split-brain guard before its replica is promoted; a
//! switchover to a replica whose watchdog is stopped is refused; a master
//! whose watchdog died is fenced; unreadable znodes stop no step.
//! Redis servers and watchdogs restarted: `watchdog_restart.rs`.

mod common;
#[allow(dead_code)]
#[path = "watchdog/harness.rs"]
mod harness;

use common::redis::{encode_command, Redis};
use common::relay::Relay;
use common::wait_until;
use common::zookeeper::ZooKeeper;
use harness::*;
use shardproxy::watchdog::request_switchover;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs a command on `port` and returns its reply as a string.
fn cmd(port: u16, args: &[&str]) -> String {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query(&mut redis_conn(port)).unwrap()
}

/// A pair whose replica b fell behind: b's Redis logs in to a as a user a
/// does not have, so its link is down while a answers and takes 50 writes
/// b never gets; b's watchdog has seen it.
fn pair_with_a_replica_behind(cluster: &str) -> Pair {
    let pair = Pair::start_filled(cluster);
    assert!(
        !pair.wb.log_text().contains("replica falling behind"),
        "a first sync is not falling behind"
    );
    let b = pair.b.port;
    assert_eq!(cmd(b, &["CONFIG", "SET", "masteruser", "nobody"]), "OK");
    assert_eq!(cmd(b, &["CONFIG", "SET", "masterauth", "wrong"]), "OK");
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut redis_conn(b))
        .unwrap();
    fill(&pair.a, "late", 50);
    wait_until("b's watchdog to see it fall behind", DEADLINE, || {
        pair.wb.log_text().contains("replica falling behind")
    });
    pair
}

/// Watches b for 20 intervals: it must neither lead nor be promoted.
fn assert_b_never_leads(pair: &Pair) {
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        assert!(
            pair.line().is_empty(),
            "b took the shard: {:?}",
            pair.line()
        );
        assert_eq!(field(&replication(pair.b.port), "role"), "slave");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_replica_that_fell_behind_its_live_master_is_not_promoted() {
    let mut pair = pair_with_a_replica_behind("behind");
    pair.a.guard.kill();
    pair.wb.wait_for_log("not promoting");
    wait_until("b to leave the line", DEADLINE, || pair.line().is_empty());
    assert_b_never_leads(&pair);

    // The operator accepts the loss (what `shardproxy-admin promote
    // --force` records): b leads with what it has.
    pair.zk.runtime.block_on(async {
        let data = format!(
            r#"{{"weight":"0-4095","master":{{"addr":"{}","replid":"","offset":0}}}}"#,
            pair.b.addr()
        );
        pair.zk
            .client
            .set_data(&pair.shard, data.as_bytes(), None)
            .await
            .unwrap();
    });
    pair.wait_sole_master(&pair.b);
    assert_eq!(dbsize(&pair.b), 100);
}

/// The replica's watchdog is restarted after it saw its replica fall
/// behind, and its master dies meanwhile: the restarted watchdog cannot
/// know how long the link was down, so it does not lead the shard either
/// (review: it led it and the 50 writes it lacked were lost).
#[test]
fn a_restarted_watchdog_does_not_promote_a_replica_found_behind() {
    let mut pair = pair_with_a_replica_behind("behindrestart");
    pair.wb.guard.kill();
    pair.a.guard.kill();
    pair.wb.restart();
    wait_until(
        "the restarted watchdog to count b as behind",
        DEADLINE,
        || pair.wb.log_text().contains("counted as behind"),
    );
    wait_until("a to leave the line", DEADLINE, || {
        !pair.line().contains(&pair.a.addr())
    });
    assert_b_never_leads(&pair);
}

/// A replica cut off from its master for longer than a failover takes (a
/// partition: its link is down, and its watchdog cannot reach the master
/// either, so nobody can tell whether it fell behind). When that master
/// dies, promotion refuses the replica and it leaves the line; it must not
/// then take the emptied shard as its leader (from reading: it did, on the
/// next check, through the empty-shard path that looked only at "behind").
#[test]
fn a_replica_cut_off_from_its_master_does_not_lead_the_emptied_shard() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/cutoff");
    // Only a's watchdog knows a's password: b's cannot probe a, as across
    // a partition.
    let a = Redis::start_with(&["--repl-diskless-sync-delay", "0", "--requirepass", "pa"]);
    let b = Redis::start_with(&["--repl-diskless-sync-delay", "0", "--masterauth", "pa"]);
    // A link is stale after 3 x 100 ms + 500 ms + 10 s.
    let timings = [&FAST_TIMINGS[..], &["--busy-down-after-ms", "500"]].concat();
    let hosts = zookeeper.hosts();
    let _wa = Watchdog::start_with(
        &hosts,
        &a,
        &shard,
        &[&timings[..], &["--redis-auth", "pa"]].concat(),
    );
    wait_until("a to be the master", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
    let wb = Watchdog::start_with(&hosts, &b, &shard, &timings);
    wait_until("b to join the line in sync", DEADLINE, || {
        zk.line(&shard) == [a.addr(), b.addr()] && is_synced_replica_of(&b, &a)
    });
    assert_eq!(cmd(b.port, &["CONFIG", "SET", "masterauth", "wrong"]), "OK");
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut redis_conn(b.port))
        .unwrap();
    wait_until(
        "b's link to be down past the stale limit",
        Duration::from_secs(30),
        || {
            field(&replication(b.port), "master_link_down_since_seconds")
                .parse::<u64>()
                .is_ok_and(|secs| secs > 11)
        },
    );
    assert!(!wb.log_text().contains("replica falling behind"));
    let mut a = a;
    a.guard.kill();
    wait_until("b's promotion to be refused", DEADLINE, || {
        wb.log_text().contains("not promoting")
    });
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert!(
            zk.line(&shard).is_empty(),
            "b took the shard: {:?}",
            zk.line(&shard)
        );
        assert_eq!(field(&replication(b.port), "role"), "slave");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(wb.log_text().contains("lost touch with it"));
}

/// ZooKeeper frozen for longer than the sessions (a long pause): every
/// session expires at once and both watchdogs of the shard register
/// again together. The master keeps its place, and no write it
/// acknowledged is lost (review: its replica was promoted, and 2-5
/// acknowledged writes were lost in 3 of 4 runs, a master unpaused on a
/// line that did not hold and then made a replica).
#[test]
fn zookeeper_frozen_past_the_sessions_loses_no_acknowledged_write() {
    let pair = Pair::start("frozen");
    let mut writer = Writer::start([pair.a.port, pair.b.port]);
    wait_until("writes to be acknowledged", DEADLINE, || {
        writer.acked().len() > 200
    });
    pair._zookeeper.signal("STOP");
    // Three sessions' worth (sessions are 1 s here): all of them expire
    // when it wakes.
    std::thread::sleep(Duration::from_secs(3));
    pair._zookeeper.signal("CONT");
    // The test's own session expired too.
    let zk = Zk::connect(&pair._zookeeper);
    // The healthy master keeps its place: its replica's watchdog waits
    // for the master's to register again.
    wait_until("a to lead again and b to follow it", DEADLINE, || {
        zk.line(&pair.shard) == [pair.a.addr(), pair.b.addr()]
            && is_master(&pair.a)
            && is_synced_replica_of(&pair.b, &pair.a)
    });
    let settled = writer.acked().len();
    wait_until("writes after the pause", DEADLINE, || {
        writer.acked().len() > settled + 200
    });
    let acked = writer.stop();
    assert!(is_master(&pair.a), "a healthy master was failed over");
    let lost = missing(&pair.a, &acked);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(20)]
    );
}

/// A short loss of ZooKeeper (the master's watchdog cut off for 0.3 s with
/// a 2 s session, which cannot expire meanwhile) does not pause the
/// master: no write fails and none waits long.
#[test]
fn a_zookeeper_blip_does_not_pause_the_master() {
    let relay = Arc::new(Mutex::new(None::<Relay>));
    let relay_for_a = relay.clone();
    let pair = Pair::start_timed(
        "blip",
        move |zookeeper, _| {
            let r = Relay::start(zookeeper.port);
            let hosts = r.hosts();
            *relay_for_a.lock().unwrap() = Some(r);
            hosts
        },
        2000,
    );
    let relay = relay.lock().unwrap().take().unwrap();
    let (a, b, wa) = (&pair.a, &pair.b, &pair.wa);
    let mut writer = Writer::start([a.port, a.port]);
    wait_until("writes", DEADLINE, || writer.acked().len() > 100);
    relay.cut();
    // Short enough that the client's reconnect backoff (100 ms doubling,
    // with jitter) still has an attempt well within the guard's 1.5 s.
    std::thread::sleep(Duration::from_millis(300));
    relay.restore();
    wait_until("a's watchdog to reconnect", DEADLINE, || {
        wa.log_text().contains("ZooKeeper reconnected")
    });
    let done = writer.acked().len();
    wait_until("writes after the blip", DEADLINE, || {
        writer.acked().len() > done + 100
    });
    let acked = writer.stop();
    let attempts = acked.last().map_or(0, |(i, _)| *i);
    let gap = longest_gap(&acked);
    println!(
        "ZooKeeper blip: {} of {attempts} writes acknowledged, longest gap {gap:?}",
        acked.len()
    );
    assert_eq!(acked.len() as u64, attempts, "a write failed");
    assert!(gap < Duration::from_millis(500), "{gap:?}");
    assert!(!wa.log_text().contains("split-brain guard: paused"));
    assert_eq!(pair.line(), [a.addr(), b.addr()]);
}

#[test]
fn split_brain_guard_pauses_a_master_cut_off_from_zookeeper() {
    let relay = Arc::new(Mutex::new(None::<Relay>));
    let relay_for_a = relay.clone();
    let pair = Pair::start_with("guard", move |zookeeper, _| {
        let r = Relay::start(zookeeper.port);
        let hosts = r.hosts();
        *relay_for_a.lock().unwrap() = Some(r);
        hosts
    });
    let relay = relay.lock().unwrap().take().unwrap();
    let before = pair
        .wa
        .log_text()
        .matches("split-brain guard: paused")
        .count();

    let cut = Instant::now();
    relay.cut();
    wait_until("a's watchdog to pause writes", DEADLINE, || {
        pair.wa
            .log_text()
            .matches("split-brain guard: paused")
            .count()
            > before
    });
    println!(
        "split-brain guard: writes paused {:?} after the cut",
        cut.elapsed()
    );
    // b is promoted once a's session expires, soon after the pause: by the
    // logs' clocks, not by when this thread gets to look.
    let paused_at = pair.wa.last_logged_at("split-brain guard: paused");
    if let Some(promoted_at) = pair.wb.last_logged_at("promoted to master") {
        assert!(
            Some(&promoted_at) > paused_at.as_ref(),
            "b was promoted at {promoted_at}, before a was paused at {paused_at:?}"
        );
    }
    // A client still reaching a (a proxy with an old table) gets no answer
    // while a is paused; a still answers b's watchdog, which fences it and
    // makes it its replica once b is promoted, so the held write fails.
    let mut client = TcpStream::connect(("127.0.0.1", pair.a.port)).unwrap();
    client
        .write_all(&encode_command(&[b"SET", b"split", b"brain"]))
        .unwrap();
    pair.wait_sole_master(&pair.b);
    println!(
        "split-brain guard: b promoted {:?} after the cut",
        cut.elapsed()
    );
    let mut reply = [0u8; 64];
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let n = client.read(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply[..n]);
    assert!(text.starts_with("-READONLY"), "held write got {text:?}");

    relay.restore();
    wait_until("a to rejoin as a replica of b", DEADLINE, || {
        pair.line() == [pair.b.addr(), pair.a.addr()] && is_synced_replica_of(&pair.a, &pair.b)
    });
    let value: Option<String> = redis::cmd("GET")
        .arg("split")
        .query(&mut redis_conn(pair.b.port))
        .unwrap();
    assert_eq!(value, None, "the held write reached the new master");
}

/// The next in line's watchdog is stopped (SIGSTOP), its connection to
/// its Redis still open: nobody would promote that Redis, so the
/// switchover is refused and the master keeps taking writes (review: the
/// switchover said done, and the shard answered -READONLY for 5 s).
#[test]
fn a_switchover_to_a_replica_whose_watchdog_is_stopped_is_refused() {
    // Sessions that outlive the stop: b stays in line meanwhile.
    let zookeeper = ZooKeeper::start_with_sessions_up_to(10_000);
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/frozenwatchdog");
    let (a, b) = (start_redis(), start_redis());
    let _wa = Watchdog::start_timed(&zookeeper.hosts(), &a, &shard, 10_000);
    wait_until("a to be the master", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
    let wb = Watchdog::start_timed(&zookeeper.hosts(), &b, &shard, 10_000);
    wait_until("b to join the line", DEADLINE, || {
        zk.line(&shard) == [a.addr(), b.addr()]
    });
    wb.guard.signal("STOP");
    // Long enough for its connection to look idle (over 2 s here).
    std::thread::sleep(Duration::from_secs(3));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let refused = runtime.block_on(request_switchover(
        &zk.hosts,
        None,
        &shard,
        Duration::from_secs(2),
    ));
    wb.guard.signal("CONT");
    let err = refused.expect_err("a switchover to a replica nobody promotes");
    assert!(err.to_string().contains("has not checked"), "{err}");
    assert!(is_master(&a));
    assert_eq!(cmd(a.port, &["SET", "after", "1"]), "OK");
    assert_eq!(zk.line(&shard), [a.addr(), b.addr()]);
}

/// A master's watchdog checking every 1.5 s with a 2 s session (intervals
/// longer than a quarter of the session) is cut off from ZooKeeper: its
/// guard still pauses writes before the replica is promoted (review: it
/// paused on its next interval, a second after the promotion, and the old
/// master took writes meanwhile).
#[test]
fn a_watchdog_with_long_intervals_pauses_its_master_before_the_promotion() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/slowguard");
    let (a, b) = (start_redis(), start_redis());
    let relay = common::relay::Relay::start(zookeeper.port);
    let slow = [
        "--interval-ms",
        "1500",
        "--down-after",
        "3",
        "--session-timeout-ms",
        "2000",
    ];
    let wa = Watchdog::start_with(&relay.hosts(), &a, &shard, &slow);
    wait_until("a to be the master", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
    let wb = Watchdog::start_timed(&zookeeper.hosts(), &b, &shard, 2000);
    wait_until("b to join the line in sync", DEADLINE, || {
        zk.line(&shard) == [a.addr(), b.addr()] && is_synced_replica_of(&b, &a)
    });
    relay.cut();
    wait_until("b to be promoted", DEADLINE, || {
        wb.log_text().contains("promoted to master")
    });
    wa.wait_for_log("split-brain guard: paused");
    let paused_at = wa.last_logged_at("split-brain guard: paused").unwrap();
    let promoted_at = wb.last_logged_at("promoted to master").unwrap();
    assert!(
        paused_at < promoted_at,
        "a was paused at {paused_at}, after b's promotion at {promoted_at}"
    );
    relay.restore();
}

/// The master's watchdog is killed, its Redis goes on: once its session
/// expires the replica is promoted, and the old master, which still
/// answers, is fenced and made its replica. Review: it stayed a writable
/// master for good, and a proxy still routing to it (cut off from
/// ZooKeeper, or started while ZooKeeper was down) had writes
/// acknowledged there and lost.
#[test]
fn a_master_whose_watchdog_died_is_fenced_when_its_replica_is_promoted() {
    let mut pair = Pair::start_filled("orphan");
    pair.wa.guard.kill();
    pair.wait_sole_master(&pair.b);
    // A client of the old master (a proxy with an old table) is refused.
    wait_until("a to refuse writes", DEADLINE, || {
        let reply = redis::cmd("SET")
            .arg("late")
            .arg("1")
            .query::<String>(&mut redis_conn(pair.a.port));
        reply.is_err_and(|e| e.to_string().contains("read only replica"))
    });
    wait_until("a to replicate from b", DEADLINE, || {
        is_synced_replica_of(&pair.a, &pair.b)
    });
    assert!(pair
        .wb
        .log_text()
        .contains("the old master now replicates from us"));
    assert_eq!(dbsize(&pair.b), 100, "b kept every key");
}

/// The replica freezes (SIGSTOP) while its master takes writes, then the
/// master dies and the replica wakes: its link has been down for no time,
/// but it lacks every write of the freeze. It must not be promoted
/// (review: it was, and 3,630 acknowledged writes were lost); its
/// watchdog, which saw it not answer while the master took writes, says
/// why.
#[test]
fn a_replica_that_froze_while_its_master_took_writes_is_not_promoted() {
    let pair = Pair::start_filled("frozen");
    pair.b.guard.signal("STOP");
    // More than the sockets between them hold: b cannot have it on waking.
    let value = "v".repeat(10_000);
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.cmd("SET")
            .arg(format!("late:{i}"))
            .arg(&value)
            .ignore();
    }
    pipe.query::<()>(&mut redis_conn(pair.a.port)).unwrap();
    let offset = field(&replication(pair.a.port), "master_repl_offset");
    pair.wb
        .wait_for_log("it does not answer while its master takes writes");
    pair.wb.wait_for_log(&format!("master_offset={offset}"));
    let mut a = pair.a;
    a.guard.kill();
    pair.b.guard.signal("CONT");
    // Refused the promotion; or, frozen at the head when a's member went,
    // it stepped aside and, awake, is refused the emptied shard.
    wait_until("b to be refused the shard", DEADLINE, || {
        let log = pair.wb.log_text();
        log.contains("not promoting") || log.contains("not leading it")
    });
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        assert_ne!(
            pair.zk.line(&pair.shard),
            [pair.b.addr()],
            "b took the shard"
        );
        assert_eq!(field(&replication(pair.b.port), "role"), "slave");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The next in line is frozen (SIGSTOP) when the master dies: its
/// watchdog steps it aside, and the in-sync replica behind it is promoted
/// at once rather than after the 30 s busy limit (review: writes failed for
/// the whole freeze). Woken, the frozen one follows the new master.
#[test]
fn a_frozen_next_in_line_steps_aside_for_an_in_sync_replica() {
    let pair = Pair::start("frozen-next");
    let c = start_redis();
    let wc = Watchdog::start(&pair.zk.hosts, &c, &pair.shard);
    wait_until("c to join the line in sync", DEADLINE, || {
        pair.line() == [pair.a.addr(), pair.b.addr(), c.addr()] && is_synced_replica_of(&c, &pair.a)
    });
    fill(&pair.a, "k", 100);
    wait_until("the replicas to have the data", DEADLINE, || {
        dbsize(&pair.b) == 100 && dbsize(&c) == 100
    });
    pair.b.guard.signal("STOP");
    let mut a = pair.a;
    let killed = Instant::now();
    a.guard.kill();
    wait_until("c to be promoted", Duration::from_secs(10), || {
        pair.zk.line(&pair.shard).first() == Some(&c.addr()) && is_master(&c)
    });
    println!("c promoted {:?} after the kill", killed.elapsed());
    assert_eq!(dbsize(&c), 100, "c has every key");
    assert!(pair.wb.log_text().contains("stepping aside"));
    pair.b.guard.signal("CONT");
    wait_until("b to follow c", DEADLINE, || {
        is_synced_replica_of(&pair.b, &c) && pair.zk.line(&pair.shard) == [c.addr(), pair.b.addr()]
    });
    drop(wc);
}

/// The replica is busy for a moment (a 1.5 s read-only script) while its
/// master takes a few writes, and the master dies meanwhile: the writes
/// were in the replica's socket, so once the script ends it has every
/// one, and it is promoted (review: refused for good, the shard left
/// without a master until `promote --force`).
#[test]
fn a_replica_busy_for_a_moment_is_promoted_once_it_has_every_write() {
    let pair = Pair::start_filled("busy-moment");
    let b_port = pair.b.port;
    let script = std::thread::spawn(move || {
        let busy = "local s = redis.call('TIME')[1] \
                    while redis.call('TIME')[1] - s < 2 do end return 1";
        let mut conn = redis_conn(b_port);
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        redis::cmd("EVAL_RO")
            .arg(busy)
            .arg(0)
            .query::<i64>(&mut conn)
    });
    pair.wb
        .wait_for_log("it does not answer while its master takes writes");
    fill(&pair.a, "late", 50);
    let Pair {
        a,
        wa,
        b,
        wb,
        zk,
        shard,
        ..
    } = pair;
    let (mut a, mut wa) = (a, wa);
    wa.guard.kill();
    a.guard.kill();
    assert_eq!(script.join().unwrap().unwrap(), 1);
    wait_until("b to be promoted", DEADLINE, || {
        zk.line(&shard) == [b.addr()] && is_master(&b)
    });
    assert_eq!(dbsize(&b), 150, "b has every write");
    assert!(wb.log_text().contains("no longer behind"));
}

/// The master's host freezes (SIGSTOP of its Redis) and its watchdog dies:
/// the replica is promoted while the old master cannot be fenced. Woken,
/// the old master is fenced then: made the new master's replica (review:
/// it woke up a writable master, and a proxy cut off from ZooKeeper had
/// 5,363 writes acknowledged there and lost).
#[test]
fn a_master_frozen_at_the_promotion_is_fenced_when_it_wakes() {
    let mut pair = Pair::start_filled("late-fence");
    pair.a.guard.signal("STOP");
    pair.wa.guard.kill();
    pair.wait_sole_master(&pair.b);
    pair.wb.wait_for_log("it is fenced when it does");
    pair.a.guard.signal("CONT");
    wait_until("a to replicate from b", DEADLINE, || {
        is_synced_replica_of(&pair.a, &pair.b)
    });
    let reply = redis::cmd("SET")
        .arg("late")
        .arg("1")
        .query::<String>(&mut redis_conn(pair.a.port));
    let error = reply.expect_err("the old master took a write");
    assert!(error.to_string().contains("read only replica"), "{error}");
    assert_eq!(dbsize(&pair.b), 100);
}

/// An empty shard whose data cannot be read (it may name a last master
/// and its history) is not led by an empty Redis until the data is fixed.
#[test]
fn an_empty_shard_with_unreadable_data_is_not_led() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/unreadable");
    let set = |data: &[u8]| {
        zk.runtime
            .block_on(zk.client.set_data(&shard, data, None))
            .unwrap();
    };
    set(br#"{"weight":"0-4095",}"#);
    let redis = start_redis();
    let watchdog = Watchdog::start(&zookeeper.hosts(), &redis, &shard);
    watchdog.wait_for_log("data is unreadable");
    assert!(zk.line(&shard).is_empty(), "an empty Redis led the shard");
    set(&shardproxy::zk::layout::ShardData::new(0, 4095).to_json());
    wait_until("the Redis to lead the fixed shard", DEADLINE, || {
        zk.line(&shard) == [redis.addr()] && is_master(&redis)
    });
}

/// A control znode the watchdogs may not read (an ACL without READ, by
/// mistake or by someone allowed to create it): no request of the
/// admin's, which writes them readable. The master's watchdog says so once
/// (found when it starts) and goes on with its steps: its history is still recorded as writes
/// come (review: every step failed after the line's with `not
/// authorized`, the recorded offset froze, and a short disconnection from
/// ZooKeeper would have paused the master at once).
#[test]
fn an_unreadable_control_znode_stops_no_step() {
    let mut pair = Pair::start("noread");
    let control = "/redis/control/noread/redis-0000";
    pair.zk.runtime.block_on(async {
        let open = zookeeper_client::CreateMode::Persistent
            .with_acls(zookeeper_client::Acls::anyone_all());
        pair.zk
            .client
            .mkdir("/redis/control/noread", &open)
            .await
            .unwrap();
        let create_only = [zookeeper_client::Acl::new(
            zookeeper_client::Permission::CREATE,
            zookeeper_client::AuthId::anyone(),
        )];
        let mode = zookeeper_client::CreateMode::Persistent
            .with_acls(zookeeper_client::Acls::new(&create_only));
        pair.zk
            .client
            .create(control, b"junk", &mode)
            .await
            .unwrap();
    });
    // ZooKeeper tells no watcher of a znode it may not read: the master's
    // watchdog finds it when it starts again.
    pair.wa.restart();
    pair.wa
        .wait_for_log("the control znode is not readable by this watchdog");
    fill(&pair.a, "after", 2000);
    let offset = |info: &str| field(info, "master_repl_offset").parse::<u64>().unwrap();
    let written = offset(&replication(pair.a.port));
    wait_until("the history's offset to be recorded", DEADLINE, || {
        pair.zk
            .shard_data(&pair.shard)
            .master
            .is_some_and(|m| m.offset >= written)
    });
    let log = pair.wa.log_text();
    assert_eq!(
        log.matches("not readable by this watchdog").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("not authorized"), "{log}");
    assert_eq!(pair.line(), [pair.a.addr(), pair.b.addr()]);
}
