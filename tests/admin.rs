//! `shardproxy-admin` against a real ZooKeeper and real redis-servers: the
//! binary is run as ops would run it, and ZooKeeper is checked directly:
//! `init` and `status` (with the replication each Redis reports), an
//! unreachable ZooKeeper, and the keepalived check script. Failover and
//! promote with real watchdogs: `admin_failover.rs`.
//!
//! Proxies and members are registered the way the proxy and the watchdog
//! do, held by the test's own session (tests/common/admin.rs).

mod common;

use common::admin::{
    add_member, add_proxy, admin, init_two_shards, pool_file, servers, PROXIES, PROXY, ROOT,
};
use common::redis::Redis;
use common::zookeeper::ZooKeeper;
use common::{temp_dir, wait_until};
use serde_json::Value;
use shardproxy::zk::Role;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use zookeeper_client as zk;

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
    let conf = init_two_shards(&zookeeper, &a, &b).await;
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

/// A migration znode that cannot be parsed is an error in `status`, named
/// with why (review: status said ok while every proxy reported its state
/// invalid and migrate, abort and export all failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_fails_for_an_unreadable_migration_znode() {
    let zookeeper = ZooKeeper::start();
    let (a, b) = (Redis::start(), Redis::start());
    let conf = init_two_shards(&zookeeper, &a, &b).await;
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
