//! A backend that stops reading (SIGSTOP) while clients keep arriving:
//! what the proxy holds for it stays bounded, and what it accepted is
//! still written once the backend reads again.

mod common;

use common::proxy::Proxy;
use common::redis::{encode_command, RawClient, Redis};
use common::rss_kib;
use common::zk_cluster::keys_in;
use std::io::{BufRead, Write};
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

/// The first reply line `client` gets within `wait`, if any.
fn reply_line_within(client: &mut RawClient, wait: Duration) -> Option<String> {
    client
        .reader
        .get_ref()
        .set_read_timeout(Some(wait))
        .unwrap();
    let mut line = Vec::new();
    match client.reader.read_until(b'\n', &mut line) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&line).into_owned()),
        _ => None,
    }
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

/// Two shards with `extra` pool settings; keys of the first and second.
fn two_shards_with(extra: &str) -> (Proxy, [Redis; 2], String, String) {
    let shards = [Redis::start(), Redis::start()];
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n{extra}  servers:\n   - {}:0-2047 first\n   - {}:2048-4095 second\n",
        shards[0].addr(),
        shards[1].addr()
    ));
    let first = keys_in(0, 2047, 1, "k").remove(0);
    let second = keys_in(2048, 4095, 1, "k").remove(0);
    (proxy, shards, first, second)
}

/// The replies to `requests` pipelined in one write, as text, and how long
/// the last took.
fn pipelined(client: &mut RawClient, requests: &[Vec<u8>]) -> (Vec<String>, Duration) {
    let started = Instant::now();
    client.send_raw(&requests.concat());
    let replies = requests
        .iter()
        .map(|_| String::from_utf8_lossy(&client.read_reply()).into_owned())
        .collect();
    (replies, started.elapsed())
}

/// Pipelines `requests`, all waiting on the stopped second shard (timeout
/// 500 ms), then resumes it: every reply is that shard's timeout error,
/// the last within the timeout and a little.
fn every_timeout_in_time(client: &mut RawClient, shards: &[Redis; 2], requests: &[Vec<u8>]) {
    let (replies, took) = pipelined(client, requests);
    shards[1].guard.signal("CONT");
    let addr = shards[1].addr();
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(
            reply,
            &format!("-ERR shard 'second': backend {addr} timed out after 500 ms\r\n"),
            "reply {i}"
        );
    }
    assert!(
        took < Duration::from_millis(900),
        "the last error after {took:?}"
    );
}

/// A pipeline of 200 GETs to a stopped backend, timeout 500 ms: every
/// reply is the timeout error, all within the timeout and a little. The
/// client's window let them go a few at a time, each timed from when it
/// went: the last error came after 7 s.
#[test]
fn a_pipeline_to_a_stopped_backend_gets_every_error_in_time() {
    gets_of_a_stopped_shard_time_out_in_time(200);
}

/// The same with 2,000 GETs (60 KB, more than the proxy reads ahead of a
/// shut window): the requests still in the socket when the proxy stopped
/// reading waited from then too. They were timed from when they were
/// read, one read (16 KB) per timeout: the last error after 1.5 s.
#[test]
fn a_pipeline_longer_than_the_input_gets_every_error_in_time() {
    gets_of_a_stopped_shard_time_out_in_time(2000);
}

/// 30,000 pipelined GETs (1 MB, far more than the sockets between client
/// and proxy hold) to a stopped backend, written from a thread while the
/// replies are read: every reply is the timeout error, the last within
/// 1.5 timeouts. The proxy stopped reading at 16 KB behind the shut
/// window, so each socket's worth (about 110 KB) waited one more timeout:
/// 100,000 GETs took 12 s. Now it reads up to 1 MB ahead while the window
/// waits on a stalled shard.
#[test]
fn a_pipeline_deeper_than_the_sockets_gets_every_error_in_time() {
    let (_proxy, shards, mut client, key) = warm_then_stop_the_second();
    deep_pipeline_times_out_in_time(&mut client, &shards, &key);
    shards[1].guard.signal("CONT");
    answers_again(&mut client, &key);
}

