//! Watchdogs started wrong beside a Redis, with real processes (a
//! ZooKeeper, redis-servers and their watchdogs): one given another
//! shard's master (a typo in `--shard`), one that cannot reach ZooKeeper
//! (a typo in `--zk`), a master's own watchdog restarted under another
//! name for its Redis (`localhost:P`), and a second watchdog of a Redis
//! that has one all leave the Redis and its shard as they were; so does a
//! member made by hand that names another shard's Redis.

mod common;
#[allow(dead_code)]
#[path = "watchdog/harness.rs"]
mod harness;

use common::redis::Redis;
use common::zookeeper::ZooKeeper;
use common::{free_port, temp_dir, wait_until};
use harness::*;
use std::time::Duration;

/// A watchdog for `addr`, the Redis as written on its command line, with
/// the fast test timings.
fn start_as(hosts: &str, addr: &str, shard: &str) -> Watchdog {
    let log = temp_dir("watchdog").join("watchdog.log");
    let mut args: Vec<String> = ["--zk", hosts, "--redis", addr, "--shard", shard]
        .iter()
        .chain(FAST_TIMINGS.iter())
        .map(|s| s.to_string())
        .collect();
    args.extend(["-v", "debug", "-o"].map(String::from));
    args.push(log.to_str().unwrap().to_string());
    Watchdog::spawn(args, log)
}

/// SET on `redis`, answered within half a second (a paused master holds
/// it: the read times out).
fn set_at_once(redis: &Redis, key: &str) -> Result<(), redis::RedisError> {
    let mut conn = redis_conn(redis.port);
    conn.set_read_timeout(Some(Duration::from_millis(500)))?;
    redis::cmd("SET").arg(key).arg("v").query(&mut conn)
}

/// A watchdog started for the wrong shard (a typo in `--shard`) beside the
/// master of another shard does nothing to that Redis: not while its old
/// watchdog's member is still in that shard's line, nor once only that
/// shard's master record names it (review: it made the master a replica
/// of the other shard's, replacing every key, and its replica was then
/// promoted with the other shard's data), nor when started under another
/// name for it (`localhost`); a znode it may not read beside the shards
/// stops no watchdog.
#[test]
fn a_watchdog_given_another_shards_master_leaves_it_alone() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let root = "/redis/cluster/typo";
    let first = zk.create_shard_range(root, "redis-0000", 0, 2047);
    let second = zk.create_shard_range(root, "redis-0001", 2048, 4095);
    // A key of a later version's in the shard's data: the watchdog's
    // record of its master keeps it (review: every rewrite dropped it).
    let later = br#"{"weight":"2048-4095","owner":{"team":"ops"}}"#;
    zk.runtime
        .block_on(zk.client.set_data(&second, later, None))
        .unwrap();
    // A znode no watchdog may read beside the shards is no shard (review:
    // it stopped every watchdog from joining its line).
    let only_elsewhere = [zookeeper_client::Acl::new(
        zookeeper_client::Permission::ALL,
        zookeeper_client::AuthId::new("ip", "10.9.9.9"),
    )];
    let mode = zookeeper_client::CreateMode::Persistent
        .with_acls(zookeeper_client::Acls::new(&only_elsewhere));
    zk.runtime
        .block_on(zk.client.create(&format!("{root}/notes"), b"hello", &mode))
        .unwrap();
    let (r0, r1) = (start_redis(), start_redis());
    let _w0 = Watchdog::start(&zookeeper.hosts(), &r0, &first);
    // A session long enough for its member to outlive the watchdog a while.
    let mut w1 = Watchdog::start_timed(&zookeeper.hosts(), &r1, &second, 4000);
    fill(&r0, "first", 10);
    fill(&r1, "second", 50);
    wait_until("r1 to be recorded as redis-0001's master", DEADLINE, || {
        zk.line(&second) == [r1.addr()]
            && zk
                .shard_data(&second)
                .master
                .is_some_and(|m| m.addr == r1.addr())
    });
    assert_eq!(
        zk.shard_data(&second).other["owner"],
        serde_json::json!({"team": "ops"})
    );
    w1.guard.kill();
    let typo = Watchdog::start(&zookeeper.hosts(), &r1, &first);
    typo.wait_for_log("it is in shard redis-0001's line");
    wait_until("redis-0001's line to drop r1", DEADLINE, || {
        zk.line(&second).is_empty()
    });
    typo.wait_for_log("it is shard redis-0001's recorded master");
    drop(typo);
    // The same Redis under another name: known by its run (review: with
    // `--redis localhost:P` it was made a replica, its 50 keys gone).
    let alias = format!("localhost:{}", r1.port);
    let aliased = start_as(&zookeeper.hosts(), &alias, &first);
    aliased.wait_for_log("it is shard redis-0001's recorded master");
    assert!(
        is_master(&r1) && dbsize(&r1) == 50,
        "{}",
        replication(r1.port)
    );
    assert_eq!(zk.line(&first), [r0.addr()]);
    // r1's own watchdog, started again beside the one still blocked by
    // the claim, takes r1 back into its shard: the blocked one is nobody's
    // watchdog (review: the real one stood by for it, and the shard went
    // without its master).
    let back = Watchdog::start(&zookeeper.hosts(), &r1, &second);
    wait_until("r1 to lead redis-0001 again", DEADLINE, || {
        zk.line(&second) == [r1.addr()]
    });
    assert!(
        !back.log_text().contains("standing by"),
        "{}",
        back.log_text()
    );
    assert!(is_master(&r1) && dbsize(&r1) == 50);
}

