//! Taking over a running deployment of the ZooKeeper twemproxy and its old
//! watchdog (`../shared/seeds/003_aba80cdfdda47bae.txt`) without downtime.
//!
//! The starting state is the seed's: the znodes its zkCli session creates,
//! two shards of master + replica already replicating, with data, each
//! Redis registered by an old watchdog session (`ip:port-000000000N`, no
//! JSON), and clients writing through a running proxy (nutcracker with the
//! same placement). Then the proxy and the four watchdogs are replaced one
//! by one with shardproxy's, using the seed's files and command lines. No
//! Redis restarts, no data moves, no acknowledged write is lost, and each
//! shard keeps its master.

mod common;
#[path = "watchdog/harness.rs"]
#[allow(dead_code)]
mod harness;

use common::nutcracker::Nutcracker;
use common::proxy::Proxy;
use common::redis::encode_command;
use common::redis::Redis;
use common::zookeeper::ZooKeeper;
use common::{free_port, temp_dir, wait_until, ProcessGuard};
use harness::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zookeeper_client as zk;

const CLUSTER: &str = "/redis/cluster/icd";
const SHARDS: [&str; 2] = ["redis-0000", "redis-0001"];

/// The old watchdog: a ZooKeeper session holding one member znode named
/// the old way, with no data.
struct OldWatchdog {
    client: Option<zk::Client>,
}

/// The shard's member names in line order.
fn line_names(zk: &Zk, shard: &str) -> Vec<String> {
    zk.runtime.block_on(async {
        let mut names = zk.client.list_children(shard).await.unwrap();
        names.sort_by_key(|n| n.rsplit('-').next().unwrap().to_string());
        names
    })
}

/// The shard's member addresses in line order.
fn line_addrs(zk: &Zk, shard: &str) -> Vec<String> {
    line_names(zk, shard)
        .iter()
        .map(|n| n.rsplit_once('-').unwrap().0.to_string())
        .collect()
}

fn run_id(redis: &Redis) -> String {
    field(&server_info(redis.port), "run_id")
}

fn server_info(port: u16) -> String {
    redis::cmd("INFO")
        .arg("server")
        .query(&mut redis_conn(port))
        .unwrap()
}

/// Runs a `shardproxy-watchdog` command line as ops would type it, `-d`
/// included: the program goes to the background, so its process is found
/// by its (unique) settings file and stopped by PID when dropped.
struct Daemon {
    pid: u32,
}

impl Daemon {
    fn start(args: &[&str], conf: &Path) -> Daemon {
        let status = Command::new(env!("CARGO_BIN_EXE_shardproxy-watchdog"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "-d returns at once with success");
        // Every value on the command line (the settings file, the Redis
        // address, the shard path): the daemon keeps them, while `-d` is
        // dropped; the address tells apart the watchdogs sharing a file.
        let mut values: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| !a.starts_with('-'))
            .collect();
        let conf = conf.to_str().unwrap();
        if !values.contains(&conf) {
            values.push(conf);
        }
        let mut pid = None;
        wait_until("the watchdog in the background", DEADLINE, || {
            pid = find_process(&values);
            pid.is_some()
        });
        Daemon { pid: pid.unwrap() }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
    }
}

/// The PID of the watchdog whose command line holds every one of `values`.
fn find_process(values: &[&str]) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let ours = args.first()?.ends_with(b"shardproxy-watchdog")
                && values.iter().all(|v| args.contains(&v.as_bytes()));
            ours.then_some(pid)
        })
}

/// A client behind the VIP: writes `SET w:<i> <i>` through one proxy and,
/// when that proxy fails, through the other. Plain RESP, since twemproxy
/// closes the connection on the `CLIENT SETINFO` modern libraries send.
struct VipWriter {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, Instant)>>>,
    attempts: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VipWriter {
    fn start(ports: [u16; 2]) -> VipWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicU64::new(0));
        let (stop2, acked2, attempts2) = (stop.clone(), acked.clone(), attempts.clone());
        let thread = std::thread::spawn(move || {
            let mut target = 0;
            let mut conn: Option<BufReader<TcpStream>> = None;
            let mut i = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match TcpStream::connect(("127.0.0.1", ports[target])) {
                        Ok(stream) => {
                            stream
                                .set_read_timeout(Some(Duration::from_secs(3)))
                                .unwrap();
                            conn.insert(BufReader::new(stream))
                        }
                        Err(_) => {
                            target = 1 - target;
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    },
                };
                i += 1;
                attempts2.fetch_add(1, Ordering::Relaxed);
                let (key, value) = (format!("w:{i}"), i.to_string());
                let request = encode_command(&[b"SET", key.as_bytes(), value.as_bytes()]);
                let mut line = String::new();
                let ok = c.get_mut().write_all(&request).is_ok()
                    && c.read_line(&mut line).is_ok()
                    && line == "+OK\r\n";
                if ok {
                    acked2.lock().unwrap().push((i, Instant::now()));
                } else {
                    conn = None;
                    target = 1 - target;
                }
            }
        });
        VipWriter {
            stop,
            acked,
            attempts,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn stop(&mut self) -> (Vec<(u64, Instant)>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.attempts.load(Ordering::Relaxed))
    }
}

