//! redis-py 8 and ioredis 5, with their defaults, through a fleet of two
//! proxies over three shards: pub/sub across the proxies (redis-py in its
//! default protocol, RESP2 and RESP3; ioredis in RESP2, its only one),
//! MULTI/WATCH retry loops, SCAN over 100,000 keys, EVALSHA after SCRIPT
//! LOAD (tests/clients/scenarios.py and scenarios.js). And each library
//! through a ZooKeeper failover of a shard's master, driven from here while
//! tests/clients/failover.py (default protocol and RESP2) or failover.js
//! holds a subscription and a blocked BLPOP: BLPOP fails with "its outcome
//! is unknown", the next one works on the new master, and a message
//! published after the switch arrives.
//! `deploy/install-client-libs.sh` installs the libraries.

mod common;

use common::proxy::Proxy;
use common::redis::{RawClient, Redis};
use common::wait_until;
use common::zk_cluster::{add_member, create_shard, keys_in, start_proxy_with, wait_for_view};
use common::zookeeper::ZooKeeper;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The slot ranges of the three shards (md5, 4096 slots).
const RANGES: [(u32, u32); 3] = [(0, 1364), (1365, 2729), (2730, 4095)];

/// How long a whole client script may take on a busy machine.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let python = root().join("target/clients/venv/bin/python");
    assert!(
        python.exists(),
        "client libraries missing: run deploy/install-client-libs.sh (deploy/test.sh does)"
    );
    python
}

fn node() -> Command {
    let modules = root().join("target/clients/node_modules");
    assert!(
        modules.join("ioredis").exists(),
        "client libraries missing: run deploy/install-client-libs.sh (deploy/test.sh does)"
    );
    // Node resolves `require` from the script's folder upwards.
    let mut node = Command::new("node");
    node.env("NODE_PATH", modules);
    node
}

fn script(name: &str) -> PathBuf {
    root().join("tests/clients").join(name)
}

/// Three redis-servers and two proxies over them (hash tags `{...}`).
struct Fleet {
    shards: Vec<Redis>,
    proxies: [Proxy; 2],
}

fn fleet() -> Fleet {
    let shards: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let mut body =
        "  redis: true\n  hash: md5\n  distribution: modula\n  hash_tag: \"{}\"\n  servers:\n"
            .to_string();
    for (shard, (lo, hi)) in shards.iter().zip(RANGES) {
        body += &format!("   - {}:{lo}-{hi}\n", shard.addr());
    }
    let proxies = [Proxy::start(&body), Proxy::start(&body)];
    Fleet { shards, proxies }
}

/// `n` names per shard of [`RANGES`], as a JSON array.
fn names_on_every_shard(tag: &str, n: usize) -> String {
    let names: Vec<String> = RANGES
        .iter()
        .flat_map(|&(lo, hi)| keys_in(lo, hi, n, tag))
        .map(|name| format!("\"{name}\""))
        .collect();
    format!("[{}]", names.join(","))
}

/// A child process killed (and reaped) when dropped, so a failed assertion
/// never leaves a client script behind.
struct Script(Option<Child>);

