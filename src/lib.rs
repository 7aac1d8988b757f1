//! shardproxy: a Redis sharding proxy in the twemproxy mould.
//!
//! Module map, from the pool file to the wire:
//! - [`config`]: the pool file (twemproxy's YAML plus ranges and ZooKeeper keys).
//! - [`hash`], [`route`]: twemproxy's hash functions and key distributions, bit-exact.
//! - [`router`]: the immutable routing table of a pool, swapped atomically.
//! - [`protocol`]: RESP2/RESP3 parsing and encoding.
//! - [`command`]: the Redis 7.0 command table: arity, keys, handling.
//! - [`backend`]: connections to the Redis servers: pipelining, timeouts, health.
//! - [`client`]: one client session; [`split`] multi-key commands over shards;
//!   [`local`] and [`info`] the commands the proxy answers itself.
//! - [`pool`], [`stats`], [`server`]: a pool's run-time state, counters and listener;
//!   [`stats_server`] the twemproxy stats port and the Prometheus endpoint.
//! - [`zk`]: ZooKeeper registration and cluster watch; [`cluster`] turns its
//!   views into routing tables.
//! - [`watchdog`]: the watchdog beside every Redis; [`admin`]: the ops tool.
//! - [`reload`]: SIGHUP re-reads the pool file under running clients.
//! - [`cli`]: the nutcracker-compatible command line of the `shardproxy` binary;
//!   [`logging`] what the binaries share at start-up.

#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod command;
pub mod config;
pub mod hash;
pub mod info;
pub mod local;
pub mod logging;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod route;
pub mod router;
pub mod server;
pub mod split;
pub mod stats;
pub mod stats_server;
pub mod watchdog;
pub mod zk;
