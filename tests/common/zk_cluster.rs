//! A ZooKeeper-driven cluster built by hand, the way ops and watchdogs
//! would: shard znodes under [`ROOT`], members registered as watchdogs do,
//! and proxies that route from them.

use super::free_port;
use super::proxy::Proxy;
use super::redis::{RawClient, Redis};
use super::wait_until;
use super::zookeeper::{persistent, ZooKeeper};
use shardproxy::hash::HashKind;
use shardproxy::zk::layout::{member_prefix, ShardData};
use std::time::Duration;
use zookeeper_client as zk;

pub const ROOT: &str = "/redis/cluster/test";
pub const PROXIES: &str = "/redis/proxy/test";

pub fn shard_path(name: &str) -> String {
    format!("{ROOT}/{name}")
}

pub fn slot(key: &str) -> u32 {
    HashKind::Md5.hash(key.as_bytes()) % 4096
}

/// `n` keys whose slots fall in `lo..=hi`.
pub fn keys_in(lo: u32, hi: u32, n: usize, tag: &str) -> Vec<String> {
    (0..)
        .map(|i| format!("{tag}:{i}"))
        .filter(|k| (lo..=hi).contains(&slot(k)))
        .take(n)
        .collect()
}

pub async fn create_shard(ops: &zk::Client, name: &str, lo: u32, hi: u32) {
    ops.mkdir(ROOT, &persistent()).await.unwrap();
    ops.create(
        &shard_path(name),
        &ShardData::new(lo, hi).to_json(),
        &persistent(),
    )
    .await
    .unwrap();
}

