//! What the `shardproxy-admin` tests share (tests/admin.rs,
//! tests/admin_failover.rs): the binary run as ops would run it, a pool
//! file for the test's ZooKeeper, and members and proxies registered the
//! way the watchdog and the proxy do (an EPHEMERAL proxy znode with
//! ProxyData, EPHEMERAL_SEQUENTIAL `<ip:port>-` members with MemberData),
//! held by the test's own session.

use super::redis::Redis;
use super::temp_dir;
use super::zookeeper::ZooKeeper;
use shardproxy::zk::layout::member_prefix;
use shardproxy::zk::{MemberData, ProxyData, Role};
use std::path::{Path, PathBuf};
use std::process::Command;
use zookeeper_client as zk;

pub const ROOT: &str = "/redis/cluster/test";
pub const PROXIES: &str = "/redis/proxy/test";
pub const PROXY: &str = "127.0.0.1:22121";

/// What a run of the binary printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
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
pub async fn admin(conf: &Path, args: &[&str]) -> Run {
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
pub fn pool_file(zookeeper: &ZooKeeper, servers: &[String]) -> PathBuf {
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

/// A pool file of two shards, `a` on slots 0-2047 and `b` on the rest,
/// and `init` run on it.
pub async fn init_two_shards(zookeeper: &ZooKeeper, a: &Redis, b: &Redis) -> PathBuf {
    let conf = pool_file(
        zookeeper,
        &servers(&[(&a.addr(), "0-2047"), (&b.addr(), "2048-4095")]),
    );
    assert_eq!(admin(&conf, &["init"]).await.code, 0);
    conf
}

pub fn servers(ranges: &[(&str, &str)]) -> Vec<String> {
    ranges.iter().map(|(a, r)| format!("{a}:{r}")).collect()
}

/// Registers `addr` in `shard` as its watchdog would.
pub async fn add_member(session: &zk::Client, shard: &str, addr: &str, role: Role) {
    add_member_run(session, shard, addr, "test", role).await;
}

/// Likewise, with the `run_id` its watchdog read from the Redis.
pub async fn add_member_run(
    session: &zk::Client,
    shard: &str,
    addr: &str,
    run_id: &str,
    role: Role,
) {
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
pub async fn add_proxy(session: &zk::Client) {
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