/// 30,000 GETs of `key`, on the stopped second shard (timeout 500 ms),
/// written from a thread while the replies are read: every reply is the
/// timeout error, the last within 1.5 timeouts.
fn deep_pipeline_times_out_in_time(client: &mut RawClient, shards: &[Redis; 2], key: &str) {
    let get = encode_command(&[b"GET", key.as_bytes()]);
    let count = 30_000;
    let pipeline = vec![get; count].concat();
    let mut writer = client.reader.get_ref().try_clone().unwrap();
    let started = Instant::now();
    let writing = std::thread::spawn(move || writer.write_all(&pipeline).unwrap());
    let addr = shards[1].addr();
    let error = format!("-ERR shard 'second': backend {addr} timed out after 500 ms\r\n");
    for i in 0..count {
        assert_eq!(
            String::from_utf8_lossy(&client.read_reply()),
            error,
            "reply {i}"
        );
    }
    let took = started.elapsed();
    writing.join().unwrap();
    assert!(
        took < Duration::from_millis(1500),
        "the last error after {took:?}"
    );
}

/// Sessions that read ahead behind a stall and then block (BLPOP on the
/// healthy shard) with part of what they read still in their input keep
/// only that part of their share: 64 of them kept a whole share each, and
/// the next deep pipeline to a stopped shard waited one timeout per
/// socket's worth again (12.7 s for 100,000 GETs).
#[test]
fn blocked_sessions_give_back_what_they_no_longer_read_ahead() {
    let (proxy, shards, list, key) = two_shards_with("  timeout: 500\n");
    let mut admin = RawClient::connect(proxy.port);
    assert_eq!(admin.cmd_str(&["SET", &key, "v"]), "+OK\r\n");
    // Behind the stall: GETs of the stopped shard, a BLPOP that blocks on
    // the healthy one, then more GETs left unread in the input.
    let get = encode_command(&[b"GET", key.as_bytes()]);
    let mut pipeline = get.repeat(600_000 / get.len());
    pipeline.extend(encode_command(&[b"BLPOP", list.as_bytes(), b"0"]));
    pipeline.extend(get.repeat(300_000 / get.len()));
    shards[1].guard.signal("STOP");
    let mut blocked: Vec<RawClient> = (0..64).map(|_| RawClient::connect(proxy.port)).collect();
    for client in &mut blocked {
        client.send_raw(&pipeline);
    }
    // Every GET before the BLPOP is answered once the stall ends.
    let resume = signal_after(shards[1].guard.pid(), "-CONT", Duration::from_millis(300));
    for client in &mut blocked {
        for i in 0..600_000 / get.len() {
            assert_eq!(client.read_reply(), b"$1\r\nv\r\n", "reply {i}");
        }
    }
    resume.join().unwrap();
    shards[1].guard.signal("STOP");
    let mut client = RawClient::connect(proxy.port);
    deep_pipeline_times_out_in_time(&mut client, &shards, &key);
    shards[1].guard.signal("CONT");
    answers_again(&mut client, &key);
}

