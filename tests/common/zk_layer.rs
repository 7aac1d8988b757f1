//! What the tests of the ZooKeeper layer run in-process share
//! (tests/zk_layer.rs, tests/zk_registration.rs): the `eventually!` macro,
//! the proxy's registration task, and the means to stop a running task.
//! `eventually!` uses the caller's `Instant` (tokio's) and `Duration`.

use shardproxy::proxy::zk::{run_registration, ProxyData, ZkStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

/// Polls `$cond` (which may `.await`) every 5 ms; panics with `$what` after
/// `$secs` seconds.
#[macro_export]
macro_rules! eventually {
    ($what:expr, $secs:expr, $cond:expr) => {{
        let end = Instant::now() + Duration::from_secs($secs);
        loop {
            if $cond {
                break;
            }
            assert!(
                Instant::now() < end,
                "timed out after {} s waiting for {}",
                $secs,
                $what
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }};
}

pub const PROXY: &str = "/redis/proxy/test/127.0.0.1:22121";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A running task of the layer and the means to stop it.
pub struct Running {
    pub status: Arc<ZkStatus>,
    pub shutdown: signal::Sender<bool>,
    pub task: JoinHandle<()>,
}

impl Running {
    /// Asks the task to stop and waits until it has (session closed).
    pub async fn stop(self) {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("task stops within 5 s")
            .unwrap();
    }
}

pub fn proxy_data() -> ProxyData {
    ProxyData {
        listen: "127.0.0.1:22121".into(),
        pool: "alpha".into(),
        version: "0.1.0".into(),
        pid: std::process::id(),
        started: 1_700_000_000,
        stats: "127.0.0.1:22222".into(),
        metrics: None,
        host: String::new(),
    }
}

pub fn start_registration(hosts: String) -> Running {
    let status = Arc::new(ZkStatus::new());
    let (shutdown, receiver) = signal::channel(false);
    let task = tokio::spawn(run_registration(
        hosts,
        None,
        PROXY.into(),
        proxy_data(),
        status.clone(),
        receiver,
    ));
    Running {
        status,
        shutdown,
        task,
    }
}
