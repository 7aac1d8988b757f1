//! The ZooKeeper layer (src/zk) against a real ZooKeeper server: the cluster
//! watch as watchdogs and ops change the layout underneath it, and both
//! tasks stopped while ZooKeeper is unreachable. The proxy's registration:
//! `zk_registration.rs`.
//!
//! Each test runs its own server. The server caps sessions at 2 s, so a
//! client that cannot reach it declares its session expired after about
//! 3 s.

mod common;

use common::zk_layer::{init_tracing, start_registration, Running};
use common::zookeeper::{persistent, ZooKeeper};
use shardproxy::proxy::zk::{
    watch_cluster, ClusterView, MemberData, OnChange, Role, SessionState, ZkStatus,
};
use shardproxy::zk::layout::{member_prefix, ShardData};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch as signal;
use tokio::time::Instant;
use zookeeper_client as zk;

const ROOT: &str = "/redis/cluster/test";

fn shard_path(name: &str) -> String {
    format!("{ROOT}/{name}")
}

async fn create_shard(ops: &zk::Client, name: &str, lo: u32, hi: u32) {
    ops.mkdir(ROOT, &persistent()).await.unwrap();
    let data = ShardData::new(lo, hi).to_json();
    ops.create(&shard_path(name), &data, &persistent())
        .await
        .unwrap();
}

/// Registers `addr` in `shard` as its watchdog would; returns the member
/// znode's name.
async fn add_member(watchdog: &zk::Client, shard: &str, addr: &str) -> String {
    let data = MemberData {
        addr: addr.into(),
        role: Role::Replica,
        run_id: "x".into(),
        offset: 0,
    };
    let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
    let prefix = member_prefix(&shard_path(shard), addr);
    let json = serde_json::to_vec(&data).unwrap();
    let (_, seq) = watchdog.create(&prefix, &json, &options).await.unwrap();
    format!("{addr}-{seq}")
}

async fn set_range(ops: &zk::Client, shard: &str, data: &[u8]) {
    ops.set_data(&shard_path(shard), data, None).await.unwrap();
}

/// Every view the watch handed over, with when.
#[derive(Default)]
struct Views {
    seen: Mutex<Vec<(Instant, ClusterView)>>,
}

