//! The proxy's ZooKeeper side: its registration and the cluster watch.
//!
//! - [`registration`]: this proxy's EPHEMERAL znode, kept while it runs.
//! - [`watch`]: watches the cluster root and hands every new valid
//!   [`ClusterView`] to a callback.
//! - [`status`]: what both are doing, for INFO and stats.
//!
//! Registration and watch each run their own session. They fail in
//! different ways: the watch may drop its session and start over at any
//! time without side effects, while the registration's session carries the
//! proxy's znode and must end only on shutdown (closing it removes the znode
//! at once).
//!
//! Both run until their shutdown receiver turns `true` (or its sender is
//! dropped), retrying with backoff while ZooKeeper is unreachable; they never
//! panic or give up.
//!
//! The `zookeeper-client` crate needs its `tokio` feature to spawn its
//! session task on the tokio runtime (without it, connecting panics with "no
//! spawner").
//!
//! # Usage
//! ```no_run
//! use shardproxy::proxy::zk::{self, ProxyData, ZkStatus};
//! use std::sync::Arc;
//!
//! # async fn example(data: ProxyData) {
//! let status = Arc::new(ZkStatus::new()); // shown by INFO
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! let on_change: zk::OnChange = Arc::new(|view: zk::ClusterView| {
//!     // Build a routing table from `view` and swap it in.
//!     let _ = view.slots;
//!     Ok(())
//! });
//! let hosts = "172.16.10.163:2181,172.16.10.96:2181".to_string();
//! let watch = tokio::spawn(zk::watch_cluster(
//!     hosts.clone(),
//!     None, // or Some(ZkAuth::parse("user:password")?)
//!     "/redis/cluster/icd".into(),
//!     Some(4096), // the pool file's slot space (range form), else None
//!     on_change,
//!     status.clone(),
//!     shutdown.clone(),
//! ));
//! let registration = tokio::spawn(zk::run_registration(
//!     hosts,
//!     None,
//!     "/redis/proxy/icd/172.17.32.105:22121".into(),
//!     data,
//!     status.clone(),
//!     shutdown,
//! ));
//! // On shutdown: both close their sessions; the proxy znode is gone when
//! // `registration` has finished.
//! stop.send(true).ok();
//! let _ = tokio::join!(watch, registration);
//! # }
//! ```

pub mod registration;
mod session;
pub mod status;
pub mod watch;

pub use crate::zk::layout::{LayoutError, MemberData, ProxyData, Role};
pub use crate::zk::view::{ClusterView, Member, ShardView};
pub use registration::run_registration;
pub use status::{SessionState, ZkError, ZkStatus, ZkStatusSnapshot};
pub use watch::{watch_cluster, OnChange};
