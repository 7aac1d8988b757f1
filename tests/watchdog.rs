//! `shardproxy-watchdog` against real processes: a ZooKeeper server,
//! redis-server instances and the watchdog binary, all on loopback.
//!
//! Each test runs its own ZooKeeper and Redis instances. Watchdogs run with
//! a 100 ms interval, down after 3 failed checks, and 1 s sessions, so a
//! failover takes well under a second and a session expiry about one.
//! Times measured (failover, switchover pause) are printed; run with
//! `--nocapture` to see them.

mod common;

use common::redis::{encode_command, Redis};
use common::zookeeper::ZooKeeper;
use common::{free_port, port_open, temp_dir, wait_until, ProcessGuard};
use shardproxy::watchdog::request_switchover;
use shardproxy::zk::layout::{parse_member_name, ShardData};
use shardproxy::zk::{MemberData, Role};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// How long any awaited condition may take on a busy 2-core machine.
const DEADLINE: Duration = Duration::from_secs(20);

/// Session timeout asked by the watchdogs.
const SESSION_MS: u64 = 1000;

/// A redis-server that syncs a new replica at once (Redis 7 waits 5 s by
/// default to batch replicas for a diskless sync).
fn start_redis() -> Redis {
    Redis::start_with(&["--repl-diskless-sync-delay", "0"])
}

