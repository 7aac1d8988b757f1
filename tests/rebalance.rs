//! `shardproxy-admin rebalance` against real processes: a ZooKeeper,
//! redis-servers, two proxies, clients writing and reading through them.
//!
//! What a user must see: the dry run tells the moves and changes nothing;
//! the rebalance ends with every shard owning a third of the slots, every
//! key readable with its last acknowledged value and living on the shard
//! its range says (none left behind, none twice); a second rebalance has
//! nothing to do; a rebalance killed midway is continued by running it
//! again, and `status` meanwhile shows the keys moved, keys/s and an ETA.

mod common;

use common::migration::{
    admin, assert_preloaded, cluster, load, preload, run_admin, Cluster, Tally,
};
use common::redis::RawClient;
use common::wait_until;
use common::zk_cluster::{keys_in, slot, ROOT};
use common::ProcessGuard;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The layout a rebalance of 4096 slots over three equal shards gives.
const THIRDS: [Option<(u32, u32)>; 3] = [Some((0, 1364)), Some((1365, 2729)), Some((2730, 4095))];

/// Every shard znode's data and the migration znode's, as text: what a
/// dry run must leave as it found.
async fn zookeeper_data(c: &Cluster) -> String {
    let zk = c
        .zookeeper
        .client_with_session(Duration::from_secs(20))
        .await;
    let mut names = zk.list_children(ROOT).await.unwrap();
    names.sort();
    let mut out = String::new();
    for name in names {
        let (data, stat) = zk.get_data(&format!("{ROOT}/{name}")).await.unwrap();
        let members = zk.list_children(&format!("{ROOT}/{name}")).await.unwrap();
        out.push_str(&format!(
            "{name} v{} {} {members:?}\n",
            stat.version,
            String::from_utf8_lossy(&data)
        ));
    }
    let migration = zk.get_data("/redis/control/test/migration").await.ok();
    out.push_str(&format!("migration: {:?}\n", migration.map(|(d, _)| d)));
    out
}

