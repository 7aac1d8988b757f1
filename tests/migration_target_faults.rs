//! A migration's target stopped (SIGSTOP: a frozen host) while keys move,
//! against real processes. Every MIGRATE toward it runs on the source,
//! which does nothing else until MIGRATE gives up; the source's other keys
//! must not wait for the whole outage of another shard.

mod common;

use common::migration::{
    cluster, dbsize, ended, exists, interrupted_move, preload, replica_caught_up, start_admin,
};
use common::redis::{RawClient, Redis};
use common::wait_until;
use common::zk_cluster::{add_member, keys_in};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long the target stays stopped.
const STOPPED_FOR: Duration = Duration::from_secs(8);
/// Clients reading the moving range meanwhile, spread over the proxies.
const READERS: usize = 20;

/// GETs `keys` through `port` in a loop until `stop`; the time spent in
/// replies slower than 100 ms or timed out (what a client saw as a stall
/// or an error).
fn stalled_time(
    port: u16,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Duration> {
    thread::spawn(move || {
        let mut client = RawClient::connect(port);
        let mut stalled = Duration::ZERO;
        for key in keys.iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let started = Instant::now();
            let reply = client.cmd_str(&["GET", key]);
            let took = started.elapsed();
            let timed_out = reply.contains("timed out");
            if !timed_out {
                assert_eq!(reply, format!("${}\r\n{key}\r\n", key.len()), "{key}");
            }
            if timed_out || took > Duration::from_millis(100) {
                stalled += took;
            }
            thread::sleep(Duration::from_millis(2));
        }
        stalled
    })
}

/// Reads keys of the moving range through `port` until `stop`, keeping
/// every error reply (a read of a key still on the source moves it): GETs,
/// or with `beside` MGETs of each key and that one.
fn range_reader(
    port: u16,
    keys: Vec<String>,
    beside: Option<String>,
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut client = RawClient::connect(port);
        for key in keys.iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let reply = match &beside {
                Some(other) => client.cmd_str(&["MGET", key, other]),
                None => client.cmd_str(&["GET", key]),
            };
            if reply.starts_with('-') {
                errors.lock().unwrap().push(reply);
            }
            thread::sleep(Duration::from_millis(5));
        }
    })
}

/// How the target stops restoring keys.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// SIGSTOP: a frozen host.
    Stopped,
    /// `CLIENT PAUSE ... WRITE`, as a switchover does: PING is answered,
    /// RESTORE is not.
    WritesPaused,
}

/// The target's master is stopped for 8 s while the mover runs and 20
/// clients read keys of the moving range through both proxies (1 s
/// timeout; one of them with two worker threads). Each MIGRATE toward the
/// stopped target held the source for its timeout, one after another
/// (review: the source's own keys waited 8 s of the 8). Now the mover asks
/// the target with a write that changes nothing before each batch, the
/// first take script whose MIGRATE times out leaves a note on the source
/// that turns the others away at once, and a proxy told so answers
/// `-TRYAGAIN` without asking the source until the target takes that
/// write: the source's own keys wait at most a few seconds in all. The
/// clients read two keys at once, one of them moved already (review: such
/// MGETs left no note, and the source was held 30 s). Once the target is
/// back, the move ends with every key on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_target_does_not_hold_the_source() {
    target_outage(Outage::Stopped).await;
}

/// The same with the target's writes paused and single-key reads (review:
/// the PING the mover and the proxies asked was answered, and the source
/// was held 8 s of 8 and 4 s of 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_paused_for_writes_does_not_hold_the_source() {
    target_outage(Outage::WritesPaused).await;
}

