//! Monitoring: the stats port speaks twemproxy's JSON (the same field names
//! as the real nutcracker, so existing dashboards keep working) and
//! `/metrics` is valid Prometheus text whose counts move with traffic.

mod common;

use common::nutcracker::Nutcracker;
use common::proxy::{stats_json, Proxy};
use common::redis::{RawClient, Redis};
use common::wait_until;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn read_all(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// Field names at each level: top level (without pools), pool (without
/// servers), server.
fn shape(doc: &Value, pool: &str, server: &str) -> [BTreeSet<String>; 3] {
    let top: BTreeSet<String> = keys(doc).into_iter().filter(|k| k != pool).collect();
    let pool_fields: BTreeSet<String> = keys(&doc[pool])
        .into_iter()
        .filter(|k| !doc[pool][k].is_object())
        .collect();
    [top, pool_fields, keys(&doc[pool][server])]
}

#[test]
fn stats_port_has_twemproxy_fields() {
    let redis = Redis::start();
    let body = format!("  redis: true\n  servers:\n   - {}:1 s1\n", redis.addr());
    let nutcracker = Nutcracker::start(&body);
    let proxy = Proxy::start(&body);
    let theirs = stats_json(nutcracker.stats_port);
    let mut client = RawClient::connect(proxy.port);
    for i in 0..10 {
        assert_eq!(client.cmd_str(&["SET", &format!("k{i}"), "v"]), "+OK\r\n");
    }
    let ours = stats_json(proxy.stats_port);
    // nutcracker names its pool after the test harness' pool name.
    let their_pool = keys(&theirs)
        .into_iter()
        .find(|k| theirs[k].is_object())
        .unwrap();
    assert_eq!(
        shape(&ours, "pool", "s1"),
        shape(&theirs, &their_pool, "s1")
    );
    assert_eq!(ours["pool"]["client_connections"], 1);
    assert_eq!(ours["pool"]["s1"]["requests"], 10);
    assert_eq!(ours["pool"]["s1"]["responses"], 10);
    assert_eq!(ours["pool"]["s1"]["server_connections"], 1);
    assert!(ours["pool"]["s1"]["request_bytes"].as_u64().unwrap() > 10 * 20);
    assert_eq!(ours["service"], "nutcracker");
}

/// `forward_error` counts what twemproxy counts: requests whose server gave
/// no reply. The proxy's own refusals (NOAUTH, a wrong password, an
/// unknown command, a wrong number of arguments) are not forwarding errors
/// (review: each of them counted, so a scanner set off alerts on
/// forwarding).
#[test]
fn forward_error_counts_only_requests_no_server_answered() {
    let mut redis = Redis::start_with(&["--requirepass", "secret"]);
    let body = format!(
        "  redis: true\n  redis_auth: secret\n  timeout: 1000\n  servers:\n   - {}:1 s1\n",
        redis.addr()
    );
    let proxy = Proxy::start(&body);
    let mut client = RawClient::connect(proxy.port);
    let refused = [
        vec!["GET", "k"],
        vec!["AUTH", "wrong"],
        vec!["AUTH", "secret"],
        vec!["NOSUCHCOMMAND"],
        vec!["GET"],
    ];
    for args in &refused {
        client.cmd_str(args);
    }
    assert_eq!(client.cmd_str(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(stats_json(proxy.stats_port)["pool"]["forward_error"], 0);
    redis.guard.kill();
    let failed = client.cmd_str(&["GET", "k"]);
    assert!(failed.starts_with("-ERR shard 's1': "), "{failed}");
    assert_eq!(stats_json(proxy.stats_port)["pool"]["forward_error"], 1);
}

/// Runs the reference Prometheus parser over `text`; returns its samples.
fn parse_prometheus(text: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = dir.join("target/clients/venv/bin/python");
    assert!(
        python.exists(),
        "run deploy/install-client-libs.sh (deploy/test.sh does)"
    );
    let mut child = Command::new(python)
        .arg(dir.join("tests/clients/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not valid Prometheus text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn sample(samples: &[String], prefix: &str) -> f64 {
    let line = samples
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sample {prefix} in {samples:#?}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn metrics(proxy: &Proxy) -> Vec<String> {
    let response = read_all(
        proxy.metrics_port,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse_prometheus(body)
}

/// Connections held open on the metrics port (requests sent a byte at a
/// time) leave the descriptors the client port needs: the port serves 16
/// at once, and each has 5 s in all (review: 300 slow requests held every
/// descriptor, and Redis clients got no answer; a byte every 2 s kept a
/// connection for ever).
#[test]
fn slow_metrics_requests_leave_the_client_port_served() {
    let redis = Redis::start();
    let port = common::free_port();
    let yaml = format!(
        "pool:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - {}:1 s1\n",
        redis.addr()
    );
    let proxy = Proxy::start_wrapped(port, &yaml, &["prlimit", "--nofile=64", "--"]);
    let mut held: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", proxy.metrics_port)).ok())
        .collect();
    let started = Instant::now();
    let mut client = RawClient::connect(port);
    for i in 0..20 {
        assert_eq!(client.cmd_str(&["SET", &format!("k{i}"), "v"]), "+OK\r\n");
    }
    // A byte every 300 ms: the proxy closes each within its 5 s.
    while !held.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{} slow requests still open after {:?}",
            held.len(),
            started.elapsed()
        );
        held.retain_mut(|conn| conn.write_all(b"G").is_ok() && !closed(conn));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        !proxy.log_text().contains("Too many open files"),
        "{}",
        proxy.log_text()
    );
    assert!(sample(&metrics(&proxy), "shardproxy_requests_total") >= 20.0);
}

/// Silent connections filling the metrics port do not keep a scrape out:
/// the oldest of them makes room (review: 16 idle connections, opened
/// again every 5 s, refused every scrape).
#[test]
fn silent_metrics_connections_do_not_keep_a_scrape_out() {
    let redis = Redis::start();
    let proxy = Proxy::start(&format!(
        "  redis: true\n  servers:\n   - {}:1 s1\n",
        redis.addr()
    ));
    let silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", proxy.metrics_port)).unwrap())
        .collect();
    let started = Instant::now();
    // Answered `200 OK` with the samples (`metrics` checks the head).
    assert_eq!(
        sample(&metrics(&proxy), "shardproxy_dedicated_connections{"),
        0.0
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the scrape took {:?}",
        started.elapsed()
    );
    drop(silent);

    // A scraper sending its request a byte at a time keeps its place
    // while silent connections keep coming (review: it was dropped as
    // soon as 16 newer ones came).
    let port = proxy.metrics_port;
    let slow = std::thread::spawn(move || {
        let mut scraper = TcpStream::connect(("127.0.0.1", port)).unwrap();
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" {
            scraper.write_all(&[*byte]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut text = String::new();
        let _ = scraper.read_to_string(&mut text);
        text
    });
    let mut flood = Vec::new();
    while !slow.is_finished() && flood.len() < 400 {
        flood.push(TcpStream::connect(("127.0.0.1", proxy.metrics_port)).unwrap());
        std::thread::sleep(Duration::from_millis(4));
    }
    let text = slow.join().unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text:?}");
}

/// True when the peer closed `conn` (a read gets end of file or a reset).
fn closed(conn: &mut TcpStream) -> bool {
    conn.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let gone = match conn.read(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    conn.set_nonblocking(false).unwrap();
    gone
}

#[test]
fn metrics_are_valid_prometheus_and_move() {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  servers:\n   - {}:0-2047\n   - {}:2048-4095\n",
        a.addr(),
        b.addr()
    ));
    let before = metrics(&proxy);
    let mut client = RawClient::connect(proxy.port);
    for i in 0..20 {
        assert_eq!(client.cmd_str(&["SET", &format!("k{i}"), "v"]), "+OK\r\n");
    }
    assert!(client
        .cmd_str(&["MGET", "k1", "k2", "k3", "k4"])
        .starts_with("*4"));
    let after = metrics(&proxy);
    let requests = r#"shardproxy_requests_total{pool="pool"}"#;
    assert_eq!(sample(&after, requests) - sample(&before, requests), 21.0);
    // Each SET of k0-k9 is 28 bytes, of k10-k19 29; the MGET 46. Replies:
    // 20 x +OK and the MGET's array of four one-byte values.
    let received = r#"shardproxy_client_received_bytes_total{pool="pool"}"#;
    assert_eq!(sample(&after, received) - sample(&before, received), 616.0);
    let sent = r#"shardproxy_client_sent_bytes_total{pool="pool"}"#;
    assert_eq!(sample(&after, sent) - sample(&before, sent), 100.0 + 32.0);
    assert_eq!(
        sample(
            &after,
            r#"shardproxy_command_calls_total{command="set",pool="pool"}"#
        ),
        20.0
    );
    assert_eq!(
        sample(
            &after,
            r#"shardproxy_command_calls_total{command="mget",pool="pool"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            r#"shardproxy_request_duration_seconds_count{pool="pool"}"#
        ),
        21.0
    );
    assert_eq!(
        sample(&after, r#"shardproxy_client_connections{pool="pool"}"#),
        1.0
    );
    let backend = |samples: &[String], addr: &str| {
        sample(
            samples,
            &format!(r#"shardproxy_backend_requests_total{{backend="{addr}""#),
        )
    };
    let sent = backend(&after, &a.addr()) + backend(&after, &b.addr());
    assert!(
        sent >= 21.0,
        "20 SETs and at least one MGET part reach the backends ({sent})"
    );
    let not_found = read_all(proxy.metrics_port, b"GET /nope HTTP/1.1\r\n\r\n");
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
}

/// The number after `field:` in an INFO text.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
}

fn info_u64(info: &str, field: &str) -> u64 {
    info_field(info, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {field} in {info}"))
}

/// INFO memory, persistence and replication describe the whole keyspace
/// as one Redis would (BullMQ and Sidekiq read `maxmemory_policy`,
/// dashboards `used_memory`), and still answer, naming the shard, when a
/// backend is down.
#[test]
fn info_describes_the_data_of_every_shard() {
    let mut shards = [
        Redis::start_with(&["--maxmemory", "100mb", "--maxmemory-policy", "noeviction"]),
        Redis::start_with(&["--maxmemory", "50mb", "--maxmemory-policy", "noeviction"]),
    ];
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  timeout: 500\n  servers:\n   - {}:0-2047\n   - {}:2048-4095\n",
        shards[0].addr(),
        shards[1].addr()
    ));
    let mut c = RawClient::connect(proxy.port);
    let value = "v".repeat(1000);
    for i in 0..300 {
        assert_eq!(c.cmd_str(&["SET", &format!("key:{i}"), &value]), "+OK\r\n");
    }
    let direct: Vec<String> = shards
        .iter()
        .map(|s| s.connect().cmd_str(&["INFO", "default"]))
        .collect();
    let sum = |field: &str| direct.iter().map(|i| info_u64(i, field)).sum::<u64>();

    let memory = c.cmd_str(&["INFO", "memory"]);
    assert!(memory.contains("# Memory\r\n"), "{memory}");
    let used = info_u64(&memory, "used_memory") as f64;
    let expected = sum("used_memory") as f64;
    // Each server's own count moves by the few KiB its INFO replies use.
    assert!(
        (used / expected - 1.0).abs() < 0.05,
        "{used} vs {expected}: {memory}"
    );
    assert_eq!(info_u64(&memory, "maxmemory"), 150 << 20, "{memory}");
    assert_eq!(info_field(&memory, "maxmemory_human"), Some("150.00M"));
    assert_eq!(info_field(&memory, "maxmemory_policy"), Some("noeviction"));

    let persistence = c.cmd_str(&["INFO", "persistence"]);
    assert_eq!(
        info_u64(&persistence, "rdb_changes_since_last_save"),
        sum("rdb_changes_since_last_save"),
        "{persistence}"
    );
    assert!(sum("rdb_changes_since_last_save") >= 300);
    assert_eq!(info_field(&persistence, "loading"), Some("0"));
    assert_eq!(
        info_field(&persistence, "rdb_last_bgsave_status"),
        Some("ok")
    );
    // INFO stats: the proxy's own counts, then the data's, summed (cache
    // dashboards graph the hit rate).
    assert!(c.cmd_str(&["GET", "key:1"]).starts_with("$1000"));
    for miss in ["missing:1", "missing:2"] {
        assert_eq!(c.cmd_str(&["GET", miss]), "$-1\r\n");
    }
    let stats = c.cmd_str(&["INFO", "stats"]);
    let direct_stats: Vec<String> = shards
        .iter()
        .map(|s| s.connect().cmd_str(&["INFO", "stats"]))
        .collect();
    let stat_sum = |field: &str| direct_stats.iter().map(|i| info_u64(i, field)).sum::<u64>();
    assert!(stats.contains("total_connections_received:"), "{stats}");
    for field in [
        "keyspace_hits",
        "keyspace_misses",
        "expired_keys",
        "evicted_keys",
    ] {
        assert_eq!(info_u64(&stats, field), stat_sum(field), "{field}: {stats}");
    }
    assert!(stat_sum("keyspace_hits") >= 1 && stat_sum("keyspace_misses") >= 2);
    let replication = c.cmd_str(&["INFO", "replication"]);
    assert!(
        replication.contains("role:master\r\nconnected_slaves:0\r\n"),
        "{replication}"
    );

    // The whole INFO has them in Redis's order.
    let all = c.cmd_str(&["INFO"]);
    let at = |title: &str| {
        all.find(title)
            .unwrap_or_else(|| panic!("{title} in {all}"))
    };
    let order = [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
    ];
    let order = order
        .iter()
        .chain(&["# Replication", "# CPU", "# Errorstats", "# Keyspace"]);
    let places: Vec<usize> = order.map(|t| at(t)).collect();
    assert!(places.windows(2).all(|w| w[0] < w[1]), "{all}");
    assert!(all.contains("db0:keys=300,"), "{all}");
    // As Redis: commandstats only when asked for (or with `all`).
    assert!(!all.contains("# Commandstats"), "{all}");
    assert!(c.cmd_str(&["INFO", "all"]).contains("# Commandstats"));
    let run_id = info_field(&all, "run_id").expect("run_id");
    assert!(
        run_id.len() == 40 && run_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{run_id}"
    );
    assert!(info_field(&all, "used_cpu_user").is_some(), "{all}");

    // Commands and errors counted by the servers, added up (review: the
    // sections were empty).
    assert!(c
        .cmd_str(&["LPUSH", "key:1", "x"])
        .starts_with("-WRONGTYPE"));
    let commands = c.cmd_str(&["INFO", "commandstats"]);
    let errors = c.cmd_str(&["INFO", "errorstats"]);
    let direct = |section: &str| -> Vec<String> {
        shards
            .iter()
            .map(|s| s.connect().cmd_str(&["INFO", section]))
            .collect()
    };
    let calls = |info: &str, command: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let direct_commands = direct("commandstats");
    let direct_gets: u64 = direct_commands.iter().map(|i| calls(i, "get")).sum();
    assert!(direct_gets >= 3, "{direct_commands:?}");
    assert_eq!(calls(&commands, "get"), direct_gets, "{commands}");
    let wrongtype = |info: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("errorstat_WRONGTYPE:count="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let direct_wrongtype: u64 = direct("errorstats").iter().map(|i| wrongtype(i)).sum();
    assert_eq!(direct_wrongtype, 1);
    assert_eq!(wrongtype(&errors), direct_wrongtype, "{errors}");

    // Shards that disagree are shown disagreeing.
    let mut second = shards[1].connect();
    assert_eq!(
        second.cmd_str(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]),
        "+OK\r\n"
    );
    let memory = c.cmd_str(&["INFO", "memory"]);
    assert_eq!(
        info_field(&memory, "maxmemory_policy"),
        Some("allkeys-lru,noeviction")
    );

    // A shard that answers INFO with an error (its password changed) is
    // named with it, not taken for an empty one (review: its keys left
    // the keyspace without a word).
    let mut locked = shards[1].connect();
    assert_eq!(
        locked.cmd_str(&["CONFIG", "SET", "requirepass", "changed"]),
        "+OK\r\n"
    );
    let killed = locked.cmd_str(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    assert!(killed.starts_with(':'), "{killed}");
    let refused = format!(
        "\r\nunavailable:{0}: NOAUTH Authentication required.\r\n",
        shards[1].addr()
    );
    wait_until(
        "INFO to name the locked shard",
        Duration::from_secs(5),
        || c.cmd_str(&["INFO", "keyspace"]).contains(&refused),
    );
    assert_eq!(
        locked.cmd_str(&["CONFIG", "SET", "requirepass", ""]),
        "+OK\r\n"
    );

    // A shard down: INFO still answers, with the other shard's figures,
    // and names what it could not ask.
    shards[1].guard.kill();
    let memory = c.cmd_str(&["INFO", "memory"]);
    assert!(memory.contains("\r\nunavailable:"), "{memory}");
    assert_eq!(info_u64(&memory, "maxmemory"), 100 << 20, "{memory}");
    // Once, however many sections the servers fill (review: once per
    // section), after the last of them.
    let all = c.cmd_str(&["INFO"]);
    let named = all.matches("\r\nunavailable:").count();
    assert_eq!(named, 1, "{all}");
    let keyspace = all.find("# Keyspace").expect("a keyspace section");
    assert!(all.find("\r\nunavailable:") > Some(keyspace), "{all}");
    assert_eq!(c.cmd_str(&["PING"]), "+PONG\r\n");
}

/// A proxy over one Redis.
fn one_server() -> (Redis, Proxy) {
    let redis = Redis::start();
    let proxy = Proxy::start(&format!(
        "  redis: true\n  servers:\n   - {}:1\n",
        redis.addr()
    ));
    (redis, proxy)
}

/// The metric of the clients holding a grown input buffer.
fn grown_input_buffers(proxy: &Proxy) -> f64 {
    sample(&metrics(proxy), "shardproxy_client_grown_input_buffers")
}

/// What is left of a large buffer once its request was answered (the start
/// of the next request, larger than a read) moves to a buffer of its own:
/// an idle client holding 20 KB of a request does not keep the 2 MB its
/// SET grew the buffer to. The request then completes as sent.
#[test]
fn a_request_begun_behind_a_large_one_lets_the_large_buffer_go() {
    let (_redis, proxy) = one_server();
    let large = vec![b'v'; 2 * 1024 * 1024];
    let next: Vec<u8> = (0..40 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let mut bytes = common::redis::encode_command(&[b"SET", b"large", &large]);
    let second = common::redis::encode_command(&[b"SET", b"next", &next]);
    let (begun, rest) = second.split_at(20 * 1024);
    bytes.extend_from_slice(begun);
    let mut client = RawClient::connect(proxy.port);
    client.send_raw(&bytes);
    assert_eq!(client.read_reply(), b"+OK\r\n");
    common::wait_until(
        "the large buffer to be let go while 20 KB of a request wait",
        Duration::from_secs(5),
        || grown_input_buffers(&proxy) == 0.0,
    );
    client.send_raw(rest);
    assert_eq!(client.read_reply(), b"+OK\r\n");
    assert_eq!(
        client.cmd(&[b"GET", b"next"]),
        [format!("${}\r\n", next.len()).as_bytes(), &next, b"\r\n"].concat()
    );
    assert_eq!(client.cmd(&[b"STRLEN", b"large"]), b":2097152\r\n");
}

/// A client part-way through a 1 MB SET holds a grown input buffer, which
/// the metrics and INFO count while it does and not once the SET is done.
#[test]
fn grown_input_buffers_are_counted_while_held() {
    let (_redis, proxy) = one_server();
    assert_eq!(grown_input_buffers(&proxy), 0.0);
    let value = vec![b'v'; 1024 * 1024];
    let mut set = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    let (head, tail) = set.split_at(600 * 1024);
    let mut client = RawClient::connect(proxy.port);
    client.reader.get_mut().write_all(head).unwrap();
    common::wait_until(
        "the partial SET to be counted",
        Duration::from_secs(5),
        || grown_input_buffers(&proxy) == 1.0,
    );
    let mut info = RawClient::connect(proxy.port);
    assert_eq!(
        info.info_number("clients", "client_grown_input_buffers"),
        Some(1)
    );
    client.reader.get_mut().write_all(tail).unwrap();
    assert_eq!(client.read_reply(), b"+OK\r\n");
    common::wait_until("the buffer to be let go", Duration::from_secs(5), || {
        grown_input_buffers(&proxy) == 0.0
    });
    assert_eq!(
        sample(&metrics(&proxy), "shardproxy_client_read_ahead_bytes"),
        0.0
    );
}

/// nutcracker's signals, as ops tooling for it sends them: SIGHUP reopens
/// the log file (logrotate moves it, then sends SIGHUP: the proxy kept
/// writing to the moved file), SIGTTIN and SIGTTOU change the log level,
/// SIGUSR1 and SIGUSR2 are ignored (they ended the proxy).
#[test]
fn nutcrackers_signals_reopen_the_log_and_stop_nothing() {
    let redis = Redis::start();
    let proxy = Proxy::start(&format!(
        "  redis: true\n  servers:\n   - {}:1\n",
        redis.addr()
    ));
    let rotated = proxy.log.with_extension("log.1");
    std::fs::rename(&proxy.log, &rotated).unwrap();
    proxy.guard.signal("HUP");
    common::wait_until("a new log file", Duration::from_secs(10), || {
        proxy.log_text().contains("SIGHUP: log file reopened")
    });
    let before = std::fs::read_to_string(&rotated).unwrap();
    assert!(before.contains("listening"), "{before}");
    assert!(!before.contains("log file reopened"), "{before}");
    // Started at -v 7 (debug): one step down is info.
    proxy.guard.signal("TTOU");
    common::wait_until("the level to change", Duration::from_secs(10), || {
        proxy
            .log_text()
            .contains("SIGTTOU: log level changed level=info")
    });
    for signal in ["USR1", "USR2"] {
        proxy.guard.signal(signal);
        common::wait_until("the signal to be ignored", Duration::from_secs(10), || {
            proxy
                .log_text()
                .contains(&format!("signal=\"SIG{signal}\""))
        });
    }
    assert_eq!(
        RawClient::connect(proxy.port).cmd_str(&["PING"]),
        "+PONG\r\n"
    );
}

/// INFO stats counts the bytes read from clients and written to them
/// exactly, and the recent request rate, under the names monitoring reads
/// from Redis (`total_net_input_bytes`, `instantaneous_ops_per_sec`, ...):
/// they were missing, so a dashboard of the proxy showed no traffic.
#[test]
fn info_stats_counts_client_bytes_and_the_recent_rate() {
    let (_redis, proxy) = one_server();
    let mut c = RawClient::connect(proxy.port);
    let info_request = common::redis::encode_command(&[b"INFO", b"stats"]);
    let before = c.cmd_str(&["INFO", "stats"]);
    let mut batch = Vec::new();
    for i in 0..100 {
        let key = format!("key:{i}");
        batch.extend(common::redis::encode_command(&[
            b"SET",
            key.as_bytes(),
            b"value",
        ]));
    }
    c.send_raw(&batch);
    for _ in 0..100 {
        assert_eq!(c.read_reply(), b"+OK\r\n");
    }
    let after = c.cmd_str(&["INFO", "stats"]);
    let grew = |field| info_u64(&after, field) - info_u64(&before, field);
    // Read: the SETs and the second INFO (sent before its reply was made).
    assert_eq!(
        grew("total_net_input_bytes"),
        (batch.len() + info_request.len()) as u64,
        "{after}"
    );
    // Written: the first INFO's reply and the SETs' replies.
    assert_eq!(
        grew("total_net_output_bytes"),
        (before.len() + 100 * b"+OK\r\n".len()) as u64,
        "{after}"
    );

    // Under a steady load the rate shows it; idle, it falls back within
    // Redis's 1.6 s window (the INFO polls themselves count, hence "few").
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let port = proxy.port;
        std::thread::spawn(move || {
            let mut client = RawClient::connect(port);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                assert_eq!(client.cmd(&[b"PING"]), b"+PONG\r\n");
            }
        })
    };
    let mut info = RawClient::connect(proxy.port);
    let mut stats = String::new();
    common::wait_until("the rate to show the load", Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(200));
        stats = info.cmd_str(&["INFO", "stats"]);
        info_u64(&stats, "instantaneous_ops_per_sec") >= 500
    });
    let kbps = info_field(&stats, "instantaneous_input_kbps").unwrap();
    assert!(kbps.parse::<f64>().unwrap() > 0.0, "{stats}");
    let kbps = info_field(&stats, "instantaneous_output_kbps").unwrap();
    assert!(kbps.parse::<f64>().unwrap() > 0.0, "{stats}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    common::wait_until(
        "the rate to fall once idle",
        Duration::from_secs(10),
        || {
            std::thread::sleep(Duration::from_millis(700));
            info.info_number("stats", "instantaneous_ops_per_sec") <= Some(3)
        },
    );
}