impl Views {
    fn push(&self, view: ClusterView) {
        self.seen.lock().unwrap().push((Instant::now(), view));
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> Option<ClusterView> {
        self.seen
            .lock()
            .unwrap()
            .last()
            .map(|(_, view)| view.clone())
    }

    fn last_at(&self) -> Option<Instant> {
        self.seen.lock().unwrap().last().map(|(at, _)| *at)
    }

    /// The last view's masters, by shard.
    fn masters(&self) -> Vec<(String, Option<String>)> {
        let view = self.last();
        let shards = view.map(|v| v.shards).unwrap_or_default();
        shards.into_iter().map(|s| (s.name, s.master)).collect()
    }

    /// The last view's ranges, by shard.
    fn ranges(&self) -> Vec<(String, u32, u32)> {
        let shards = self.last().map(|v| v.shards).unwrap_or_default();
        shards.into_iter().map(|s| (s.name, s.lo, s.hi)).collect()
    }
}

fn start_watch(hosts: String) -> (Running, Arc<Views>) {
    let views = Arc::new(Views::default());
    let seen = views.clone();
    let on_change: OnChange = Arc::new(move |view| {
        seen.push(view);
        Ok(())
    });
    let status = Arc::new(ZkStatus::new());
    let (shutdown, receiver) = signal::channel(false);
    let task = tokio::spawn(watch_cluster(
        hosts,
        None,
        ROOT.into(),
        None,
        on_change,
        status.clone(),
        receiver,
    ));
    (
        Running {
            status,
            shutdown,
            task,
        },
        views,
    )
}

/// Two shards of 4096 slots, a master and a replica each.
async fn two_shards(ops: &zk::Client, watchdog: &zk::Client) -> [String; 4] {
    create_shard(ops, "redis-0000", 0, 2047).await;
    create_shard(ops, "redis-0001", 2048, 4095).await;
    [
        add_member(watchdog, "redis-0000", "127.0.0.1:7000").await,
        add_member(watchdog, "redis-0000", "127.0.0.1:7001").await,
        add_member(watchdog, "redis-0001", "127.0.0.1:7100").await,
        add_member(watchdog, "redis-0001", "127.0.0.1:7101").await,
    ]
}

fn masters(list: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
    list.iter()
        .map(|(s, m)| (s.to_string(), Some(m.to_string())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_sees_masters_and_fails_over_within_a_second() {
    init_tracing();
    let zookeeper = ZooKeeper::start();
    let ops = zookeeper.client().await;
    let watchdog = zookeeper.client().await;
    let members = two_shards(&ops, &watchdog).await;
    let third = add_member(&watchdog, "redis-0000", "127.0.0.1:7002").await;

    let (watch, views) = start_watch(zookeeper.hosts());
    let first = [
        ("redis-0000", "127.0.0.1:7000"),
        ("redis-0001", "127.0.0.1:7100"),
    ];
    eventually!("the first view", 10, views.masters() == masters(&first));
    let view = views.last().unwrap();
    assert_eq!(view.slots, 4096);
    let shard = view.shard("redis-0000").unwrap();
    assert_eq!((shard.lo, shard.hi), (0, 2047));
    let line: Vec<&str> = shard.members.iter().map(|m| m.znode.as_str()).collect();
    assert_eq!(line, [members[0].as_str(), &members[1], &third]);
    assert!(!shard.no_members);
    assert_eq!(
        watch.status.snapshot().watch_session,
        SessionState::Connected
    );
    assert!(watch.status.snapshot().state_valid);

    // The master's watchdog leaves the line: the next member takes over.
    let mut latencies = Vec::new();
    for (gone, next) in [
        (&members[0], "127.0.0.1:7001"),
        (&members[1], "127.0.0.1:7002"),
    ] {
        let count = views.count();
        let deleted = Instant::now();
        ops.delete(&format!("{}/{gone}", shard_path("redis-0000")), None)
            .await
            .unwrap();
        let expected = masters(&[("redis-0000", next), ("redis-0001", "127.0.0.1:7100")]);
        eventually!("the next master", 3, views.masters() == expected);
        latencies.push(views.last_at().unwrap() - deleted);
        assert_eq!(views.count(), count + 1, "one view per change");
    }
    println!("failover latency (member deleted -> view handed over): {latencies:?}");
    // The status records a view just after handing it over.
    eventually!(
        "the status to record the last view",
        2,
        watch.status.snapshot().views_applied == views.count() as u64
    );
    let summary = watch.status.snapshot().view.unwrap();
    assert_eq!(
        summary.shard("redis-0000").unwrap().master.as_deref(),
        Some("127.0.0.1:7002")
    );
    assert_eq!(summary.shard("redis-0000").unwrap().members.len(), 1);
    watch.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_follows_range_changes_and_new_shards() {
    init_tracing();
    let zookeeper = ZooKeeper::start();
    let ops = zookeeper.client().await;
    let watchdog = zookeeper.client().await;
    two_shards(&ops, &watchdog).await;
    let (watch, views) = start_watch(zookeeper.hosts());
    eventually!("the first view", 10, views.count() == 1);

    // Move the boundary: both ranges change in one transaction.
    let mut multi = ops.new_multi_writer();
    multi
        .add_set_data(
            &shard_path("redis-0000"),
            &ShardData::new(0, 1023).to_json(),
            None,
        )
        .unwrap();
    multi
        .add_set_data(
            &shard_path("redis-0001"),
            &ShardData::new(1024, 4095).to_json(),
            None,
        )
        .unwrap();
    multi.commit().await.unwrap();
    let moved = vec![
        ("redis-0000".to_string(), 0, 1023),
        ("redis-0001".to_string(), 1024, 4095),
    ];
    eventually!("the new ranges", 2, views.ranges() == moved);
    assert_eq!(views.count(), 2, "a transaction gives one view");
    let snapshot = watch.status.snapshot();
    assert_eq!(snapshot.last_error, None, "no half-read transaction");
    assert!(snapshot.state_valid);

    // Grow the slot space with a third shard.
    let data = ShardData::new(4096, 8191).to_json();
    ops.create(&shard_path("redis-0002"), &data, &persistent())
        .await
        .unwrap();
    add_member(&watchdog, "redis-0002", "[::1]:7200").await;
    eventually!(
        "the third shard's master",
        2,
        views.last().is_some_and(|v| v.slots == 8192
            && v.shard("redis-0002")
                .and_then(|s| s.master.clone())
                .as_deref()
                == Some("[::1]:7200"))
    );

    // Remove it again: its member leaves, the shard goes, in one transaction.
    let gone = shard_path("redis-0002");
    let members = ops.list_children(&gone).await.unwrap();
    let mut multi = ops.new_multi_writer();
    multi
        .add_delete(&format!("{gone}/{}", members[0]), None)
        .unwrap();
    multi.add_delete(&gone, None).unwrap();
    multi.commit().await.unwrap();
    eventually!(
        "the view without the third shard",
        2,
        views
            .last()
            .is_some_and(|v| v.slots == 4096 && v.shards.len() == 2)
    );
    assert_eq!(watch.status.snapshot().last_error, None);
    watch.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_state_keeps_the_last_good_view() {
    init_tracing();
    let zookeeper = ZooKeeper::start();
    let ops = zookeeper.client().await;
    let watchdog = zookeeper.client().await;
    two_shards(&ops, &watchdog).await;
    let (watch, views) = start_watch(zookeeper.hosts());
    eventually!("the first view", 10, views.count() == 1);
    let good = views.last().unwrap();

    // Bad data on one shard: that shard keeps its last good state,
    // flagged; the view is handed over so the other shards keep following.
    set_range(&ops, "redis-0001", b"{weight").await;
    eventually!("the shard flagged invalid", 2, views.count() == 2);
    let snapshot = watch.status.snapshot();
    let error = snapshot.last_error.clone().unwrap();
    assert_eq!(error.path, shard_path("redis-0001"));
    assert!(error.reason.contains("bad shard data"), "{}", error.reason);
    assert!(!snapshot.state_valid);
    let flagged = views.last().unwrap();
    let kept = flagged.shard("redis-0001").unwrap();
    let before = good.shard("redis-0001").unwrap();
    assert!(kept.invalid.is_some());
    assert_eq!(
        (kept.lo, kept.hi, &kept.master),
        (before.lo, before.hi, &before.master)
    );
    assert_eq!(flagged.shard("redis-0000"), good.shard("redis-0000"));

    // A gap or an overlap is about the whole layout: nothing is handed over.
    set_range(&ops, "redis-0001", &ShardData::new(2048, 4095).to_json()).await;
    // The status says valid just before the repaired view is handed over:
    // wait for both.
    eventually!(
        "valid again",
        2,
        watch.status.snapshot().state_valid
            && views
                .last()
                .is_some_and(|v| v.shard("redis-0001").unwrap().invalid.is_none())
    );
    let valid_views = views.count();
    let gap = br#"{"weight":"2100-4095"}"#.as_slice();
    let overlap = br#"{"weight":"2000-4095"}"#.as_slice();
    let cases: [(&[u8], &str); 2] = [
        (gap, "slots 2048-2099 belong to no shard"),
        (
            overlap,
            "shards redis-0000 and redis-0001 overlap on slots 2000-2047",
        ),
    ];
    for (data, reason) in cases {
        let before = watch.status.snapshot().last_error.map(|e| e.at);
        set_range(&ops, "redis-0001", data).await;
        eventually!(
            format!("an error: {reason}"),
            2,
            watch
                .status
                .snapshot()
                .last_error
                .is_some_and(|e| Some(e.at) != before)
        );
        let snapshot = watch.status.snapshot();
        let error = snapshot.last_error.unwrap();
        assert_eq!(error.path, ROOT);
        assert!(error.reason.contains(reason), "{}", error.reason);
        assert!(!snapshot.state_valid);
        assert_eq!(views.count(), valid_views, "no view from an invalid layout");
    }

    // A child that is not <ip:port>-<seq>: left out of the line, counted.
    set_range(&ops, "redis-0001", &ShardData::new(2048, 4095).to_json()).await;
    eventually!("valid again", 2, watch.status.snapshot().state_valid);
    let junk = format!("{}/junk", shard_path("redis-0000"));
    ops.create(&junk, b"", &persistent()).await.unwrap();
    eventually!(
        "the stray child counted",
        2,
        views
            .last()
            .is_some_and(|v| v.shard("redis-0000").unwrap().strays == ["junk"])
    );
    assert!(watch.status.snapshot().state_valid);
    assert_eq!(
        views.last().unwrap().shard("redis-0000").unwrap().master,
        good.shard("redis-0000").unwrap().master
    );
    watch.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shard_without_members_keeps_its_master_flagged() {
    init_tracing();
    let zookeeper = ZooKeeper::start();
    let ops = zookeeper.client().await;
    let watchdog = zookeeper.client().await;
    let members = two_shards(&ops, &watchdog).await;
    let (watch, views) = start_watch(zookeeper.hosts());
    eventually!("the first view", 10, views.count() == 1);

    // The master leaves, then the replica that took over leaves too.
    let remove = |member: &String| format!("{}/{member}", shard_path("redis-0001"));
    ops.delete(&remove(&members[2]), None).await.unwrap();
    eventually!(
        "the replica taking over",
        2,
        views.masters()[1].1.as_deref() == Some("127.0.0.1:7101")
    );
    ops.delete(&remove(&members[3]), None).await.unwrap();
    eventually!(
        "the shard flagged",
        2,
        views
            .last()
            .is_some_and(|v| v.shard("redis-0001").unwrap().no_members)
    );
    let shard = views.last().unwrap().shard("redis-0001").unwrap().clone();
    assert_eq!(
        shard.master.as_deref(),
        Some("127.0.0.1:7101"),
        "last known master kept"
    );
    assert!(shard.members.is_empty());
    eventually!(
        "the status to record the flag",
        2,
        watch
            .status
            .snapshot()
            .view
            .is_some_and(|v| v.shard("redis-0001").unwrap().no_members)
    );

    // A Redis registers again: it becomes master and the flag goes.
    add_member(&watchdog, "redis-0001", "127.0.0.1:7100").await;
    eventually!(
        "the new master",
        2,
        views.last().is_some_and(|v| {
            let shard = v.shard("redis-0001").unwrap();
            !shard.no_members && shard.master.as_deref() == Some("127.0.0.1:7100")
        })
    );
    watch.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_recovers_after_zookeeper_restart() {
    init_tracing();
    let mut zookeeper = ZooKeeper::start();
    {
        let ops = zookeeper.client().await;
        create_shard(&ops, "redis-0000", 0, 2047).await;
        create_shard(&ops, "redis-0001", 2048, 4095).await;
    }
    let watchdog = zookeeper.client().await;
    add_member(&watchdog, "redis-0000", "127.0.0.1:7000").await;
    add_member(&watchdog, "redis-0001", "127.0.0.1:7100").await;
    let (watch, views) = start_watch(zookeeper.hosts());
    eventually!("the first view", 10, views.count() == 1);

    // Down for longer than the session timeout: every session expires.
    zookeeper.stop();
    eventually!(
        "the watch session to expire",
        10,
        !matches!(
            watch.status.snapshot().watch_session,
            SessionState::Connected | SessionState::Disconnected
        )
    );
    assert_eq!(
        views.count(),
        1,
        "the last view stays while ZooKeeper is down"
    );
    zookeeper.start_again();
    let restarted = Instant::now();
    eventually!(
        "a new watch session",
        10,
        watch.status.snapshot().watch_session == SessionState::Connected
    );
    println!(
        "watch reconnected {:?} after ZooKeeper restarted",
        restarted.elapsed()
    );

    // Changes made after the restart are seen. The old watchdog session's
    // members vanish when the server expires it.
    let ops = zookeeper.client().await;
    let watchdog = zookeeper.client().await;
    add_member(&watchdog, "redis-0000", "127.0.0.1:7001").await;
    let mut multi = ops.new_multi_writer();
    multi
        .add_set_data(
            &shard_path("redis-0000"),
            &ShardData::new(0, 2999).to_json(),
            None,
        )
        .unwrap();
    multi
        .add_set_data(
            &shard_path("redis-0001"),
            &ShardData::new(3000, 4095).to_json(),
            None,
        )
        .unwrap();
    multi.commit().await.unwrap();
    eventually!(
        "the changes made after the restart",
        10,
        views.last().is_some_and(|v| {
            let (a, b) = (
                v.shard("redis-0000").unwrap(),
                v.shard("redis-0001").unwrap(),
            );
            a.hi == 2999
                && b.lo == 3000
                && a.master.as_deref() == Some("127.0.0.1:7001")
                && b.no_members
                && b.master.as_deref() == Some("127.0.0.1:7100")
        })
    );
    println!(
        "changes after the restart seen {:?} after it",
        restarted.elapsed()
    );
    watch.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_waits_for_zookeeper_and_for_the_root() {
    init_tracing();
    let mut zookeeper = ZooKeeper::start();
    zookeeper.stop();
    let (watch, views) = start_watch(zookeeper.hosts());
    eventually!(
        "a connect error in status",
        10,
        watch
            .status
            .snapshot()
            .last_error
            .is_some_and(|e| e.reason.contains("cannot connect"))
    );
    assert_eq!(
        watch.status.snapshot().watch_session,
        SessionState::Connecting
    );

    zookeeper.start_again();
    eventually!(
        "the missing root in status",
        10,
        watch
            .status
            .snapshot()
            .last_error
            .is_some_and(|e| e.path == ROOT && e.reason == "no such znode")
    );
    assert_eq!(views.count(), 0);

    let ops = zookeeper.client().await;
    create_shard(&ops, "redis-0000", 0, 99).await;
    add_member(&ops, "redis-0000", "127.0.0.1:7000").await;
    eventually!(
        "the first view",
        5,
        views.masters() == masters(&[("redis-0000", "127.0.0.1:7000")])
    );
    assert_eq!(views.last().unwrap().slots, 100);
    watch.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_while_zookeeper_is_unreachable() {
    init_tracing();
    let mut zookeeper = ZooKeeper::start();
    zookeeper.stop();
    let proxy = start_registration(zookeeper.hosts());
    let (watch, _views) = start_watch(zookeeper.hosts());
    eventually!(
        "connect errors",
        10,
        proxy.status.snapshot().last_error.is_some()
            && watch.status.snapshot().last_error.is_some()
    );
    let (proxy_status, watch_status) = (proxy.status.clone(), watch.status.clone());
    proxy.stop().await;
    watch.stop().await;
    assert_eq!(
        proxy_status.snapshot().registration_session,
        SessionState::Closed
    );
    assert_eq!(watch_status.snapshot().watch_session, SessionState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_survives_a_short_zookeeper_restart() {
    init_tracing();
    let mut zookeeper = ZooKeeper::start();
    // The test's own sessions must outlast the restart, which can take a
    // few seconds when the machine is busy.
    let ops = zookeeper.client_with_session(Duration::from_secs(15)).await;
    let watchdog = zookeeper.client_with_session(Duration::from_secs(15)).await;
    two_shards(&ops, &watchdog).await;
    let (watch, views) = start_watch(zookeeper.hosts());
    eventually!("the first view", 10, views.count() == 1);

    // Back within the session timeout: clients reconnect with their
    // sessions, and the watch's client sets its watches again.
    zookeeper.stop();
    zookeeper.start_again();
    add_member(&watchdog, "redis-0000", "127.0.0.1:7002").await;
    set_range(&ops, "redis-0001", &ShardData::new(2048, 5000).to_json()).await;
    eventually!(
        "the changes made after the restart",
        10,
        views
            .last()
            .is_some_and(|v| v.slots == 5001 && v.shard("redis-0000").unwrap().members.len() == 3)
    );
    assert_eq!(
        watch.status.snapshot().watch_session,
        SessionState::Connected
    );
    watch.stop().await;
}