async fn target_outage(outage: Outage) {
    let c = cluster().await;
    let moving = keys_in(0, 1023, 3000, "m");
    let staying = keys_in(1024, 2047, 50, "s");
    preload(&c.proxies[0], &moving);
    preload(&c.proxies[0], &staying);
    let args = ["migrate", "0-1023", "--to", "redis-0002", "--rate", "200"];
    let (mut run, log) = start_admin(&c, &args, "slow-move");
    wait_until("the mover to move keys", Duration::from_secs(30), || {
        dbsize(&c.redis[2]) > 50
    });
    let target = || c.redis[2].connect();
    let moved = moving[READERS * 100..]
        .iter()
        .find(|k| target().cmd_str(&["EXISTS", k]) == ":1\r\n")
        .expect("a moved key")
        .clone();

    match outage {
        Outage::Stopped => c.redis[2].guard.signal("STOP"),
        Outage::WritesPaused => {
            let pause = target().cmd_str(&["CLIENT", "PAUSE", "60000", "WRITE"]);
            assert_eq!(pause, "+OK\r\n");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    // Ten clients per proxy: each one's move would wait its turn on the
    // source and hold it for its own timeout.
    let mut readers = Vec::new();
    for i in 0..READERS {
        let proxy = &c.proxies[i % 2];
        let keys = moving[i * 100..(i + 1) * 100].to_vec();
        // Stopped: every read takes a moved key along (MGET), which left
        // no note before; paused: single keys.
        let beside = matches!(outage, Outage::Stopped).then(|| moved.clone());
        readers.push(range_reader(
            proxy.port,
            keys,
            beside,
            stop.clone(),
            errors.clone(),
        ));
    }
    let staller = stalled_time(c.proxies[0].port, staying.clone(), stop.clone());
    let started = Instant::now();
    wait_until("the target's outage to pass", STOPPED_FOR * 2, || {
        started.elapsed() >= STOPPED_FOR
    });
    stop.store(true, Ordering::Relaxed);
    let stalled = staller.join().unwrap();
    match outage {
        Outage::Stopped => c.redis[2].guard.signal("CONT"),
        Outage::WritesPaused => assert_eq!(target().cmd_str(&["CLIENT", "UNPAUSE"]), "+OK\r\n"),
    }
    for reader in readers {
        reader.join().unwrap();
    }

    let errors = errors.lock().unwrap().clone();
    eprintln!(
        "{outage:?}: source's own keys stalled {:.1} s of {} s; {} errors on the range, e.g. {:?}",
        stalled.as_secs_f64(),
        STOPPED_FOR.as_secs(),
        errors.len(),
        errors.first()
    );
    assert!(
        stalled < Duration::from_secs(3),
        "the source's own keys waited {stalled:?} of the target's {STOPPED_FOR:?} outage"
    );
    let refusal = "-TRYAGAIN the keys cannot move to shard 'redis-0002' now: it did not answer at";
    assert!(
        errors.iter().any(|e| e.starts_with(refusal)),
        "no fast refusal among {errors:?}"
    );
    let target_addr = c.redis[2].addr();
    for e in &errors {
        assert!(
            e.starts_with("-TRYAGAIN") || e.contains("timed out"),
            "unexpected error {e}"
        );
        // A request sent to the target names the target's shard (review:
        // the source's name with the target's address).
        if e.contains(&format!("backend {target_addr} timed out")) {
            assert!(e.starts_with("-ERR shard 'redis-0002': "), "{e}");
        }
    }

    let (code, text) = ended(&mut run, &log, 120);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(dbsize(&c.redis[2]), moving.len() as u64);
    for proxy in &c.proxies {
        let mut client = RawClient::connect(proxy.port);
        for key in moving.iter().chain(&staying) {
            let want = format!("${}\r\n{key}\r\n", key.len());
            assert_eq!(
                client.cmd_str(&["GET", key]),
                want,
                "{key} through {}",
                proxy.port
            );
        }
    }
}

/// A target that is only slow (every client paused 0.7 s, within the
/// pools' 1 s timeout) while clients write keys of a half-moved range:
/// every write succeeds and reads back (review: a MIGRATE timeout of half
/// the pool's turned such a pause into 1.7 s of refusals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_is_waited_for_not_refused() {
    let c = cluster().await;
    let moving = keys_in(0, 1023, 3000, "w");
    preload(&c.proxies[0], &moving);
    interrupted_move(&c.conf, "0-1023", "redis-0002", &c.redis[2], 200);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..2)
        .map(|i| {
            let port = c.proxies[i].port;
            let keys: Vec<String> = moving.iter().skip(i).step_by(2).cloned().collect();
            let (stop, errors) = (stop.clone(), errors.clone());
            thread::spawn(move || {
                let mut client = RawClient::connect(port);
                let mut written = Vec::new();
                for key in &keys {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let reply = client.cmd_str(&["SET", key, &format!("{key}-w")]);
                    if reply == "+OK\r\n" {
                        written.push(key.clone());
                    } else {
                        errors.lock().unwrap().push(reply);
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                written
            })
        })
        .collect();
    let first = &moving[0];
    let first_written = format!("${}\r\n{first}-w\r\n", first.len() + 2);
    wait_until("writes before the pause", Duration::from_secs(10), || {
        c.redis[2].connect().cmd_str(&["GET", first]) == first_written
    });
    let pause = c.redis[2]
        .connect()
        .cmd_str(&["CLIENT", "PAUSE", "700", "ALL"]);
    assert_eq!(pause, "+OK\r\n");
    let paused = Instant::now();
    wait_until(
        "the pause and a second after it",
        Duration::from_secs(10),
        || paused.elapsed() >= Duration::from_millis(1700),
    );
    stop.store(true, Ordering::Relaxed);
    let written: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} refused: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(written.len() > 100, "only {} writes", written.len());
    for proxy in &c.proxies {
        let mut client = RawClient::connect(proxy.port);
        for key in &written {
            let want = format!("${}\r\n{key}-w\r\n", key.len() + 2);
            assert_eq!(
                client.cmd_str(&["GET", key]),
                want,
                "{key} through {}",
                proxy.port
            );
        }
    }
}

/// A key already on a stopped target: its request waits for the target,
/// as any request on that shard does, and the timeout names the target's
/// shard (review: the migration's source, with the target's address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_key_on_a_stopped_target_times_out_naming_the_target() {
    let c = cluster().await;
    let moving = keys_in(0, 1023, 1000, "t");
    preload(&c.proxies[0], &moving);
    interrupted_move(&c.conf, "0-1023", "redis-0002", &c.redis[2], 100);
    let moved = moving
        .iter()
        .find(|k| exists(&c.redis[2], k))
        .expect("a moved key")
        .clone();
    c.redis[2].guard.signal("STOP");
    let reply = RawClient::connect(c.proxies[0].port).cmd_str(&["GET", &moved]);
    c.redis[2].guard.signal("CONT");
    let want = format!(
        "-ERR shard 'redis-0002': backend {} timed out after 1000 ms\r\n",
        c.redis[2].addr()
    );
    assert_eq!(reply, want);
    let value = format!("${}\r\n{moved}\r\n", moved.len());
    wait_until("the key to read again", Duration::from_secs(10), || {
        RawClient::connect(c.proxies[0].port).cmd_str(&["GET", &moved]) == value
    });
}