/// Reading ahead is shared out: 100 clients that each pipeline 2 MB of GETs
/// to a stopped backend (timeout 5 s) grow the proxy by at most the 64 MiB
/// budget and what each reads without it, not by 1 MB each; and each gets
/// its first error once its requests time out.
#[test]
fn deep_pipelines_of_many_clients_read_ahead_within_the_budget() {
    let (proxy, shards, _, key) = two_shards_with("  timeout: 5000\n");
    let mut admin = RawClient::connect(proxy.port);
    assert_eq!(admin.cmd_str(&["SET", &key, "v"]), "+OK\r\n");
    let pid = proxy.guard.pid();
    let before = rss_kib(pid);
    shards[1].guard.signal("STOP");
    let get = encode_command(&[b"GET", key.as_bytes()]);
    let pipeline = std::sync::Arc::new(get.repeat(2 * 1024 * 1024 / get.len()));
    let clients: Vec<RawClient> = (0..100).map(|_| RawClient::connect(proxy.port)).collect();
    for client in &clients {
        let mut socket = client.reader.get_ref().try_clone().unwrap();
        let pipeline = pipeline.clone();
        // Stops writing once the proxy reads no more.
        socket
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        std::thread::spawn(move || {
            let _ = socket.write_all(&pipeline);
        });
    }
    // The proxy reads on while the requests wait (5 s): its growth over
    // 3 s of that.
    let mut grown = 0;
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(3) {
        grown = grown.max(rss_kib(pid).saturating_sub(before));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(grown < 100 * 1024, "the proxy grew by {grown} KiB");
    let addr = shards[1].addr();
    let error = format!("-ERR shard 'second': backend {addr} timed out after 5000 ms\r\n");
    for mut client in clients {
        assert_eq!(
            reply_line_within(&mut client, Duration::from_secs(10)).as_deref(),
            Some(error.as_str())
        );
    }
    shards[1].guard.signal("CONT");
}

/// Waits for `key` (set to `v`) to be read again once its shard resumed.
fn answers_again(client: &mut RawClient, key: &str) {
    common::wait_until(
        "the backend to answer again",
        Duration::from_secs(5),
        || client.cmd_str(&["GET", key]) == "$1\r\nv\r\n",
    );
}

/// Clients that stream deep pipelines to healthy shards take no read-ahead
/// share (it would starve the clients behind a stalled one: 66 such
/// clients put 100,000 GETs to a stopped shard back to 12.8 s), and one
/// left idle with the start of a request in its input keeps no large
/// buffer: 30 clients that each pipelined 1.2 MB and went idle held 1.1 MB
/// each. Counted by the proxy, not read from its RSS: glibc keeps what the
/// burst freed (13-46 MB in runs where the sessions held nothing), which
/// hid a difference of 30 MB.
#[test]
fn deep_pipelines_to_healthy_shards_leave_idle_clients_small() {
    let (proxy, _shards, first, second) = two_shards_with("  timeout: 5000\n");
    let mut pipeline = Vec::new();
    let count = 40_000;
    for i in 0..count {
        let key = if i % 2 == 0 { &first } else { &second };
        pipeline.extend(encode_command(&[b"GET", key.as_bytes()]));
    }
    // The start of one more request: left in the input while idle.
    pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$");
    let pipeline = std::sync::Arc::new(pipeline);
    let mut clients: Vec<RawClient> = (0..30).map(|_| RawClient::connect(proxy.port)).collect();
    for client in &clients {
        let mut socket = client.reader.get_ref().try_clone().unwrap();
        let pipeline = pipeline.clone();
        std::thread::spawn(move || socket.write_all(&pipeline).unwrap());
    }
    for client in &mut clients {
        for i in 0..count {
            assert_eq!(client.read_reply(), b"$-1\r\n", "reply {i}");
        }
    }
    // The last reads are trimmed as the sessions go idle, which may be
    // after the client has its last reply.
    let mut info = RawClient::connect(proxy.port);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let held = loop {
        let held = (
            info.info_number("clients", "client_read_ahead_bytes"),
            info.info_number("clients", "client_grown_input_buffers"),
        );
        if held == (Some(0), Some(0)) || std::time::Instant::now() > deadline {
            break held;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        held,
        (Some(0), Some(0)),
        "read-ahead bytes and grown input buffers of 30 idle clients"
    );
    // Idle, not gone: what they hold was counted while connected.
    drop(clients);
}

/// Two shards (timeout 500 ms) with `key` of the second set to `v`
/// through a connected client, then the second stopped.
fn warm_then_stop_the_second() -> (Proxy, [Redis; 2], RawClient, String) {
    let (proxy, shards, _, key) = two_shards_with("  timeout: 500\n");
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", &key, "v"]), "+OK\r\n");
    shards[1].guard.signal("STOP");
    (proxy, shards, client, key)
}

/// `count` pipelined GETs for a stopped shard (timeout 500 ms) all get
/// their timeout error in time, and the shard answers once resumed.
fn gets_of_a_stopped_shard_time_out_in_time(count: usize) {
    let (_proxy, shards, mut client, key) = warm_then_stop_the_second();
    let get = encode_command(&[b"GET", key.as_bytes()]);
    every_timeout_in_time(&mut client, &shards, &vec![get; count]);
    answers_again(&mut client, &key);
}

/// 200 pipelined MGETs of a key on each shard, one shard stopped (timeout
/// 500 ms): each is answered with the stopped shard's timeout, all within
/// the timeout and a little. The parts of a split command were not timed
/// from when the window began to wait: the last error after 7 s.
#[test]
fn a_pipeline_of_split_commands_to_a_stopped_backend_gets_every_error_in_time() {
    let (proxy, shards, healthy, stopped) = two_shards_with("  timeout: 500\n");
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", &healthy, "h"]), "+OK\r\n");
    assert_eq!(client.cmd_str(&["SET", &stopped, "s"]), "+OK\r\n");
    shards[1].guard.signal("STOP");
    let mget = encode_command(&[b"MGET", healthy.as_bytes(), stopped.as_bytes()]);
    every_timeout_in_time(&mut client, &shards, &vec![mget; 200]);
    common::wait_until(
        "the backend to answer again",
        Duration::from_secs(5),
        || client.cmd_str(&["MGET", &healthy, &stopped]) == "*2\r\n$1\r\nh\r\n$1\r\ns\r\n",
    );
}

/// Sends `signal` (as `kill` spells it) to process `pid` after `delay`,
/// from a thread of its own.
fn signal_after(pid: u32, signal: &'static str, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let _ = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
    })
}

