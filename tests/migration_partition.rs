//! A proxy cut off from ZooKeeper keeps serving from its last table (the
//! contract: a lost session does not stop a proxy). Once its session
//! expires its registration is gone, so a move that waited only for the
//! registered proxies would go ahead without it, and every write it then
//! sent to the range's old shard would be lost. The roster keeps it in the
//! moves' barrier until it is back, or an operator forgets it. A proxy
//! killed mid-move loses nothing (its clients go on through the other),
//! and proxies started before the cluster was made acknowledge a move.

mod common;

use common::migration::{
    admin, assert_preloaded, cluster, cluster_made_after_its_proxies, dbsize, exists, preload,
    run_admin, wait_rostered, Tally, ROSTER,
};
use common::redis::RawClient;
use common::relay::Relay;
use common::wait_until;
use common::zk_cluster::{children, keys_in, start_proxy_via, wait_for_view, PROXIES};
use common::ProcessGuard;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Runs `shardproxy-admin status` every 200 ms until its output satisfies
/// `cond`; the last output.
fn status_until(conf: &Path, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = run_admin(conf, &["status"]);
        if cond(&text) {
            return text;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `migrate 0-1023 --to SHARD` with a barrier timeout of `barrier_ms`.
fn move_range(conf: &Path, to: &str, barrier_ms: &str) -> (i32, String) {
    let args = [
        "migrate",
        "0-1023",
        "--to",
        to,
        "--barrier-timeout-ms",
        barrier_ms,
    ];
    run_admin(conf, &args)
}

fn unregistered(name: &str) -> String {
    format!("proxy {name} is not registered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_cut_off_from_zookeeper_holds_moves_up_until_it_is_back_or_forgotten() {
    let c = cluster().await;
    let [source, _, new] = &c.redis;
    let relay = Relay::start(c.zookeeper.port);
    let mut cut_off = start_proxy_via(
        &relay.hosts(),
        &[&c.redis[0], &c.redis[1]],
        "  timeout: 1000\n",
        &[],
    );
    wait_for_view(&cut_off, &format!("master={}", new.addr()));
    let name = format!("127.0.0.1:{}", cut_off.port);
    status_until(&c.conf, "the proxy registered", |s| s.contains(&name));

    relay.cut();
    status_until(&c.conf, "its session to expire", |s| {
        s.contains(&unregistered(&name))
    });
    // Cut off, it serves on from its last table.
    let key = keys_in(0, 1023, 1, "cut").remove(0);
    let mut client = RawClient::connect(cut_off.port);
    assert_eq!(client.cmd_str(&["SET", &key, "before"]), "+OK\r\n");
    assert_eq!(source.connect().cmd_str(&["GET", &key]), "$6\r\nbefore\r\n");

    // So no range moves under it.
    let (code, text) = move_range(&c.conf, "redis-0002", "1000");
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&format!(
            "did not acknowledge the migration within 1000 ms: {name} (in the roster but not registered"
        )) && text.contains(&format!("`shardproxy-admin forget-proxy {name}`"))
            && text.contains("nothing was moved"),
        "{text}"
    );
    assert_eq!(dbsize(new), 0);
    assert_eq!(client.cmd_str(&["SET", &key, "during"]), "+OK\r\n");

    // A registered proxy cannot be forgotten.
    let registered = format!("127.0.0.1:{}", c.proxies[0].port);
    let (code, text) = run_admin(&c.conf, &["forget-proxy", &registered]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("is registered"), "{text}");

    // Back in touch, it follows the move, and its writes land on the new
    // shard.
    relay.restore();
    status_until(&c.conf, "the proxy registered again", |s| {
        s.contains(&name) && !s.contains(&unregistered(&name))
    });
    let (code, text) = move_range(&c.conf, "redis-0002", "1000");
    assert_eq!(code, 0, "{text}");
    wait_for_view(&cut_off, "0-1023");
    assert_eq!(client.cmd_str(&["GET", &key]), "$6\r\nduring\r\n");
    assert_eq!(client.cmd_str(&["SET", &key, "after"]), "+OK\r\n");
    assert_eq!(new.connect().cmd_str(&["GET", &key]), "$5\r\nafter\r\n");
    assert_eq!(source.connect().cmd_str(&["EXISTS", &key]), ":0\r\n");

    // Killed, it stays in the roster: moves wait until it is forgotten.
    cut_off.guard.kill();
    let (code, text) = move_range(&c.conf, "redis-0000", "500");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&name), "{text}");
    status_until(&c.conf, "the killed proxy's session to expire", |s| {
        s.contains(&unregistered(&name))
    });
    let (code, text) = run_admin(&c.conf, &["forget-proxy", &name]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("forgotten"), "{text}");
    let (code, text) = run_admin(&c.conf, &["forget-proxy", &name]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("forget-proxy: no proxy"), "{text}");
    let (code, text) = move_range(&c.conf, "redis-0000", "500");
    assert_eq!(code, 0, "{text}");

    // A proxy stopped cleanly leaves the roster itself.
    let mut stopped = c.proxies;
    let leaving = format!("127.0.0.1:{}", stopped[1].port);
    stopped[1].guard.signal("TERM");
    stopped[1].guard.wait_exit(Duration::from_secs(10));
    let text = status_until(&c.conf, "the stopped proxy gone", |s| !s.contains(&leaving));
    assert!(!text.contains("is not registered"), "{text}");
    let (code, text) = run_admin(&c.conf, &["migrate", "0-1023", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
}

/// The roster entry of a running proxy comes back by itself: after it was
/// forgotten while cut off, and after its session expired. A proxy stopped
/// cleanly after such an expiry still leaves the roster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_proxy_keeps_its_roster_entry_and_leaves_it_when_stopped() {
    let c = cluster().await;
    let relay = Relay::start(c.zookeeper.port);
    let mut proxy = start_proxy_via(
        &relay.hosts(),
        &[&c.redis[0], &c.redis[1]],
        "  timeout: 1000\n",
        &[],
    );
    let name = format!("127.0.0.1:{}", proxy.port);
    let rostered = || async { children(&c.members, ROSTER).await.contains(&name) };
    status_until(&c.conf, "the proxy registered", |s| s.contains(&name));
    wait_rostered(&c.members, &name).await;

    relay.cut();
    status_until(&c.conf, "its session to expire", |s| {
        s.contains(&unregistered(&name))
    });
    let (code, text) = run_admin(&c.conf, &["forget-proxy", &name]);
    assert_eq!(code, 0, "{text}");
    assert!(!rostered().await);
    relay.restore();
    wait_rostered(&c.members, &name).await;
    status_until(&c.conf, "the proxy registered again", |s| {
        s.contains(&name) && !s.contains(&unregistered(&name))
    });

    proxy.guard.signal("TERM");
    assert_eq!(proxy.guard.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!rostered().await, "left in the roster");
    let (code, text) = run_admin(&c.conf, &["migrate", "0-1023", "--to", "redis-0002"]);
    assert_eq!(code, 0, "{text}");
}

