//! A backend that stops reading (SIGSTOP) while clients keep arriving, in
//! pools without `timeout`: what the proxy holds for it stays bounded, and
//! what it accepted is still written once the backend reads again; out of
//! descriptors, sessions waiting on it for clients that left let go, and
//! half-closed clients that still read keep every reply. Timeouts and
//! reading ahead behind a stall: `stalled_backend_timeouts.rs`.

mod common;

use common::proxy::Proxy;
use common::redis::{encode_command, reply_line_within, RawClient, Redis};
use common::rss_kib;
use common::zk_cluster::keys_in;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Two shards and a pool without `timeout`: a request for a stopped
/// backend waits for it for ever, as it would with Redis itself.
fn two_shards_without_timeout() -> (Proxy, [Redis; 2]) {
    let shards = [Redis::start(), Redis::start()];
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  servers:\n   - {}:0-2047 stalled\n   - {}:2048-4095 other\n",
        shards[0].addr(),
        shards[1].addr()
    ));
    (proxy, shards)
}

/// Writes `key` (of the first shard) through `proxy`, so that its
/// connection is up, then stops the first shard: a connected client, the
/// proxy's pid and its RSS in KiB before the stop.
fn warm_then_stop_the_first(
    proxy: &Proxy,
    shards: &[Redis; 2],
    key: &str,
) -> (RawClient, u32, u64) {
    let mut admin = RawClient::connect(proxy.port);
    assert_eq!(admin.cmd_str(&["SET", key, "warm"]), "+OK\r\n");
    let pid = proxy.guard.pid();
    let before = rss_kib(pid);
    shards[0].guard.signal("STOP");
    (admin, pid, before)
}

