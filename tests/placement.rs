//! Oracle test: for every hash and distribution, shardproxy puts each key on
//! the same server as the real twemproxy 0.5.0 (`nutcracker`): both the
//! library's prediction and the running proxy, written through with the same
//! pool file, must match where nutcracker put every key.
//!
//! Three redis-servers are started once. For each pool variant, nutcracker
//! writes a few thousand keys through to them; then every backend is asked
//! which keys it holds, and that must be exactly the server that
//! `Distribution::pick(hash.hash(hashable_key(key, tag)))` names.

mod common;

use common::nutcracker::{Nutcracker, NUTCRACKER};
use common::proxy::{binary, Proxy};
use common::redis::{encode_command, read_reply_into, RawClient, Redis};
use common::{free_port, wait_until, ProcessGuard};
use shardproxy::hash::HashKind;
use shardproxy::route::{hashable_key, Distribution, DistributionKind, Node};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TAG: [u8; 2] = *b"{}";

/// One `servers:` entry of a nutcracker pool.
struct Server {
    /// Which of the redis-servers it points at.
    backend: usize,
    weight: u32,
    name: Option<&'static str>,
}

/// A pool to compare: its servers (in pool-file order), hash tag and our
/// prediction of the server (entry index) owning each hash.
struct Variant {
    label: String,
    hash: HashKind,
    nutcracker_distribution: DistributionKind,
    servers: Vec<Server>,
    tag: Option<[u8; 2]>,
    ours: Distribution,
    /// The range form of the same pool, for shardproxy.
    ranges: Option<Vec<(u32, u32)>>,
}

/// Which proxy the keys are written through.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    Nutcracker,
    Shardproxy,
}

/// ASCII, binary (every byte value, CR, LF, NUL), bytes >= 0x80, hash
/// tagged, empty-tagged and malformed-tag keys, and the empty key.
fn keys() -> Vec<Vec<u8>> {
    let mut keys = BTreeSet::new();
    keys.insert(Vec::new());
    for i in 0..600 {
        keys.insert(format!("key:{i}").into_bytes());
    }
    let mut seed: u32 = 0x1234_5678;
    for i in 0..500 {
        let key: Vec<u8> = (0..1 + i % 40)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            })
            .collect();
        keys.insert(key);
    }
    for i in 0..300u32 {
        let mut key = vec![0x80 + (i % 128) as u8, 0xff];
        key.extend_from_slice(format!("é{i}").as_bytes());
        key.push(0x80 | (i as u8));
        keys.insert(key);
    }
    for i in 0..400 {
        keys.insert(format!("{{user{}}}.a{i}", i % 37).into_bytes());
    }
    for i in 0..100 {
        keys.insert(format!("{{}}x{i}").into_bytes());
        keys.insert(format!("a{{b}}c{{d}}{i}").into_bytes());
        keys.insert(format!("}}{{x{}}}{i}", i % 7).into_bytes());
        keys.insert(format!("{{{{x}}}}{i}").into_bytes());
        keys.insert(format!("{{open{i}").into_bytes());
        let mut key = vec![b'{', 0xc3, 0xa9 - (i % 2) as u8, b'}'];
        key.extend_from_slice(format!("{i}").as_bytes());
        keys.insert(key);
    }
    keys.into_iter().collect()
}

/// twemproxy's name for a server entry without an explicit name.
fn node_name(server: &Server, backends: &[Redis]) -> String {
    match server.name {
        Some(name) => name.to_string(),
        None => backends[server.backend].addr(),
    }
}

