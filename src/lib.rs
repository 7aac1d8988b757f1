//! shardproxy: a Redis sharding proxy in the twemproxy mould.
//!
//! Three programs over shared foundations.
//!
//! The programs:
//! - [`proxy`]: `shardproxy`, the proxy clients talk to.
//! - [`watchdog`]: `shardproxy-watchdog`, beside every Redis: keeps its
//!   shard's line in ZooKeeper and fails over.
//! - [`admin`]: `shardproxy-admin`, the ops tool: init, status, switchover.
//!
//! The foundations they share:
//! - [`config`]: the pool file (twemproxy's YAML plus ranges and ZooKeeper keys).
//! - [`hash`], [`route`]: twemproxy's hash functions and key distributions, bit-exact.
//! - [`protocol`]: RESP2/RESP3 parsing and encoding.
//! - [`command`]: the Redis 7.0 command table: arity, keys, handling.
//! - [`zk`]: the ZooKeeper layout (paths, names, JSON) and session helpers.
//! - [`redis_client`]: a small async Redis client for control connections
//!   (the watchdog's checks, the proxy's SCRIPT KILL).
//! - [`logging`]: logging and signals at start-up.
//! - [`tls`]: TLS settings (rustls) for client listeners and Redis connections.

#![forbid(unsafe_code)]

pub mod admin;
pub mod command;
pub mod config;
pub mod hash;
pub mod logging;
pub mod protocol;
pub mod proxy;
pub mod redis_client;
pub mod route;
pub mod tls;
pub mod watchdog;
pub mod zk;
