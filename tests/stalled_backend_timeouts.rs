//! A backend stopped (SIGSTOP) under a pool `timeout`: every request that
//! waits on it gets its timeout error in time, however deep the pipeline
//! and whether or not its command is split over shards; a healthy shard's
//! requests behind it get their values, a stall shorter than the timeout
//! times out nothing, each batch waits its own timeout, and what the proxy
//! reads ahead behind a stall stays within its budget. A stopped backend
//! without `timeout`: `stalled_backend.rs`.

mod common;

use common::proxy::Proxy;
use common::redis::{encode_command, reply_line_within, RawClient, Redis};
use common::rss_kib;
use common::zk_cluster::keys_in;
use std::io::Write;
use std::time::{Duration, Instant};

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