/// The pool settings for nutcracker, or for shardproxy (the same, except
/// that the range variant uses the range form).
fn settings(variant: &Variant, backends: &[Redis], via: Via) -> String {
    let mut yaml = String::new();
    writeln!(yaml, "  hash: {}", variant.hash.name()).unwrap();
    let distribution = variant.nutcracker_distribution.name();
    writeln!(yaml, "  distribution: {distribution}").unwrap();
    writeln!(yaml, "  redis: true").unwrap();
    if let Some(tag) = variant.tag {
        writeln!(yaml, "  hash_tag: \"{}\"", String::from_utf8_lossy(&tag)).unwrap();
    }
    writeln!(yaml, "  servers:").unwrap();
    for (i, server) in variant.servers.iter().enumerate() {
        let addr = backends[server.backend].addr();
        let name = server.name.map(|n| format!(" {n}")).unwrap_or_default();
        match (&variant.ranges, via) {
            (Some(ranges), Via::Shardproxy) => {
                let (lo, hi) = ranges[i];
                writeln!(yaml, "   - {addr}:{lo}-{hi}{name}").unwrap()
            }
            _ => writeln!(yaml, "   - {addr}:{}{name}", server.weight).unwrap(),
        }
    }
    yaml
}

/// Parses a `KEYS` reply (an array of bulk strings).
fn parse_keys(reply: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = reply;
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).unwrap();
    assert_eq!(
        line[0],
        b'*',
        "KEYS reply: {}",
        String::from_utf8_lossy(reply)
    );
    let count: usize = std::str::from_utf8(&line[1..line.len() - 2])
        .unwrap()
        .parse()
        .unwrap();
    (0..count)
        .map(|_| {
            line.clear();
            reader.read_until(b'\n', &mut line).unwrap();
            let len: usize = std::str::from_utf8(&line[1..line.len() - 2])
                .unwrap()
                .parse()
                .unwrap();
            let mut key = vec![0; len + 2];
            reader.read_exact(&mut key).unwrap();
            key.truncate(len);
            key
        })
        .collect()
}

/// Writes every key through nutcracker or shardproxy, then returns which
/// server entry (index into `variant.servers`) holds each key, read from the
/// backends.
fn placement(
    variant: &Variant,
    backends: &[Redis],
    keys: &[Vec<u8>],
    via: Via,
) -> Vec<Option<usize>> {
    for backend in backends {
        assert_eq!(backend.connect().cmd_str(&["FLUSHALL"]), "+OK\r\n");
    }
    let yaml = settings(variant, backends, via);
    let (mut client, log): (RawClient, Box<dyn Fn() -> String>) = match via {
        Via::Nutcracker => {
            let nutcracker = Nutcracker::start(&yaml);
            (nutcracker.connect(), Box::new(move || nutcracker.log()))
        }
        Via::Shardproxy => {
            let proxy = Proxy::start(&yaml);
            (
                RawClient::connect(proxy.port),
                Box::new(move || proxy.log_text()),
            )
        }
    };
    let mut batch = Vec::new();
    for key in keys {
        batch.extend_from_slice(&encode_command(&[b"SET", key, b"v"]));
    }
    client.send_raw(&batch);
    for key in keys {
        let reply = client.read_reply();
        assert_eq!(
            reply,
            b"+OK\r\n",
            "{}: SET \"{}\" through the proxy\nlog:\n{}",
            variant.label,
            key.escape_ascii(),
            log()
        );
    }
    drop(log);

    let entry_of_backend: HashMap<usize, usize> = variant
        .servers
        .iter()
        .enumerate()
        .map(|(entry, s)| (s.backend, entry))
        .collect();
    let mut found: HashMap<Vec<u8>, usize> = HashMap::new();
    for (index, backend) in backends.iter().enumerate() {
        let reply = RawClient::connect(backend.port).cmd(&[b"KEYS", b"*"]);
        for key in parse_keys(&reply) {
            let previous = found.insert(key.clone(), entry_of_backend[&index]);
            assert!(
                previous.is_none(),
                "{}: key \"{}\" on two backends",
                variant.label,
                key.escape_ascii()
            );
        }
    }
    keys.iter().map(|key| found.get(key).copied()).collect()
}

