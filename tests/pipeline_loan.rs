//! Clients that write a whole pipeline before they read a reply, against
//! real processes: their requests are read on, on a loan from one budget
//! for the process, so their writes end and every reply comes; a client
//! that has not logged in gets no loan.

mod common;

use common::proxy::two_shards_with;
use common::redis::{encode_command, RawClient};
use common::{rss_kib, wait_until};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A connection to `port` that has written `pipeline` whole, before
/// reading anything: without a loan the write never ends, so it fails
/// after 30 s instead of hanging.
fn written_whole(port: u16, pipeline: &[u8]) -> std::net::TcpStream {
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let limit = Some(Duration::from_secs(30));
    client.set_write_timeout(limit).unwrap();
    client.set_read_timeout(limit).unwrap();
    let started = Instant::now();
    client.write_all(pipeline).unwrap_or_else(|e| {
        panic!(
            "stuck writing the pipeline after {:?}: {e}",
            started.elapsed()
        )
    });
    client
}

/// A connection to `port` that sends `chunk` over and over, reads nothing,
/// and stays open until `stop` (or 60 s); how many bytes it sent, and
/// whether the proxy closed it first.
fn sends_without_reading(
    port: u16,
    chunk: Vec<u8>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, bool)> {
    std::thread::spawn(move || {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let started = Instant::now();
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
            match conn.write(&chunk) {
                Ok(n) => sent += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return (sent, true),
            }
        }
        (sent, false)
    })
}

/// A client that writes its whole pipeline before it reads a reply (as
/// redis-py's pipeline does): once its unread replies filled
/// `client_output_limit` and the socket buffers, the proxy stopped reading
/// it until it read, and it was stuck in its write for good (500,000 GETs
/// of a 100-byte value; Redis answers them in seconds). The proxy now
/// reads its requests on, on a loan, and runs them as it reads: every
/// reply comes, in order. The loan shrinks as the requests are run: left
/// idle with part of a request, the client keeps a step of it at most
/// (review: the whole peak, 48 MB), and none once the request is done.
#[test]
fn a_client_that_writes_its_whole_pipeline_before_reading_is_answered() {
    let (proxy, _shards) = two_shards_with("", &[]);
    let count = 500_000;
    let value = vec![b'v'; 100];
    let mut setup = RawClient::connect(proxy.port);
    assert_eq!(setup.cmd(&[b"SET", b"bulk", &value]), b"+OK\r\n");
    let mut pipeline = encode_command(&[b"GET", b"bulk"]).repeat(count);
    let last = encode_command(&[b"SET", b"last", &vec![b'l'; 40_000]]);
    pipeline.extend_from_slice(&last[..20_000]);
    let started = Instant::now();
    let mut client = written_whole(proxy.port, &pipeline);
    let reply = [b"$100\r\n".as_slice(), &value, b"\r\n"].concat();
    let mut got = vec![0; reply.len() * count];
    client.read_exact(&mut got).unwrap();
    assert!(
        got.chunks(reply.len()).all(|r| r == reply),
        "a reply other than the value"
    );
    eprintln!(
        "{count} GETs written, then read, in {:?}; proxy RSS {} KiB",
        started.elapsed(),
        rss_kib(proxy.guard.pid())
    );
    let mut loaned = || setup.info_number("clients", "client_pipeline_loaned_bytes");
    wait_until(
        "the idle client's loan to shrink",
        Duration::from_secs(5),
        || loaned().is_some_and(|bytes| bytes <= 1 << 20),
    );
    client.write_all(&last[20_000..]).unwrap();
    let mut stored = [0; 5];
    client.read_exact(&mut stored).unwrap();
    assert_eq!(&stored, b"+OK\r\n");
    wait_until("the loan to be given back", Duration::from_secs(5), || {
        loaned() == Some(0)
    });
}

