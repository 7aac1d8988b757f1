//! What the online-migration tests share (tests/migration.rs,
//! tests/rebalance.rs): the admin tool run as a process, load threads that
//! write and read through the proxies and count what clients see, and the
//! two-shards-plus-an-empty-one cluster.

use super::proxy::Proxy;
use super::redis::{RawClient, Redis};
use super::zk_cluster::{
    add_member, create_shard, start_proxy, start_proxy_args, wait_for_view, ROOT,
};
use super::zookeeper::ZooKeeper;
use super::{temp_dir, wait_until, ProcessGuard};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// A pool file for the admin tool: this cluster's ZooKeeper keys.
pub fn pool_file(zookeeper: &ZooKeeper, servers: &[&Redis]) -> PathBuf {
    let list: String = servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("   - {}:{}-{}\n", s.addr(), i * 2048, i * 2048 + 2047))
        .collect();
    let yaml = format!(
        "test:\n  listen: 127.0.0.1:1\n  hash: md5\n  distribution: modula\n  redis: true\n  \
         zookeeper_host: {}\n  zookeeper_path: /redis/proxy/test/admin\n  \
         zookeeper_redis_path: {ROOT}\n  servers:\n{list}",
        zookeeper.hosts()
    );
    let path = temp_dir("migration").join("pool.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

pub fn admin(conf: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardproxy-admin"));
    command.arg("-c").arg(conf).args(args);
    command
}

/// The admin tool with ARGS started in the background, its output kept in a file.
#[allow(dead_code)]
pub fn start_admin(c: &Cluster, args: &[&str], name: &str) -> (ProcessGuard, PathBuf) {
    let log = temp_dir("movers").join(format!("{name}.log"));
    let out = File::create(&log).unwrap();
    let child = admin(&c.conf, args)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    (ProcessGuard::new(name, child), log)
}

/// Waits up to `secs` for a run to exit: its exit code and what it printed.
#[allow(dead_code)]
pub fn ended(run: &mut ProcessGuard, log: &PathBuf, secs: u64) -> (Option<i32>, String) {
    let code = run.wait_exit(Duration::from_secs(secs));
    (code, std::fs::read_to_string(log).unwrap())
}

/// Runs the admin tool to the end; (exit code, stdout + stderr).
pub fn run_admin(conf: &Path, args: &[&str]) -> (i32, String) {
    let output = admin(conf, args).output().expect("run shardproxy-admin");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// What the load threads saw.
#[derive(Default)]
pub struct Tally {
    pub writes: AtomicU64,
    pub reads: AtomicU64,
    pub errors: AtomicU64,
    pub stale: AtomicU64,
    /// Latencies (µs) before the migration (0) and while it runs (1).
    pub during: AtomicBool,
    pub latencies: [std::sync::Mutex<Vec<u64>>; 2],
}

impl Tally {
    /// Prints what the clients saw while `what` ran (`writes` of their
    /// writes counted), and asserts they saw no error and no stale read.
    pub fn assert_clean(&self, what: &str, took: Duration, writes: u64) {
        eprintln!(
            "{what} in {:.1} s; {writes} writes, {} reads meanwhile; errors {}, stale {}",
            took.as_secs_f64(),
            self.reads.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.stale.load(Ordering::Relaxed),
        );
        assert_eq!(
            self.errors.load(Ordering::Relaxed),
            0,
            "client-visible errors"
        );
        assert_eq!(self.stale.load(Ordering::Relaxed), 0, "stale reads");
    }

    pub fn record(&self, started: Instant) {
        let phase = usize::from(self.during.load(Ordering::Relaxed));
        self.latencies[phase]
            .lock()
            .unwrap()
            .push(started.elapsed().as_micros() as u64);
    }

    /// The 99th percentile latency of a phase, in µs, and the sample count.
    pub fn p99(&self, phase: usize) -> (u64, usize) {
        let mut all = self.latencies[phase].lock().unwrap().clone();
        all.sort_unstable();
        let n = all.len();
        (all.get(n * 99 / 100).copied().unwrap_or(0), n)
    }
}

/// One writer per key set, writing increasing values through one proxy
/// and reading them back through the other: a read older than the last
/// acknowledged write is stale. Runs until `stop`; returns each key's last
/// acknowledged value.
pub fn load(
    keys: Vec<String>,
    write_port: u16,
    read_port: u16,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> thread::JoinHandle<Vec<(String, u64)>> {
    thread::spawn(move || {
        let mut writer = RawClient::connect(write_port);
        let mut reader = RawClient::connect(read_port);
        let mut acked = vec![0u64; keys.len()];
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            for (i, key) in keys.iter().enumerate() {
                let value = round.to_string();
                let started = Instant::now();
                let reply = writer.cmd_str(&["SET", key, &value]);
                tally.record(started);
                match reply.as_str() {
                    "+OK\r\n" => {
                        acked[i] = round;
                        tally.writes.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("SET {key}: {other:?}");
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let started = Instant::now();
                let got = reader.cmd_str(&["GET", key]);
                tally.record(started);
                tally.reads.fetch_add(1, Ordering::Relaxed);
                match got.split("\r\n").nth(1).and_then(|v| v.parse::<u64>().ok()) {
                    Some(v) if v >= acked[i] => {}
                    Some(v) => {
                        eprintln!("GET {key}: {v} after {} was acknowledged", acked[i]);
                        tally.stale.fetch_add(1, Ordering::Relaxed);
                    }
                    None if got.starts_with('-') => {
                        eprintln!("GET {key}: {got:?}");
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        eprintln!("GET {key}: {got:?} after {} was acknowledged", acked[i]);
                        tally.stale.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        keys.into_iter().zip(acked).collect()
    })
}

/// Writes `keys` through `proxy` with MSET in batches (value = key); every
/// tenth key gets a TTL of an hour.
pub fn preload(proxy: &Proxy, keys: &[String]) {
    let mut client = RawClient::connect(proxy.port);
    for chunk in keys.chunks(500) {
        let mut args: Vec<&str> = vec!["MSET"];
        for key in chunk {
            args.push(key);
            args.push(key);
        }
        assert_eq!(client.cmd_str(&args), "+OK\r\n");
    }
    for key in keys.iter().step_by(10) {
        assert_eq!(client.cmd_str(&["EXPIRE", key, "3600"]), ":1\r\n");
    }
}

/// Asserts that each of `keys` reads, through the proxy on `port`, the
/// value [`preload`] gave it (its own name).
#[allow(dead_code)]
pub fn assert_preloaded<'a>(port: u16, keys: impl IntoIterator<Item = &'a String>) {
    let mut client = RawClient::connect(port);
    for key in keys {
        let want = format!("${}\r\n{key}\r\n", key.len());
        assert_eq!(client.cmd_str(&["GET", key]), want, "{key} through {port}");
    }
}

/// Starts `migrate RANGE --to SHARD` slowly (1,000 keys/s) and kills it
/// once `target` holds more than `at_least` keys: the range stays half
/// moved, served through the migration lane.
pub fn interrupted_move(conf: &Path, range: &str, to: &str, target: &Redis, at_least: u64) {
    let child = admin(conf, &["migrate", range, "--to", to, "--rate", "1000"])
        .spawn()
        .unwrap();
    let mut mover = ProcessGuard::new("shardproxy-admin migrate", child);
    wait_until("the mover to move keys", Duration::from_secs(20), || {
        dbsize(target) > at_least
    });
    mover.signal("KILL");
    mover.wait_exit(Duration::from_secs(5));
}

pub fn dbsize(redis: &Redis) -> u64 {
    let reply = redis.connect().cmd_str(&["DBSIZE"]);
    reply.trim_start_matches(':').trim_end().parse().unwrap()
}

pub fn exists(redis: &Redis, key: &str) -> bool {
    redis.connect().cmd_str(&["EXISTS", key]) == ":1\r\n"
}

/// Waits until `master`'s one replica has every write made so far (its
/// first sync may still be running on a loaded machine: WAIT again until
/// it acknowledges).
pub fn replica_caught_up(master: &Redis) {
    wait_until(
        "the replica to acknowledge the preload",
        Duration::from_secs(60),
        || master.connect().cmd_str(&["WAIT", "1", "2000"]) == ":1\r\n",
    );
}

/// The cluster of the tests: shards redis-0000 (0-2047) and redis-0001
/// (2048-4095), an empty redis-0002, two proxies.
pub struct Cluster {
    pub zookeeper: ZooKeeper,
    pub redis: [Redis; 3],
    /// With [`cluster_with_source_replica`]: redis-0000's replica.
    pub replica: Option<Redis>,
    pub proxies: [Proxy; 2],
    pub conf: PathBuf,
    /// Holds the members' ephemeral znodes.
    pub members: zookeeper_client::Client,
    /// redis-0000's master's member znode.
    pub source_member: String,
}

/// The proxies' roster of the tests' cluster.
pub const ROSTER: &str = "/redis/control/test/proxies";

/// Waits until the proxy `name` is in the roster: it writes its entry once
/// registered, so a migration waits for it.
pub async fn wait_rostered(ops: &zookeeper_client::Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ops
        .list_children(ROSTER)
        .await
        .unwrap_or_default()
        .iter()
        .any(|entry| entry == name)
    {
        assert!(Instant::now() < deadline, "{name} never entered the roster");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn cluster() -> Cluster {
    cluster_with(false, false).await
}

/// [`cluster`], with a replica of redis-0000's master in its line, in
/// sync with it.
pub async fn cluster_with_source_replica() -> Cluster {
    cluster_with(true, false).await
}

/// [`cluster`] whose proxies started before its znodes were made: they
/// watched for the cluster root to appear.
pub async fn cluster_made_after_its_proxies() -> Cluster {
    cluster_with(false, true).await
}

async fn cluster_with(source_replica: bool, proxies_first: bool) -> Cluster {
    let zookeeper = ZooKeeper::start();
    let redis = [Redis::start(), Redis::start(), Redis::start()];
    let start_proxies = || {
        // The second proxy runs thread-per-core workers, so every move is
        // also checked against a proxy whose backends have a connection
        // set per worker (its barrier must reach them all).
        [
            start_proxy(&zookeeper, &[&redis[0], &redis[1]]),
            start_proxy_args(
                &zookeeper,
                &[&redis[0], &redis[1]],
                "  timeout: 1000\n",
                &["--threads", "2"],
            ),
        ]
    };
    let early = proxies_first.then(start_proxies);
    let ops = zookeeper.client_with_session(Duration::from_secs(20)).await;
    create_shard(&ops, "redis-0000", 0, 2047).await;
    create_shard(&ops, "redis-0001", 2048, 4095).await;
    let source_member = add_member(&ops, "redis-0000", &redis[0].addr()).await;
    let replica = source_replica.then(|| {
        let replica = Redis::start();
        let replicaof = ["REPLICAOF", "127.0.0.1", &redis[0].port.to_string()];
        assert_eq!(replica.connect().cmd_str(&replicaof), "+OK\r\n");
        replica
    });
    if let Some(replica) = &replica {
        add_member(&ops, "redis-0000", &replica.addr()).await;
    }
    add_member(&ops, "redis-0001", &redis[1].addr()).await;
    let conf = pool_file(&zookeeper, &[&redis[0], &redis[1]]);
    let (code, text) = run_admin(&conf, &["add-shard", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
    add_member(&ops, "redis-0002", &redis[2].addr()).await;
    let proxies = early.unwrap_or_else(start_proxies);
    for proxy in &proxies {
        wait_for_view(proxy, &format!("master={}", redis[1].addr()));
        wait_rostered(&ops, &format!("127.0.0.1:{}", proxy.port)).await;
    }
    Cluster {
        zookeeper,
        redis,
        replica,
        proxies,
        conf,
        members: ops,
        source_member,
    }
}

/// Pings `port` every millisecond until `stop`; the longest wait seen.
pub fn longest_stall(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<Duration> {
    thread::spawn(move || {
        let mut client = RawClient::connect(port);
        let mut worst = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            assert_eq!(client.cmd_str(&["PING"]), "+PONG\r\n");
            worst = worst.max(started.elapsed());
            thread::sleep(Duration::from_millis(1));
        }
        worst
    })
}

/// Has `redis` record every event (command, expiry cycle, ...) that takes
/// 1 ms or more, for [`longest_event`].
pub fn record_latency(redis: &Redis) {
    let reply = redis
        .connect()
        .cmd_str(&["CONFIG", "SET", "latency-monitor-threshold", "1"]);
    assert_eq!(reply, "+OK\r\n");
}

/// The longest event Redis itself timed since [`record_latency`]: its
/// name and ms (("none", 0) if none took 1 ms). Unlike a PING's wait,
/// this is the time Redis was busy, not time a loaded machine left the
/// prober or Redis unscheduled.
pub fn longest_event(redis: &Redis) -> (String, u64) {
    // Each event is `*4 $len name :timestamp :latest :max`.
    let reply = redis.connect().cmd_str(&["LATENCY", "LATEST"]);
    let lines: Vec<&str> = reply.split("\r\n").collect();
    let mut longest = ("none".to_string(), 0);
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with('$') && i + 4 < lines.len() {
            let max: u64 = lines[i + 4].trim_start_matches(':').parse().unwrap();
            if max > longest.1 {
                longest = (lines[i + 1].to_string(), max);
            }
        }
    }
    longest
}