/// Compares nutcracker's placement with ours; returns a report of the
/// first mismatches, or `None` when every key matches.
fn compare(variant: &Variant, backends: &[Redis], keys: &[Vec<u8>]) -> Option<String> {
    let actual = placement(variant, backends, keys, Via::Nutcracker);
    let through_proxy = placement(variant, backends, keys, Via::Shardproxy);
    let mut report = String::new();
    let mut wrong = 0;
    for ((key, actual), proxied) in keys.iter().zip(actual).zip(through_proxy) {
        if proxied != actual {
            wrong += 1;
            if wrong <= 5 {
                writeln!(
                    report,
                    "    key \"{}\": shardproxy put it on {proxied:?}, nutcracker on {actual:?}",
                    key.escape_ascii()
                )
                .unwrap();
            }
            continue;
        }
        let hashed = hashable_key(key, variant.tag);
        let hash = variant.hash.hash(hashed);
        let predicted = variant.ours.pick(hash);
        if actual != Some(predicted) {
            wrong += 1;
            if wrong <= 5 {
                let actual = actual.map_or("no server".to_string(), |a| format!("server {a}"));
                writeln!(
                    report,
                    "    key \"{}\" (hashed \"{}\", hash {hash:#010x}): we say server {predicted}, \
                     nutcracker put it on {actual}",
                    key.escape_ascii(),
                    hashed.escape_ascii(),
                )
                .unwrap();
            }
        }
    }
    (wrong > 0).then(|| {
        format!(
            "  {}: {wrong} of {} keys misplaced\n{report}",
            variant.label,
            keys.len()
        )
    })
}

/// The weighted variants: `kind` over two server lists.
fn weighted_variants(hash: HashKind, kind: DistributionKind, backends: &[Redis]) -> Vec<Variant> {
    // All weight 1, no names, listed out of port order so the name sort
    // matters.
    let equal = || {
        [2, 0, 1]
            .into_iter()
            .map(|backend| Server {
                backend,
                weight: 1,
                name: None,
            })
            .collect::<Vec<_>>()
    };
    // Weights 1, 3, 2; names of different lengths, so twemproxy's
    // shorter-first name order differs from plain byte order.
    let mixed = || {
        vec![
            Server {
                backend: 0,
                weight: 1,
                name: Some("zeta"),
            },
            Server {
                backend: 1,
                weight: 3,
                name: None,
            },
            Server {
                backend: 2,
                weight: 2,
                name: Some("alpha-server"),
            },
        ]
    };
    [
        ("equal", equal(), None),
        ("weights-1-3-2 tag", mixed(), Some(TAG)),
    ]
    .into_iter()
    .map(|(pattern, servers, tag)| {
        let nodes: Vec<Node> = servers
            .iter()
            .map(|s| Node {
                name: node_name(s, backends),
                weight: s.weight,
            })
            .collect();
        let ours = match kind {
            DistributionKind::Ketama => Distribution::ketama(&nodes),
            DistributionKind::Modula => Distribution::modula(&nodes),
            DistributionKind::Random => unreachable!("random placement is not deterministic"),
        };
        Variant {
            label: format!("{}/{}/{pattern}", hash.name(), kind.name()),
            hash,
            nutcracker_distribution: kind,
            servers,
            tag,
            ours,
            ranges: None,
        }
    })
    .collect()
}

/// The range form against nutcracker's modula with the range sizes as
/// weights, named so that name order is slot order.
fn range_variant(hash: HashKind) -> Variant {
    let ranges = [(2048, 4095), (0, 1023), (1024, 2047)];
    let names = ["c", "a", "b"];
    let servers = ranges
        .iter()
        .zip(names)
        .enumerate()
        .map(|(backend, (&(lo, hi), name))| Server {
            backend,
            weight: hi - lo + 1,
            name: Some(name),
        })
        .collect();
    Variant {
        label: format!("{}/ranges tag", hash.name()),
        hash,
        nutcracker_distribution: DistributionKind::Modula,
        servers,
        tag: Some(TAG),
        ours: Distribution::ranges(&ranges),
        ranges: Some(ranges.to_vec()),
    }
}

