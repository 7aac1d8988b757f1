//! The proxy's registration (src/zk) against a real ZooKeeper server: its
//! znode appears with its data and vanishes on close, waits for another
//! process's znode to go, and comes back after a session expiry.
//!
//! Each test runs its own server. The server caps sessions at 2 s, so a
//! client that cannot reach it declares its session expired after about
//! 3 s.

mod common;

use common::zk_layer::{init_tracing, proxy_data, start_registration, PROXY};
use common::zookeeper::{persistent, ZooKeeper};
use shardproxy::proxy::zk::{ProxyData, SessionState};
use std::time::Duration;
use tokio::time::Instant;
use zookeeper_client as zk;

/// The proxy znode's data and owning session, if it exists.
async fn proxy_znode(ops: &zk::Client) -> Option<(ProxyData, i64)> {
    match ops.get_data(PROXY).await {
        Ok((data, stat)) => Some((serde_json::from_slice(&data).unwrap(), stat.ephemeral_owner)),
        Err(zk::Error::NoNode) => None,
        Err(e) => panic!("get {PROXY}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_appears_with_its_data_and_vanishes_on_close() {
    init_tracing();
    let zookeeper = ZooKeeper::start();
    let ops = zookeeper.client().await;
    let proxy = start_registration(zookeeper.hosts());

    eventually!("the proxy znode", 10, proxy_znode(&ops).await.is_some());
    let (data, owner) = proxy_znode(&ops).await.unwrap();
    assert_eq!(data, proxy_data());
    assert_ne!(owner, 0, "the proxy znode must be ephemeral");
    eventually!("status registered", 5, proxy.status.snapshot().registered);
    assert_eq!(
        proxy.status.snapshot().registration_session,
        SessionState::Connected
    );

    // Deleted by hand: it comes back, from the same session.
    ops.delete(PROXY, None).await.unwrap();
    eventually!(
        "the proxy znode again",
        5,
        proxy_znode(&ops).await.is_some()
    );
    assert_eq!(proxy_znode(&ops).await, Some((proxy_data(), owner)));

    let status = proxy.status.clone();
    proxy.stop().await;
    assert_eq!(
        proxy_znode(&ops).await,
        None,
        "znode must be gone when the task returns"
    );
    let snapshot = status.snapshot();
    assert!(!snapshot.registered);
    assert_eq!(snapshot.registration_session, SessionState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_waits_for_another_process_znode_to_go() {
    init_tracing();
    let zookeeper = ZooKeeper::start();
    let ops = zookeeper.client().await;
    // The previous run of this proxy, whose session has not expired yet.
    let previous = zookeeper.client().await;
    let old = ProxyData {
        pid: 1,
        ..proxy_data()
    };
    previous
        .mkdir("/redis/proxy/test", &persistent())
        .await
        .unwrap();
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    previous
        .create(PROXY, &old.to_json(), &ephemeral)
        .await
        .unwrap();

    let proxy = start_registration(zookeeper.hosts());
    eventually!(
        "the conflict in status",
        10,
        proxy
            .status
            .snapshot()
            .last_error
            .is_some_and(|e| e.path == PROXY)
    );
    let reason = proxy.status.snapshot().last_error.unwrap().reason;
    assert!(
        reason.contains("held by session") && reason.contains("\"pid\":1"),
        "{reason}"
    );
    assert_eq!(
        proxy_znode(&ops).await.unwrap().0,
        old,
        "the other znode is left alone"
    );
    assert!(!proxy.status.snapshot().registered);

    drop(previous);
    eventually!(
        "our znode after the other session closed",
        10,
        proxy_znode(&ops)
            .await
            .is_some_and(|(data, _)| data == proxy_data())
    );
    eventually!("status registered", 5, proxy.status.snapshot().registered);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_comes_back_after_session_expiry() {
    init_tracing();
    let mut zookeeper = ZooKeeper::start();
    let proxy = start_registration(zookeeper.hosts());
    let owner = {
        let ops = zookeeper.client().await;
        eventually!("the proxy znode", 10, proxy_znode(&ops).await.is_some());
        proxy_znode(&ops).await.unwrap().1
    };

    zookeeper.stop();
    eventually!(
        "the registration session to expire",
        10,
        proxy.status.snapshot().registration_session != SessionState::Connected
            && proxy.status.snapshot().registration_session != SessionState::Disconnected
    );
    let restarted = Instant::now();
    zookeeper.start_again();
    let ops = zookeeper.client().await;
    eventually!(
        "the proxy znode from a new session",
        15,
        proxy_znode(&ops)
            .await
            .is_some_and(|(data, by)| by != owner && data == proxy_data())
    );
    println!(
        "registered again {:?} after ZooKeeper restarted",
        restarted.elapsed()
    );
    eventually!("status registered", 5, proxy.status.snapshot().registered);
    proxy.stop().await;
    assert_eq!(proxy_znode(&ops).await, None);
}
