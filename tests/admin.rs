//! `shardproxy-admin` against a real ZooKeeper and real redis-servers: the
//! binary is run as ops would run it, and ZooKeeper is checked directly.
//!
//! Proxies and members are registered the way the proxy and the watchdog
//! do (an EPHEMERAL proxy znode with ProxyData, EPHEMERAL_SEQUENTIAL
//! `<ip:port>-` members with MemberData), held by the test's own session.

mod common;

use common::redis::Redis;
use common::zookeeper::ZooKeeper;
use common::{temp_dir, wait_until, ProcessGuard};
use serde_json::Value;
use shardproxy::zk::layout::{member_prefix, MasterRecord, ShardData};
use shardproxy::zk::{MemberData, ProxyData, Role};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use zookeeper_client as zk;

const ROOT: &str = "/redis/cluster/test";
const PROXIES: &str = "/redis/proxy/test";
const PROXY: &str = "127.0.0.1:22121";

/// What a run of the binary printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `shardproxy-admin -c conf args...` off the runtime's threads, so
/// the test's ZooKeeper session keeps its heartbeats while it runs.
async fn admin(conf: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardproxy-admin"));
    command.arg("-c").arg(conf).args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run shardproxy-admin");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes a pool file for this ZooKeeper with `servers` (range form).
fn pool_file(zookeeper: &ZooKeeper, servers: &[String]) -> PathBuf {
    let list: String = servers.iter().map(|s| format!("   - {s}\n")).collect();
    let yaml = format!(
        "alpha:\n  listen: {PROXY}\n  hash: md5\n  distribution: modula\n  redis: true\n  \
         zookeeper_host: {}\n  zookeeper_path: {PROXIES}/{PROXY}\n  \
         zookeeper_redis_path: {ROOT}\n  servers:\n{list}",
        zookeeper.hosts()
    );
    let path = temp_dir("admin").join("pool.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn servers(ranges: &[(&str, &str)]) -> Vec<String> {
    ranges.iter().map(|(a, r)| format!("{a}:{r}")).collect()
}

/// The shards under the root, each with its data as text.
async fn shards(ops: &zk::Client) -> Vec<(String, String)> {
    let mut names = ops.list_children(ROOT).await.unwrap();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let (data, _) = ops.get_data(&format!("{ROOT}/{name}")).await.unwrap();
        out.push((name, String::from_utf8(data).unwrap()));
    }
    out
}

fn weights(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, r)| (n.to_string(), format!(r#"{{"weight":"{r}"}}"#)))
        .collect()
}

/// Registers `addr` in `shard` as its watchdog would.
async fn add_member(session: &zk::Client, shard: &str, addr: &str, role: Role) {
    add_member_run(session, shard, addr, "test", role).await;
}

/// Likewise, with the `run_id` its watchdog read from the Redis.
async fn add_member_run(session: &zk::Client, shard: &str, addr: &str, run_id: &str, role: Role) {
    let data = MemberData {
        addr: addr.into(),
        role,
        run_id: run_id.into(),
        offset: 0,
    };
    let prefix = member_prefix(&format!("{ROOT}/{shard}"), addr);
    let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
    session
        .create(&prefix, &serde_json::to_vec(&data).unwrap(), &options)
        .await
        .unwrap();
}

/// Registers a proxy znode as a running proxy would.
async fn add_proxy(session: &zk::Client) {
    let data = ProxyData {
        listen: PROXY.into(),
        pool: "alpha".into(),
        version: "9.8.7".into(),
        pid: 4242,
        started: 1_700_000_000,
        stats: "127.0.0.1:22222".into(),
        metrics: None,
        host: String::new(),
    };
    let options = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    session
        .create(&format!("{PROXIES}/{PROXY}"), &data.to_json(), &options)
        .await
        .unwrap();
}

/// A field of a Redis's INFO replication.
fn info_field(redis: &Redis, field: &str) -> Option<String> {
    let info = redis.connect().cmd_str(&["INFO", "replication"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_creates_the_layout_and_a_second_init_changes_nothing() {
    let zookeeper = ZooKeeper::start();
    let conf = pool_file(
        &zookeeper,
        &servers(&[
            ("127.0.0.1:7002", "2048-4095"),
            ("127.0.0.1:7001", "0-2047"),
        ]),
    );
    let first = admin(&conf, &["init"]).await;
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(
        first.stdout,
        format!(
            "created {PROXIES}\ncreated {ROOT}\n\
             created redis-0000 with range 0-2047\n\
             created redis-0001 with range 2048-4095\n\
             {ROOT} now matches pool 'alpha' (2 shards)\n"
        )
    );
    let ops = zookeeper.client().await;
    assert_eq!(
        shards(&ops).await,
        weights(&[("redis-0000", "0-2047"), ("redis-0001", "2048-4095")])
    );
    assert!(ops.check_stat(PROXIES).await.unwrap().is_some());
    let (_, before) = ops.get_children(ROOT).await.unwrap();

    let second = admin(&conf, &["init"]).await;
    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(
        second.stdout,
        format!("nothing to do: {ROOT} already matches pool 'alpha' (2 shards)\n")
    );
    let (_, after) = ops.get_children(ROOT).await.unwrap();
    assert_eq!(after.pzxid, before.pzxid, "children changed");
    for name in ["redis-0000", "redis-0001"] {
        let (_, stat) = ops.get_data(&format!("{ROOT}/{name}")).await.unwrap();
        assert_eq!(stat.version, 0, "{name} was written again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_refuses_a_conflicting_file_with_a_diff_and_force_applies_it() {
    let zookeeper = ZooKeeper::start();
    let two = servers(&[
        ("127.0.0.1:7001", "0-2047"),
        ("127.0.0.1:7002", "2048-4095"),
    ]);
    let three = servers(&[
        ("127.0.0.1:7001", "0-1023"),
        ("127.0.0.1:7002", "1024-3071"),
        ("127.0.0.1:7003", "3072-4095"),
    ]);
    let conf_two = pool_file(&zookeeper, &two);
    let conf_three = pool_file(&zookeeper, &three);
    assert_eq!(admin(&conf_two, &["init"]).await.code, 0);

    let refused = admin(&conf_three, &["init"]).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert_eq!(
        refused.stderr,
        format!(
            "shardproxy-admin: {ROOT} differs from pool 'alpha':\n\
             \x20 redis-0000: 0-2047 in ZooKeeper, 0-1023 in the file\n\
             \x20 redis-0001: 2048-4095 in ZooKeeper, 1024-3071 in the file\n\
             \x20 redis-0002: missing in ZooKeeper, 3072-4095 in the file\n\
             nothing was changed. On a cluster that serves data, `shardproxy-admin migrate \
             LO-HI --to SHARD` (or `rebalance`) moves ranges with their keys; `init --force` \
             makes ZooKeeper match the file at once, and the keys of slots that change shard \
             are no longer found\n"
        )
    );
    let ops = zookeeper.client().await;
    let unchanged = weights(&[("redis-0000", "0-2047"), ("redis-0001", "2048-4095")]);
    assert_eq!(shards(&ops).await, unchanged);

    let forced = admin(&conf_three, &["init", "--force"]).await;
    assert_eq!(forced.code, 0, "{forced:?}");
    assert_eq!(
        forced.stdout,
        format!(
            "changed redis-0000 from 0-2047 to 0-1023\n\
             changed redis-0001 from 2048-4095 to 1024-3071\n\
             created redis-0002 with range 3072-4095\n\
             {ROOT} now matches pool 'alpha' (3 shards)\n"
        )
    );
    let applied = weights(&[
        ("redis-0000", "0-1023"),
        ("redis-0001", "1024-3071"),
        ("redis-0002", "3072-4095"),
    ]);
    assert_eq!(shards(&ops).await, applied);

    // Going back to two shards would delete redis-0002: refused while a
    // Redis serves it, and then the whole change is left undone.
    add_member(&ops, "redis-0002", "127.0.0.1:7003", Role::Master).await;
    let in_use = admin(&conf_two, &["init", "--force"]).await;
    assert_eq!(in_use.code, 2, "{in_use:?}");
    assert!(
        in_use.stderr.contains(&format!(
            "{ROOT}/redis-0002 is not in the file but still has members (1 live Redis)"
        )),
        "{in_use:?}"
    );
    assert_eq!(shards(&ops).await, applied);

    // The watchdog stops: its session closes and the member goes.
    drop(ops);
    let ops = zookeeper.client().await;
    let members = format!("{ROOT}/redis-0002");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ops.list_children(&members).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "member still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = admin(&conf_two, &["init", "--force"]).await;
    assert_eq!(back.code, 0, "{back:?}");
    assert!(
        back.stdout.contains("deleted redis-0002 (3072-4095)"),
        "{back:?}"
    );
    assert_eq!(shards(&ops).await, unchanged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_proxies_shards_and_replication_from_redis() {
    let zookeeper = ZooKeeper::start();
    // No replication PINGs during the test: each moves the master's
    // offset, which the test compares exactly.
    let master = Redis::start_with(&["--repl-ping-replica-period", "3600"]);
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let single = Redis::start();
    let single_replica = Redis::start_with(&["--replicaof", "127.0.0.1", &single.port.to_string()]);
    for i in 0..20 {
        let key = format!("key{i}");
        master.connect().cmd_str(&["SET", &key, "value"]);
    }
    wait_until("the replicas to catch up", Duration::from_secs(20), || {
        info_field(&replica, "master_link_status").as_deref() == Some("up")
            && info_field(&replica, "slave_repl_offset")
                == info_field(&master, "master_repl_offset")
            && info_field(&single_replica, "master_link_status").as_deref() == Some("up")
    });
    let offset: u64 = info_field(&master, "master_repl_offset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(offset > 0);

    let conf = pool_file(
        &zookeeper,
        &servers(&[(&master.addr(), "0-2047"), (&single.addr(), "2048-4095")]),
    );
    assert_eq!(admin(&conf, &["init"]).await.code, 0);
    let session = zookeeper.client().await;
    add_proxy(&session).await;
    add_member(&session, "redis-0000", &master.addr(), Role::Master).await;
    add_member(&session, "redis-0000", &replica.addr(), Role::Replica).await;
    add_member(&session, "redis-0001", &single.addr(), Role::Master).await;
    add_member(
        &session,
        "redis-0001",
        &single_replica.addr(),
        Role::Replica,
    )
    .await;

    let text = admin(&conf, &["status"]).await;
    assert_eq!(text.code, 0, "{text:?}");
    for expected in [
        PROXY,
        "9.8.7",
        "4242",
        "0-2047",
        "2048-4095",
        &master.addr(),
        &replica.addr(),
        &single.addr(),
        "slots 0-4095",
        "status: ok",
    ] {
        assert!(
            text.stdout.contains(expected),
            "no {expected:?} in {text:?}"
        );
    }

    let run = admin(&conf, &["status", "--json"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let json: Value = serde_json::from_str(&run.stdout).expect("status --json is JSON");
    assert_eq!(json["health"], "ok");
    assert_eq!(json["problems"], serde_json::json!([]));
    assert_eq!(json["slots"], 4096);
    assert_eq!(json["proxies"][0]["address"], PROXY);
    assert_eq!(json["proxies"][0]["version"], "9.8.7");
    assert_eq!(json["proxies"][0]["pid"], 4242);
    assert!(json["proxies"][0]["uptime_secs"].as_u64().unwrap() > 0);
    let shard = &json["shards"][0];
    assert_eq!(shard["name"], "redis-0000");
    assert_eq!(shard["range"], "0-2047");
    assert_eq!(shard["file_range"], "0-2047");
    assert_eq!(shard["master"], master.addr());
    assert_eq!(shard["replicas"], serde_json::json!([replica.addr()]));
    let (first, second) = (&shard["members"][0], &shard["members"][1]);
    assert_eq!(first["line"], "master");
    assert_eq!(first["redis"]["role"], "master");
    assert_eq!(first["redis"]["offset"], offset);
    assert_eq!(second["line"], "replica");
    assert_eq!(second["redis"]["role"], "replica");
    assert_eq!(second["redis"]["master"], master.addr());
    assert_eq!(second["redis"]["link_up"], true);
    assert_eq!(second["redis"]["offset"], offset);
    assert_eq!(second["lag"], 0);
    assert_eq!(json["shards"][1]["master"], single.addr());
    assert_eq!(shard["degraded"], false);

    // A replica that dies is a warning: exit 1, and the table says why;
    // its shard, with no other replica, is degraded.
    let mut replica = replica;
    replica.guard.kill();
    let degraded = admin(&conf, &["status"]).await;
    assert_eq!(degraded.code, 1, "{degraded:?}");
    assert!(
        degraded.stdout.contains(&format!(
            "warning: redis-0000 replica {}: unreachable",
            replica.addr()
        )),
        "{degraded:?}"
    );
    assert!(
        degraded
            .stdout
            .contains("warning: redis-0000: degraded: no replica in sync"),
        "{degraded:?}"
    );
    let run = admin(&conf, &["status", "--json"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["health"], "warning");
    assert_eq!(json["shards"][0]["degraded"], true);
    assert_eq!(json["shards"][1]["degraded"], false);
}

/// A shard whose only member is its master: `status` exits 1 and flags it
/// degraded (one failure from losing the shard), distinct from a shard
/// without a master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_flags_a_shard_without_a_replica_degraded() {
    let zookeeper = ZooKeeper::start();
    let (a, b) = (Redis::start(), Redis::start());
    let b_replica = Redis::start_with(&["--replicaof", "127.0.0.1", &b.port.to_string()]);
    wait_until("the replica to sync", Duration::from_secs(20), || {
        info_field(&b_replica, "master_link_status").as_deref() == Some("up")
    });
    let conf = pool_file(
        &zookeeper,
        &servers(&[(&a.addr(), "0-2047"), (&b.addr(), "2048-4095")]),
    );
    assert_eq!(admin(&conf, &["init"]).await.code, 0);
    let session = zookeeper.client().await;
    add_proxy(&session).await;
    add_member(&session, "redis-0000", &a.addr(), Role::Master).await;
    add_member(&session, "redis-0001", &b.addr(), Role::Master).await;
    add_member(&session, "redis-0001", &b_replica.addr(), Role::Replica).await;
    let run = admin(&conf, &["status"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("warning: redis-0000: degraded: no live replica"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("redis-0001: degraded"), "{run:?}");
    let run = admin(&conf, &["status", "--json"]).await;
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["shards"][0]["degraded"], true);
    assert_eq!(
        json["shards"][0]["flags"],
        serde_json::json!(["degraded: no live replica"])
    );
    assert_eq!(json["shards"][1]["degraded"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fails_for_a_shard_without_members_and_without_proxies() {
    let zookeeper = ZooKeeper::start();
    let redis = Redis::start();
    let conf = pool_file(
        &zookeeper,
        &servers(&[(&redis.addr(), "0-2047"), ("127.0.0.1:7002", "2048-4095")]),
    );
    assert_eq!(admin(&conf, &["init"]).await.code, 0);
    let session = zookeeper.client().await;
    add_member(&session, "redis-0000", &redis.addr(), Role::Master).await;

    let run = admin(&conf, &["status"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout.contains("error: redis-0001: no members"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains(&format!("error: {PROXIES}: no proxies registered")),
        "{run:?}"
    );

    add_proxy(&session).await;
    let run = admin(&conf, &["status", "--json"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["health"], "error");
    assert_eq!(
        json["problems"],
        serde_json::json!([
            {"level": "warning", "subject": "redis-0000", "text": "degraded: no live replica"},
            {"level": "error", "subject": "redis-0001", "text": "no members"}
        ])
    );
    assert_eq!(
        json["shards"][1]["flags"],
        serde_json::json!(["no members"])
    );
    assert_eq!(json["shards"][1]["master"], Value::Null);
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

#[tokio::test]
async fn unreachable_zookeeper_is_a_clear_error() {
    let port = common::free_port();
    let path = temp_dir("admin").join("pool.yml");
    let yaml = format!(
        "alpha:\n  listen: {PROXY}\n  redis: true\n  zookeeper_host: 127.0.0.1:{port}\n  \
         zookeeper_redis_path: {ROOT}\n  servers:\n   - 127.0.0.1:7001:0-9\n"
    );
    std::fs::write(&path, yaml).unwrap();
    let run = admin(&path, &["status"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "shardproxy-admin: ZooKeeper 127.0.0.1:{port}: cannot connect"
        )),
        "{run:?}"
    );
}

/// Runs deploy/keepalived/check_shardproxy.sh with `args`; its exit code.
fn keepalived_check(args: &[&str]) -> i32 {
    // Next to this file, whichever crate root the test runs from.
    let script = Path::new(file!())
        .parent()
        .unwrap()
        .join("../deploy/keepalived/check_shardproxy.sh");
    Command::new("bash")
        .arg(script)
        .args(args)
        .status()
        .expect("run check_shardproxy.sh")
        .code()
        .unwrap_or(-1)
}

#[test]
fn keepalived_check_passes_only_when_the_proxy_answers_pong() {
    let redis = Redis::start();
    let body = format!("  redis: true\n  servers:\n   - {}:1\n", redis.addr());
    let proxy = common::proxy::Proxy::start(&body);
    assert_eq!(keepalived_check(&["127.0.0.1", &proxy.port.to_string()]), 0);
    assert_eq!(
        keepalived_check(&["127.0.0.1", &common::free_port().to_string()]),
        1
    );

    let secured = format!("{body}  redis_auth: sekret\n");
    let proxy = common::proxy::Proxy::start(&secured);
    let port = proxy.port.to_string();
    assert_eq!(
        keepalived_check(&["127.0.0.1", &port, "1"]),
        1,
        "-NOAUTH is no PONG"
    );
    assert_eq!(keepalived_check(&["127.0.0.1", &port, "1", "sekret"]), 0);
    assert_eq!(keepalived_check(&["127.0.0.1", &port, "1", "wrong"]), 1);
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
    let conf = pool_file(
        &zookeeper,
        &servers(&[(&a.addr(), "0-2047"), (&b.addr(), "2048-4095")]),
    );
    assert_eq!(admin(&conf, &["init"]).await.code, 0);
    let ops = zookeeper.client().await;
    // redis-0000 held data on a, now gone: no members, a history.
    let record = |addr: &str| {
        let mut data = shardproxy::zk::layout::ShardData::new(0, 2047);
        data.master = Some(shardproxy::zk::layout::MasterRecord {
            addr: addr.to_string(),
            replid: "r1".into(),
            offset: 5,
            run_id: String::new(),
            keys: None,
        });
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
    let mut data = shardproxy::zk::layout::ShardData::new(2048, 4095);
    data.master = Some(shardproxy::zk::layout::MasterRecord {
        addr: b.addr(),
        replid: "r2".into(),
        offset: 5,
        run_id: String::new(),
        keys: None,
    });
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
    let conf = pool_file(
        &zookeeper,
        &servers(&[(&a.addr(), "0-2047"), (&b.addr(), "2048-4095")]),
    );
    assert_eq!(admin(&conf, &["init"]).await.code, 0);
    let ops = zookeeper.client().await;
    // redis-0000 held data on a, now gone: no members, a history.
    let shard0 = format!("{ROOT}/redis-0000");
    let mut data = ShardData::new(0, 2047);
    data.master = Some(MasterRecord {
        addr: a.addr(),
        replid: "r1".into(),
        offset: 5,
        run_id: String::new(),
        keys: None,
    });
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
    let mut data1 = ShardData::new(2048, 4095);
    data1.master = Some(MasterRecord {
        addr: b.addr(),
        replid: "r2".into(),
        offset: 5,
        run_id: run.clone(),
        keys: None,
    });
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

/// A migration znode that cannot be parsed is an error in `status`, named
/// with why (review: status said ok while every proxy reported its state
/// invalid and migrate, abort and export all failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fails_for_an_unreadable_migration_znode() {
    let zookeeper = ZooKeeper::start();
    let (a, b) = (Redis::start(), Redis::start());
    let conf = pool_file(
        &zookeeper,
        &servers(&[(&a.addr(), "0-2047"), (&b.addr(), "2048-4095")]),
    );
    assert_eq!(admin(&conf, &["init"]).await.code, 0);
    let session = zookeeper.client().await;
    add_proxy(&session).await;
    add_member(&session, "redis-0000", &a.addr(), Role::Master).await;
    add_member(&session, "redis-0001", &b.addr(), Role::Master).await;
    // Without a replica each shard is degraded: warnings, exit 1.
    assert_eq!(admin(&conf, &["status"]).await.code, 1);
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    for path in ["/redis/control", "/redis/control/test"] {
        match session.create(path, b"", &persistent).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => panic!("{path}: {e}"),
        }
    }
    let path = "/redis/control/test/migration";
    session.create(path, b"{junk", &persistent).await.unwrap();
    let why = "bad migration data: key must be a string at line 1 column 2";
    let run = admin(&conf, &["status"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "error: {path}: {why}: every proxy reports state_valid 0, and migrate, abort and \
             export fail until this znode is fixed"
        )),
        "{run:?}"
    );
    let run = admin(&conf, &["status", "--json"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["health"], "error");
    let problem = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["subject"] == path)
        .unwrap_or_else(|| panic!("no problem named {path}: {run:?}"));
    assert_eq!(problem["level"], "error");
    assert!(
        problem["text"].as_str().unwrap().starts_with(why),
        "{run:?}"
    );
}