#[test]
fn every_hash_and_distribution_places_keys_like_nutcracker() {
    let started = Instant::now();
    let backends: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let keys = keys();
    let mut failures = String::new();
    let mut runs = 0;
    for hash in HashKind::ALL {
        let mut variants = weighted_variants(hash, DistributionKind::Modula, &backends);
        variants.extend(weighted_variants(hash, DistributionKind::Ketama, &backends));
        variants.push(range_variant(hash));
        for variant in &variants {
            runs += 1;
            if let Some(report) = compare(variant, &backends, &keys) {
                failures.push_str(&report);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "placement differs from nutcracker:\n{failures}"
    );
    eprintln!(
        "{runs} pools x {} keys matched nutcracker in {:?}",
        keys.len(),
        started.elapsed()
    );
}

/// One connection to a pool's unix socket.
struct UnixClient(BufReader<UnixStream>);

impl UnixClient {
    fn connect(path: &Path) -> UnixClient {
        let stream = UnixStream::connect(path).expect("connect to the socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        UnixClient(BufReader::new(stream))
    }

    fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.0.get_mut().write_all(&encode_command(args)).unwrap();
        let mut reply = Vec::new();
        read_reply_into(&mut self.0, &mut reply);
        reply
    }
}

/// Starts `program` on the pool file `conf` and waits until its socket
/// answers.
fn start_on_socket(program: &Path, conf: &Path, socket: &Path) -> ProcessGuard {
    let child = Command::new(program)
        .arg("-c")
        .arg(conf)
        .args(["-s", &free_port().to_string(), "-a", "127.0.0.1"])
        .arg("-o")
        .arg(conf.with_extension("log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ProcessGuard::new(program.display().to_string(), child);
    wait_until(
        "the pool's socket to answer",
        Duration::from_secs(10),
        || UnixStream::connect(socket).is_ok(),
    );
    guard
}

/// Every key written through `socket` (flushed first), and the backend
/// each one landed on.
fn write_through_socket(socket: &Path, backends: &[Redis]) -> Vec<(Vec<u8>, usize)> {
    let mut client = UnixClient::connect(socket);
    write_through(backends, "unix", |set| client.cmd(set))
}

/// The same through the TCP port `port`.
fn write_through_port(port: u16, backends: &[Redis]) -> Vec<(Vec<u8>, usize)> {
    let mut client = RawClient::connect(port);
    write_through(backends, "unixserver", |set| client.cmd(set))
}

/// Flushes `backends`, writes 300 keys named after `prefix` with `run`
/// (one command, its reply), and returns where each key landed, sorted.
fn write_through(
    backends: &[Redis],
    prefix: &str,
    mut run: impl FnMut(&[&[u8]]) -> Vec<u8>,
) -> Vec<(Vec<u8>, usize)> {
    for backend in backends {
        assert_eq!(backend.connect().cmd_str(&["FLUSHALL"]), "+OK\r\n");
    }
    for i in 0..300 {
        let key = format!("{prefix}:{i}");
        assert_eq!(run(&[b"SET", key.as_bytes(), b"v"]), b"+OK\r\n");
    }
    let mut placed: Vec<(Vec<u8>, usize)> = backends
        .iter()
        .enumerate()
        .flat_map(|(i, b)| {
            let keys = parse_keys(&RawClient::connect(b.port).cmd(&[b"KEYS", b"*"]));
            keys.into_iter().map(move |k| (k, i))
        })
        .collect();
    placed.sort();
    placed
}

/// A pool file written for nutcracker that listens on a unix socket
/// (`listen: /path 0660`) runs unchanged: keys land where nutcracker put
/// them, the socket gets the file's mode, a socket file left by a killed
/// process is replaced, a live one is not taken, and a clean stop removes
/// the file.
#[test]
fn a_nutcracker_file_listening_on_a_unix_socket_runs_unchanged() {
    let backends = [Redis::start(), Redis::start()];
    let dir = common::temp_dir("unix-listen");
    let pool_file = |name: &str| {
        let socket = dir.join(format!("{name}.sock"));
        let conf = dir.join(format!("{name}.yml"));
        let text = format!(
            "pool:\n  listen: {} 0660\n  hash: md5\n  distribution: ketama\n  \
             redis: true\n  servers:\n   - {}:1\n   - {}:1\n",
            socket.display(),
            backends[0].addr(),
            backends[1].addr()
        );
        std::fs::write(&conf, text).unwrap();
        (socket, conf)
    };

    let (nc_socket, nc_conf) = pool_file("nutcracker");
    let mut nutcracker = start_on_socket(Path::new(NUTCRACKER), &nc_conf, &nc_socket);
    let by_nutcracker = write_through_socket(&nc_socket, &backends);
    nutcracker.kill();
    assert_eq!(by_nutcracker.len(), 300);
    // md5: fnv1a_64 on ketama put all 300 keys on one of the two servers
    // for some ports (CI), and the comparison then proved little.
    assert!(
        by_nutcracker.iter().any(|(_, b)| *b == 0) && by_nutcracker.iter().any(|(_, b)| *b == 1)
    );

    let (socket, conf) = pool_file("shardproxy");
    // What kill -9 leaves: a socket file nothing listens on.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut proxy = start_on_socket(&binary(), &conf, &socket);
    assert_eq!(write_through_socket(&socket, &backends), by_nutcracker);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let info = UnixClient::connect(&socket).cmd(&[b"INFO", b"server"]);
    assert!(String::from_utf8_lossy(&info).contains("\r\ntcp_port:0\r\n"));

    // A second proxy on the same file must not take the socket.
    let mut second = Command::new(binary())
        .arg("-c")
        .arg(&conf)
        .args(["-s", &free_port().to_string(), "-a", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(second.wait().unwrap().code(), Some(1));
    assert!(
        stderr.contains(&format!(
            "pool 'pool': cannot listen on {}: another process is listening on this socket",
            socket.display()
        )),
        "{stderr}"
    );
    assert_eq!(UnixClient::connect(&socket).cmd(&[b"PING"]), b"+PONG\r\n");

    // The mode is fixed once bound, as the path is: a reload says so.
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace(" 0660\n", " 0600\n")).unwrap();
    proxy.signal("HUP");
    let log = conf.with_extension("log");
    wait_until(
        "the reload to name the mode",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("'listen (the unix socket's mode)' changed: needs a restart")
        },
    );

    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!socket.exists(), "the socket file is left behind");
}

/// A nutcracker file whose servers are unix sockets (`/path:weight`, named
/// or not) runs unchanged: each key lands where nutcracker puts it (an
/// unnamed socket is placed by its path and a ':'), a server killed with
/// kill -9 is named in the error its keys get, and the proxy reconnects
/// once it is back on its socket.
#[test]
fn a_nutcracker_file_with_servers_on_unix_sockets_runs_unchanged() {
    let dir = common::temp_dir("unix-servers");
    let sockets: Vec<String> = (0..3)
        .map(|i| dir.join(format!("r{i}.sock")).display().to_string())
        .collect();
    let start =
        |socket: &str| Redis::start_with(&["--unixsocket", socket, "--unixsocketperm", "700"]);
    let mut backends: Vec<Redis> = sockets.iter().map(|s| start(s)).collect();
    let settings = format!(
        "  hash: md5\n  distribution: ketama\n  redis: true\n  timeout: 2000\n  \
         servers:\n   - {}:1\n   - {}:2\n   - {}:1 third\n",
        sockets[0], sockets[1], sockets[2]
    );
    let nutcracker = Nutcracker::start(&settings);
    let by_nutcracker = write_through_port(nutcracker.port, &backends);
    drop(nutcracker);
    // What counts is that the proxy agrees with nutcracker key by key.
    assert_eq!(by_nutcracker.len(), 300);
    let proxy = Proxy::start(&settings);
    assert_eq!(write_through_port(proxy.port, &backends), by_nutcracker);

    // kill -9 of the server holding the first key: its keys get an error
    // naming its socket, the other servers' keys are served.
    let (first, down) = by_nutcracker[0].clone();
    let first = String::from_utf8(first).unwrap();
    backends[down].guard.kill();
    let mut client = RawClient::connect(proxy.port);
    let reply = client.cmd_str(&["GET", &first]);
    assert!(
        reply.starts_with("-ERR ") && reply.contains(&sockets[down]),
        "{reply}"
    );
    let elsewhere: Vec<&Vec<u8>> = by_nutcracker
        .iter()
        .filter(|(_, on)| *on != down)
        .map(|(key, _)| key)
        .collect();
    assert!(!elsewhere.is_empty(), "every key on one server");
    for key in elsewhere {
        assert_eq!(client.cmd(&[b"GET", key]), b"$1\r\nv\r\n");
    }
    // Back on its socket (empty): the proxy reconnects.
    backends[down] = start(&sockets[down]);
    wait_until(
        "the proxy to reach the restarted server",
        Duration::from_secs(10),
        || client.cmd_str(&["SET", &first, "again"]) == "+OK\r\n",
    );
    assert_eq!(
        backends[down].connect().cmd_str(&["GET", &first]),
        "$5\r\nagain\r\n"
    );

    // The commands the proxy sends on connections of their own reach
    // the servers over their sockets too (review: FUNCTION STATS and
    // SCRIPT KILL got "invalid socket address").
    assert_eq!(
        client.cmd_str(&["SCRIPT", "KILL"]),
        "-NOTBUSY No scripts in execution right now.\r\n"
    );
    assert!(client
        .cmd_str(&["FUNCTION", "STATS"])
        .contains("running_script"));

    // -t passes a socket nobody listens on, and says so: no file yet, or
    // the file a killed Redis leaves.
    // -t, on a pool of one server at `socket`: its exit code and stderr.
    let test_conf = |socket: &str| {
        let conf = dir.join("test.yml");
        let pool =
            format!("pool:\n  listen: 127.0.0.1:1\n  redis: true\n  servers:\n   - {socket}:1\n");
        std::fs::write(&conf, pool).unwrap();
        let out = Command::new(binary())
            .arg("-t")
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let (code, err) = test_conf(&stale.display().to_string());
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("cannot be reached: Connection refused"),
        "{err}"
    );
    let missing = dir.join("later.sock").display().to_string();
    let (code, err) = test_conf(&missing);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "warning: pool 'pool': server '{missing}' cannot be reached: No such file or directory"
        )),
        "{err}"
    );
}