#[test]
fn the_seed_deployment_is_taken_over_without_downtime() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    // The seed's zkCli session: the nodes with empty data, then the weights.
    zk.runtime.block_on(async {
        let mode = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        // The seed's ensemble already had /redis/proxy and /redis/cluster.
        zk.client.mkdir("/redis/proxy", &mode).await.unwrap();
        zk.client.mkdir("/redis/cluster", &mode).await.unwrap();
        zk.client
            .create("/redis/proxy/icd", b"", &mode)
            .await
            .unwrap();
        zk.client.create(CLUSTER, b"", &mode).await.unwrap();
        for shard in SHARDS {
            let path = format!("{CLUSTER}/{shard}");
            zk.client.create(&path, b"", &mode).await.unwrap();
        }
        let weights = [r#"{"weight":"0-2047"}"#, r#"{"weight":"2048-4095"}"#];
        for (shard, weight) in SHARDS.iter().zip(weights) {
            let path = format!("{CLUSTER}/{shard}");
            zk.client
                .set_data(&path, weight.as_bytes(), None)
                .await
                .unwrap();
        }
    });
    // Two shards of master + replica, replicating, with data.
    let (m0, r0, m1, r1) = (start_redis(), start_redis(), start_redis(), start_redis());
    for (replica, master) in [(&r0, &m0), (&r1, &m1)] {
        let _: () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(master.port)
            .query(&mut redis_conn(replica.port))
            .unwrap();
    }
    fill(&m0, "seed0", 500);
    fill(&m1, "seed1", 500);
    wait_until("the replicas to sync", DEADLINE, || {
        is_synced_replica_of(&r0, &m0) && is_synced_replica_of(&r1, &m1)
    });
    let run_ids: Vec<String> = [&m0, &r0, &m1, &r1].iter().map(|r| run_id(r)).collect();
    // The old watchdogs: masters started first, so they lead their line.
    let old: Vec<OldWatchdog> = [(&m0, 0), (&r0, 0), (&m1, 1), (&r1, 1)]
        .iter()
        .map(|(redis, shard)| {
            zk.runtime.block_on(async {
                let client = zk::Client::connector()
                    .with_session_timeout(Duration::from_secs(2))
                    .connect(&zookeeper.hosts())
                    .await
                    .unwrap();
                let prefix = format!("{CLUSTER}/{}/{}-", SHARDS[*shard], redis.addr());
                let mode = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
                client.create(&prefix, b"", &mode).await.unwrap();
                OldWatchdog {
                    client: Some(client),
                }
            })
        })
        .collect();
    let shard_paths: Vec<String> = SHARDS.iter().map(|s| format!("{CLUSTER}/{s}")).collect();
    assert_eq!(line_addrs(&zk, &shard_paths[0]), [m0.addr(), r0.addr()]);

    // The running proxy: twemproxy's placement (md5, modula, equal weights
    // is the 0-2047 / 2048-4095 split), clients writing through it.
    let nutcracker = Nutcracker::start(&format!(
        "  redis: true\n  hash: md5\n  distribution: modula\n  servers:\n   - {}:2048\n   - {}:2048\n",
        m0.addr(),
        m1.addr()
    ));
    let sp_port = free_port();
    let mut writer = VipWriter::start([nutcracker.port, sp_port]);
    wait_until("writes through the old proxy", DEADLINE, || {
        writer.acked() > 100
    });

    // 1. The proxy: the seed's icd.yml, with this machine's addresses.
    let icd = std::fs::read_to_string("conf/icd.yml")
        .unwrap()
        .replace("127.0.0.1:22121", &format!("127.0.0.1:{sp_port}"))
        .replace(
            "zookeeper_host: 127.0.0.1:2181",
            &format!("zookeeper_host: {}", zookeeper.hosts()),
        )
        .replace("127.0.0.1:6379:0-2047", &format!("{}:0-2047", m0.addr()))
        .replace(
            "127.0.0.1:6380:2048-4095",
            &format!("{}:2048-4095", m1.addr()),
        );
    let proxy = Proxy::start_yaml(sp_port, &icd);
    wait_until("the new proxy to route from ZooKeeper", DEADLINE, || {
        let info = common::redis::RawClient::connect(sp_port).cmd_str(&["INFO", "zookeeper"]);
        info.contains(&format!(
            "name=redis-0000,range=0-2047,master={}",
            m0.addr()
        )) && info.contains(&format!(
            "name=redis-0001,range=2048-4095,master={}",
            m1.addr()
        ))
    });
    // The VIP moves: the old proxy stops, clients reconnect to the new one.
    drop(nutcracker);
    let moved_at = writer.acked();
    wait_until("writes through the new proxy", DEADLINE, || {
        writer.acked() > moved_at + 100
    });

    // 2. The watchdogs, with the seed's settings file and command line.
    let dir = temp_dir("takeover");
    let conf = dir.join("zoo-watchdog.conf");
    let conf_text = std::fs::read_to_string("conf/zoo-watchdog.conf")
        .unwrap()
        .replace("172.16.10.96:2181,172.16.10.163:2181", &zookeeper.hosts())
        .replace(
            "./zoo-watchdog.log",
            dir.join("zoo-watchdog.log").to_str().unwrap(),
        );
    std::fs::write(&conf, conf_text).unwrap();
    let conf_str = conf.to_str().unwrap();
    let mut watchdogs: Vec<ProcessGuard> = Vec::new();
    let mut daemons: Vec<Daemon> = Vec::new();
    let mut old = old;
    for (shard, (master, replica), (old_master, old_replica)) in
        [(0, (&m0, &r0), (0, 1)), (1, (&m1, &r1), (2, 3))]
    {
        let path = &shard_paths[shard];
        // The replica's watchdog first: it takes its Redis's place at the
        // end of the line; the old one is stopped.
        let child = Command::new(env!("CARGO_BIN_EXE_shardproxy-watchdog"))
            .args(["-f", conf_str, "-c", &replica.addr(), path])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        watchdogs.push(ProcessGuard::new("watchdog", child));
        wait_until("the new replica watchdog to register", DEADLINE, || {
            let names = line_names(&zk, path);
            names.len() == 2 && !names[1].ends_with("0000000001")
        });
        old[old_replica].client.take();
        // The master's watchdog, exactly as the seed starts it (-dc): it
        // registers behind the old member, the replica steps back behind
        // it, then the old watchdog stops.
        daemons.push(Daemon::start(
            &["-f", conf_str, "-dc", &master.addr(), path],
            &conf,
        ));
        wait_until("the line to read master, master, replica", DEADLINE, || {
            line_addrs(&zk, path) == [master.addr(), master.addr(), replica.addr()]
        });
        zk.runtime.block_on(async {
            drop(old[old_master].client.take());
        });
        wait_until("the old master member to go", DEADLINE, || {
            line_addrs(&zk, path) == [master.addr(), replica.addr()]
        });
    }
    // Some more writes, then the checks.
    let settled = writer.acked();
    wait_until("writes after the takeover", DEADLINE, || {
        writer.acked() > settled + 100
    });
    let (acked, attempts) = writer.stop();
    let mut conn = redis_conn(proxy.port);
    let lost: Vec<u64> = acked
        .iter()
        .filter(|(i, _)| {
            let value: Option<u64> = redis::cmd("GET")
                .arg(format!("w:{i}"))
                .query(&mut conn)
                .unwrap();
            value != Some(*i)
        })
        .map(|(i, _)| *i)
        .collect();
    eprintln!(
        "takeover: {} writes acknowledged of {attempts} attempted, longest gap {:?}, lost {}",
        acked.len(),
        longest_gap(&acked),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged then lost: {lost:?}");
    // Same masters, same replicas, no Redis restarted, the data in place.
    assert!(is_master(&m0) && is_master(&m1));
    assert!(is_synced_replica_of(&r0, &m0) && is_synced_replica_of(&r1, &m1));
    let after: Vec<String> = [&m0, &r0, &m1, &r1].iter().map(|r| run_id(r)).collect();
    assert_eq!(run_ids, after, "no Redis restarted");
    let info = common::redis::RawClient::connect(proxy.port).cmd_str(&["INFO", "zookeeper"]);
    assert!(
        info.contains(&format!(
            "name=redis-0000,range=0-2047,master={}",
            m0.addr()
        )),
        "{info}"
    );
    assert!(
        info.contains(&format!(
            "name=redis-0001,range=2048-4095,master={}",
            m1.addr()
        )),
        "{info}"
    );
    let kept: i64 = redis::cmd("EXISTS")
        .arg((0..500).map(|i| format!("seed0:{i}")).collect::<Vec<_>>())
        .query(&mut redis_conn(m0.port))
        .unwrap();
    assert_eq!(kept, 500, "the seed data stays where it was");
    drop(daemons);
    drop(watchdogs);
}