/// A proxy told to stop drains its clients first, and until it has, it
/// stays in the barrier and follows a move. A client that does not read
/// holds the drain: 64 GETs of a 1 MB value in the moving range, most of
/// them dispatched only as it reads, after the move committed; every one
/// finds the value. A client that keeps writing is let go at a clean
/// point: every write it saw acknowledged is there, none other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_proxy_follows_a_move_until_its_clients_are_gone() {
    let c = cluster().await;
    let [key, big_key] = <[String; 2]>::try_from(keys_in(0, 1023, 2, "drain")).unwrap();
    let stopping = &c.proxies[1];
    let big = "x".repeat(1 << 20);
    let mut client = RawClient::connect(stopping.port);
    assert_eq!(client.cmd_str(&["SET", &big_key, &big]), "+OK\r\n");
    assert_eq!(client.cmd_str(&["SET", &key, "0"]), "+OK\r\n");
    let mut holder = RawClient::connect(stopping.port);
    let gets: Vec<u8> = (0..64)
        .flat_map(|_| common::redis::encode_command(&[b"GET", big_key.as_bytes()]))
        .collect();
    holder.send_raw(&gets);
    stopping.guard.signal("TERM");
    let conf = c.conf.clone();
    let mover =
        std::thread::spawn(move || run_admin(&conf, &["migrate", "0-1023", "--to", "redis-0002"]));
    // Writes every 20 ms until the proxy lets the client go.
    let mut acked = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let next = acked + 1;
        let sent =
            common::redis::encode_command(&[b"SET", key.as_bytes(), next.to_string().as_bytes()]);
        if client.reader.get_mut().write_all(&sent).is_err() {
            break;
        }
        let mut line = String::new();
        match client.reader.read_line(&mut line) {
            Ok(n) if n > 0 => assert_eq!(line, "+OK\r\n"),
            _ => break,
        }
        acked = next;
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, text) = mover.join().unwrap();
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("warning"), "{text}");
    assert!(acked > 0, "no write acknowledged");
    let mut healthy = RawClient::connect(c.proxies[0].port);
    let last = acked.to_string();
    assert_eq!(
        healthy.cmd_str(&["GET", &key]),
        format!("${}\r\n{last}\r\n", last.len())
    );
    let value = format!("${}\r\n{big}\r\n", big.len()).into_bytes();
    for i in 0..64 {
        assert!(
            holder.read_reply() == value,
            "GET {i} through the stopping proxy"
        );
    }
}

