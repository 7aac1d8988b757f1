//! TLS, with real processes: clients (redis-cli, redis-py, redis-rs)
//! through a proxy whose listener speaks TLS, with and without client
//! certificates; a proxy speaking TLS to TLS-only redis-servers (plain and
//! shared connections, MGET across shards, BLPOP, pub/sub, SCRIPT KILL's
//! own connections, `tls-auth-clients yes`), through a watchdog-driven
//! failover; and what a wrong CA or a missing file looks like.

mod common;
#[allow(dead_code)]
#[path = "watchdog/harness.rs"]
mod harness;

use common::migration::admin;
use common::proxy::Proxy;
use common::redis::{RawClient, Redis};
use common::tls::{cli_text, redis_cmd, start_redis, Certs, Identity};
use common::wait_until;
use common::zk_cluster::{keys_in, start_proxy_with, ROOT};
use common::zookeeper::ZooKeeper;
use harness::{Watchdog, Zk, DEADLINE, FAST_TIMINGS};
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A proxy over `servers` (host:port:weight lines) with the pool `keys`.
/// A proxy over `servers` with pool keys `keys`. md5 + modula, not the
/// default ketama: ketama's ring depends on the servers' (random) ports,
/// and FNV puts keys that differ in their last byte next to each other on
/// it, so a test's keys could all land on one server. With modula the
/// placement depends on the keys alone.
fn proxy(keys: &str, servers: &[&Redis]) -> Proxy {
    let mut body = format!(
        "  redis: true\n  timeout: 3000\n  hash: md5\n  distribution: modula\n{keys}  servers:\n"
    );
    for s in servers {
        body += &format!("   - {}:1\n", s.addr());
    }
    Proxy::start(&body)
}

fn listen_keys(certs: &Certs, ca: bool) -> String {
    let mut keys = format!(
        "  tls_cert: {}\n  tls_key: {}\n",
        certs.cert(Identity::Server),
        certs.key(Identity::Server)
    );
    if ca {
        keys += &format!("  tls_ca: {}\n", certs.ca());
    }
    keys
}

fn server_keys(ca: &str) -> String {
    format!("  server_tls: true\n  server_tls_ca: {ca}\n")
}

fn identity(certs: &Certs, who: Identity) -> (String, String) {
    (certs.cert(who), certs.key(who))
}

