//! `shardproxy-admin failover` and `promote` against a real ZooKeeper,
//! real redis-servers and real watchdogs: a failover hands the shard to the
//! replica with every write, one stopped before the master's watchdog took
//! it is called off, and a request whose answer was lost is answered; a
//! shard that held data is not taken by an empty Redis (nor after `init
//! --force`) until `promote --force`, which refuses another shard's Redis
//! under any name; with `zookeeper_auth`, anonymous clients cannot force a
//! failover. Members and proxies as in tests/common/admin.rs.

mod common;

use common::admin::{
    add_member, add_member_run, add_proxy, admin, init_two_shards, pool_file, servers, ROOT,
};
use common::redis::Redis;
use common::zookeeper::ZooKeeper;
use common::{temp_dir, wait_until, ProcessGuard};
use serde_json::Value;
use shardproxy::zk::layout::{MasterRecord, ShardData};
use shardproxy::zk::Role;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use zookeeper_client as zk;

/// A shard's data for slots `lo..=hi` whose last master, `addr`, held the
/// history `replid` up to offset 5 (with its run, if known).
fn with_history(lo: u32, hi: u32, addr: &str, replid: &str, run_id: &str) -> ShardData {
    let mut data = ShardData::new(lo, hi);
    data.master = Some(MasterRecord {
        addr: addr.to_string(),
        replid: replid.into(),
        offset: 5,
        run_id: run_id.into(),
        keys: None,
    });
    data
}

/// Starts a watchdog beside `redis`, checking it every 100 ms.
fn start_watchdog(zookeeper: &ZooKeeper, redis: &Redis, shard: &str) -> ProcessGuard {
    start_watchdog_logged(zookeeper, redis, shard).0
}

/// Likewise; also returns its log file.
fn start_watchdog_logged(
    zookeeper: &ZooKeeper,
    redis: &Redis,
    shard: &str,
) -> (ProcessGuard, PathBuf) {
    let log = temp_dir("watchdog").join("watchdog.log");
    let child = Command::new(env!("CARGO_BIN_EXE_shardproxy-watchdog"))
        .args(["--zk", &zookeeper.hosts(), "--redis", &redis.addr()])
        .args(["--shard", &format!("{ROOT}/{shard}")])
        .args(["--interval-ms", "100", "--down-after", "3", "-v", "debug"])
        .arg("-o")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shardproxy-watchdog");
    (
        ProcessGuard::new(format!("watchdog:{}", redis.port), child),
        log,
    )
}

/// `status --json` until `cond` holds for it; panics with the last one
/// after `secs` seconds.
async fn wait_for_status(conf: &Path, what: &str, secs: u64, cond: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let run = admin(conf, &["status", "--json"]).await;
        let json: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
        if cond(&json) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}; last status: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True when the shard's members are `line` (addresses in order), all