/// A proxy killed and started again on its address while a migration
/// waits in prepare: the new process acknowledges with its own session,
/// so its acknowledgement outlives the dead process's session and the
/// migration goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_restarted_on_its_address_mid_prepare_keeps_its_acknowledgement() {
    let c = cluster().await;
    let [mut first, second] = c.proxies;
    // A roster entry nobody acknowledges for holds the migration in prepare.
    let ghost = "/redis/control/test/proxies/ghost";
    c.members
        .create(ghost, b"", &common::zookeeper::persistent())
        .await
        .unwrap();
    let conf = c.conf.clone();
    let mover = std::thread::spawn(move || {
        run_admin(
            &conf,
            &[
                "migrate",
                "0-1023",
                "--to",
                "redis-0002",
                "--barrier-timeout-ms",
                "60000",
            ],
        )
    });
    let name = format!("127.0.0.1:{}", first.port);
    let ack = format!("/redis/control/test/migration-acks/{name}");
    let acked = |c: &zookeeper_client::Client| {
        let (c, ack) = (c.clone(), ack.clone());
        async move {
            match c.get_data(&ack).await {
                Ok((data, stat)) => {
                    Some((String::from_utf8_lossy(&data).contains("prepare"), stat))
                }
                Err(_) => None,
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let old_owner = loop {
        if let Some((true, stat)) = acked(&c.members).await {
            break stat.ephemeral_owner;
        }
        assert!(Instant::now() < deadline, "no prepare acknowledgement");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let yaml = std::fs::read_to_string(&first.conf).unwrap();
    first.guard.kill();
    let again = common::proxy::Proxy::start_yaml_args(first.port, &yaml, &[]);
    // The new process acknowledges with its own session (the dead one's
    // acknowledgement would vanish when that session expires).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match acked(&c.members).await {
            Some((true, stat)) if stat.ephemeral_owner != old_owner => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the restarted proxy never acknowledged with its own session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.members.delete(ghost, None).await.unwrap();
    let (code, text) = mover.join().unwrap();
    assert_eq!(code, 0, "{text}");
    drop((again, second));
}

/// A persistent znode under the proxy root (made by hand, or by another
/// tool: a proxy registers an ephemeral one) is no proxy's: `status` flags
/// it, migrations do not wait for it, and `forget-proxy` deletes it
/// (review: it blocked every migration, and `forget-proxy` refused it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_proxy_znode_holds_no_move_up_and_can_be_forgotten() {
    use zookeeper_client as zk;
    let c = cluster().await;
    let ops = c.zookeeper.client().await;
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let valid = br#"{"listen":"9.9.9.9:9","pool":"zeta","pid":1,"started":1}"#;
    for (name, data) in [("9.9.9.9:9", &valid[..]), ("junkproxy", &b"not json"[..])] {
        ops.create(&format!("{PROXIES}/{name}"), data, &persistent)
            .await
            .unwrap();
    }
    let text = status_until(&c.conf, "the znodes flagged", |s| {
        s.matches("not ephemeral: no running proxy registered it")
            .count()
            >= 2
    });
    assert!(text.contains("forget-proxy 9.9.9.9:9"), "{text}");
    let (code, text) = move_range(&c.conf, "redis-0002", "5000");
    assert_eq!(code, 0, "{text}");
    for name in ["9.9.9.9:9", "junkproxy"] {
        let (code, text) = run_admin(&c.conf, &["forget-proxy", name]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("deleted"), "{text}");
    }
    assert!(children(&ops, PROXIES)
        .await
        .iter()
        .all(|n| n.starts_with("127.0.0.1:")));
    // A running proxy's own registration is still refused.
    let registered = format!("127.0.0.1:{}", c.proxies[0].port);
    let (code, text) = run_admin(&c.conf, &["forget-proxy", &registered]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("is registered"), "{text}");
}

/// A client's writer that follows its proxy's death to another proxy, as
/// a client behind a VIP would. A write whose connection dropped has an
/// unknown outcome and is not counted as acknowledged.
fn writer_with_fallback(
    keys: Vec<String>,
    ports: [u16; 2],
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> thread::JoinHandle<Vec<(String, u64)>> {
    thread::spawn(move || {
        let mut client = RawClient::connect(ports[0]);
        let mut acked = vec![0u64; keys.len()];
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            for (i, key) in keys.iter().enumerate() {
                let value = round.to_string();
                let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    client.cmd_str(&["SET", key, &value])
                }));
                match sent {
                    Ok(reply) if reply == "+OK\r\n" => {
                        acked[i] = round;
                        tally.writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(other) => {
                        eprintln!("SET {key}: {other:?}");
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => client = RawClient::connect(ports[1]),
                }
            }
        }
        keys.into_iter().zip(acked).collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_mid_move_loses_nothing_and_the_move_finishes() {
    let c = cluster().await;
    let keys = keys_in(0, 1023, 20_000, "k");
    preload(&c.proxies[0], &keys);
    let hot = keys_in(0, 1023, 100, "hot");
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let ports = [c.proxies[0].port, c.proxies[1].port];
    let writer = writer_with_fallback(hot.clone(), ports, stop.clone(), tally.clone());
    wait_until("load running", Duration::from_secs(10), || {
        tally.writes.load(Ordering::Relaxed) > 300
    });
    let child = admin(
        &c.conf,
        &["migrate", "0-1023", "--to", "redis-0002", "--rate", "4000"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut mover = ProcessGuard::new("shardproxy-admin migrate", child);
    wait_until("the mover to move keys", Duration::from_secs(20), || {
        dbsize(&c.redis[2]) > 2000
    });
    // The proxy the writer uses dies with requests of the range in its
    // lanes; the writer goes on through the other one.
    c.proxies[0].guard.signal("KILL");
    let writes_at_kill = tally.writes.load(Ordering::Relaxed);
    wait_until(
        "writes through the other proxy",
        Duration::from_secs(10),
        || tally.writes.load(Ordering::Relaxed) > writes_at_kill + 300,
    );
    let code = mover.wait_exit(Duration::from_secs(60));
    let output = mover.child.take().map(|c| c.wait_with_output().unwrap());
    assert_eq!(code, Some(0), "migrate did not finish: {output:?}");
    stop.store(true, Ordering::Relaxed);
    let finals = writer.join().unwrap();
    eprintln!(
        "proxy killed mid-move: {} writes acknowledged, {} error replies",
        tally.writes.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed)
    );
    assert_eq!(tally.errors.load(Ordering::Relaxed), 0, "error replies");
    let mut client = RawClient::connect(c.proxies[1].port);
    wait_for_view(&c.proxies[1], "0-1023");
    for (key, value) in &finals {
        let want = format!("${}\r\n{value}\r\n", value.to_string().len());
        assert_eq!(client.cmd_str(&["GET", key]), want, "{key}");
    }
    for key in keys.iter().chain(&hot) {
        assert!(exists(&c.redis[2], key), "{key} not on the new shard");
        assert!(!exists(&c.redis[0], key), "{key} left on the source");
    }
}

/// Proxies started before the cluster's znodes were made watch the
/// migration znode all the same and acknowledge a move (review: such
/// proxies never read one, and every migration was called off after
/// waiting for them until they were restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_started_before_the_cluster_was_made_acknowledge_a_move() {
    let c = cluster_made_after_its_proxies().await;
    let keys = keys_in(1024, 2047, 20, "early");
    preload(&c.proxies[0], &keys);
    let (code, text) = run_admin(
        &c.conf,
        &[
            "migrate",
            "1024-2047",
            "--to",
            "redis-0002",
            "--barrier-timeout-ms",
            "5000",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("committed"), "{text}");
    for proxy in &c.proxies {
        assert_preloaded(proxy.port, &keys);
    }
    for key in &keys {
        assert!(exists(&c.redis[2], key), "{key} not on the new shard");
    }
}