/// With `redis_auth`, a client that has not logged in and sends requests
/// without reading their refusals gets no loan (review: its inline PINGs
/// took the whole 128 MB budget, and another client's 300,000-GET pipeline
/// waited 30-40 s, until it left), and is closed after 100 refusals, as
/// Redis closes such a client (review: `redis-cli --pipe`
/// without the password waited for good). The other client's pipeline,
/// written whole before it reads, is answered.
#[test]
fn a_client_that_has_not_logged_in_gets_no_loan() {
    let (proxy, _shards) = two_shards_with("  redis_auth: secret\n", &["--requirepass", "secret"]);
    let stop = Arc::new(AtomicBool::new(false));
    let stranger = sends_without_reading(proxy.port, b"PING\r\n".repeat(10_000), stop.clone());
    let mut watcher = RawClient::connect(proxy.port);
    assert_eq!(watcher.cmd_str(&["AUTH", "secret"]), "+OK\r\n");
    assert_eq!(watcher.cmd_str(&["SET", "k", "v"]), "+OK\r\n");
    let mut loaned = || watcher.info_number("clients", "client_pipeline_loaned_bytes");
    // The stranger borrows nothing, and is closed.
    let started = Instant::now();
    while !stranger.is_finished() {
        assert_eq!(loaned(), Some(0), "lent to a client that has not logged in");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the stranger was not closed"
        );
    }
    let (sent, closed) = stranger.join().unwrap();
    assert!(closed, "the stranger stayed connected after {sent} bytes");
    let count = 300_000;
    let mut pipeline = encode_command(&[b"AUTH", b"secret"]);
    pipeline.extend(encode_command(&[b"GET", b"k"]).repeat(count));
    let started = Instant::now();
    let mut client = written_whole(proxy.port, &pipeline);
    let reply = b"$1\r\nv\r\n";
    let mut got = vec![0; 5 + reply.len() * count];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got[..5], b"+OK\r\n");
    assert!(
        got[5..].chunks(reply.len()).all(|r| r == reply),
        "a reply other than the value"
    );
    eprintln!("{count} GETs after the stranger in {:?}", started.elapsed());
    stop.store(true, Ordering::Relaxed);
}

/// A logged-in client that never reads and never stops sending borrows
/// half the budget (128 MB of 256) at most (review: it held all of it, and
/// another client's pipeline written whole before reading waited until it
/// left). Beside it, that other client's pipeline is answered, and the hog
/// stays connected; the log says once that it is no longer read.
#[test]
fn a_client_that_never_reads_borrows_half_the_budget_at_most() {
    let (proxy, _shards) = two_shards_with("", &[]);
    let mut watcher = RawClient::connect(proxy.port);
    assert_eq!(
        watcher.cmd(&[b"SET", b"big", &vec![b'b'; 4096]]),
        b"+OK\r\n"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let chunk = encode_command(&[b"GET", b"big"]).repeat(10_000);
    let hog = sends_without_reading(proxy.port, chunk, stop.clone());
    let share = 128 << 20;
    let mut loaned = || {
        watcher
            .info_number("clients", "client_pipeline_loaned_bytes")
            .unwrap()
    };
    wait_until(
        "the hog to borrow its share",
        Duration::from_secs(30),
        || loaned() == share,
    );
    // It stays there while the hog keeps sending, and the log says why
    // the hog is no longer read, once (a hung bulk load left nothing in
    // the log).
    let said = "its share of the pipeline loan is spent: it is not read until it reads";
    let told = || proxy.log_text().matches(said).count();
    wait_until(
        "the log to say the share is spent",
        Duration::from_secs(5),
        || told() > 0,
    );
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(500) {
        assert_eq!(loaned(), share, "past one client's share");
    }
    assert_eq!(told(), 1, "{}", proxy.log_text());
    let count = 300_000;
    let pipeline = encode_command(&[b"GET", b"k"]).repeat(count);
    let mut client = written_whole(proxy.port, &pipeline);
    let mut got = vec![0; 5 * count];
    client.read_exact(&mut got).unwrap();
    assert!(
        got.chunks(5).all(|r| r == b"$-1\r\n"),
        "a reply other than nil"
    );
    stop.store(true, Ordering::Relaxed);
    let (sent, closed) = hog.join().unwrap();
    assert!(!closed, "the hog was closed after {sent} bytes");
    assert!(sent as u64 > share, "the hog sent only {sent} bytes");
}