/// Replies of a pipeline alternating a request for a stopped shard
/// (timeout 500 ms) with one answered `value`: each gets what it should.
fn timeouts_alternate_with(replies: &[String], value: &str) {
    for (i, reply) in replies.iter().enumerate() {
        if i % 2 == 0 {
            assert!(
                reply.contains("timed out after 500 ms"),
                "reply {i}: {reply}"
            );
        } else {
            assert_eq!(reply, value, "reply {i}");
        }
    }
}

/// Three shards `a`, `b`, `c` (timeout 500 ms) and a key of each.
fn three_shards_with_a_timeout() -> (Proxy, [Redis; 3], [String; 3]) {
    let shards = [Redis::start(), Redis::start(), Redis::start()];
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  timeout: 500\n  servers:\n   - {}:0-1365 a\n   - {}:1366-2730 b\n   - {}:2731-4095 c\n",
        shards[0].addr(),
        shards[1].addr(),
        shards[2].addr()
    ));
    let a = keys_in(0, 1365, 1, "a").remove(0);
    let b = keys_in(1366, 2730, 1, "b").remove(0);
    let c = keys_in(2731, 4095, 1, "c").remove(0);
    (proxy, shards, [a, b, c])
}

/// Three shards, the first and third stopped (timeout 500 ms): a client
/// pipelines four MGETs of a key on the first and one on the healthy
/// second, then 100 GETs for the third, and a moment later 100 GETs for
/// the second. The healthy shard, whose part of the MGETs had answered,
/// was waited on as if it had stalled (nothing more was sent to it, so it
/// answered nothing more), and its 100 GETs were answered "timed out"
/// without being sent. Each gets its value.
#[test]
fn a_healthy_shard_that_answered_its_part_of_a_split_command_is_not_waited_on() {
    let (proxy, shards, [a, b, c]) = three_shards_with_a_timeout();
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", &b, "vb"]), "+OK\r\n");
    shards[0].guard.signal("STOP");
    shards[2].guard.signal("STOP");
    let mget = encode_command(&[b"MGET", a.as_bytes(), b.as_bytes()]);
    let get_c = encode_command(&[b"GET", c.as_bytes()]);
    let get_b = encode_command(&[b"GET", b.as_bytes()]);
    client.send_raw(&[mget.repeat(4), get_c.repeat(100)].concat());
    std::thread::sleep(Duration::from_millis(100));
    client.send_raw(&get_b.repeat(100));
    let replies: Vec<String> = (0..204)
        .map(|_| String::from_utf8_lossy(&client.read_reply()).into_owned())
        .collect();
    shards[0].guard.signal("CONT");
    shards[2].guard.signal("CONT");
    for (i, reply) in replies[..104].iter().enumerate() {
        assert!(
            reply.contains("timed out after 500 ms"),
            "reply {i}: {reply}"
        );
    }
    for (i, reply) in replies[104..].iter().enumerate() {
        assert_eq!(reply, "$2\r\nvb\r\n", "GET {i} of the healthy shard");
    }
}

