//! The harness of the watchdog tests: watchdog processes, a test-side
//! ZooKeeper client, Redis probes, writers that count acknowledged writes,
//! and a TCP relay to cut one watchdog off from ZooKeeper.

use crate::common::proxy::Proxy;
use crate::common::redis::{RawClient, Redis};
use crate::common::zookeeper::ZooKeeper;
use crate::common::{port_open, temp_dir, wait_until, ProcessGuard};
use shardproxy::zk::layout::{parse_member_name, ShardData};
use shardproxy::zk::MemberData;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// How long any awaited condition may take on a busy 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Session timeout asked by the watchdogs.
pub const SESSION_MS: u64 = 1000;

/// A redis-server that syncs a new replica at once (Redis 7 waits 5 s by
/// default to batch replicas for a diskless sync).
pub fn start_redis() -> Redis {
    Redis::start_with(&["--repl-diskless-sync-delay", "0"])
}

/// Starts redis-server again on `port`, e.g. after a kill -9. Until then
/// the port may briefly be the local port of some test's outgoing
/// connection, so a start that cannot bind is tried again.
pub fn restart_redis(port: u16) -> Redis {
    restart_redis_with(port, &["--repl-diskless-sync-delay", "0"])
}

/// [`restart_redis`] with its own `extra` flags.
pub fn restart_redis_with(port: u16, extra: &[&str]) -> Redis {
    let end = Instant::now() + DEADLINE;
    loop {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(temp_dir("redis"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut guard = ProcessGuard::new(format!("redis:{port}"), child);
        let exited = |guard: &mut ProcessGuard| {
            guard
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
        };
        while !port_open(port) && !exited(&mut guard) {
            assert!(Instant::now() < end, "redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        if port_open(port) && !exited(&mut guard) {
            return Redis { port, guard };
        }
        assert!(Instant::now() < end, "redis-server cannot bind {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The fast test timings (checks every 100 ms, down after 3, 1 s
/// sessions: [`SESSION_MS`]), for watchdogs started with flags of their
/// own.
pub const FAST_TIMINGS: [&str; 6] = [
    "--interval-ms",
    "100",
    "--down-after",
    "3",
    "--session-timeout-ms",
    "1000",
];

/// A running `shardproxy-watchdog` with its log file.
pub struct Watchdog {
    pub guard: ProcessGuard,
    pub log: PathBuf,
    pub args: Vec<String>,
}

impl Watchdog {
    /// A watchdog with the fast test timings.
    pub fn start(zk_hosts: &str, redis: &Redis, shard: &str) -> Watchdog {
        Watchdog::start_with(zk_hosts, redis, shard, &FAST_TIMINGS)
    }

    /// Fast checks (every 100 ms, down after 3) and a `session_ms` session.
    pub fn start_timed(zk_hosts: &str, redis: &Redis, shard: &str, session_ms: u64) -> Watchdog {
        let session = session_ms.to_string();
        let fast = [
            "--interval-ms",
            "100",
            "--down-after",
            "3",
            "--session-timeout-ms",
            &session,
        ];
        Watchdog::start_with(zk_hosts, redis, shard, &fast)
    }

    /// A watchdog with the default timings plus `extra` flags.
    pub fn start_with(zk_hosts: &str, redis: &Redis, shard: &str, extra: &[&str]) -> Watchdog {
        let log = temp_dir("watchdog").join("watchdog.log");
        let addr = redis.addr();
        let mut args = vec!["--zk", zk_hosts, "--redis", &addr, "--shard", shard];
        args.extend_from_slice(extra);
        args.extend(["-v", "debug", "-o", log.to_str().unwrap()]);
        Watchdog::spawn(args.iter().map(|s| s.to_string()).collect(), log)
    }

    pub fn spawn(args: Vec<String>, log: PathBuf) -> Watchdog {
        let child = Command::new(env!("CARGO_BIN_EXE_shardproxy-watchdog"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shardproxy-watchdog");
        Watchdog {
            guard: ProcessGuard::new("watchdog", child),
            log,
            args,
        }
    }

    /// Starts the same watchdog again (same flags, same log file).
    pub fn restart(&mut self) {
        self.guard.kill();
        *self = Watchdog::spawn(self.args.clone(), self.log.clone());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// When `text` was last logged: the timestamp that starts its line
    /// (RFC 3339 in UTC, so timestamps compare as strings).
    pub fn last_logged_at(&self, text: &str) -> Option<String> {
        let log = self.log_text();
        let line = log.lines().rfind(|l| l.contains(text))?;
        line.split_whitespace().next().map(str::to_string)
    }

    /// Waits for `line` in the log: the watchdog logs an action once it is
    /// done, which may be just after the test has seen its effect.
    pub fn wait_for_log(&self, line: &str) {
        wait_until(
            &format!("the watchdog to log {line:?}"),
            LOG_DEADLINE,
            || self.log_text().contains(line),
        );
    }
}

const LOG_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The test's own ZooKeeper client, driven from plain threads.
pub struct Zk {
    pub runtime: tokio::runtime::Runtime,
    pub client: zk::Client,
    pub hosts: String,
}

/// A member of a shard as ZooKeeper has it.
#[derive(Debug, Clone)]
pub struct Member {
    pub addr: String,
    pub seq: u64,
    pub data: MemberData,
}

impl Zk {
    pub fn connect(zookeeper: &ZooKeeper) -> Zk {
        // One worker keeps the session's pings going between calls.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let hosts = zookeeper.hosts();
        let client = runtime
            .block_on(
                zk::Client::connector()
                    .with_session_timeout(Duration::from_secs(2))
                    .connect(&hosts),
            )
            .expect("connect to ZooKeeper");
        Zk {
            runtime,
            client,
            hosts,
        }
    }

    /// Creates `<root>/redis-0000` with range 0-4095 and returns its path.
    pub fn create_shard(&self, root: &str) -> String {
        self.create_shard_range(root, "redis-0000", 0, 4095)
    }

    /// Creates `<root>/<name>` owning slots `lo..=hi`; returns its path.
    pub fn create_shard_range(&self, root: &str, name: &str, lo: u32, hi: u32) -> String {
        let shard = format!("{root}/{name}");
        let mode = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        self.runtime.block_on(async {
            self.client.mkdir(root, &mode).await.unwrap();
            let data = ShardData::new(lo, hi).to_json();
            self.client.create(&shard, &data, &mode).await.unwrap();
        });
        shard
    }

    /// The shard's members in line order, with their data.
    pub fn members(&self, shard: &str) -> Vec<Member> {
        self.runtime.block_on(async {
            let names = self.client.list_children(shard).await.unwrap();
            let mut members = Vec::new();
            for name in names {
                let (addr, seq) = parse_member_name(&name).expect("only members under a shard");
                let path = format!("{shard}/{name}");
                let Ok((data, _)) = self.client.get_data(&path).await else {
                    continue;
                };
                let data = serde_json::from_slice(&data).expect("member data is JSON");
                members.push(Member { addr, seq, data });
            }
            members.sort_by_key(|m| m.seq);
            members
        })
    }

    /// The shard's data (its range and its master's record).
    #[allow(dead_code)] // not every test file that includes the harness reads it
    pub fn shard_data(&self, shard: &str) -> ShardData {
        self.runtime.block_on(async {
            let (data, _) = self.client.get_data(shard).await.unwrap();
            ShardData::parse(&data).expect("shard data is JSON")
        })
    }

    /// The addresses in line order.
    pub fn line(&self, shard: &str) -> Vec<String> {
        self.members(shard).into_iter().map(|m| m.addr).collect()
    }
}

/// A sync connection to a Redis; reads time out after 2 s.
pub fn redis_conn(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect to redis");
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    conn
}

/// `INFO replication` of the Redis on `port` as (key, value) lookups; empty
/// if it does not answer.
pub fn replication(port: u16) -> String {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return String::new();
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return String::new();
    };
    redis::cmd("INFO")
        .arg("replication")
        .query(&mut conn)
        .unwrap_or_default()
}

pub fn field(info: &str, key: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or("")
        .trim()
        .to_string()
}

pub fn is_master(redis: &Redis) -> bool {
    field(&replication(redis.port), "role") == "master"
}

/// True when `replica` replicates from `master` with the link up.
pub fn is_synced_replica_of(replica: &Redis, master: &Redis) -> bool {
    let info = replication(replica.port);
    field(&info, "role") == "slave"
        && field(&info, "master_port") == master.port.to_string()
        && field(&info, "master_link_status") == "up"
}

/// The Redis's key count; -1 while it loads its data (just restarted
/// with an AOF or a snapshot), so a wait can go on.
pub fn dbsize(redis: &Redis) -> i64 {
    match redis::cmd("DBSIZE").query(&mut redis_conn(redis.port)) {
        Ok(keys) => keys,
        Err(e) if e.kind() == redis::ErrorKind::BusyLoadingError => -1,
        Err(e) => panic!("DBSIZE on {}: {e}", redis.addr()),
    }
}

pub fn fill(redis: &Redis, prefix: &str, n: usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("SET").arg(format!("{prefix}:{i}")).arg(i).ignore();
    }
    pipe.query::<()>(&mut redis_conn(redis.port)).unwrap();
}

/// A shard with two Redis instances, each with its watchdog: `a` master,
/// `b` its synced replica, both in line.
pub struct Pair {
    /// Runs for as long as the pair.
    pub _zookeeper: ZooKeeper,
    pub zk: Zk,
    pub shard: String,
    pub a: Redis,
    pub b: Redis,
    pub wa: Watchdog,
    pub wb: Watchdog,
}

impl Pair {
    pub fn start(cluster: &str) -> Pair {
        Pair::start_with(cluster, |zookeeper, _| zookeeper.hosts())
    }

    /// `a_hosts` gives the ZooKeeper connect string for `a`'s watchdog.
    pub fn start_with(cluster: &str, a_hosts: impl FnOnce(&ZooKeeper, &Zk) -> String) -> Pair {
        Pair::start_timed(cluster, a_hosts, SESSION_MS)
    }

    /// Likewise, with `session_ms` sessions for both watchdogs.
    pub fn start_timed(
        cluster: &str,
        a_hosts: impl FnOnce(&ZooKeeper, &Zk) -> String,
        session_ms: u64,
    ) -> Pair {
        let zookeeper = ZooKeeper::start();
        let zk = Zk::connect(&zookeeper);
        let shard = zk.create_shard(&format!("/redis/cluster/{cluster}"));
        let (a, b) = (start_redis(), start_redis());
        let wa = Watchdog::start_timed(&a_hosts(&zookeeper, &zk), &a, &shard, session_ms);
        wait_until("a to be the master", DEADLINE, || {
            zk.line(&shard) == [a.addr()]
        });
        let wb = Watchdog::start_timed(&zookeeper.hosts(), &b, &shard, session_ms);
        wait_until("b to join the line", DEADLINE, || {
            zk.line(&shard) == [a.addr(), b.addr()]
        });
        Pair {
            _zookeeper: zookeeper,
            zk,
            shard,
            a,
            b,
            wa,
            wb,
        }
    }

    /// [`Pair::start`], then 100 keys (`k:0` ...) written to `a` and
    /// replicated to `b`.
    #[allow(dead_code)] // not every test file that includes the harness uses it
    pub fn start_filled(cluster: &str) -> Pair {
        let pair = Pair::start(cluster);
        fill(&pair.a, "k", 100);
        wait_until("b to have the data", DEADLINE, || dbsize(&pair.b) == 100);
        pair
    }

    pub fn line(&self) -> Vec<String> {
        self.zk.line(&self.shard)
    }

    /// Waits until a new member of `a` (its watchdog started again; the
    /// old one's sequence was `old_seq`) heads the line with `b` behind
    /// it: `a` kept its place, nobody failed over.
    pub fn wait_a_back_at_head(&self, old_seq: u64) {
        wait_until("a's new member to lead the line", DEADLINE, || {
            let members = self.zk.members(&self.shard);
            members.len() == 2
                && members[0].addr == self.a.addr()
                && members[0].seq != old_seq
                && members[1].addr == self.b.addr()
        });
    }

    /// Waits until `master` is the only member and its Redis is master.
    pub fn wait_sole_master(&self, master: &Redis) {
        wait_until("the new master to be promoted", DEADLINE, || {
            self.line() == [master.addr()] && is_master(master)
        });
    }
}

/// A writer that sends numbered SETs to whichever of two Redis accepts
/// writes, switching on any error, and records what was acknowledged.
pub struct Writer {
    pub stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<Vec<(u64, Instant)>>>,
    pub thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(ports: [u16; 2]) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop2, acked2) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut target = 0;
            let mut conn: Option<redis::Connection> = None;
            let mut i = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                i += 1;
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => {
                        match redis::Client::open(format!("redis://127.0.0.1:{}/", ports[target]))
                            .and_then(|cl| cl.get_connection_with_timeout(Duration::from_secs(1)))
                        {
                            Ok(c) => {
                                c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                                conn.insert(c)
                            }
                            Err(_) => {
                                target = 1 - target;
                                continue;
                            }
                        }
                    }
                };
                let result: redis::RedisResult<()> =
                    redis::cmd("SET").arg(format!("w:{i}")).arg(i).query(c);
                match result {
                    Ok(()) => acked2.lock().unwrap().push((i, Instant::now())),
                    Err(_) => {
                        conn = None;
                        target = 1 - target;
                    }
                }
            }
        });
        Writer {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    pub fn acked(&self) -> Vec<(u64, Instant)> {
        self.acked.lock().unwrap().clone()
    }

    pub fn stop(&mut self) -> Vec<(u64, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.acked()
    }
}

/// The acknowledged writes missing from `redis`.
pub fn missing(redis: &Redis, acked: &[(u64, Instant)]) -> Vec<u64> {
    let mut conn = redis_conn(redis.port);
    acked
        .chunks(500)
        .flat_map(|chunk| {
            let keys: Vec<String> = chunk.iter().map(|(i, _)| format!("w:{i}")).collect();
            let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
            chunk
                .iter()
                .zip(values)
                .filter(|((i, _), v)| *v != Some(*i))
                .map(|((i, _), _)| *i)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The longest time between two acknowledged writes.
pub fn longest_gap(acked: &[(u64, Instant)]) -> Duration {
    acked
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .max()
        .unwrap_or_default()
}

/// One write sent through a proxy.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub key: String,
    pub value: u64,
    /// The key's shard: 0 owns slots 0-2047, 1 the rest.
    pub shard: usize,
    pub sent: Instant,
    pub done: Instant,
    pub ok: bool,
}

/// Sends numbered SETs through one proxy, as fast as they are answered,
/// and records every attempt.
pub struct ProxyWriter {
    pub stop: Arc<AtomicBool>,
    pub attempts: Arc<Mutex<Vec<Attempt>>>,
    pub thread: Option<JoinHandle<()>>,
}

/// Slot of `key` in the test cluster's md5 / 4096 slot space.
pub fn slot(key: &str) -> u32 {
    shardproxy::hash::HashKind::Md5.hash(key.as_bytes()) % 4096
}

impl ProxyWriter {
    pub fn start(port: u16, tag: &'static str) -> ProxyWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (stop2, attempts2) = (stop.clone(), attempts.clone());
        let thread = std::thread::spawn(move || {
            let mut conn: Option<redis::Connection> = None;
            let mut value = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                value += 1;
                let key = format!("e2e:{tag}:{value}");
                let sent = Instant::now();
                let result = match conn.as_mut() {
                    Some(c) => redis::cmd("SET").arg(&key).arg(value).query::<()>(c),
                    None => Err(redis::RedisError::from(std::io::Error::other(
                        "no connection",
                    ))),
                };
                let ok = result.is_ok();
                if !ok {
                    // Pace retries while the shard has no master.
                    std::thread::sleep(Duration::from_millis(1));
                }
                // An error reply (e.g. the proxy's for an unreachable
                // shard) leaves the connection usable.
                let broken = result
                    .is_err_and(|e| e.is_io_error() || e.is_connection_dropped() || e.is_timeout());
                if broken {
                    conn = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                        .ok();
                    if let Some(c) = &conn {
                        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    }
                }
                attempts2.lock().unwrap().push(Attempt {
                    shard: usize::from(slot(&key) >= 2048),
                    key,
                    value,
                    sent,
                    done: Instant::now(),
                    ok,
                });
            }
        });
        ProxyWriter {
            stop,
            attempts,
            thread: Some(thread),
        }
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    pub fn stop(&mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.attempts()
    }
}

/// When writes to `shard` work again through a writer after its master was
/// killed: the first success on that shard after its last failure,
/// measured from `killed`.
pub fn recovery(attempts: &[Attempt], shard: usize, killed: Instant) -> Option<Duration> {
    let on_shard: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.shard == shard && a.sent >= killed)
        .collect();
    let last_failure = on_shard.iter().rposition(|a| !a.ok);
    let first_ok = match last_failure {
        Some(i) => on_shard[i + 1..].first()?,
        None => on_shard.first()?,
    };
    Some(first_ok.done - killed)
}

pub fn proxy_info(proxy: &Proxy) -> String {
    RawClient::connect(proxy.port).cmd_str(&["INFO", "zookeeper"])
}

/// The longest time between two acknowledged writes to `shard` among
/// those acknowledged after `from`.
pub fn longest_gap_on(attempts: &[Attempt], shard: usize, from: Instant) -> Duration {
    let acked: Vec<Instant> = attempts
        .iter()
        .filter(|a| a.ok && a.shard == shard && a.done >= from)
        .map(|a| a.done)
        .collect();
    acked
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// Acknowledged writes missing from their shard's master now.
pub fn lost_writes(attempts: &[Attempt], masters: [&Redis; 2]) -> Vec<Attempt> {
    let mut conns = masters.map(|m| redis_conn(m.port));
    attempts
        .iter()
        .filter(|a| a.ok)
        .filter(|a| {
            let value: Option<u64> = redis::cmd("GET")
                .arg(&a.key)
                .query(&mut conns[a.shard])
                .unwrap();
            value != Some(a.value)
        })
        .cloned()
        .collect()
}
