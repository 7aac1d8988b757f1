//! The `shardproxy` program: everything only the proxy runs.
//!
//! From the socket inwards:
//! - [`cli`]: nutcracker's command line; starts the [`listener`]s.
//! - [`listener`]: one accept loop per pool, and the shutdown sequence;
//!   [`accept`] backs off when accepting fails.
//! - [`client`]: one client connection's loop: read, dispatch, reply in order.
//!   Its state is a [`session::Session`]; what it owes the client is a
//!   [`pending::Pending`] per request; where each request goes (rights,
//!   routing, splitting) is [`dispatch`]'s; its [`window`] bounds what it
//!   has in flight, and [`input_memory`] counts what its input holds beyond
//!   a read (read-ahead shares, grown buffers).
//! - [`local`] and [`info`]: the commands the proxy answers itself;
//!   [`acl`] the client users, their passwords and rights.
//! - [`split`]: multi-key commands split over shards and put back together.
//! - [`keyspace`] (SCAN KEYS RANDOMKEY FLUSH*) and [`scripts`] (SCRIPT,
//!   FUNCTION, keyless EVAL/FCALL): commands for every shard, over
//!   [`fanout`].
//! - [`blocking`] and [`transaction`]: blocking commands and WATCH/MULTI, on
//!   a client's [`dedicated`] backend connection.
//! - [`pubsub`]: subscriptions on per-client connections to the shards,
//!   PUBLISH and PUBSUB. [`conn_cap`] caps the connections clients open
//!   for themselves, these and the dedicated ones.
//! - [`router`]: the immutable routing table of a pool, swapped atomically;
//!   [`cluster`] rebuilds it from ZooKeeper's views, [`reload`] from the
//!   pool file on SIGHUP.
//! - [`backend`]: connections to the Redis servers: pipelining, timeouts,
//!   health.
//! - [`outbuf`]: bytes owed to a socket, written without blocking.
//! - [`pool`]: a pool's run-time state; [`stats`] its counters;
//!   [`stats_server`] the twemproxy stats port and the Prometheus endpoint.
//! - [`zk`]: the proxy's registration in ZooKeeper and the cluster watch.
//! - [`workers`]: with `--threads N`, the worker threads clients are
//!   handed to, each with its own event loop and backend connections.

pub mod accept;
pub mod acl;
pub mod backend;
pub mod blocking;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod conn_cap;
pub mod dedicated;
pub mod descriptors;
pub mod dispatch;
pub mod fanout;
pub mod info;
pub mod input_memory;
pub mod keyspace;
pub mod listener;
pub mod local;
pub mod migration;
pub mod outbuf;
pub mod pending;
pub mod pipeline_loan;
pub mod pool;
pub mod pubsub;
pub mod reload;
pub mod reserved;
pub mod router;
pub mod scan;
pub mod scripts;
pub mod session;
pub mod sort;
pub mod split;
pub mod stats;
pub mod stats_server;
pub mod stream;
pub mod transaction;
pub mod unix_socket;
pub mod window;
pub mod workers;
pub mod zk;