/// Three shards, timeout 500 ms: the first stopped, the second stopped
/// 300 ms later, the third healthy. A client pipelines 1,000 pairs of
/// `MGET a b c` and `GET c` at once: every MGET gets a timeout error and
/// every GET its value, the last within the timeout and a little. An MGET
/// that waited in the input on the first shard went on to wait out the
/// second's timeout as well (the last after 1.0 s).
#[test]
fn split_commands_over_shards_that_stall_one_after_the_other_time_out_in_time() {
    let (proxy, shards, [a, b, c]) = three_shards_with_a_timeout();
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", &c, "vc"]), "+OK\r\n");
    let mget = encode_command(&[b"MGET", a.as_bytes(), b.as_bytes(), c.as_bytes()]);
    let get = encode_command(&[b"GET", c.as_bytes()]);
    shards[0].guard.signal("STOP");
    let stop_second = signal_after(shards[1].guard.pid(), "-STOP", Duration::from_millis(300));
    let requests: Vec<Vec<u8>> = (0..2000)
        .map(|i| {
            if i % 2 == 0 {
                mget.clone()
            } else {
                get.clone()
            }
        })
        .collect();
    let (replies, took) = pipelined(&mut client, &requests);
    stop_second.join().unwrap();
    shards[0].guard.signal("CONT");
    shards[1].guard.signal("CONT");
    timeouts_alternate_with(&replies, "$2\r\nvc\r\n");
    assert!(
        took < Duration::from_millis(900),
        "the last reply after {took:?}"
    );
}

/// A pipeline that alternates between a stopped shard and a healthy one:
/// the healthy shard's requests wait behind the stopped one's in the
/// client's window, but none of them times out: each gets its value.
#[test]
fn a_healthy_shards_requests_behind_a_stopped_ones_get_their_values() {
    let (proxy, shards, healthy, stopped) = two_shards_with("  timeout: 500\n");
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", &healthy, "h"]), "+OK\r\n");
    assert_eq!(client.cmd_str(&["SET", &stopped, "s"]), "+OK\r\n");
    shards[1].guard.signal("STOP");
    let requests: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            let key = if i % 2 == 0 { &stopped } else { &healthy };
            encode_command(&[b"GET", key.as_bytes()])
        })
        .collect();
    let (replies, took) = pipelined(&mut client, &requests);
    shards[1].guard.signal("CONT");
    timeouts_alternate_with(&replies, "$1\r\nh\r\n");
    assert!(
        took < Duration::from_millis(1500),
        "the last reply after {took:?}"
    );
}

/// A backend stopped for 300 ms, under a 1 s timeout, with a pipeline of
/// 300 GETs sent to it meanwhile: shorter than the timeout, so every GET
/// gets its value and none times out.
#[test]
fn a_stall_shorter_than_the_timeout_times_out_nothing() {
    let (proxy, shards, _, key) = two_shards_with("  timeout: 1000\n");
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", &key, "v"]), "+OK\r\n");
    shards[1].guard.signal("STOP");
    let stopped = Instant::now();
    let resume = signal_after(shards[1].guard.pid(), "-CONT", Duration::from_millis(300));
    let get = encode_command(&[b"GET", key.as_bytes()]);
    let (replies, _) = pipelined(&mut client, &vec![get; 300]);
    resume.join().unwrap();
    assert!(stopped.elapsed() >= Duration::from_millis(300));
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply, "$1\r\nv\r\n", "reply {i}");
    }
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

/// A client streaming 1 MB SETs (32 in flight) to a backend stopped for
/// 2 s under a 500 ms timeout: its SETs time out during the stall and
/// succeed again right after it. A request that waited on the stopped
/// backend in the client's window was first charged all of its wait and
/// timed out before it was written whole; the backend, back, then never
/// answered one, and the client's SETs timed out for as long as it kept
/// going.
#[test]
fn a_client_streaming_large_writes_recovers_when_a_stall_ends() {
    let (proxy, shards, key, _) = two_shards_with("  timeout: 500\n");
    let request = encode_command(&[b"SET", key.as_bytes(), &vec![b'v'; 1 << 20]]);
    let mut client = RawClient::connect(proxy.port);
    let depth = 32;
    for _ in 0..depth {
        client.send_raw(&request);
    }
    // Each reply read makes room for one more SET.
    let next = |client: &mut RawClient| {
        let reply = String::from_utf8_lossy(&client.read_reply()).into_owned();
        client.send_raw(&request);
        reply
    };
    for _ in 0..20 {
        assert_eq!(next(&mut client), "+OK\r\n");
    }
    shards[0].guard.signal("STOP");
    let stopped = Instant::now();
    let mut timeouts = 0;
    while stopped.elapsed() < Duration::from_secs(2) {
        let reply = next(&mut client);
        if reply.contains("timed out after 500 ms") {
            timeouts += 1;
        }
    }
    shards[0].guard.signal("CONT");
    let resumed = Instant::now();
    assert!(timeouts > 0, "no SET timed out during the stall");
    let mut in_a_row = 0;
    while in_a_row < 20 {
        let reply = next(&mut client);
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "the SETs still fail after the stall: {reply}"
        );
        in_a_row = if reply == "+OK\r\n" { in_a_row + 1 } else { 0 };
    }
}