/// Registers `addr` under `shard` as its watchdog would, with the `run_id`
/// its Redis answers (none for an address nobody listens on); returns the
/// member's full path.
pub async fn add_member(watchdog: &zk::Client, shard: &str, addr: &str) -> String {
    let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
    let run_id = run_id_at(addr);
    let data = format!(r#"{{"addr":"{addr}","role":"master","run_id":"{run_id}","offset":0}}"#);
    let prefix = member_prefix(&shard_path(shard), addr);
    let (_, seq) = watchdog
        .create(&prefix, data.as_bytes(), &options)
        .await
        .unwrap();
    format!("{prefix}{seq}")
}

/// The `run_id` of the Redis at `addr`, or "" when none answers within a
/// second (nothing listening, a stopped server, a password).
pub fn run_id_at(addr: &str) -> String {
    use std::io::{Read, Write};
    let ask = || -> std::io::Result<String> {
        let addr: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
        let limit = Duration::from_secs(1);
        let mut stream = std::net::TcpStream::connect_timeout(&addr, limit)?;
        stream.set_read_timeout(Some(limit))?;
        stream.write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")?;
        let mut text = String::new();
        let mut buf = [0u8; 8192];
        // Up to the end of the run_id line, or an error reply.
        let answered = |text: &str| {
            text.starts_with('-')
                || text
                    .find("run_id:")
                    .is_some_and(|at| text[at..].contains('\n'))
        };
        while !answered(&text) {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        Ok(text)
    };
    let text = ask().unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Shards `redis-0000` (slots 0-2047, master `a`) and `redis-0001`
/// (2048-4095, master `b`), registered as their watchdogs would; the
/// members' paths.
pub async fn two_shards_led_by(ops: &zk::Client, a: &Redis, b: &Redis) -> [String; 2] {
    create_shard(ops, "redis-0000", 0, 2047).await;
    create_shard(ops, "redis-0001", 2048, 4095).await;
    [
        add_member(ops, "redis-0000", &a.addr()).await,
        add_member(ops, "redis-0001", &b.addr()).await,
    ]
}

/// Like [`two_shards_led_by`], with `next` second in `redis-0000`'s line
/// (its master after `first`'s member goes); the path of `first`'s member.
pub async fn two_shards_with_a_next_in_line(
    ops: &zk::Client,
    first: &Redis,
    next: &Redis,
    other: &Redis,
) -> String {
    let [first_member, _] = two_shards_led_by(ops, first, other).await;
    add_member(ops, "redis-0000", &next.addr()).await;
    first_member
}

/// A proxy of the cluster: range form in the file (the routing before
/// ZooKeeper answers), the ZooKeeper keys, registration under PROXIES.
pub fn start_proxy(zookeeper: &ZooKeeper, file_servers: &[&Redis]) -> Proxy {
    start_proxy_with(zookeeper, file_servers, "  timeout: 1000\n")
}

/// Like [`start_proxy`], with the pool keys `keys` instead of the timeout.
pub fn start_proxy_with(zookeeper: &ZooKeeper, file_servers: &[&Redis], keys: &str) -> Proxy {
    start_proxy_args(zookeeper, file_servers, keys, &[])
}

/// Like [`start_proxy_with`], with more command-line arguments.
pub fn start_proxy_args(
    zookeeper: &ZooKeeper,
    file_servers: &[&Redis],
    keys: &str,
    args: &[&str],
) -> Proxy {
    start_proxy_via(&zookeeper.hosts(), file_servers, keys, args)
}

/// Like [`start_proxy_args`], reaching ZooKeeper at `hosts` (e.g. through
/// a [`super::relay::Relay`] that the test cuts).
pub fn start_proxy_via(hosts: &str, file_servers: &[&Redis], keys: &str, args: &[&str]) -> Proxy {
    let half = 4096 / file_servers.len() as u32;
    let ranges: Vec<(&Redis, u32, u32)> = file_servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let lo = i as u32 * half;
            let hi = if i + 1 == file_servers.len() {
                4095
            } else {
                lo + half - 1
            };
            (*s, lo, hi)
        })
        .collect();
    start_proxy_ranged(hosts, &ranges, keys, args)
}

/// A proxy of the cluster whose file gives each server the range beside
/// it.
pub fn start_proxy_ranged(
    hosts: &str,
    file_servers: &[(&Redis, u32, u32)],
    keys: &str,
    args: &[&str],
) -> Proxy {
    let servers: Vec<String> = file_servers
        .iter()
        .map(|(s, lo, hi)| format!("{}:{lo}-{hi}", s.addr()))
        .collect();
    start_proxy_listing(hosts, &servers, keys, args)
}

/// A proxy of the cluster whose file has twemproxy's weight form: each
/// server with the weight beside it.
pub fn start_proxy_weighted(hosts: &str, file_servers: &[(&Redis, u32)], keys: &str) -> Proxy {
    let servers: Vec<String> = file_servers
        .iter()
        .map(|(s, weight)| format!("{}:{weight}", s.addr()))
        .collect();
    start_proxy_listing(hosts, &servers, keys, &[])
}

/// A proxy of the cluster whose file lists `servers` as they are.
fn start_proxy_listing(hosts: &str, servers: &[String], keys: &str, args: &[&str]) -> Proxy {
    let port = free_port();
    let servers: String = servers.iter().map(|s| format!("   - {s}\n")).collect();
    let yaml = format!(
        "test:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: md5\n  distribution: modula\n{keys}  \
         zookeeper_host: {hosts}\n  zookeeper_path: {PROXIES}/127.0.0.1:{port}\n  \
         zookeeper_redis_path: {ROOT}\n  servers:\n{servers}"
    );
    Proxy::start_yaml_args(port, &yaml, args)
}

pub fn info(proxy: &Proxy) -> String {
    RawClient::connect(proxy.port).cmd_str(&["INFO", "zookeeper"])
}

/// Waits until the proxy routes from a ZooKeeper view whose INFO line for
/// shard `i` contains `needle`.
pub fn wait_for_view(proxy: &Proxy, needle: &str) {
    wait_until(
        &format!("proxy {} to show {needle}", proxy.port),
        Duration::from_secs(10),
        || info(proxy).contains(needle),
    );
}

pub fn holds(redis: &Redis, key: &str) -> bool {
    redis.connect().cmd_str(&["EXISTS", key]) == ":1\r\n"
}

pub async fn children(ops: &zk::Client, path: &str) -> Vec<String> {
    ops.list_children(path).await.unwrap_or_default()
}

/// One shard, `redis-0000`, holding every slot: its master `old`
/// registered in ZooKeeper as its watchdog would, `new` replicating it, and
/// a proxy (with `proxy_args`) routing to `old`: the stage of a failover.
pub struct ReplicatedShard {
    pub proxy: Proxy,
    pub ops: zk::Client,
    /// The old master's member znode.
    pub member_old: String,
    pub old: Redis,
    pub new: Redis,
    pub zookeeper: ZooKeeper,
}

pub async fn replicated_shard(proxy_args: &[&str]) -> ReplicatedShard {
    let zookeeper = ZooKeeper::start();
    let (old, new) = (Redis::start(), Redis::start());
    let ops = zookeeper.client().await;
    create_shard(&ops, "redis-0000", 0, 4095).await;
    let member_old = add_member(&ops, "redis-0000", &old.addr()).await;
    let replicaof = ["REPLICAOF", "127.0.0.1", &old.port.to_string()];
    assert_eq!(new.connect().cmd_str(&replicaof), "+OK\r\n");
    let proxy = start_proxy_args(&zookeeper, &[&old], "", proxy_args);
    wait_for_view(&proxy, &format!("master={}", old.addr()));
    ReplicatedShard {
        proxy,
        ops,
        member_old,
        old,
        new,
        zookeeper,
    }
}