/// A client's script writes the note that a target is silent, and a lock,
/// without a TTL (clients are refused these keys, but a script may compute
/// any name): keys go on moving on access (review: such a note stopped
/// every move to that target until someone deleted it). FUNCTION FLUSH is
/// refused meanwhile: it would delete the mover's library.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_and_locks_a_client_script_wrote_stop_no_move_nor_does_function_flush() {
    let c = cluster().await;
    let moving = keys_in(0, 1023, 1000, "n");
    preload(&c.proxies[0], &moving);
    interrupted_move(&c.conf, "0-1023", "redis-0002", &c.redis[2], 100);
    let unmoved: Vec<&String> = moving.iter().filter(|k| !exists(&c.redis[2], k)).collect();
    assert!(
        unmoved.len() > 100,
        "only {} keys left to move",
        unmoved.len()
    );
    // On the source: its key is outside the moving range.
    let anchor = &keys_in(1024, 2047, 1, "anchor")[0];
    let plant = "redis.call('set', ARGV[1], '1') redis.call('set', ARGV[2], '1') return 1";
    let note = format!("__shardproxy_silent:{}", c.redis[2].addr());
    let lock = format!("__shardproxy_lock:{}", unmoved[0]);
    let mut client = RawClient::connect(c.proxies[0].port);
    let planted = client.cmd_str(&["EVAL", plant, "1", anchor, &note, &lock]);
    assert_eq!(planted, ":1\r\n");
    assert!(exists(&c.redis[0], &note) && exists(&c.redis[0], &lock));
    for key in &unmoved {
        let want = format!("${}\r\n{key}\r\n", key.len());
        assert_eq!(client.cmd_str(&["GET", key]), want, "{key}");
        assert!(exists(&c.redis[2], key), "{key} did not move");
    }
    // While the range moves, the mover's library stays on the shards: a
    // client's FUNCTION FLUSH would delete it under the mover.
    let flush = "-ERR FUNCTION FLUSH is refused while a range moves between shards: \
                 the mover's library is loaded there; delete libraries by name\r\n";
    assert_eq!(client.cmd_str(&["FUNCTION", "FLUSH"]), flush);
    let listed =
        c.redis[0]
            .connect()
            .cmd_str(&["FUNCTION", "LIST", "LIBRARYNAME", "shardproxy_mover"]);
    assert!(listed.contains("shardproxy_mover"), "{listed}");
}

/// The target's replica stops confirming (SIGSTOP: a replica fallen
/// behind): keys leave the source only as fast as it confirms them, so at
/// most one batch (100 keys) is on the target's master alone, and when migrate says
/// it committed, the replica holds every key (review: "done" with the
/// replica holding 711 of 3,000 keys, and the target master's loss took
/// the range down until the loss was accepted with promote --force).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_leave_the_source_only_as_the_targets_replica_confirms_them() {
    let c = cluster().await;
    let replica = Redis::start();
    let replicaof = ["REPLICAOF", "127.0.0.1", &c.redis[2].port.to_string()];
    assert_eq!(replica.connect().cmd_str(&replicaof), "+OK\r\n");
    replica_caught_up(&c.redis[2]);
    add_member(&c.members, "redis-0002", &replica.addr()).await;
    let moving = keys_in(0, 1023, 1000, "r");
    preload(&c.proxies[0], &moving);
    replica.guard.signal("STOP");
    let args = ["migrate", "0-1023", "--to", "redis-0002"];
    let (mut run, log) = start_admin(&c, &args, "lagging-target-replica");
    wait_until("the move to begin", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("moving keys"))
    });
    // Watched for 3 s: the keys stay on the source but for that batch.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(3) {
        let left = moving.iter().filter(|k| exists(&c.redis[0], k)).count();
        assert!(left >= moving.len() - 100, "{left} left on the source");
        thread::sleep(Duration::from_millis(200));
    }
    replica.guard.signal("CONT");
    let (code, text) = ended(&mut run, &log, 120);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("committed"), "{text}");
    let missing: Vec<&String> = moving.iter().filter(|k| !exists(&replica, k)).collect();
    assert!(
        missing.is_empty(),
        "{} keys not on the replica",
        missing.len()
    );
    assert!(
        !moving.iter().any(|k| exists(&c.redis[0], k)),
        "keys left on the source"
    );
}