/// healthy.
fn shard_is(json: &Value, line: &[String]) -> bool {
    let members = json["shards"][0]["members"].as_array();
    let addrs: Vec<&str> = members
        .into_iter()
        .flatten()
        .filter_map(|m| m["addr"].as_str())
        .collect();
    // A shard of one member is degraded (a warning), nothing worse.
    let only_degraded = json["problems"].as_array().is_some_and(|problems| {
        problems.iter().all(|p| {
            p["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("degraded"))
        })
    });
    only_degraded && addrs == line.iter().map(String::as_str).collect::<Vec<_>>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_hands_the_shard_to_the_replica_with_every_write() {
    let zookeeper = ZooKeeper::start();
    let first = Redis::start();
    let second = Redis::start();
    let conf = pool_file(&zookeeper, &servers(&[(&first.addr(), "0-4095")]));
    assert_eq!(admin(&conf, &["init"]).await.code, 0);
    let session = zookeeper.client().await;
    add_proxy(&session).await;

    let _first_watchdog = start_watchdog(&zookeeper, &first, "redis-0000");
    let line = [first.addr()];
    wait_for_status(&conf, "the first Redis as master", 20, |s| {
        shard_is(s, &line)
    })
    .await;
    let second_watchdog = start_watchdog(&zookeeper, &second, "redis-0000");
    let line = [first.addr(), second.addr()];
    wait_for_status(&conf, "the second Redis in line", 30, |s| {
        shard_is(s, &line)
    })
    .await;
    for i in 0..100 {
        let key = format!("key{i}");
        first.connect().cmd_str(&["SET", &key, "value"]);
    }

    let run = admin(&conf, &["failover", "redis-0000"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with(&format!(
            "redis-0000: master {} handed over to {} at offset ",
            first.addr(),
            second.addr()
        )),
        "{run:?}"
    );
    assert_eq!(second.connect().cmd_str(&["DBSIZE"]), ":100\r\n");
    // The old master rejoins behind the new one, as its replica.
    let line = [second.addr(), first.addr()];
    wait_for_status(&conf, "the old master back as replica", 30, |s| {
        shard_is(s, &line) && s["shards"][0]["members"][1]["redis"]["role"] == "replica"
    })
    .await;

    // A failover stopped (SIGTERM) while the master's watchdog has not
    // taken its request is called off: the request is gone, so nothing
    // happens once that watchdog runs again (review: it was carried out
    // then, after the operator was told nothing changed).
    second_watchdog.signal("STOP");
    let child = Command::new(env!("CARGO_BIN_EXE_shardproxy-admin"))
        .arg("-c")
        .arg(&conf)
        .args(["failover", "redis-0000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stopped = ProcessGuard::new("shardproxy-admin failover", child);
    let control = "/redis/control/test/redis-0000";
    for _ in 0..200 {
        if session.check_stat(control).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        session.check_stat(control).await.unwrap().is_some(),
        "no request placed"
    );
    stopped.signal("TERM");
    // Read to its end: until the run exits.
    let mut said = String::new();
    let stderr = stopped.child.as_mut().and_then(|c| c.stderr.take());
    std::io::Read::read_to_string(&mut stderr.unwrap(), &mut said).unwrap();
    let code = stopped.wait_exit(Duration::from_secs(10));
    second_watchdog.signal("CONT");
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(&format!(
            "the switchover of shard {ROOT}/redis-0000 was called off before the watchdog of {} \
             took it: nothing changed",
            second.addr()
        )),
        "{said}"
    );
    assert!(session.check_stat(control).await.unwrap().is_none());

    // A request the master's watchdog took but whose answer was lost (a
    // ZooKeeper outage) is answered when it is seen again, and holds no
    // later failover off (review: `Busy` for ever).
    let shard_path = format!("{ROOT}/redis-0000");
    let members = session.list_children(&shard_path).await.unwrap();
    let head = members
        .iter()
        .filter(|m| m.starts_with(&second.addr()))
        .min()
        .unwrap();
    let taken = format!(r#"{{"state":"started","master":"{head}","max_pause_ms":1000}}"#);
    let mode = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    session
        .create(control, taken.as_bytes(), &mode)
        .await
        .unwrap();
    let mut answered = false;
    for _ in 0..400 {
        let (data, _) = session.get_data(control).await.unwrap();
        if String::from_utf8_lossy(&data).contains(r#""state":"aborted""#) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(answered, "the lost request was never answered");
    let run = admin(&conf, &["failover", "redis-0000"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with(&format!(
            "redis-0000: master {} handed over to {} at offset ",
            second.addr(),
            first.addr()
        )),
        "{run:?}"
    );

    let missing = admin(&conf, &["failover", "redis-0009"]).await;
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        missing
            .stderr
            .contains(&format!("{ROOT}/redis-0009 does not exist")),
        "{missing:?}"
    );
}

/// With `zookeeper_auth`, `init` and the watchdogs create znodes writable
/// only by that identity: an anonymous client can read the layout but can
/// neither delete a member (forcing a failover) nor rewrite a shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_zookeeper_auth_anonymous_clients_cannot_force_a_failover() {
    let zookeeper = ZooKeeper::start();
    let redis = Redis::start();
    let conf = pool_file(&zookeeper, &servers(&[(&redis.addr(), "0-4095")]));
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        "  redis: true\n",
        "  redis: true\n  zookeeper_auth: ops:s3cret\n",
    );
    std::fs::write(&conf, text).unwrap();
    assert_eq!(admin(&conf, &["init"]).await.code, 0);
    let log = temp_dir("watchdog").join("watchdog.log");
    let child = Command::new(env!("CARGO_BIN_EXE_shardproxy-watchdog"))
        .args(["--zk", &zookeeper.hosts(), "--zk-auth", "ops:s3cret"])
        .args([
            "--redis",
            &redis.addr(),
            "--shard",
            &format!("{ROOT}/redis-0000"),
        ])
        .args(["--interval-ms", "100", "-o"])
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _watchdog = ProcessGuard::new("watchdog", child);
    let anonymous = zookeeper.client().await;
    let shard = format!("{ROOT}/redis-0000");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let member = loop {
        if let Some(name) = anonymous.list_children(&shard).await.unwrap().pop() {
            break format!("{shard}/{name}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watchdog never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Reading works for anyone (proxies without the identity could route).
    assert!(anonymous.get_data(&member).await.is_ok());
    assert_eq!(
        anonymous.delete(&member, None).await,
        Err(zk::Error::NoAuth)
    );
    assert_eq!(
        anonymous
            .set_data(&shard, b"{\"weight\":\"0-1\"}", None)
            .await
            .map(|_| ()),
        Err(zk::Error::NoAuth)
    );
    let stray = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    assert_eq!(
        anonymous
            .create(&format!("{shard}/lock"), b"", &stray)
            .await
            .map(|_| ()),
        Err(zk::Error::NoAuth)
    );
    // The identity's own tools work: status reads the member.
    let run = admin(&conf, &["status", "--json"]).await;
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["shards"][0]["master"], redis.addr(), "{run:?}");
    let authed = zk::Client::connector()
        .with_auth("digest", b"ops:s3cret")
        .connect(&zookeeper.hosts())
        .await
        .unwrap();
    assert_eq!(authed.delete(&member, None).await, Ok(()));
}

/// A shard whose only member, with data, loses its watchdog: a watchdog
/// beside a new, empty Redis in the same shard does not take it over (the
/// shard remembers its data's history), and `status` says so; the old
/// master's watchdog, back, leads it again with its data. When no Redis
/// with the history is left, `promote --force` is the operator's decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_redis_cannot_take_a_shard_that_held_data() {
    let zookeeper = ZooKeeper::start();
    let (mut a, c, d) = (Redis::start(), Redis::start(), Redis::start());
    let conf = pool_file(&zookeeper, &servers(&[(&a.addr(), "0-4095")]));
    assert_eq!(admin(&conf, &["init"]).await.code, 0);
    for i in 0..100 {
        a.connect().cmd_str(&["SET", &format!("k{i}"), "v"]);
    }
    let ops = zookeeper.client().await;
    add_proxy(&ops).await;
    let shard = format!("{ROOT}/redis-0000");
    let mut wa = start_watchdog(&zookeeper, &a, "redis-0000");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&ops.get_data(&shard).await.unwrap().0).contains("replid") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the history was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `init --force` with another range, then back, keeps the record
    // (review: it dropped it, and the empty c below then led the shard).
    let other = pool_file(&zookeeper, &servers(&[(&a.addr(), "0-8191")]));
    for (file, range) in [(&other, "0-8191"), (&conf, "0-4095")] {
        assert_eq!(admin(file, &["init", "--force"]).await.code, 0);
        let data = ops.get_data(&shard).await.unwrap().0;
        let data = String::from_utf8_lossy(&data);
        assert!(
            data.contains(range) && data.contains(&a.addr()) && data.contains("replid"),
            "{data}"
        );
    }
    // The watchdog dies; its session expires and the shard is empty.
    wa.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ops.list_children(&shard).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a's member never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut wc, c_log) = start_watchdog_logged(&zookeeper, &c, "redis-0000");
    wait_until(
        "c's watchdog to refuse the shard",
        Duration::from_secs(20),
        || std::fs::read_to_string(&c_log).is_ok_and(|t| t.contains("not leading it")),
    );
    assert!(
        ops.list_children(&shard).await.unwrap().is_empty(),
        "c took the shard"
    );
    let run = admin(&conf, &["status"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.contains("no eligible master"), "{run:?}");
    assert!(run.stdout.contains(&a.addr()), "{run:?}");
    let run = admin(&conf, &["promote", "redis-0000", &c.addr()]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout.contains("is lost if it becomes master"),
        "{run:?}"
    );
    assert!(run.stdout.contains("add --force"), "{run:?}");

    // a's watchdog is back: a leads with its data, c joins as its replica.
    let wa2 = start_watchdog(&zookeeper, &a, "redis-0000");
    let line = [a.addr(), c.addr()];
    wait_for_status(&conf, "a leading, c its replica", 30, |s| {
        shard_is(s, &line)
    })
    .await;
    assert_eq!(
        a.connect().cmd_str(&["DBSIZE"]),
        ":100\r\n",
        "a kept its data"
    );

    // No Redis with the history left: d, empty, waits until forced.
    drop(wa2);
    wc.kill();
    a.guard.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ops.list_children(&shard).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the members never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_wd, d_log) = start_watchdog_logged(&zookeeper, &d, "redis-0000");
    wait_until(
        "d's watchdog to refuse the shard",
        Duration::from_secs(20),
        || std::fs::read_to_string(&d_log).is_ok_and(|t| t.contains("not leading it")),
    );
    let run = admin(&conf, &["promote", "redis-0000", &d.addr(), "--force"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("recorded"), "{run:?}");
    wait_for_status(&conf, "d leading", 20, |s| {
        s["shards"][0]["master"] == d.addr()
    })
    .await;
}

/// `promote --force` of a Redis another shard holds (in its line, or as
/// its recorded master) is refused and changes nothing (review: it was
/// recorded, and a proxy started afterwards routed both shards to that
/// Redis, this shard's keys written among the other's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_another_shards_redis() {
    let zookeeper = ZooKeeper::start();
    let (a, b, c) = (Redis::start(), Redis::start(), Redis::start());
    let conf = init_two_shards(&zookeeper, &a, &b).await;
    let ops = zookeeper.client().await;
    // redis-0000 held data on a, now gone: no members, a history.
    let record = |addr: &str| {
        let data = with_history(0, 2047, addr, "r1", "");
        data.to_json()
    };
    let shard0 = format!("{ROOT}/redis-0000");
    ops.set_data(&shard0, &record(&a.addr()), None)
        .await
        .unwrap();
    add_member(&ops, "redis-0001", &b.addr(), Role::Master).await;
    add_member(&ops, "redis-0001", &c.addr(), Role::Replica).await;
    for (candidate, why) in [
        (b.addr(), "is in shard redis-0001's line"),
        (c.addr(), "is in shard redis-0001's line"),
    ] {
        let run = admin(&conf, &["promote", "redis-0000", &candidate, "--force"]).await;
        assert_ne!(run.code, 0, "{run:?}");
        assert!(
            run.stderr.contains(&format!("{candidate} {why}")),
            "{run:?}"
        );
    }
    // redis-0001 without members, its master recorded: still its.
    let shard1 = format!("{ROOT}/redis-0001");
    let data = with_history(2048, 4095, &b.addr(), "r2", "");
    ops.set_data(&shard1, &data.to_json(), None).await.unwrap();
    for member in ops.list_children(&shard1).await.unwrap() {
        ops.delete(&format!("{shard1}/{member}"), None)
            .await
            .unwrap();
    }
    let run = admin(&conf, &["promote", "redis-0000", &b.addr(), "--force"]).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "{} is shard redis-0001's recorded master",
            b.addr()
        )),
        "{run:?}"
    );
    let kept = ops.get_data(&shard0).await.unwrap().0;
    assert_eq!(kept, record(&a.addr()), "the record changed");
    // A Redis of no shard is the operator's to choose.
    let run = admin(&conf, &["promote", "redis-0000", &c.addr(), "--force"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = admin(&conf, &["status"]).await;
    assert!(
        run.stdout.contains(&format!(
            "the data was last on {}, chosen by promote",
            c.addr()
        )),
        "{run:?}"
    );
}

/// The same Redis under another name (`localhost:P` for `127.0.0.1:P`):
/// `promote --force` knows it by its run and refuses it too, in another
/// shard's line or as that shard's recorded master (review: the alias was
/// recorded, and every proxy at once wrote this shard's keys to the other
/// shard's master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_another_shards_redis_under_another_name() {
    let zookeeper = ZooKeeper::start();
    let (a, b) = (Redis::start(), Redis::start());
    let conf = init_two_shards(&zookeeper, &a, &b).await;
    let ops = zookeeper.client().await;
    // redis-0000 held data on a, now gone: no members, a history.
    let shard0 = format!("{ROOT}/redis-0000");
    let data = with_history(0, 2047, &a.addr(), "r1", "");
    ops.set_data(&shard0, &data.to_json(), None).await.unwrap();
    let info = b.connect().cmd_str(&["INFO", "server"]);
    let run = info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .expect("run_id in INFO server")
        .to_string();
    add_member_run(&ops, "redis-0001", &b.addr(), &run, Role::Master).await;
    let alias = format!("localhost:{}", b.port);
    let promote = ["promote", "redis-0000", &alias, "--force"];
    let refused = admin(&conf, &promote).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "{alias} is in shard redis-0001's line as {} (the same Redis: run {run})",
            b.addr()
        )),
        "{refused:?}"
    );
    // redis-0001 without members, b recorded as its master by its
    // watchdog (with b's run): still its.
    let shard1 = format!("{ROOT}/redis-0001");
    for member in ops.list_children(&shard1).await.unwrap() {
        ops.delete(&format!("{shard1}/{member}"), None)
            .await
            .unwrap();
    }
    let data1 = with_history(2048, 4095, &b.addr(), "r2", &run);
    ops.set_data(&shard1, &data1.to_json(), None).await.unwrap();
    let refused = admin(&conf, &promote).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "{alias} is shard redis-0001's recorded master ({}, run {run})",
            b.addr()
        )),
        "{refused:?}"
    );
    let kept = ops.get_data(&shard0).await.unwrap().0;
    assert_eq!(kept, data.to_json(), "the record changed");
}