/// A watchdog that cannot reach ZooKeeper (a wrong `--zk`) beside a
/// master another watchdog watches leaves it alone: its writes are never
/// paused (review: every write of the shard timed out for as long as the
/// stray ran). The master's own watchdog, restarted beside the stray,
/// takes its place with no failover (review: it stood by for the stray,
/// and the replica was promoted).
#[test]
fn a_watchdog_cut_off_from_zookeeper_leaves_a_watched_master_alone() {
    let mut pair = Pair::start("stray");
    let nowhere = format!("127.0.0.1:{}", free_port());
    let stray = Watchdog::start(&nowhere, &pair.a, &pair.shard);
    stray.wait_for_log("already watches this Redis");
    // Over many of the stray's intervals (100 ms).
    for i in 0..20 {
        let key = format!("during:{i}");
        set_at_once(&pair.a, &key).unwrap_or_else(|e| panic!("{key}: {e}"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let old_seq = pair.zk.members(&pair.shard)[0].seq;
    pair.wa.guard.kill();
    let restarted = Watchdog::start(&pair.zk.hosts, &pair.a, &pair.shard);
    pair.wait_a_back_at_head(old_seq);
    assert!(
        !restarted.log_text().contains("standing by"),
        "{}",
        restarted.log_text()
    );
    assert!(is_master(&pair.a), "{}", replication(pair.a.port));
    assert!(is_synced_replica_of(&pair.b, &pair.a));
    wait_until("a to take writes at once", DEADLINE, || {
        set_at_once(&pair.a, "after").is_ok()
    });
}

/// A master's watchdog restarted with another name for its Redis
/// (`localhost:P`, registered as `127.0.0.1:P`) takes its own place under
/// the name the line knows: the Redis stays master and its replica stays
/// one (review: it followed the old member, making its Redis a replica of
/// itself; the shard answered READONLY, then failed over).
#[test]
fn a_masters_watchdog_restarted_under_another_name_keeps_its_place() {
    let mut pair = Pair::start("alias");
    fill(&pair.a, "k", 20);
    let old_seq = pair.zk.members(&pair.shard)[0].seq;
    pair.wa.guard.kill();
    let alias = format!("localhost:{}", pair.a.port);
    let restarted = start_as(&pair.zk.hosts, &alias, &pair.shard);
    pair.wait_a_back_at_head(old_seq);
    restarted.wait_for_log("knows our Redis under another address");
    assert!(
        !restarted.log_text().contains("replicating from the master"),
        "{}",
        restarted.log_text()
    );
    assert!(is_master(&pair.a), "{}", replication(pair.a.port));
    assert_eq!(dbsize(&pair.a), 20);
    wait_until("b to follow a", DEADLINE, || {
        is_synced_replica_of(&pair.b, &pair.a)
    });
}

/// A master's Redis restarted empty with its watchdog dead, and the
/// watchdog then started as `localhost:P` while the line has
/// `127.0.0.1:P`: it knows that member for an earlier run of its Redis and
/// deletes it, and the replica is promoted with every key (review: it made
/// its Redis a replica of itself; once in three runs the replica then
/// synced from the empty Redis and lost every key).
#[test]
fn a_restarted_masters_watchdog_under_another_name_lets_the_replica_take_over() {
    let mut pair = Pair::start_filled("aliasrestart");
    let port = pair.a.port;
    pair.wa.guard.kill();
    pair.a.guard.kill();
    // Slow full syncs: b's link to the restarted, empty Redis cannot
    // empty b before its watchdog acts.
    pair.a = restart_redis_with(port, &["--repl-diskless-sync-delay", "5"]);
    let restarted = start_as(&pair.zk.hosts, &format!("localhost:{port}"), &pair.shard);
    wait_until("b to be promoted", DEADLINE, || {
        pair.line().first() == Some(&pair.b.addr()) && is_master(&pair.b)
    });
    assert_eq!(dbsize(&pair.b), 100);
    wait_until("a to follow b", DEADLINE, || {
        is_synced_replica_of(&pair.a, &pair.b)
    });
    let log = restarted.log_text();
    assert!(
        log.contains("knows our Redis under another address"),
        "{log}"
    );
    let itself = format!("new_master={}", pair.a.addr());
    assert!(
        !log.lines()
            .any(|l| l.contains("replicating from the master") && l.contains(&itself)),
        "{log}"
    );
}

/// A member-shaped child made by hand (persistent, junk data) that sorts
/// first in a shard's line, naming another shard's Redis: no watchdog
/// follows it, so neither Redis of the shard replicates from that Redis
/// (which would wipe the shard's data).
#[test]
fn a_member_made_by_hand_is_never_followed() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/handmade");
    let mode =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    // A child created and deleted first: the watchdogs' sequences start at
    // 1, so a hand-made `-0000000000` sorts before them.
    zk.runtime.block_on(async {
        let sequential = zookeeper_client::CreateMode::PersistentSequential
            .with_acls(zookeeper_client::Acls::anyone_all());
        let (_, seq) = zk
            .client
            .create(&format!("{shard}/gone-"), b"", &sequential)
            .await
            .unwrap();
        zk.client
            .delete(&format!("{shard}/gone-{seq}"), None)
            .await
            .unwrap();
    });
    let (a, b) = (start_redis(), start_redis());
    let wa = Watchdog::start(&zookeeper.hosts(), &a, &shard);
    wait_until("a to be the master", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
    fill(&a, "k", 100);
    let wb = Watchdog::start(&zookeeper.hosts(), &b, &shard);
    wait_until("b to hold a's data in line", DEADLINE, || {
        zk.line(&shard) == [a.addr(), b.addr()] && dbsize(&b) == 100
    });
    let other = start_redis();
    fill(&other, "x", 5);
    let junk = format!("{shard}/{}-0000000000", other.addr());
    zk.runtime
        .block_on(zk.client.create(&junk, b"junk", &mode))
        .unwrap();
    wa.wait_for_log("not ephemeral");
    wb.wait_for_log("not ephemeral");
    assert!(is_master(&a), "{}", replication(a.port));
    assert!(is_synced_replica_of(&b, &a), "{}", replication(b.port));
    assert_eq!((dbsize(&a), dbsize(&b)), (100, 100));
    // Left out of the line, it does not make a's guard pause writes.
    let reply: String = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut redis_conn(a.port))
        .unwrap();
    assert_eq!(reply, "OK");
    assert!(is_master(&other));
    assert_eq!(dbsize(&other), 5);
}

/// A second watchdog started for a Redis that already has one stands by:
/// the line does not churn (the two deleted each other's members for ever,
/// thousands of times a minute), and when the first one goes the second
/// takes over with no failover.
#[test]
fn a_second_watchdog_of_one_redis_stands_by_until_the_first_goes() {
    let mut pair = Pair::start("twice");
    let before: Vec<(String, u64)> = pair
        .zk
        .members(&pair.shard)
        .into_iter()
        .map(|m| (m.addr, m.seq))
        .collect();
    let second = Watchdog::start(&pair.zk.hosts, &pair.a, &pair.shard);
    second.wait_for_log("already watches this Redis");
    wait_until("the second watchdog to look again", DEADLINE, || {
        second.log_text().matches("still standing by").count() >= 5
    });
    let now: Vec<(String, u64)> = pair
        .zk
        .members(&pair.shard)
        .into_iter()
        .map(|m| (m.addr, m.seq))
        .collect();
    assert_eq!(now, before, "the line changed while a watchdog stood by");

    pair.wa.guard.kill();
    second.wait_for_log("taking over");
    let old_seq = before[0].1;
    pair.wait_a_back_at_head(old_seq);
    assert!(is_master(&pair.a), "{}", replication(pair.a.port));
    assert!(is_synced_replica_of(&pair.b, &pair.a));
}