#[test]
fn redis_cli_through_a_tls_listener_and_plain_clients_are_dropped() {
    let certs = Certs::generate();
    let redis = Redis::start();
    let proxy = proxy(&listen_keys(&certs, false), &[&redis]);
    let ca = certs.ca();
    assert_eq!(cli_text(proxy.port, &ca, None, &["SET", "k", "v"]), "OK");
    assert_eq!(cli_text(proxy.port, &ca, None, &["GET", "k"]), "v");
    // A plain-TCP client gets a TLS alert, not a reply, and is disconnected.
    let mut plain = RawClient::connect(proxy.port);
    plain.send_raw(b"*1\r\n$4\r\nPING\r\n");
    let mut seen = Vec::new();
    let _ = plain.reader.read_to_end(&mut seen);
    assert!(
        !seen.starts_with(b"+PONG"),
        "a plain client must not be served: {seen:?}"
    );
    let text = String::from_utf8_lossy(
        &Command::new("redis-cli")
            .args(["-p", &proxy.port.to_string(), "PING"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(!text.contains("PONG"), "{text}");
    // And the proxy goes on serving TLS clients.
    assert_eq!(cli_text(proxy.port, &ca, None, &["GET", "k"]), "v");
    // The harness's own port probe counts as one failure too.
    let info = cli_text(proxy.port, &ca, None, &["INFO", "stats"]);
    let failures: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("tls_handshake_failures:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(failures >= 2, "{info}");
}

/// A certificate replaced in place (the usual renewal: new files at the
/// same paths, then SIGHUP) is served to new connections (review: the
/// reload compared file names only, kept the old certificate and said
/// nothing).
#[test]
fn a_certificate_replaced_in_place_is_served_after_a_reload() {
    let certs = Certs::generate();
    let (live_cert, live_key) = (certs.path("live.pem"), certs.path("live.key"));
    let install = |who: Identity| {
        std::fs::copy(certs.cert(who), &live_cert).unwrap();
        std::fs::copy(certs.key(who), &live_key).unwrap();
    };
    install(Identity::Server);
    let redis = Redis::start();
    let keys = format!("  tls_cert: {live_cert}\n  tls_key: {live_key}\n");
    let proxy = proxy(&keys, &[&redis]);
    let (ca, other_ca) = (certs.ca(), certs.other_ca());
    assert_eq!(cli_text(proxy.port, &ca, None, &["SET", "k", "v"]), "OK");
    // The renewal: a certificate from the other CA, for the same names.
    install(Identity::Stranger);
    proxy.guard.signal("HUP");
    wait_until("the certificate to be reloaded", DEADLINE, || {
        proxy
            .log_text()
            .contains("TLS certificate, key and CA reloaded")
    });
    assert!(
        !proxy.log_text().contains("needs a restart"),
        "{}",
        proxy.log_text()
    );
    assert_eq!(cli_text(proxy.port, &other_ca, None, &["GET", "k"]), "v");
    let refused = cli_text(proxy.port, &ca, None, &["GET", "k"]);
    assert_ne!(refused, "v", "the old certificate is still served");
}

#[test]
fn tls_ca_requires_a_client_certificate_signed_by_it() {
    let certs = Certs::generate();
    let redis = Redis::start();
    let proxy = proxy(&listen_keys(&certs, true), &[&redis]);
    let ca = certs.ca();
    let (cert, key) = identity(&certs, Identity::Client);
    let good = Some((cert.as_str(), key.as_str()));
    assert_eq!(cli_text(proxy.port, &ca, good, &["SET", "k", "v"]), "OK");
    assert_eq!(cli_text(proxy.port, &ca, good, &["GET", "k"]), "v");
    // Without a certificate: the handshake (TLS 1.3: the first read) fails.
    let none = cli_text(proxy.port, &ca, None, &["GET", "k"]);
    eprintln!("no certificate: {none:?}");
    assert!(!none.contains('v') || none.contains("rror"), "{none}");
    assert!(
        none.contains("rror") || none.contains("SSL") || none.is_empty(),
        "what a client without a certificate sees: {none}"
    );
    // A certificate from another CA is refused the same way.
    let (cert, key) = identity(&certs, Identity::Stranger);
    let stranger = cli_text(proxy.port, &ca, Some((&cert, &key)), &["GET", "k"]);
    assert_ne!(stranger, "v", "a stranger's certificate must be refused");
    assert!(
        stranger.contains("rror") || stranger.contains("SSL") || stranger.is_empty(),
        "what a client with an untrusted certificate sees: {stranger}"
    );
    let log = proxy.log_text();
    assert!(log.contains("TLS handshake failed"), "{log}");
    // The proxy keeps serving.
    assert_eq!(cli_text(proxy.port, &ca, good, &["GET", "k"]), "v");
}

fn python() -> std::path::PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/clients/venv/bin/python");
    assert!(
        python.exists(),
        "client libraries missing: run deploy/install-client-libs.sh (deploy/test.sh does)"
    );
    python
}

const REDIS_PY: &str = r#"
import sys, redis
port, ca = int(sys.argv[1]), sys.argv[2]
cert = sys.argv[3] if len(sys.argv) > 3 else None
key = sys.argv[4] if len(sys.argv) > 4 else None
r = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca,
                ssl_certfile=cert, ssl_keyfile=key, socket_timeout=10)
r.set("py:k", "v" * 100000)
assert r.get("py:k") == b"v" * 100000
p = r.pipeline(transaction=False)
for i in range(500):
    p.set(f"py:{i}", i)
p.execute()
assert r.mget([f"py:{i}" for i in range(500)]) == [str(i).encode() for i in range(500)]
print("ok")
"#;

fn run_redis_py(port: u16, args: &[&str]) -> String {
    let out = Command::new(python())
        .args(["-c", REDIS_PY, &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn redis_py_with_ssl_through_the_proxy() {
    let certs = Certs::generate();
    let shards = [Redis::start(), Redis::start()];
    let open = proxy(&listen_keys(&certs, false), &[&shards[0], &shards[1]]);
    let ca = certs.ca();
    assert_eq!(run_redis_py(open.port, &[&ca]).trim(), "ok");
    let strict = proxy(&listen_keys(&certs, true), &[&shards[0], &shards[1]]);
    let (cert, key) = identity(&certs, Identity::Client);
    assert_eq!(run_redis_py(strict.port, &[&ca, &cert, &key]).trim(), "ok");
    let refused = run_redis_py(strict.port, &[&ca]);
    assert!(!refused.contains("ok"), "{refused}");
}

/// redis-py writes a whole pipeline before it reads a reply: over TLS too,
/// the proxy must read on while the replies it owes wait (the plain case
/// is in `data_path_faults.rs`).
const REDIS_PY_PIPELINE: &str = r#"
import signal, sys, time, redis
signal.alarm(60)  # stuck in its write for good without the read-on: fail
port, ca, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
r = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca, socket_timeout=30)
r.set("py:bulk", "v" * 100)
p = r.pipeline(transaction=False)
for i in range(count):
    p.get("py:bulk")
started = time.monotonic()
replies = p.execute()
assert replies == [b"v" * 100] * count, "a reply other than the value"
print("ok", round(time.monotonic() - started, 1), file=sys.stderr)
print("ok")
"#;

#[test]
fn a_tls_client_that_writes_its_whole_pipeline_before_reading_is_answered() {
    let certs = Certs::generate();
    let shards = [Redis::start(), Redis::start()];
    let proxy = proxy(&listen_keys(&certs, false), &[&shards[0], &shards[1]]);
    // 300,000 replies of 107 bytes: 32 MB, four times the output limit.
    let out = Command::new(python())
        .args(["-c", REDIS_PY_PIPELINE, &proxy.port.to_string()])
        .args([certs.ca(), "300000".into()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "{text}");
    eprintln!("{}", text.trim());
}

#[tokio::test]
async fn redis_rs_with_rustls_through_the_proxy() {
    use redis::{AsyncCommands, ClientTlsConfig, TlsCertificates};
    let certs = Certs::generate();
    let redis = Redis::start();
    let proxy = proxy(&listen_keys(&certs, true), &[&redis]);
    let read = |p: String| std::fs::read(p).unwrap();
    let tls = TlsCertificates {
        client_tls: Some(ClientTlsConfig {
            client_cert: read(certs.cert(Identity::Client)),
            client_key: read(certs.key(Identity::Client)),
        }),
        root_cert: Some(read(certs.ca())),
    };
    let url = format!("rediss://127.0.0.1:{}/", proxy.port);
    let client = redis::Client::build_with_tls(url.as_str(), tls).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn.set("rs:k", "v").await.unwrap();
    let got: String = conn.get("rs:k").await.unwrap();
    assert_eq!(got, "v");
    // Without a client certificate the proxy refuses.
    let tls = TlsCertificates {
        client_tls: None,
        root_cert: Some(read(certs.ca())),
    };
    let client = redis::Client::build_with_tls(url.as_str(), tls).unwrap();
    let refused = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        conn.get::<_, String>("rs:k").await
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("a refusal, not a hang");
    assert!(outcome.is_err(), "{outcome:?}");
}

/// Sends `args` through `client` and returns the reply as text.
fn cmd(client: &mut RawClient, args: &[&str]) -> String {
    client.cmd_str(args)
}

#[test]
fn the_proxy_speaks_tls_to_tls_only_redis_servers() {
    let certs = Certs::generate();
    let shards = [start_redis(&certs, &[]), start_redis(&certs, &[])];
    let proxy = proxy(&server_keys(&certs.ca()), &[&shards[0], &shards[1]]);
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(cmd(&mut client, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(cmd(&mut client, &["GET", "k"]), "$1\r\nv\r\n");
    // Keys on both shards: MSET and MGET split across the two.
    let keys: Vec<String> = (0..20).map(|i| format!("key:{i}")).collect();
    let mut mset = vec!["MSET"];
    for k in &keys {
        mset.extend([k.as_str(), k.as_str()]);
    }
    assert_eq!(cmd(&mut client, &mset), "+OK\r\n");
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let reply = cmd(&mut client, &mget);
    for k in &keys {
        assert!(reply.contains(&format!("\r\n{k}\r\n")), "{reply}");
    }
    let sizes: Vec<String> = shards
        .iter()
        .map(|shard| redis_cmd(&certs, shard, &["DBSIZE"]))
        .collect();
    assert!(
        sizes.iter().all(|s| s != "0"),
        "both shards hold keys: {sizes:?}"
    );
    // A blocking BLPOP on a dedicated connection, freed by an LPUSH.
    let port = proxy.port;
    let blocked =
        std::thread::spawn(move || RawClient::connect(port).cmd_str(&["BLPOP", "queue", "10"]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cmd(&mut client, &["LPUSH", "queue", "job"]), ":1\r\n");
    assert_eq!(
        blocked.join().unwrap(),
        "*2\r\n$5\r\nqueue\r\n$3\r\njob\r\n"
    );
    // SUBSCRIBE rides a link of its own to the shard.
    let mut subscriber = RawClient::connect(proxy.port);
    assert_eq!(
        cmd(&mut subscriber, &["SUBSCRIBE", "news"]),
        "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    wait_until("the message to arrive", DEADLINE, || {
        cmd(&mut client, &["PUBLISH", "news", "hello"]) == ":1\r\n"
    });
    assert_eq!(
        String::from_utf8_lossy(&subscriber.read_reply()),
        "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    // SCRIPT KILL opens short connections of its own: TLS too.
    let kill = cmd(&mut client, &["SCRIPT", "KILL"]);
    assert!(kill.contains("NOTBUSY"), "{kill}");
}

#[test]
fn client_certificates_for_tls_auth_clients() {
    let certs = Certs::generate();
    let redis = start_redis(&certs, &["--tls-auth-clients", "yes"]);
    let mut keys = server_keys(&certs.ca());
    keys += &format!(
        "  server_tls_cert: {}\n  server_tls_key: {}\n",
        certs.cert(Identity::Client),
        certs.key(Identity::Client)
    );
    let with_cert = proxy(&keys, &[&redis]);
    let mut client = RawClient::connect(with_cert.port);
    assert_eq!(cmd(&mut client, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(cmd(&mut client, &["GET", "k"]), "$1\r\nv\r\n");
    // Without one, Redis refuses the connection: a clear error, no hang.
    let without = proxy(&server_keys(&certs.ca()), &[&redis]);
    let reply = RawClient::connect(without.port).cmd_str(&["GET", "k"]);
    assert!(
        reply.starts_with("-ERR") && reply.contains(&redis.addr()),
        "{reply}"
    );
}

#[test]
fn a_wrong_backend_ca_is_a_clear_error_naming_the_backend() {
    let certs = Certs::generate();
    let redis = start_redis(&certs, &[]);
    let proxy = proxy(&server_keys(&certs.other_ca()), &[&redis]);
    let started = std::time::Instant::now();
    let reply = RawClient::connect(proxy.port).cmd_str(&["GET", "k"]);
    assert!(started.elapsed() < Duration::from_secs(3), "no hang");
    assert!(
        reply.starts_with("-ERR")
            && reply.contains(&redis.addr())
            && reply.contains("TLS handshake failed"),
        "{reply}"
    );
}

#[test]
fn missing_tls_files_stop_the_start_and_a_reload_keeps_the_old_config() {
    let dir = common::temp_dir("tls-conf");
    let conf = dir.join("pool.yml");
    std::fs::write(
        &conf,
        "p:\n  listen: 127.0.0.1:1\n  redis: true\n  tls_cert: /nonexistent/cert.pem\n  \
         tls_key: /nonexistent/key.pem\n  servers:\n   - 127.0.0.1:6379:1\n",
    )
    .unwrap();
    let out = Command::new(common::proxy::binary())
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("'tls_cert' /nonexistent/cert.pem"), "{text}");

    // A reload naming a missing CA changes nothing.
    let certs = Certs::generate();
    let redis = start_redis(&certs, &[]);
    let proxy = proxy(&server_keys(&certs.ca()), &[&redis]);
    let yaml = std::fs::read_to_string(&proxy.conf).unwrap();
    std::fs::write(
        &proxy.conf,
        yaml.replace(&certs.ca(), "/nonexistent/ca.pem"),
    )
    .unwrap();
    proxy.guard.signal("HUP");
    wait_until("the reload to be rejected", DEADLINE, || {
        proxy.log_text().contains("pool file rejected")
    });
    assert!(
        proxy.log_text().contains("/nonexistent/ca.pem"),
        "{}",
        proxy.log_text()
    );
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(cmd(&mut client, &["SET", "k", "v"]), "+OK\r\n");
}

#[test]
fn failover_between_tls_redis_servers_through_watchdogs() {
    let certs = Certs::generate();
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let shard = zk.create_shard_range(ROOT, "redis-0000", 0, 4095);
    let replication = ["--tls-replication", "yes"];
    let mut a = start_redis(&certs, &replication);
    let b = start_redis(&certs, &replication);
    let ca = certs.ca();
    let flags = [&["--tls-ca", ca.as_str()][..], &FAST_TIMINGS[..]].concat();
    let wa = Watchdog::start_with(&zookeeper.hosts(), &a, &shard, &flags);
    wait_until("a to be the master", DEADLINE, || {
        zk.line(&shard) == [a.addr()]
    });
    let _wb = Watchdog::start_with(&zookeeper.hosts(), &b, &shard, &flags);
    wait_until("b to replicate a over TLS", DEADLINE, || {
        zk.line(&shard) == [a.addr(), b.addr()]
            && redis_cmd(&certs, &b, &["INFO", "replication"]).contains("master_link_status:up")
    });
    let keys = format!("  timeout: 1000\n{}", server_keys(&ca));
    let proxy = start_proxy_with(&zookeeper, &[&a], &keys);
    let mut client = RawClient::connect(proxy.port);
    let written = keys_in(0, 4095, 20, "tls");
    for k in &written {
        assert_eq!(cmd(&mut client, &["SET", k, k]), "+OK\r\n");
    }
    wait_until("b to hold every key", DEADLINE, || {
        redis_cmd(&certs, &b, &["DBSIZE"]) == written.len().to_string()
    });
    // The admin tool reaches the Redis servers with the pool's own
    // server_tls keys.
    let status = admin(&proxy.conf, &["status"]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    // ROLE comes from the Redis itself: read over TLS.
    let a_line = status
        .lines()
        .find(|l| l.starts_with("redis-0000") && l.contains(&format!("{}  0", a.addr())))
        .unwrap_or_default();
    assert_eq!(a_line.matches("master").count(), 2, "{status}");
    a.guard.signal("KILL");
    wait_until("the proxy to answer from b", DEADLINE, || {
        RawClient::connect(proxy.port).cmd_str(&["SET", "after", "1"]) == "+OK\r\n"
    });
    assert_eq!(zk.line(&shard), [b.addr()], "{}", wa.log_text());
    assert!(redis_cmd(&certs, &b, &["INFO", "replication"]).contains("role:master"));
    let mut client = RawClient::connect(proxy.port);
    for k in &written {
        assert_eq!(
            cmd(&mut client, &["GET", k]),
            format!("${}\r\n{k}\r\n", k.len())
        );
    }
    a.guard.kill();
}

/// Online migration between TLS-only servers: Redis sends MIGRATE over
/// TLS when `tls-cluster yes` (its setting for server-to-server links),
/// the proxies' lane and the admin's mover speak TLS to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_moves_between_tls_only_redis_servers() {
    use common::zk_cluster::{add_member, create_shard};
    let certs = Certs::generate();
    let zookeeper = ZooKeeper::start();
    let cluster_links = ["--tls-cluster", "yes"];
    let a = start_redis(&certs, &cluster_links);
    let b = start_redis(&certs, &cluster_links);
    let ops = zookeeper.client_with_session(Duration::from_secs(20)).await;
    create_shard(&ops, "redis-0000", 0, 4095).await;
    add_member(&ops, "redis-0000", &a.addr()).await;
    let keys = format!("  timeout: 1000\n{}", server_keys(&certs.ca()));
    let proxy = start_proxy_with(&zookeeper, &[&a], &keys);
    let staying = keys_in(0, 2047, 300, "stay");
    let moving = keys_in(2048, 4095, 300, "move");
    let mut client = RawClient::connect(proxy.port);
    for k in staying.iter().chain(&moving) {
        assert_eq!(cmd(&mut client, &["SET", k, k]), "+OK\r\n");
    }
    let run = |args: &[&str]| {
        let out = admin(&proxy.conf, args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    run(&["add-shard", "redis-0001"]);
    add_member(&ops, "redis-0001", &b.addr()).await;
    // A slow move: the keys read meanwhile go through the proxy's lane
    // (MIGRATE by the source over TLS, then the read on the target).
    let mut mover = admin(
        &proxy.conf,
        &[
            "migrate",
            "2048-4095",
            "--to",
            "redis-0001",
            "--rate",
            "100",
        ],
    )
    .stdout(std::process::Stdio::null())
    .spawn()
    .unwrap();
    wait_until("the mover to start", DEADLINE, || {
        redis_cmd(&certs, &b, &["DBSIZE"]) != "0"
    });
    let before = redis_cmd(&certs, &b, &["DBSIZE"]);
    for k in moving.iter().rev().take(50) {
        assert_eq!(
            cmd(&mut client, &["GET", k]),
            format!("${}\r\n{k}\r\n", k.len()),
            "{k} during the move"
        );
        assert_eq!(
            redis_cmd(&certs, &b, &["EXISTS", k]),
            "1",
            "{k} not moved on access"
        );
    }
    assert!(
        before.parse::<usize>().unwrap() < moving.len() - 50,
        "the mover was too fast: {before}"
    );
    assert!(mover.wait().unwrap().success());
    // The range is the new shard's in ZooKeeper (status exits 1 here: no
    // shard has a replica).
    let status = admin(&proxy.conf, &["status"]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("redis-0001") && l.contains("2048-4095")),
        "{status}"
    );
    assert_eq!(redis_cmd(&certs, &b, &["DBSIZE"]), moving.len().to_string());
    assert_eq!(
        redis_cmd(&certs, &a, &["DBSIZE"]),
        staying.len().to_string()
    );
    let mut client = RawClient::connect(proxy.port);
    for k in staying.iter().chain(&moving) {
        assert_eq!(
            cmd(&mut client, &["GET", k]),
            format!("${}\r\n{k}\r\n", k.len()),
            "{k}"
        );
    }
}

/// A TLS client over `client_connections` gets Redis's refusal after the
/// handshake, as from Redis (review: it was closed without a word, and
/// redis-cli died of SIGPIPE printing nothing).
#[test]
fn a_tls_client_over_the_limit_is_told_why() {
    let certs = Certs::generate();
    let redis = Redis::start();
    let keys = format!("{}  client_connections: 2\n", listen_keys(&certs, false));
    let proxy = proxy(&keys, &[&redis]);
    let ca = certs.ca();
    let counted = || {
        proxy.stats()["pool"]["client_connections"]
            .as_u64()
            .unwrap()
    };
    // The harness's port probe holds a place until its handshake fails.
    wait_until("the probe's place free", Duration::from_secs(10), || {
        counted() == 0
    });
    // Two clients that never start their handshake hold both places.
    let holders: Vec<RawClient> = (0..2).map(|_| RawClient::connect(proxy.port)).collect();
    wait_until("both places taken", Duration::from_secs(10), || {
        counted() == 2
    });
    assert_eq!(
        cli_text(proxy.port, &ca, None, &["PING"]),
        "ERR max number of clients reached"
    );
    drop(holders);
    wait_until("a place free again", Duration::from_secs(15), || {
        cli_text(proxy.port, &ca, None, &["PING"]) == "PONG"
    });
}