/// Every key, with its value, lives on exactly the shard whose range in
/// `layout` holds its slot (`layout[i]` is redis[i]'s, redis-000i's).
fn assert_placed(c: &Cluster, layout: &[Option<(u32, u32)>; 3], keys: &[(String, String)]) {
    let mut conns: Vec<RawClient> = c.redis.iter().map(|r| r.connect()).collect();
    let owner_of = |key: &str| {
        let s = slot(key);
        layout
            .iter()
            .position(|r| r.is_some_and(|(lo, hi)| lo <= s && s <= hi))
            .unwrap()
    };
    for (key, value) in keys {
        let owner = owner_of(key);
        let want = format!("${}\r\n{value}\r\n", value.len());
        assert_eq!(
            conns[owner].cmd_str(&["GET", key]),
            want,
            "{key} on shard {owner}"
        );
        for (i, conn) in conns.iter_mut().enumerate() {
            if i != owner {
                assert_eq!(
                    conn.cmd_str(&["EXISTS", key]),
                    ":0\r\n",
                    "{key} left on shard {i}"
                );
            }
        }
    }
    let total: u64 = conns
        .iter_mut()
        .map(|c| {
            let reply = c.cmd_str(&["DBSIZE"]);
            reply
                .trim_start_matches(':')
                .trim_end()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, keys.len() as u64, "keys on the shards, all told");
}

/// The export names each shard with its range in `layout` (and leaves out
/// a shard with none).
fn assert_layout(c: &Cluster, layout: &[Option<(u32, u32)>; 3]) {
    let (code, text) = run_admin(&c.conf, &["export"]);
    assert_eq!(code, 0, "{text}");
    for (redis, range) in c.redis.iter().zip(layout) {
        match range {
            Some((lo, hi)) => {
                let line = format!("- {}:{lo}-{hi}", redis.addr());
                assert!(text.contains(&line), "{line} not in {text}");
            }
            None => assert!(!text.contains(&redis.addr()), "{} in {text}", redis.addr()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalancing_onto_a_new_shard_under_load_keeps_every_key() {
    let c = cluster().await;
    let keys = keys_in(0, 4095, 10_000, "k");
    preload(&c.proxies[0], &keys);

    // Bad input is refused with a reason; the dry run tells the plan; none
    // of them changes anything.
    let before = zookeeper_data(&c).await;
    for (args, why) in [
        (
            vec!["--weight", "redis-0009=1"],
            "no shard named \"redis-0009\"",
        ),
        (vec!["--weight", "redis-0000=x"], "not a whole number"),
        (vec!["--weight", "redis-0000"], "expected SHARD=N"),
        (
            vec![
                "--weight",
                "redis-0000=0",
                "--weight",
                "redis-0001=0",
                "--weight",
                "redis-0002=0",
            ],
            "every weight is 0",
        ),
    ] {
        let args = [&["rebalance"][..], &args].concat();
        let (code, text) = run_admin(&c.conf, &args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(why), "{args:?}: {text}");
    }
    let (code, plan) = run_admin(&c.conf, &["rebalance", "--dry-run", "--rate", "5000"]);
    assert_eq!(code, 0, "{plan}");
    eprintln!("{plan}");
    // The estimates: the keys spread evenly over the slots (10,000 keys,
    // 683 and 1,366 of 4,096 slots).
    for (line, want) in [
        (
            "1. slots 1365-2047 from redis-0000 to redis-0001: about ",
            1667.0,
        ),
        (
            "2. slots 2730-4095 from redis-0001 to redis-0002: about ",
            3335.0,
        ),
    ] {
        let at = plan
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} not in {plan}"));
        let rest = &plan[at + line.len()..];
        let n: f64 = rest[..rest.find(' ').unwrap()].parse().unwrap();
        assert!(
            (n - want).abs() < want * 0.1,
            "{line}{n}: expected about {want}"
        );
    }
    for line in [
        "redis-0000 (1): 0-2047 -> 0-1364",
        "redis-0001 (1): 2048-4095 -> 1365-2729",
        "redis-0002 (1): (none) -> 2730-4095",
        "at 5000 keys/s",
        "nothing changed",
    ] {
        assert!(plan.contains(line), "{line:?} not in {plan}");
    }
    assert_eq!(
        zookeeper_data(&c).await,
        before,
        "changed by a refused or dry run"
    );

    // Writers and readers through both proxies, on keys of every range
    // that moves and of one that stays.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let ports = [c.proxies[0].port, c.proxies[1].port];
    let threads: Vec<_> = [(1365, 2047), (2730, 4095), (0, 1364)]
        .iter()
        .enumerate()
        .map(|(i, &(lo, hi))| {
            let hot = keys_in(lo, hi, 40, &format!("hot{i}"));
            load(
                hot,
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

    let started = Instant::now();
    let (code, text) = run_admin(&c.conf, &["rebalance"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{text}");
    eprintln!("{text}");
    assert!(text.contains("balanced after 2 moves"), "{text}");
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let finals: Vec<(String, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    tally.assert_clean(
        "rebalance 2 -> 3 shards (10,000 keys + 120 hot ones)",
        took,
        tally.writes.load(Ordering::Relaxed),
    );

    assert_layout(&c, &THIRDS);
    let mut all: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), k.clone())).collect();
    all.extend(finals.iter().map(|(k, v)| (k.clone(), v.to_string())));
    assert_placed(&c, &THIRDS, &all);
    // Read through the proxies too, once their tables have the new layout.
    for proxy in &c.proxies {
        common::zk_cluster::wait_for_view(proxy, "2730-4095");
        let mut client = RawClient::connect(proxy.port);
        for (key, value) in all.iter().step_by(11) {
            let want = format!("${}\r\n{value}\r\n", value.len());
            assert_eq!(client.cmd_str(&["GET", key]), want, "{key}");
        }
    }

    let (code, text) = run_admin(&c.conf, &["rebalance"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("already balanced"), "{text}");

    // Weight 0 drains the middle shard into both its neighbours.
    let (code, text) = run_admin(&c.conf, &["rebalance", "--weight", "redis-0001=0"]);
    assert_eq!(code, 0, "{text}");
    eprintln!("{text}");
    assert!(text.contains("balanced after 2 moves"), "{text}");
    let halves = [Some((0, 2047)), None, Some((2048, 4095))];
    assert_layout(&c, &halves);
    assert_placed(&c, &halves, &all);
    for proxy in &c.proxies {
        common::zk_cluster::wait_for_view(proxy, "2048-4095");
        let mut client = RawClient::connect(proxy.port);
        for (key, value) in all.iter().step_by(11) {
            let want = format!("${}\r\n{value}\r\n", value.len());
            assert_eq!(client.cmd_str(&["GET", key]), want, "{key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_rebalance_is_continued_by_running_it_again() {
    let c = cluster().await;
    let keys = keys_in(0, 4095, 10_000, "r");
    preload(&c.proxies[0], &keys);
    // Slow enough to be caught in a move (about 1,700 and 3,300 keys).
    let child = admin(&c.conf, &["rebalance", "--rate", "500"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut running = ProcessGuard::new("shardproxy-admin rebalance", child);
    // Killed once `status` shows a move with a rate and an ETA (the mover
    // writes its progress every second).
    wait_until("status to show an ETA", Duration::from_secs(20), || {
        let status = run_admin(&c.conf, &["status"]).1;
        status.contains("keys/s), ETA ") && !status.contains("ETA unknown")
    });
    running.signal("KILL");
    running.wait_exit(Duration::from_secs(5));
    let (_, status) = run_admin(&c.conf, &["status"]);
    eprintln!("{status}");
    let caught = [
        "slots 1365-2047 from redis-0000 to redis-0001, phase moving",
        "slots 2730-4095 from redis-0001 to redis-0002, phase moving",
    ];
    assert!(
        caught.iter().any(|m| status.contains(m)),
        "no move left half done: {status}"
    );
    assert!(status.contains("keys/s), ETA "), "{status}");
    let (_, json) = run_admin(&c.conf, &["status", "--json"]);
    for field in [
        "\"keys_moved\"",
        "\"keys_per_second\"",
        "\"eta_seconds\": ",
        "\"keys_estimated\": ",
    ] {
        assert!(json.contains(field), "{field} not in {json}");
    }

    let started = Instant::now();
    let (code, text) = run_admin(&c.conf, &["rebalance"]);
    assert_eq!(code, 0, "{text}");
    eprintln!("rerun in {:.1} s:\n{text}", started.elapsed().as_secs_f64());
    assert!(text.contains("continuing migration"), "{text}");
    assert!(text.contains("balanced after"), "{text}");
    assert_layout(&c, &THIRDS);
    let all: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), k.clone())).collect();
    assert_placed(&c, &THIRDS, &all);
}

/// A shard added with `add-shard` whose watchdogs were never started: the
/// dry run warns, and the rebalance refuses before it moves anything
/// (review: it made two moves, then failed on the third, and printed only
/// the failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_onto_a_shard_without_a_master_moves_nothing() {
    let c = cluster().await;
    let keys = keys_in(0, 4095, 300, "k");
    preload(&c.proxies[0], &keys);
    let before = zookeeper_data(&c).await;
    let (code, text) = run_admin(&c.conf, &["add-shard", "redis-0003"]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = run_admin(&c.conf, &["add-shard", "redis-0003"]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("add-shard: ") && text.contains("exists already"),
        "{text}"
    );
    let (code, plan) = run_admin(&c.conf, &["rebalance", "--dry-run"]);
    assert_eq!(code, 0, "{plan}");
    assert!(
        plan.contains("warning: redis-0003 has no master: start its watchdogs before rebalancing"),
        "{plan}"
    );
    let (code, text) = run_admin(&c.conf, &["rebalance"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("redis-0003 has no master: start its watchdogs first; nothing was moved"),
        "{text}"
    );
    let after = zookeeper_data(&c).await;
    let without_new: String = after
        .lines()
        .filter(|line| !line.starts_with("redis-0003 "))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(without_new, before, "no range moved");
    for proxy in &c.proxies {
        assert_preloaded(proxy.port, keys.iter().step_by(10));
    }
}