impl Drop for Script {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a script with the two proxies' ports and the names, waits for it
/// within [`SCRIPT_DEADLINE`], and checks it printed "all ok"; then each
/// shard holds its share of the 100,000 keys the script scanned.
fn run_scenarios(mut command: Command, name: &str, prefix: &str) {
    let fleet = fleet();
    let names = format!(
        "{{\"channels\":{},\"keys\":{}}}",
        names_on_every_shard("ch", 2),
        names_on_every_shard(&format!("{prefix}:evalsha"), 1)
    );
    let child = command
        .arg(script(name))
        .arg(fleet.proxies[0].port.to_string())
        .arg(fleet.proxies[1].port.to_string())
        .arg(&names)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client script");
    let (status, stdout) = finish(child);
    assert!(status && stdout.ends_with("all ok\n"), "{name}:\n{stdout}");
    for shard in &fleet.shards {
        let mut direct = shard.connect();
        let pattern = format!("{prefix}:scan:*");
        let keys = direct.cmd_str(&["KEYS", &pattern]);
        let n: usize = keys.lines().next().unwrap()[1..].parse().unwrap();
        assert!(n > 20_000, "shard {} holds {n} of the keys", shard.addr());
    }
}

/// Waits for `child` within [`SCRIPT_DEADLINE`], killing it (by its PID)
/// if it takes longer: (success, stdout); stdout and stderr are printed.
fn finish(child: Child) -> (bool, String) {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(SCRIPT_DEADLINE).unwrap_or_else(|_| {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
        panic!("client script did not finish within {SCRIPT_DEADLINE:?}")
    });
    let out = out.expect("wait for the client script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

#[test]
fn redis_py_8_pubsub_transactions_scan_and_scripts_across_a_fleet() {
    run_scenarios(redis_py(), "scenarios.py", "py");
}

#[test]
fn ioredis_5_pubsub_transactions_scan_and_scripts_across_a_fleet() {
    run_scenarios(node(), "scenarios.js", "js");
}

/// How many clients of the server on `port` are blocked in a command.
fn blocked_clients(port: u16) -> u64 {
    RawClient::connect(port)
        .info_number("clients", "blocked_clients")
        .unwrap_or(0)
}

/// A ZooKeeper-routed fleet: shard redis-0000 (slots 0-2047) with master
/// `old` and its replica `new`, shard redis-0001 on `other`, two proxies.
/// The script (failover.py or failover.js, run by `command`, `extra` after
/// its arguments) subscribes and blocks in BLPOP on shard 0 through proxy
/// A; `new` then replaces `old`, and the script checks what its client
/// library sees.
async fn through_a_failover(mut command: Command, name: &str, extra: &[&str]) {
    let zookeeper = ZooKeeper::start();
    let (old, new, other) = (Redis::start(), Redis::start(), Redis::start());
    let ops = zookeeper.client().await;
    create_shard(&ops, "redis-0000", 0, 2047).await;
    create_shard(&ops, "redis-0001", 2048, 4095).await;
    let member_old = add_member(&ops, "redis-0000", &old.addr()).await;
    add_member(&ops, "redis-0001", &other.addr()).await;
    let replicaof = ["REPLICAOF", "127.0.0.1", &old.port.to_string()];
    assert_eq!(new.connect().cmd_str(&replicaof), "+OK\r\n");
    let proxies = [
        start_proxy_with(&zookeeper, &[&other], ""),
        start_proxy_with(&zookeeper, &[&other], ""),
    ];
    for proxy in &proxies {
        wait_for_view(proxy, &format!("master={}", old.addr()));
    }
    let queue = keys_in(0, 2047, 1, "queue").remove(0);
    let channel = keys_in(0, 2047, 1, "events").remove(0);
    let mut child = command
        .arg(script(name))
        .arg(proxies[0].port.to_string())
        .arg(proxies[1].port.to_string())
        .args([&queue, &channel])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the failover script");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut guard = Script(Some(child));
    // Lines of the script's stdout, read on a thread so waits have deadlines.
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while seen.last().map(String::as_str) != Some("ready") {
        let left = end.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("{name} not ready within 30 s: {seen:?}"),
        }
    }
    let old_port = old.port;
    wait_until(
        "BLPOP blocked on the old master",
        Duration::from_secs(5),
        || blocked_clients(old_port) == 1,
    );

    // The replica becomes the master; its member replaces the old one.
    assert_eq!(
        new.connect().cmd_str(&["REPLICAOF", "NO", "ONE"]),
        "+OK\r\n"
    );
    add_member(&ops, "redis-0000", &new.addr()).await;
    ops.delete(&member_old, None).await.unwrap();
    for proxy in &proxies {
        wait_for_view(proxy, &format!("master={}", new.addr()));
    }
    stdin.write_all(b"switched\n").unwrap();
    drop(stdin);

    let child = guard.0.take().unwrap();
    let (status, rest) = finish_with_lines(child, lines);
    seen.extend(rest);
    eprintln!("{}", seen.join("\n"));
    assert!(
        status && seen.last().map(String::as_str) == Some("all ok"),
        "{name}: {seen:#?}"
    );
}

fn redis_py() -> Command {
    let mut python = Command::new(python());
    python.env("PYTHONUNBUFFERED", "1");
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_8_subscription_and_blocked_blpop_through_a_master_failover() {
    through_a_failover(redis_py(), "failover.py", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_8_resp2_subscription_and_blocked_blpop_through_a_master_failover() {
    through_a_failover(redis_py(), "failover.py", &["2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioredis_5_subscription_and_blocked_blpop_through_a_master_failover() {
    through_a_failover(node(), "failover.js", &[]).await;
}

/// Waits for `child` within [`SCRIPT_DEADLINE`], its stdout already being
/// read into `lines`: (success, the lines after those already taken, up to
/// the end of its stdout).
fn finish_with_lines(child: Child, lines: mpsc::Receiver<String>) -> (bool, Vec<String>) {
    let (status, _) = finish(child);
    let mut rest = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        rest.push(line);
    }
    (status, rest)
}