/// A client that sends 100 GETs for a stopped backend in one write, reads
/// the 100 replies, then sends the next 100 (timeout 500 ms): each batch
/// waits for its own timeouts. A later batch used to be charged with the
/// wait of the one before, and got 100 "timed out after 500 ms" within a
/// millisecond of being sent, thousands of batches a second, while the
/// backend still ran what was written of them.
#[test]
fn a_batch_sent_after_the_last_was_answered_waits_its_own_timeout() {
    let (proxy, shards, key, _) = two_shards_with("  timeout: 500\n");
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", &key, "v"]), "+OK\r\n");
    shards[0].guard.signal("STOP");
    let get = encode_command(&[b"GET", key.as_bytes()]);
    for batch in 0..3 {
        let (replies, took) = pipelined(&mut client, &vec![get.clone(); 100]);
        for reply in &replies {
            assert!(
                reply.contains("timed out after 500 ms"),
                "batch {batch}: {reply}"
            );
        }
        assert!(
            took >= Duration::from_millis(450),
            "batch {batch} answered in {took:?}"
        );
    }
    shards[0].guard.signal("CONT");
}

/// The same when the first batch is 2,000 GETs with bytes the proxy skips
/// among them (`*0` and blank lines, as Redis does): those bytes were
/// never counted off what had waited, and every later batch was answered
/// "timed out" at once.
#[test]
fn skipped_bytes_in_a_long_pipeline_do_not_charge_the_next_batch() {
    let (proxy, shards, key, _) = two_shards_with("  timeout: 500\n");
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", &key, "v"]), "+OK\r\n");
    shards[0].guard.signal("STOP");
    let get = encode_command(&[b"GET", key.as_bytes()]);
    let skipped = [&b"*0\r\n".repeat(25)[..], &b"\r\n".repeat(50)].concat();
    let first = [
        skipped.clone(),
        get.repeat(1000),
        skipped.clone(),
        get.repeat(1000),
        skipped,
    ]
    .concat();
    client.send_raw(&first);
    for i in 0..2000 {
        let reply = client.read_reply();
        assert!(
            String::from_utf8_lossy(&reply).contains("timed out after 500 ms"),
            "reply {i}"
        );
    }
    for batch in 0..3 {
        let (replies, took) = pipelined(&mut client, &vec![get.clone(); 10]);
        assert!(replies[9].contains("timed out after 500 ms"), "{replies:?}");
        assert!(
            took >= Duration::from_millis(450),
            "batch {batch} answered in {took:?}"
        );
    }
    shards[0].guard.signal("CONT");
}

/// With the proxy limited to 64 file descriptors and a backend stopped
/// (no timeout), clients that send it a GET and leave each left a session
/// waiting for the reply, holding its socket: after about 50 the proxy
/// could accept nobody, and the healthy shard's clients failed too. Out
/// of descriptors, such sessions now let go, as Redis drops a client that
/// closed (their requests still run once the backend reads).
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
    assert!(proxy.log_text().contains("Too many open files"));
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

/// Idle connections use up the descriptors of `proxy` (listening on
/// `port`) until it says so, then close.
fn run_out_of_descriptors(proxy: &Proxy, port: u16) {
    let idle: Vec<_> = (0..80)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    common::wait_until(
        "the proxy to run out of descriptors",
        Duration::from_secs(5),
        || proxy.log_text().contains("Too many open files"),
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