/// A stalled Redis on a unix socket whose accept queue is full: a unix
/// connect then fails at once (`EAGAIN`) where a TCP one waits. A client
/// whose command needs a new connection (BLPOP, a dedicated one) gets
/// the timeout it would get over TCP, not "Resource temporarily
/// unavailable" (review).
#[test]
fn a_full_accept_queue_on_a_unix_socket_server_times_out_like_tcp() {
    use socket2::{Domain, SockAddr, Socket, Type};
    let dir = common::temp_dir("unix-backlog");
    let socket = dir.join("r.sock").display().to_string();
    let redis = Redis::start_with(&["--unixsocket", &socket, "--tcp-backlog", "2"]);
    let proxy = Proxy::start(&format!(
        "  redis: true\n  timeout: 1000\n  servers:\n   - {socket}:1\n"
    ));
    let mut client = RawClient::connect(proxy.port);
    assert_eq!(client.cmd_str(&["SET", "k", "v"]), "+OK\r\n");
    redis.guard.signal("STOP");
    // Fill the queue: connects that nobody accepts, until one is refused.
    let mut queued = Vec::new();
    let full = (0..200).any(|_| {
        let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        match s.connect(&SockAddr::unix(&socket).unwrap()) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            _ => {
                queued.push(s);
                false
            }
        }
    });
    assert!(full, "the queue never filled");
    let started = Instant::now();
    let reply = client.cmd_str(&["BLPOP", "list", "0.1"]);
    redis.guard.signal("CONT");
    assert!(
        reply.starts_with("-ERR ") && reply.contains("timed out"),
        "{reply}"
    );
    assert!(!reply.contains("temporarily unavailable"), "{reply}");
    assert!(started.elapsed() >= Duration::from_millis(500), "{reply}");
    drop(queued);
    // Once Redis runs again, the proxy connects.
    wait_until("BLPOP to be served", Duration::from_secs(10), || {
        client.cmd_str(&["BLPOP", "list", "0.1"]) == "*-1\r\n"
    });
}