/// Starts redis-server again on `port`, e.g. after a kill -9.
fn restart_redis(port: u16) -> Redis {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(temp_dir("redis"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let guard = ProcessGuard::new(format!("redis:{port}"), child);
    wait_until("restarted redis to listen", DEADLINE, || port_open(port));
    Redis { port, guard }
}

/// A running `shardproxy-watchdog` with its log file.
struct Watchdog {
    guard: ProcessGuard,
    log: PathBuf,
    args: Vec<String>,
}

impl Watchdog {
    fn start(zk_hosts: &str, redis: &Redis, shard: &str) -> Watchdog {
        let log = temp_dir("watchdog").join("watchdog.log");
        let args: Vec<String> = [
            "--zk",
            zk_hosts,
            "--redis",
            &redis.addr(),
            "--shard",
            shard,
            "--interval-ms",
            "100",
            "--down-after",
            "3",
            "--session-timeout-ms",
            &SESSION_MS.to_string(),
            "-v",
            "debug",
            "-o",
            log.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Watchdog::spawn(args, log)
    }

    fn spawn(args: Vec<String>, log: PathBuf) -> Watchdog {
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
    fn restart(&mut self) {
        self.guard.kill();
        *self = Watchdog::spawn(self.args.clone(), self.log.clone());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The test's own ZooKeeper client, driven from plain threads.
struct Zk {
    runtime: tokio::runtime::Runtime,
    client: zk::Client,
    hosts: String,
}

/// A member of a shard as ZooKeeper has it.
#[derive(Debug, Clone)]
struct Member {
    addr: String,
    seq: u64,
    data: MemberData,
}

impl Zk {
    fn connect(zookeeper: &ZooKeeper) -> Zk {
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
    fn create_shard(&self, root: &str) -> String {
        let shard = format!("{root}/redis-0000");
        let mode = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        self.runtime.block_on(async {
            self.client.mkdir(root, &mode).await.unwrap();
            let data = ShardData::new(0, 4095).to_json();
            self.client.create(&shard, &data, &mode).await.unwrap();
        });
        shard
    }

    /// The shard's members in line order, with their data.
    fn members(&self, shard: &str) -> Vec<Member> {
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

    /// The addresses in line order.
    fn line(&self, shard: &str) -> Vec<String> {
        self.members(shard).into_iter().map(|m| m.addr).collect()
    }
}

/// A sync connection to a Redis; reads time out after 2 s.
fn redis_conn(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect to redis");
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    conn
}

/// `INFO replication` of the Redis on `port` as (key, value) lookups; empty
/// if it does not answer.
fn replication(port: u16) -> String {
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

fn field(info: &str, key: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn is_master(redis: &Redis) -> bool {
    field(&replication(redis.port), "role") == "master"
}

/// True when `replica` replicates from `master` with the link up.
fn is_synced_replica_of(replica: &Redis, master: &Redis) -> bool {
    let info = replication(replica.port);
    field(&info, "role") == "slave"
        && field(&info, "master_port") == master.port.to_string()
        && field(&info, "master_link_status") == "up"
}

fn dbsize(redis: &Redis) -> i64 {
    redis::cmd("DBSIZE")
        .query(&mut redis_conn(redis.port))
        .unwrap()
}

fn fill(redis: &Redis, prefix: &str, n: usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("SET").arg(format!("{prefix}:{i}")).arg(i).ignore();
    }
    pipe.query::<()>(&mut redis_conn(redis.port)).unwrap();
}

/// A shard with two Redis instances, each with its watchdog: `a` master,
/// `b` its synced replica, both in line.
struct Pair {
    zookeeper: ZooKeeper,
    zk: Zk,
    shard: String,
    a: Redis,
    b: Redis,
    wa: Watchdog,
    wb: Watchdog,
}

impl Pair {
    fn start(cluster: &str) -> Pair {
        Pair::start_with(cluster, |zookeeper, _| zookeeper.hosts())
    }

    /// `a_hosts` gives the ZooKeeper connect string for `a`'s watchdog.
    fn start_with(cluster: &str, a_hosts: impl FnOnce(&ZooKeeper, &Zk) -> String) -> Pair {
        let zookeeper = ZooKeeper::start();
        let zk = Zk::connect(&zookeeper);
        let shard = zk.create_shard(&format!("/redis/cluster/{cluster}"));
        let (a, b) = (start_redis(), start_redis());
        let wa = Watchdog::start(&a_hosts(&zookeeper, &zk), &a, &shard);
        wait_until("a to be the master", DEADLINE, || {
            zk.line(&shard) == [a.addr()]
        });
        let wb = Watchdog::start(&zookeeper.hosts(), &b, &shard);
        wait_until("b to join the line", DEADLINE, || {
            zk.line(&shard) == [a.addr(), b.addr()]
        });
        Pair {
            zookeeper,
            zk,
            shard,
            a,
            b,
            wa,
            wb,
        }
    }

    fn line(&self) -> Vec<String> {
        self.zk.line(&self.shard)
    }

    /// Waits until `master` is the only member and its Redis is master.
    fn wait_sole_master(&self, master: &Redis) {
        wait_until("the new master to be promoted", DEADLINE, || {
            self.line() == [master.addr()] && is_master(master)
        });
    }
}

#[test]
fn empty_shard_first_becomes_master_second_joins_after_first_sync() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/join");
    let (a, b) = (start_redis(), start_redis());
    let wa = Watchdog::start(&zookeeper.hosts(), &a, &shard);
    wait_until("a to register", DEADLINE, || zk.line(&shard) == [a.addr()]);
    let first = &zk.members(&shard)[0];
    assert_eq!(first.data.role, Role::Master);
    assert_eq!(first.data.addr, a.addr());
    assert!(!first.data.run_id.is_empty());
    assert!(is_master(&a));

    fill(&a, "k", 2000);
    // Hold the first sync back 1 s so there is a window to look at.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg("1")
        .query(&mut redis_conn(a.port))
        .unwrap();
    let wb = Watchdog::start(&zookeeper.hosts(), &b, &shard);
    let mut seen_unsynced_outside = false;
    wait_until("b to join the line", DEADLINE, || {
        let line = zk.line(&shard);
        let synced = is_synced_replica_of(&b, &a);
        if line.contains(&b.addr()) {
            assert!(synced, "b joined the line before its first sync");
            return true;
        }
        let info = replication(b.port);
        seen_unsynced_outside |= field(&info, "role") == "slave" && !synced;
        false
    });
    assert!(
        seen_unsynced_outside,
        "b was never seen replicating before it joined"
    );
    let members = zk.members(&shard);
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].addr, a.addr());
    assert!(members[1].seq > members[0].seq);
    assert_eq!(members[1].data.role, Role::Replica);
    assert_eq!(dbsize(&b), 2000);
    assert!(wb.log_text().contains("joined the line as a replica"));
    assert!(wa.log_text().contains("registered as its master"));
}

#[test]
fn killed_master_redis_fails_over_and_rejoins_as_replica() {
    let mut pair = Pair::start("kill");
    fill(&pair.a, "k", 100);
    wait_until("b to have the data", DEADLINE, || dbsize(&pair.b) == 100);

    let killed = Instant::now();
    pair.a.guard.kill();
    pair.wait_sole_master(&pair.b);
    let failover = killed.elapsed();
    println!("failover after kill -9 of the master redis: {failover:?}");
    assert!(failover < Duration::from_secs(5), "{failover:?}");
    assert!(pair.wa.log_text().contains("left the line"));
    assert!(pair.wb.log_text().contains("promoted to master"));

    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("failover")
        .query(&mut redis_conn(pair.b.port))
        .unwrap();
    pair.a = restart_redis(pair.a.port);
    wait_until("the old master to rejoin as a replica", DEADLINE, || {
        pair.line() == [pair.b.addr(), pair.a.addr()] && is_synced_replica_of(&pair.a, &pair.b)
    });
    assert_eq!(dbsize(&pair.a), 101);
    let after: String = redis::cmd("GET")
        .arg("after")
        .query(&mut redis_conn(pair.a.port))
        .unwrap();
    assert_eq!(after, "failover");
    assert!(is_master(&pair.b));
}

#[test]
fn killed_master_watchdog_fails_over_after_session_expiry() {
    let mut pair = Pair::start("session");
    fill(&pair.a, "k", 100);
    wait_until("b to have the data", DEADLINE, || dbsize(&pair.b) == 100);

    let killed = Instant::now();
    pair.wa.guard.kill();
    pair.wait_sole_master(&pair.b);
    let failover = killed.elapsed();
    println!("failover after kill -9 of the master's watchdog: {failover:?} (session {SESSION_MS} ms)");
    assert!(
        failover >= Duration::from_millis(SESSION_MS / 2),
        "promoted before the session could expire: {failover:?}"
    );
    assert!(failover < Duration::from_secs(6), "{failover:?}");
    // Nobody watches a: its Redis is still a master, out of the line.
    assert!(is_master(&pair.a));

    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("expiry")
        .query(&mut redis_conn(pair.b.port))
        .unwrap();
    pair.wa.restart();
    wait_until("the restarted watchdog to rejoin as a replica", DEADLINE, || {
        pair.line() == [pair.b.addr(), pair.a.addr()] && is_synced_replica_of(&pair.a, &pair.b)
    });
    assert_eq!(dbsize(&pair.a), 101);
}

#[test]
fn replica_without_first_sync_is_never_promoted() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/unsynced");
    let mut a = start_redis();
    let c = start_redis();
    let _wa = Watchdog::start(&zookeeper.hosts(), &a, &shard);
    wait_until("a to register", DEADLINE, || zk.line(&shard) == [a.addr()]);
    fill(&a, "k", 100);
    // Block every sync from a for a minute: c can never finish its first.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg("60")
        .query(&mut redis_conn(a.port))
        .unwrap();
    let wc = Watchdog::start(&zookeeper.hosts(), &c, &shard);
    wait_until("c to replicate from a", DEADLINE, || {
        field(&replication(c.port), "master_port") == a.port.to_string()
    });
    assert_eq!(zk.line(&shard), [a.addr()], "c joined before its first sync");

    a.guard.kill();
    wait_until("a to leave the line", DEADLINE, || zk.line(&shard).is_empty());
    // Watch c for 15 intervals: it must neither register nor be promoted.
    let watch_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < watch_until {
        assert!(zk.line(&shard).is_empty(), "c was registered");
        assert_eq!(field(&replication(c.port), "role"), "slave");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(wc.log_text().contains("first sync did not finish"));

    // a comes back (empty): it leads the empty shard, and c joins it.
    let a = restart_redis(a.port);
    wait_until("a to lead and c to join", DEADLINE, || {
        zk.line(&shard) == [a.addr(), c.addr()] && is_synced_replica_of(&c, &a)
    });
}

/// A writer that sends numbered SETs to whichever of two Redis accepts
/// writes, switching on any error, and records what was acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, Instant)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(ports: [u16; 2]) -> Writer {
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
                    None => match redis::Client::open(format!("redis://127.0.0.1:{}/", ports[target]))
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
                    },
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

    fn acked(&self) -> Vec<(u64, Instant)> {
        self.acked.lock().unwrap().clone()
    }

    fn stop(&mut self) -> Vec<(u64, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.acked()
    }
}

/// The acknowledged writes missing from `redis`.
fn missing(redis: &Redis, acked: &[(u64, Instant)]) -> Vec<u64> {
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
fn longest_gap(acked: &[(u64, Instant)]) -> Duration {
    acked
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .max()
        .unwrap_or_default()
}

#[test]
fn switchover_under_writes_loses_no_acknowledged_write() {
    let pair = Pair::start("switch");
    let mut writer = Writer::start([pair.a.port, pair.b.port]);
    wait_until("writes to flow", DEADLINE, || writer.acked().len() > 200);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(request_switchover(
            &pair.zk.hosts,
            &pair.shard,
            Duration::from_secs(1),
        ))
        .expect("switchover");
    assert_eq!(report.old_master, pair.a.addr());
    assert_eq!(report.new_master, pair.b.addr());
    let switched = Instant::now();
    wait_until("writes to flow to the new master", DEADLINE, || {
        writer.acked().iter().filter(|(_, at)| *at > switched).count() > 200
    });
    let acked = writer.stop();
    let gap = longest_gap(&acked);
    let lost = missing(&pair.b, &acked);
    println!(
        "switchover: master paused {:?} before leaving; longest gap between acknowledged writes {gap:?}; \
         {} writes acknowledged, {} lost",
        report.pause,
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(report.pause < Duration::from_secs(1), "{:?}", report.pause);
    assert!(gap < Duration::from_secs(1), "writes stalled {gap:?}");
    assert!(is_master(&pair.b));
    wait_until("the old master to rejoin as a replica", DEADLINE, || {
        pair.line() == [pair.b.addr(), pair.a.addr()] && is_synced_replica_of(&pair.a, &pair.b)
    });
    // The request is gone once answered.
    let control = "/redis/control/switch/redis-0000";
    let left = pair
        .zk
        .runtime
        .block_on(pair.zk.client.check_stat(control))
        .unwrap();
    assert!(left.is_none(), "{control} left behind");
}

#[test]
fn switchover_is_refused_without_a_replica() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard("/redis/cluster/alone");
    let a = start_redis();
    let _wa = Watchdog::start(&zookeeper.hosts(), &a, &shard);
    wait_until("a to register", DEADLINE, || zk.line(&shard) == [a.addr()]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime
        .block_on(request_switchover(&zk.hosts, &shard, Duration::from_secs(1)))
        .unwrap_err();
    assert!(
        err.to_string().contains("no replica in line"),
        "{err}"
    );
    let missing_shard = format!("{shard}-nope");
    let err = runtime
        .block_on(request_switchover(&zk.hosts, &missing_shard, Duration::from_secs(1)))
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(is_master(&a));
    assert_eq!(zk.line(&shard), [a.addr()]);
}

/// A TCP relay to ZooKeeper that a test can cut, as a network partition
/// between one watchdog and ZooKeeper.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (cut2, open2) = (cut.clone(), open.clone());
        // The thread ends with the test process; it holds no child process.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut open = open2.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay { port, cut, open }
    }

    fn hosts(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes every relayed connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
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
    let before = pair.wa.log_text().matches("split-brain guard: paused").count();

    let cut = Instant::now();
    relay.cut();
    wait_until("a's watchdog to pause writes", DEADLINE, || {
        pair.wa.log_text().matches("split-brain guard: paused").count() > before
    });
    println!("split-brain guard: writes paused {:?} after the cut", cut.elapsed());
    // A client still reaching a (a proxy with an old table) gets no answer.
    let mut client = TcpStream::connect(("127.0.0.1", pair.a.port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    client
        .write_all(&encode_command(&[b"SET", b"split", b"brain"]))
        .unwrap();
    let mut reply = [0u8; 64];
    let early = client.read(&mut reply);
    assert!(early.is_err(), "the cut-off master answered a write: {early:?}");

    pair.wait_sole_master(&pair.b);
    println!("split-brain guard: b promoted {:?} after the cut", cut.elapsed());
    assert!(is_master(&pair.a), "a is still a master, but paused");
    let late = client.read(&mut reply);
    assert!(late.is_err(), "the cut-off master answered a write: {late:?}");

    relay.restore();
    wait_until("a to rejoin as a replica of b", DEADLINE, || {
        pair.line() == [pair.b.addr(), pair.a.addr()] && is_synced_replica_of(&pair.a, &pair.b)
    });
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let n = client.read(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply[..n]);
    assert!(text.starts_with("-READONLY"), "held write got {text:?}");
    let value: Option<String> = redis::cmd("GET")
        .arg("split")
        .query(&mut redis_conn(pair.b.port))
        .unwrap();
    assert_eq!(value, None, "the held write reached the new master");
}

#[test]
fn watchdog_flags_and_file_are_checked() {
    let dir = temp_dir("watchdog-conf");
    let conf = dir.join("zoo-watchdog.conf");
    std::fs::write(&conf, "zkServersList = 127.0.0.1:1\nlogLevl = DEBUG\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_shardproxy-watchdog"))
        .arg("-f")
        .arg(&conf)
        .args(["--redis", "127.0.0.1:6379", "--shard", "/redis/cluster/x/redis-0000"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("zoo-watchdog.conf:2"), "{stderr}");
    assert!(stderr.contains("logLevl"), "{stderr}");

    // The shipped file parses; the watchdog then runs until stopped.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/zoo-watchdog.conf");
    let log = dir.join("w.log");
    // Nothing listens on either port: the watchdog only retries.
    let (zk_port, redis_port) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_shardproxy-watchdog"))
        .args(["-f", shipped, "--zk", &format!("127.0.0.1:{zk_port}")])
        .args(["--redis", &format!("127.0.0.1:{redis_port}")])
        .args(["--shard", "/redis/cluster/x/redis-0000"])
        .arg("-o")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ProcessGuard::new("watchdog", child);
    wait_until("the watchdog to log", DEADLINE, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("watchdog started"))
    });
    guard.signal("TERM");
    assert_eq!(guard.wait_exit(DEADLINE), Some(0));
}