/// `promote --force` decides on the shard's data as it read it, and its
/// write is conditional on that version: data rewritten meanwhile (a
/// watchdog joining, another operator) fails it with a clear word and
/// nothing recorded, never over the newer data, and never as a bare
/// ZooKeeper error (before: "ZooKeeper: BadVersion").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_over_data_rewritten_meanwhile_records_nothing() {
    let zookeeper = ZooKeeper::start();
    let (a, b, c) = (Redis::start(), Redis::start(), Redis::start());
    let conf = init_two_shards(&zookeeper, &a, &b).await;
    let ops = zookeeper.client().await;
    // redis-0000 held data on a, now gone: no members, a history c lacks.
    let shard0 = format!("{ROOT}/redis-0000");
    let data = with_history(0, 2047, &a.addr(), "r1", "");
    let history = data.to_json();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rewriter = {
        let (ops, path, stop, history) =
            (ops.clone(), shard0.clone(), stop.clone(), history.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // The history again, over whatever a promote recorded.
                ops.set_data(&path, &history, None).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let promote = ["promote", "redis-0000", &c.addr(), "--force"];
    let (mut recorded, mut changed) = (0, 0);
    for _ in 0..40 {
        let run = admin(&conf, &promote).await;
        if run.code == 0 && run.stdout.contains(&format!("recorded {}", c.addr())) {
            recorded += 1;
        } else {
            assert_eq!(run.code, 2, "{run:?}");
            assert!(
                run.stderr.contains(
                    "redis-0000: its data changed while promoting (a watchdog or another \
                     operator wrote it); nothing recorded: run promote again"
                ),
                "{run:?}"
            );
            changed += 1;
        }
        if changed >= 3 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rewriter.await.unwrap();
    assert!(changed >= 1, "no run met a rewrite ({recorded} recorded)");
    // Left alone, the same promote records c.
    let run = admin(&conf, &promote).await;
    assert_eq!(run.code, 0, "{run:?}");
    let now = ShardData::parse(&ops.get_data(&shard0).await.unwrap().0).unwrap();
    assert_eq!(now.master.map(|m| m.addr), Some(c.addr()));
}

/// A master's host dies (its Redis and watchdog killed) and its replica's
/// watchdog restarts meanwhile: it cannot tell how long the link was down,
/// counts its Redis behind, and refuses the empty shard, naming `promote
/// --force`. The replica holds the history as far as recorded, and the
/// force used to be ignored for that ("its watchdog leads the shard
/// without --force", exit 0, nothing recorded), leaving the shard without
/// a master (review). Forced, it is recorded, and leads with every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_force_takes_a_replica_its_watchdog_counts_behind() {
    let zookeeper = ZooKeeper::start();
    let (mut a, b) = (Redis::start(), Redis::start());
    let conf = pool_file(&zookeeper, &servers(&[(&a.addr(), "0-4095")]));
    assert_eq!(admin(&conf, &["init"]).await.code, 0);
    let ops = zookeeper.client().await;
    add_proxy(&ops).await;
    let mut wa = start_watchdog(&zookeeper, &a, "redis-0000");
    wait_for_status(&conf, "a leading", 30, |s| {
        s["shards"][0]["master"] == a.addr()
    })
    .await;
    let mut wb = start_watchdog(&zookeeper, &b, "redis-0000");
    let line = [a.addr(), b.addr()];
    wait_for_status(&conf, "a leading, b its replica", 30, |s| {
        shard_is(s, &line)
    })
    .await;
    for i in 0..100 {
        a.connect().cmd_str(&["SET", &format!("k{i}"), "v"]);
    }
    wait_until("b to hold every key", Duration::from_secs(10), || {
        b.connect().cmd_str(&["DBSIZE"]) == ":100\r\n"
    });
    let shard = format!("{ROOT}/redis-0000");
    // Recorded as far as the 100 keys: b then holds the history as far
    // as recorded.
    let offset = a.connect().info_number("replication", "master_repl_offset");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let data = ops.get_data(&shard).await.unwrap().0;
        let record = ShardData::parse(&data).and_then(|d| d.master);
        if record.is_some_and(|m| Some(m.offset) >= offset && m.addr == a.addr()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the history was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The host of a dies; b's watchdog restarts (a config rerun).
    wa.kill();
    a.guard.kill();
    wb.kill();
    let (_wb, b_log) = start_watchdog_logged(&zookeeper, &b, "redis-0000");
    wait_until(
        "b's watchdog to refuse the shard",
        Duration::from_secs(30),
        || std::fs::read_to_string(&b_log).is_ok_and(|t| t.contains("not leading it")),
    );
    let asked = admin(&conf, &["promote", "redis-0000", &b.addr()]).await;
    assert_eq!(asked.code, 0, "{asked:?}");
    assert!(
        asked.stdout.contains("unless it counts its Redis behind"),
        "{asked:?}"
    );
    let forced = admin(&conf, &["promote", "redis-0000", &b.addr(), "--force"]).await;
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(
        forced
            .stdout
            .contains(&format!("recorded {} as the shard's master", b.addr())),
        "{forced:?}"
    );
    wait_for_status(&conf, "b leading", 30, |s| {
        s["shards"][0]["master"] == b.addr()
    })
    .await;
    assert_eq!(b.connect().cmd_str(&["DBSIZE"]), ":100\r\n");
}