/// Clients that each send a 1 MB SET to a stopped backend and leave used
/// to grow the proxy by 1 MB each, without end (300 of them: 6 MB to
/// 313 MB). Once 64 MiB wait for a backend that has read nothing for a
/// second, a new request for it gets an error at once; the other shard
/// serves throughout, and every write accepted before is still made when
/// the backend reads again.
#[test]
fn clients_that_leave_writes_for_a_stopped_backend_hold_bounded_memory() {
    let (proxy, shards) = two_shards_without_timeout();
    let keys = keys_in(0, 2047, 200, "left");
    let other_key = keys_in(2048, 4095, 1, "other").remove(0);
    let mut admin = RawClient::connect(proxy.port);
    assert_eq!(admin.cmd_str(&["SET", &keys[0], "warm"]), "+OK\r\n");
    assert_eq!(admin.cmd_str(&["SET", &other_key, "warm"]), "+OK\r\n");
    let pid = proxy.guard.pid();
    let before = rss_kib(pid);
    shards[0].guard.signal("STOP");
    let value = vec![b'v'; 1 << 20];
    let set = |key: &str| encode_command(&[b"SET", key.as_bytes(), &value]);

    // 48 MB from clients that leave at once: under the bound, all kept.
    let kept = 48;
    for key in &keys[..kept] {
        RawClient::connect(proxy.port).send_raw(&set(key));
    }
    // Then clients that wait a moment for their reply before leaving,
    // until one is refused.
    let started = Instant::now();
    let mut refused = None;
    for key in &keys[kept..] {
        let mut client = RawClient::connect(proxy.port);
        client.send_raw(&set(key));
        if let Some(reply) = reply_line_within(&mut client, Duration::from_millis(100)) {
            refused = Some((key.clone(), reply));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no request was refused"
        );
    }
    let (refused_key, reply) = refused.expect("a request was refused");
    let addr = shards[0].addr();
    assert!(
        reply.starts_with(&format!(
            "-ERR shard 'stalled': backend {addr} is unavailable: it has read no request for at least "
        )),
        "{reply}"
    );
    // The stall is at least the 1 s grace.
    let stalled: f64 = reply
        .split("at least ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(0.0);
    assert!(stalled >= 1.0, "{reply}");
    assert!(
        reply.ends_with(" MiB of requests of clients that left wait for it; no more are queued until it reads\r\n"),
        "{reply}"
    );
    let at_bound = rss_kib(pid).saturating_sub(before);
    // 40 MB more from clients that leave: refused, and nothing held.
    // 40 MB more: each refused at once, and nothing held.
    for key in &keys[150..190] {
        let mut client = RawClient::connect(proxy.port);
        client.send_raw(&set(key));
        let reply = reply_line_within(&mut client, Duration::from_secs(5));
        assert!(
            reply
                .as_deref()
                .is_some_and(|r| r.contains("no more are queued")),
            "{reply:?}"
        );
    }
    // The other shard serves while this one is stopped.
    assert_eq!(admin.cmd_str(&["GET", &other_key]), "$4\r\nwarm\r\n");
    let after = rss_kib(pid).saturating_sub(before);
    assert!(
        at_bound < 100 * 1024,
        "RSS grew by {at_bound} KiB to the bound"
    );
    assert!(
        after < at_bound + 16 * 1024,
        "RSS grew by {} KiB past the bound",
        after - at_bound
    );

    shards[0].guard.signal("CONT");
    // Every write accepted before the bound is made.
    let mut direct = shards[0].connect();
    let mut exists = vec!["EXISTS"];
    exists.extend(keys[..kept].iter().map(String::as_str));
    common::wait_until(
        "the kept writes to be made",
        Duration::from_secs(20),
        || direct.cmd_str(&exists) == format!(":{kept}\r\n"),
    );
    for key in &keys[..kept] {
        assert_eq!(direct.cmd_str(&["STRLEN", key]), ":1048576\r\n", "{key}");
    }
    assert_eq!(direct.cmd_str(&["EXISTS", &refused_key]), ":0\r\n");
    // And the backend takes requests again.
    assert_eq!(admin.cmd_str(&["SET", &keys[199], "again"]), "+OK\r\n");
}

/// The same through split commands: clients that each send an MSET of a
/// 1 MB value for the stopped shard and a small one for the other, and
/// leave. The parts of a split command did not count as their client's
/// that left, and 150 such clients held 150 MB without a refusal.
#[test]
fn clients_that_leave_split_writes_for_a_stopped_backend_hold_bounded_memory() {
    let (proxy, shards) = two_shards_without_timeout();
    let keys = keys_in(0, 2047, 150, "left");
    let others = keys_in(2048, 4095, 150, "other");
    let (_admin, pid, before) = warm_then_stop_the_first(&proxy, &shards, &keys[0]);
    let value = vec![b'v'; 1 << 20];
    let mset = |i: usize| {
        encode_command(&[
            b"MSET",
            keys[i].as_bytes(),
            &value,
            others[i].as_bytes(),
            b"small",
        ])
    };
    let mut refused = None;
    for i in 0..keys.len() {
        let mut client = RawClient::connect(proxy.port);
        client.send_raw(&mset(i));
        if let Some(reply) = reply_line_within(&mut client, Duration::from_millis(100)) {
            refused = Some((i, reply));
            break;
        }
    }
    let grown = rss_kib(pid).saturating_sub(before);
    let (refused_at, reply) = refused.expect("no MSET was refused");
    assert!(
        reply.contains("no more are queued until it reads"),
        "{reply}"
    );
    assert!(
        grown < 100 * 1024,
        "RSS grew by {grown} KiB before MSET {refused_at} was refused"
    );
    shards[0].guard.signal("CONT");
    // The writes accepted before the refusal are made.
    let mut direct = shards[0].connect();
    common::wait_until(
        "the kept writes to be made",
        Duration::from_secs(20),
        || direct.cmd_str(&["EXISTS", &keys[refused_at - 1]]) == ":1\r\n",
    );
    assert_eq!(direct.cmd_str(&["STRLEN", &keys[1]]), ":1048576\r\n");
}

/// Clients that each pipeline five 1 MB SETs to a stopped backend and
/// close, more than the proxy reads ahead of their shut windows: their
/// close was not seen behind the unread requests, so what they had in
/// flight never counted as a client's that left, and no request was
/// refused however many came. Now the socket is asked every 200 ms: a
/// request is refused at the bound, and once the backend reads, the
/// writes the clients had in flight are made.
#[test]
fn clients_that_close_behind_unread_requests_are_seen_gone() {
    let (proxy, shards) = two_shards_without_timeout();
    let keys = keys_in(0, 2047, 200, "unread");
    let (mut admin, pid, before) = warm_then_stop_the_first(&proxy, &shards, &keys[0]);
    let value = vec![b'v'; 1 << 20];
    let set = |key: &str| encode_command(&[b"SET", key.as_bytes(), &value]);
    let per_client = 5;
    let leaving = 25;
    for batch in keys[..leaving * per_client].chunks(per_client) {
        let mut client = RawClient::connect(proxy.port);
        let requests: Vec<Vec<u8>> = batch.iter().map(|key| set(key)).collect();
        client.send_raw(&requests.concat());
    }
    let mut refused = None;
    let started = Instant::now();
    for key in &keys[leaving * per_client..] {
        let mut client = RawClient::connect(proxy.port);
        client.send_raw(&set(key));
        if let Some(reply) = reply_line_within(&mut client, Duration::from_millis(300)) {
            refused = Some(reply);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no refusal");
    }
    let reply = refused.expect("a request was refused");
    assert!(
        reply.contains("no more are queued until it reads"),
        "{reply}"
    );
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 150 * 1024, "RSS grew by {grown} KiB");

    shards[0].guard.signal("CONT");
    // Once the backend reads again, new requests are queued.
    common::wait_until("a new request to be taken", Duration::from_secs(5), || {
        admin.cmd_str(&["SET", &keys[199], "after"]) == "+OK\r\n"
    });
    // The four SETs each client had in flight are made. Its fifth, still
    // unread when it left, may be lost as with Redis: the reply to its
    // first write meets the closed socket, and the session ends there.
    let mut direct = shards[0].connect();
    let mut exists = vec!["EXISTS"];
    exists.extend(
        keys[..leaving * per_client]
            .chunks(per_client)
            .flat_map(|batch| &batch[..4])
            .map(String::as_str),
    );
    let expected = format!(":{}\r\n", leaving * 4);
    common::wait_until(
        "the writes in flight of the clients that left",
        Duration::from_secs(30),
        || direct.cmd_str(&exists) == expected,
    );
}

/// Clients that each write 60 SETs for a healthy shard and a GET for a
/// stopped one, read their 60 replies and leave (a pool without timeout):
/// each one's session waits for the GET's reply, and used to keep its
/// 64 KB input buffer meanwhile (1,500 such clients: about 30 MB).
#[test]
fn sessions_waiting_on_a_stopped_backend_for_clients_that_left_hold_little() {
    let (proxy, shards) = two_shards_without_timeout();
    let stopped_key = keys_in(0, 2047, 1, "stopped").remove(0);
    let healthy_key = keys_in(2048, 4095, 1, "healthy").remove(0);
    let mut write = Vec::new();
    for _ in 0..60 {
        write.extend(encode_command(&[
            b"SET",
            healthy_key.as_bytes(),
            &[b'v'; 1000],
        ]));
    }
    write.extend(encode_command(&[b"GET", stopped_key.as_bytes()]));
    // One round first, so the proxy's own buffers are in place.
    let mut client = RawClient::connect(proxy.port);
    client.send_raw(&write);
    for _ in 0..61 {
        client.read_reply();
    }
    drop(client);
    let pid = proxy.guard.pid();
    let before = rss_kib(pid);
    shards[0].guard.signal("STOP");
    let clients = 1500;
    for _ in 0..clients {
        let mut client = RawClient::connect(proxy.port);
        client.send_raw(&write);
        for _ in 0..60 {
            assert_eq!(client.read_reply(), b"+OK\r\n");
        }
    }
    let grown = rss_kib(pid).saturating_sub(before);
    shards[0].guard.signal("CONT");
    assert!(
        grown < 12 * 1024,
        "RSS grew by {grown} KiB for {clients} sessions"
    );
    // Once the backend answers, the sessions end.
    let mut admin = RawClient::connect(proxy.port);
    common::wait_until("the sessions to end", Duration::from_secs(20), || {
        admin.info_number("clients", "connected_clients") == Some(1)
    });
}

/// A backend busy with a 3 s script while 20 clients each keep four
/// 1 MB SETs in flight to it (a pool without timeout): more than 64 MiB
/// wait for it, and it reads nothing for longer than a second before a
/// late client's GET arrives; but the clients are still there, so nothing
/// is refused (the GET was): every SET is made and the GET answered once
/// the script ends, as with Redis itself.
#[test]
fn a_backend_busy_with_a_long_script_is_waited_for() {
    let (proxy, shards) = two_shards_without_timeout();
    let keys = keys_in(0, 2047, 20, "busy");
    let mut busy = shards[0].connect();
    let script = "local t = redis.call('TIME') local s = t[1] + t[2] / 1e6 \
                  while true do local n = redis.call('TIME') \
                  if n[1] + n[2] / 1e6 - s > 3 then return 1 end end";
    busy.send_raw(&encode_command(&[b"EVAL", script.as_bytes(), b"0"]));
    let started = Instant::now();
    let value = vec![b'v'; 1 << 20];
    let writers: Vec<_> = keys
        .iter()
        .map(|key| {
            let (port, request) = (
                proxy.port,
                encode_command(&[b"SET", key.as_bytes(), &value]),
            );
            std::thread::spawn(move || {
                let mut client = RawClient::connect(port);
                client.send_raw(&request.repeat(4));
                (0..4)
                    .map(|_| String::from_utf8_lossy(&client.read_reply()).into_owned())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Past the grace of a second, with the script still running.
    std::thread::sleep(Duration::from_millis(1500));
    let mut late = RawClient::connect(proxy.port);
    late.send_raw(&encode_command(&[b"GET", keys[0].as_bytes()]));
    for writer in writers {
        for reply in writer.join().unwrap() {
            assert_eq!(reply, "+OK\r\n");
        }
    }
    let mut expected = format!("${}\r\n", value.len()).into_bytes();
    expected.extend_from_slice(&value);
    expected.extend_from_slice(b"\r\n");
    assert!(late.read_reply() == expected, "the late GET got no value");
    assert_eq!(busy.read_reply(), b":1\r\n");
    assert!(started.elapsed() >= Duration::from_secs(3));
}

/// With the proxy limited to 64 file descriptors and a backend stopped
/// (no timeout), clients that send it a GET and leave each left a session
/// waiting for the reply, holding its socket: after about 50 the proxy
/// could accept nobody, and the healthy shard's clients failed too. Out
/// of descriptors, or at the most clients they allow, such sessions now
/// let go, as Redis drops a client that closed (their requests still run
/// once the backend reads).
#[test]
fn clients_that_left_a_stalled_backend_give_back_their_descriptors() {
    let (proxy, shards, port) = two_shards_with_64_descriptors();
    let stalled_key = keys_in(0, 2047, 1, "stalled").remove(0);
    let other_key = keys_in(2048, 4095, 1, "other").remove(0);
    let mut first = RawClient::connect(port);
    assert_eq!(first.cmd_str(&["SET", &other_key, "v"]), "+OK\r\n");
    drop(first);
    shards[0].guard.signal("STOP");
    let get = encode_command(&[b"GET", stalled_key.as_bytes()]);
    // Each pipelines 6 GETs (more than a new client's window lets go at
    // once), waits 50 ms for a reply, then gives up.
    for _ in 0..100 {
        let mut client = RawClient::connect(port);
        client.send_raw(&get.repeat(6));
        assert_eq!(
            reply_line_within(&mut client, Duration::from_millis(50)),
            None
        );
    }
    let mut client = RawClient::connect(port);
    assert_eq!(client.cmd_str(&["GET", &other_key]), "$1\r\nv\r\n");
    // At the most clients its 64 descriptors allow (32), sessions let go
    // before anyone is refused.
    assert!(
        proxy
            .log_text()
            .contains("letting go of a client that closed"),
        "{}",
        proxy.log_text()
    );
    shards[0].guard.signal("CONT");
}

/// A client that sends a GET for a 4 MB value, half-closes (as `nc -N`
/// does) and reads the reply slowly keeps every byte of it when the proxy
/// meanwhile runs out of descriptors: only sessions that wait on a
/// stalled backend are let go, not one writing to a client that reads.
#[test]
fn a_half_closed_client_reading_its_reply_keeps_it_when_descriptors_run_short() {
    let (proxy, shards, port) = two_shards_with_64_descriptors();
    let key = keys_in(0, 2047, 1, "large").remove(0);
    let value = vec![b'v'; 4 << 20];
    let mut direct = shards[0].connect();
    assert_eq!(direct.cmd(&[b"SET", key.as_bytes(), &value]), b"+OK\r\n");
    let mut client = RawClient::connect(port);
    client.send_raw(&encode_command(&[b"GET", key.as_bytes()]));
    client.half_close();
    let mut head = Vec::new();
    client.reader.read_until(b'\n', &mut head).unwrap();
    assert_eq!(head, format!("${}\r\n", value.len()).as_bytes());
    run_out_of_descriptors(&proxy, port);
    assert_eq!(
        client.read_to_end().len(),
        value.len() + 2,
        "the reply was cut short"
    );
}

/// A client that pipelines 1,500 SETs (75 KB, more than the proxy reads
/// ahead) to a stopped backend, half-closes and keeps reading, while the
/// proxy runs out of descriptors: seen to have closed behind requests not
/// read yet, its session is not let go (it was, and the client got a reset
/// and 4 of its 1,500 writes were made); once the backend reads, it gets
/// every reply and every SET is made, as Redis would run them all.
#[test]
fn a_half_closed_client_behind_a_long_pipeline_keeps_it_when_descriptors_run_short() {
    let (proxy, shards, port) = two_shards_with_64_descriptors();
    let keys = keys_in(0, 2047, 1500, "half");
    let mut client = RawClient::connect(port);
    assert_eq!(client.cmd_str(&["SET", &keys[0], "warm"]), "+OK\r\n");
    shards[0].guard.signal("STOP");
    let pipeline: Vec<u8> = keys
        .iter()
        .flat_map(|key| encode_command(&[b"SET", key.as_bytes(), b"v"]))
        .collect();
    client.send_raw(&pipeline);
    client.half_close();
    // Longer than the close check's period and than a session that lets go
    // must have waited.
    std::thread::sleep(Duration::from_millis(1500));
    run_out_of_descriptors(&proxy, port);
    shards[0].guard.signal("CONT");
    assert_eq!(client.read_to_end(), b"+OK\r\n".repeat(keys.len()));
    let mut direct = shards[0].connect();
    assert_eq!(direct.cmd_str(&["DBSIZE"]), format!(":{}\r\n", keys.len()));
}

/// Whether `proxy` said it ran out of descriptors, or reached the most
/// clients its descriptors allow (where sessions let go alike).
fn ran_short(proxy: &Proxy) -> bool {
    let log = proxy.log_text();
    log.contains("Too many open files") || log.contains("max number of clients reached")
}

/// Idle connections use up the descriptors of `proxy` (listening on
/// `port`), or the clients they allow, until it says so, then close.
fn run_out_of_descriptors(proxy: &Proxy, port: u16) {
    let idle: Vec<_> = (0..80)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    common::wait_until(
        "the proxy to run out of descriptors",
        Duration::from_secs(5),
        || ran_short(proxy),
    );
    drop(idle);
}

/// Two shards (no timeout) behind a proxy limited to 64 file descriptors,
/// and the port it listens on.
fn two_shards_with_64_descriptors() -> (Proxy, [Redis; 2], u16) {
    let shards = [Redis::start(), Redis::start()];
    let port = common::free_port();
    let yaml = format!(
        "pool:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: md5\n  servers:\n   - {}:0-2047 stalled\n   - {}:2048-4095 other\n",
        shards[0].addr(),
        shards[1].addr()
    );
    let proxy = Proxy::start_wrapped(port, &yaml, &["prlimit", "--nofile=64", "--"]);
    (proxy, shards, port)
}
