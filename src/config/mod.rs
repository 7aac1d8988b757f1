//! The pool file: twemproxy's YAML format plus range servers and ZooKeeper
//! keys (DESIGN.md, "Pool file").
//!
//! Parsing happens in two steps. serde turns the YAML into raw values, which
//! lets serde_yaml point at the line and column of unknown keys, duplicate
//! keys and malformed values (custom `Deserialize` impls below raise their
//! errors while serde_yaml still knows the position). `validate` then checks
//! the rules that span several keys and fills in twemproxy's defaults.

mod listen;
mod scalar;
mod tls;
mod users;

pub use users::{UserConfig, UserMode};

use crate::hash::HashKind;
use crate::route::DistributionKind;
pub use listen::UnixListen;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Redis's own limit on a request (`proto-max-bulk-len`), our default.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 512 * 1024 * 1024;
/// Default of `client_output_limit`: room for a deep pipeline of ordinary
/// replies, or a few large values, per client.
pub const DEFAULT_CLIENT_OUTPUT_LIMIT: usize = 8 * 1024 * 1024;
/// Default of `max_dedicated_connections`: backend connections the pool's
/// clients may hold for themselves (blocking commands, transactions).
pub const DEFAULT_MAX_DEDICATED_CONNECTIONS: u32 = 1024;
/// Default of `max_subscriber_connections`: backend connections the
/// pool's subscribed clients may hold (one per client and shard in use).
pub const DEFAULT_MAX_SUBSCRIBER_CONNECTIONS: u32 = 4096;
/// Most connections to one server per worker thread: more than one client
/// address has ports for.
pub const MAX_SERVER_CONNECTIONS: u32 = 65536;
/// Below this a pipeline of ordinary replies would crawl.
const MIN_CLIENT_OUTPUT_LIMIT: usize = 64 * 1024;

/// Why a pool file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Syntax, unknown or duplicate keys, bad values: serde_yaml's message
    /// carries the line and column.
    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("pool '{pool}'{}: {message}", at_line(*.line))]
    Pool {
        pool: String,
        /// The line of the offending key or server, when it can be told.
        line: Option<usize>,
        message: String,
    },
    #[error("the file defines no pool")]
    Empty,
}

/// A whole pool file: one or more pools, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub pools: Vec<PoolConfig>,
}

/// One pool: a listen address and the servers its keys are spread over.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    /// `host:port` the proxy listens on, or its unix socket's path.
    pub listen: String,
    /// Set when `listen` is a unix socket (nutcracker's `/path mode`).
    pub listen_unix: Option<UnixListen>,
    pub hash: HashKind,
    pub hash_tag: Option<[u8; 2]>,
    pub distribution: DistributionKind,
    /// Per-request timeout; `None` waits forever (twemproxy's default).
    pub timeout: Option<Duration>,
    pub backlog: u32,
    /// Maximum client connections; 0 means no limit.
    pub client_connections: u32,
    pub preconnect: bool,
    pub redis_auth: Option<String>,
    /// `redis_user`: the ACL user the proxy authenticates to the backends
    /// as (with `redis_auth` as its password); `None` uses `AUTH password`.
    pub redis_user: Option<String>,
    /// `users`: client users besides the `default` one that `redis_auth`
    /// defines (an entry named `default` replaces it).
    pub users: Vec<UserConfig>,
    pub redis_db: u32,
    pub server_connections: u32,
    pub auto_eject_hosts: bool,
    pub server_retry_timeout: Duration,
    pub server_failure_limit: u32,
    pub tcpkeepalive: bool,
    pub reuseport: bool,
    /// Largest request accepted from a client, checked before buffering it.
    pub max_request_size: usize,
    /// Bytes of replies a client may be owed but not have read before the
    /// proxy stops reading its requests.
    pub client_output_limit: usize,
    /// FLUSHALL and FLUSHDB are fanned out to every shard instead of
    /// refused: one mistyped command would empty the whole fleet.
    pub allow_flush: bool,
    /// Most backend connections the pool's clients may hold at once for
    /// their blocking commands and transactions.
    pub max_dedicated_connections: u32,
    /// Most backend connections the pool's subscribed clients may hold at
    /// once.
    pub max_subscriber_connections: u32,
    pub zookeeper: Option<ZooKeeperConfig>,
    /// `tls_cert`, `tls_key`, `tls_ca`: the listener speaks TLS only.
    pub tls: Option<crate::tls::ListenTls>,
    /// `server_tls` and its files: the backend connections speak TLS.
    pub server_tls: Option<crate::tls::ServerTls>,
    pub servers: Vec<ServerConfig>,
    /// True when the servers are given as `host:port:LO-HI` ranges.
    pub range_form: bool,
}

/// The ZooKeeper keys of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZooKeeperConfig {
    /// `host:port,host:port`.
    pub hosts: String,
    /// This proxy's own znode (full path), if it registers itself.
    pub proxy_path: Option<String>,
    /// The cluster root whose shard znodes drive routing, if any.
    pub redis_path: Option<String>,
    /// `zookeeper_auth`: the digest identity sessions authenticate with.
    pub auth: Option<crate::zk::ZkAuth>,
}

/// One `servers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// The weight: as written, or the size of the range in range form.
    pub weight: u32,
    /// Inclusive slot range, in range form.
    pub range: Option<(u32, u32)>,
    /// The optional name after the address.
    pub name: Option<String>,
    /// `host:port` exactly as written, which twemproxy uses as the name.
    pub written_addr: String,
}

impl PoolConfig {
    /// The slot space of a pool whose servers have ranges: the ranges' end
    /// (the highest slot plus one). `None` in the weight form, whose
    /// servers take ZooKeeper's ranges whatever their weights.
    pub fn slot_space(&self) -> Option<u32> {
        self.servers
            .iter()
            .map(|s| s.range.map(|(_, hi)| hi + 1))
            .collect::<Option<Vec<u32>>>()?
            .into_iter()
            .max()
    }
}

impl ServerConfig {
    /// `host:port`, the address the proxy connects to, or a unix socket's
    /// path.
    pub fn addr(&self) -> String {
        if self.is_unix() {
            return self.host.clone();
        }
        format!("{}:{}", self.host, self.port)
    }

    /// True for a server on a unix socket (`/path/to/socket:weight`).
    pub fn is_unix(&self) -> bool {
        crate::redis_client::is_unix_path(&self.host)
    }

    /// The name twemproxy uses to sort servers and to place ketama points:
    /// the explicit name, else `host:port` as written, except that the
    /// memcached port 11211 is left out (twemproxy's libmemcached heritage).
    pub fn node_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => match self.written_addr.strip_suffix(":11211") {
                Some(host) => host.to_string(),
                None => self.written_addr.clone(),
            },
        }
    }

    /// The name shown in errors and stats: the explicit name, else the address.
    pub fn display_name(&self) -> String {
        self.node_name()
    }
}

impl Config {
    /// Reads and validates a pool file.
    ///
    /// # Errors
    /// Any rejection, naming the file, pool, key and (where serde_yaml knows
    /// it) the line.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates pool-file text.
    ///
    /// # Errors
    /// See [`Config::load`].
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawFile = serde_yaml::from_str(text)?;
        if raw.0.is_empty() {
            return Err(ConfigError::Empty);
        }
        let pools = raw
            .0
            .into_iter()
            .map(|(name, pool)| pool.validate(name, &Locator { text }))
            .collect::<Result<Vec<_>, _>>()?;
        check_listen_unique(&pools)?;
        Ok(Config { pools })
    }
}

fn check_listen_unique(pools: &[PoolConfig]) -> Result<(), ConfigError> {
    for (i, pool) in pools.iter().enumerate() {
        if let Some(other) = pools[..i].iter().find(|p| p.listen == pool.listen) {
            return Err(pool_error(
                &pool.name,
                format!(
                    "listen {} is already used by pool '{}'",
                    pool.listen, other.name
                ),
            ));
        }
    }
    Ok(())
}

fn pool_error(pool: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Pool {
        pool: pool.to_string(),
        line: None,
        message: message.into(),
    }
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

/// Finds the line of a key or a server entry inside a pool, so that errors
/// found after parsing still point at the text (serde_yaml only knows the
/// position of syntax and type errors).
struct Locator<'a> {
    text: &'a str,
}

impl Locator<'_> {
    /// The 1-based line in pool `pool` whose content starts with `prefix`
    /// (e.g. `hash:` or `- 127.0.0.1:6379:1`).
    fn line_of(&self, pool: &str, prefix: &str) -> Option<usize> {
        let mut in_pool = false;
        for (i, line) in self.text.lines().enumerate() {
            let top_level = !line.starts_with([' ', '\t', '#']) && !line.trim().is_empty();
            if top_level {
                in_pool = line.trim_end().strip_suffix(':').map(str::trim) == Some(pool)
                    || line.split(':').next().map(str::trim) == Some(pool);
                continue;
            }
            let content = line.trim_start().trim_start_matches("- ").trim_start();
            let wanted = prefix.trim_start_matches("- ");
            if in_pool && content.starts_with(wanted) {
                return Some(i + 1);
            }
        }
        None
    }
}

/// The top level: pools in file order, duplicate names rejected.
struct RawFile(Vec<(String, RawPool)>);

impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PoolsVisitor;
        impl<'de> Visitor<'de> for PoolsVisitor {
            type Value = RawFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of pool names to pools")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFile, A::Error> {
                let mut pools: Vec<(String, RawPool)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if pools.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format!("duplicate pool '{name}'")));
                    }
                    let pool = map.next_value::<RawPool>()?;
                    pools.push((name, pool));
                }
                Ok(RawFile(pools))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawFile, E> {
                Ok(RawFile(Vec::new()))
            }
        }
        deserializer.deserialize_map(PoolsVisitor)
    }
}

/// A pool as written; every key optional so defaults can apply.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    listen: Option<String>,
    hash: Option<String>,
    hash_tag: Option<String>,
    distribution: Option<String>,
    #[serde(default, deserialize_with = "scalar::number")]
    timeout: Option<u64>,
    #[serde(default, deserialize_with = "scalar::number")]
    backlog: Option<u32>,
    #[serde(default, deserialize_with = "scalar::number")]
    client_connections: Option<u32>,
    #[serde(default, deserialize_with = "scalar::flag")]
    preconnect: Option<bool>,
    #[serde(default, deserialize_with = "scalar::flag")]
    redis: Option<bool>,
    redis_auth: Option<String>,
    redis_user: Option<String>,
    users: Option<Vec<users::RawUser>>,
    #[serde(default, deserialize_with = "scalar::number")]
    redis_db: Option<u32>,
    #[serde(default, deserialize_with = "scalar::number")]
    server_connections: Option<u32>,
    #[serde(default, deserialize_with = "scalar::flag")]
    auto_eject_hosts: Option<bool>,
    #[serde(default, deserialize_with = "scalar::number")]
    server_retry_timeout: Option<u64>,
    #[serde(default, deserialize_with = "scalar::number")]
    server_failure_limit: Option<u32>,
    #[serde(default, deserialize_with = "scalar::flag")]
    tcpkeepalive: Option<bool>,
    #[serde(default, deserialize_with = "scalar::flag")]
    reuseport: Option<bool>,
    #[serde(default, deserialize_with = "scalar::number")]
    max_request_size: Option<usize>,
    #[serde(default, deserialize_with = "scalar::number")]
    client_output_limit: Option<usize>,
    #[serde(default, deserialize_with = "scalar::flag")]
    allow_flush: Option<bool>,
    #[serde(default, deserialize_with = "scalar::number")]
    max_dedicated_connections: Option<u32>,
    #[serde(default, deserialize_with = "scalar::number")]
    max_subscriber_connections: Option<u32>,
    zookeeper_host: Option<String>,
    zookeeper_path: Option<String>,
    zookeeper_redis_path: Option<String>,
    zookeeper_auth: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_ca: Option<String>,
    #[serde(default, deserialize_with = "scalar::flag")]
    server_tls: Option<bool>,
    server_tls_ca: Option<String>,
    server_tls_cert: Option<String>,
    server_tls_key: Option<String>,
    servers: Option<Vec<String>>,
}

impl RawPool {
    fn validate(self, name: String, locator: &Locator) -> Result<PoolConfig, ConfigError> {
        let err = |m: String| pool_error(&name, m);
        // An error about `key`, pointing at its line.
        let key_err = |key: &str, message: String| ConfigError::Pool {
            pool: name.clone(),
            line: locator.line_of(&name, &format!("{key}:")),
            message,
        };
        let (listen, listen_unix) = match &self.listen {
            Some(text) => listen::parse_listen(text).map_err(|e| key_err("listen", e))?,
            None => return Err(err("missing key 'listen'".into())),
        };
        if self.redis != Some(true) {
            return Err(err(
                "'redis: true' is required: shardproxy speaks only the Redis protocol \
                 (twemproxy's default is memcached)"
                    .into(),
            ));
        }
        let hash = match &self.hash {
            Some(text) => parse_hash(text).map_err(|e| key_err("hash", e))?,
            None => HashKind::Fnv1a_64,
        };
        let distribution = match &self.distribution {
            Some(text) => parse_distribution(text).map_err(|e| key_err("distribution", e))?,
            None => DistributionKind::Ketama,
        };
        let hash_tag = match &self.hash_tag {
            Some(text) => Some(parse_hash_tag(text).map_err(|e| key_err("hash_tag", e))?),
            None => None,
        };
        let entries = self
            .servers
            .as_ref()
            .ok_or_else(|| err("missing key 'servers'".into()))?;
        let servers = entries
            .iter()
            .map(|entry| {
                parse_server(entry).map_err(|e| ConfigError::Pool {
                    pool: name.clone(),
                    line: locator.line_of(&name, &format!("- {entry}")),
                    message: format!("server '{entry}': {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(err("'servers' is empty".into()));
        }
        if let Some(unix) = servers.iter().find(|s| s.is_unix()) {
            check_unix_servers(&self, &unix.host).map_err(err)?;
        }
        let range_form = check_server_forms(&servers).map_err(err)?;
        check_server_names(&servers).map_err(err)?;
        if range_form {
            check_ranges_tile(&servers).map_err(err)?;
        } else {
            check_weight_sum(&servers).map_err(err)?;
        }
        let server_connections = self.server_connections.unwrap_or(1);
        if server_connections == 0 || server_connections > MAX_SERVER_CONNECTIONS {
            return Err(key_err(
                "server_connections",
                format!(
                    "'server_connections' must be from 1 to {MAX_SERVER_CONNECTIONS} \
                     (connections to each server, per worker thread)"
                ),
            ));
        }
        // twemproxy's 0 ejects a server at its first failure, as 1 does.
        let server_failure_limit = self.server_failure_limit.unwrap_or(2).max(1);
        let redis_db = self.redis_db.unwrap_or(0);
        if redis_db > i32::MAX as u32 {
            return Err(key_err(
                "redis_db",
                format!(
                    "'redis_db' must be at most {} (Redis's SELECT takes no larger number)",
                    i32::MAX
                ),
            ));
        }
        let max_request_size = self.max_request_size.unwrap_or(DEFAULT_MAX_REQUEST_SIZE);
        if max_request_size < 1024 {
            return Err(err("'max_request_size' must be at least 1024 bytes".into()));
        }
        let client_output_limit = self
            .client_output_limit
            .unwrap_or(DEFAULT_CLIENT_OUTPUT_LIMIT);
        if client_output_limit < MIN_CLIENT_OUTPUT_LIMIT {
            return Err(key_err(
                "client_output_limit",
                format!("'client_output_limit' must be at least {MIN_CLIENT_OUTPUT_LIMIT} bytes"),
            ));
        }
        // twemproxy's 0, like its default, sets no timeout.
        let timeout = self.timeout.filter(|&t| t > 0).map(Duration::from_millis);
        let zookeeper_auth = match &self.zookeeper_auth {
            Some(text) => Some(
                crate::zk::ZkAuth::parse(text)
                    .map_err(|e| key_err("zookeeper_auth", format!("'zookeeper_auth': {e}")))?,
            ),
            None => None,
        };
        let users = users::validate(self.users.unwrap_or_default())
            .map_err(|e| key_err("users", format!("'users': {e}")))?;
        let redis_auth = self.redis_auth.filter(|a| !a.is_empty());
        let redis_user = self.redis_user.filter(|u| !u.is_empty());
        if redis_user.is_some() && redis_auth.is_none() {
            return Err(key_err(
                "redis_user",
                "'redis_user' needs 'redis_auth', its password".into(),
            ));
        }
        if listen_unix.is_some() {
            if self.tls_cert.is_some() || self.tls_key.is_some() {
                return Err(key_err(
                    "tls_cert",
                    "TLS is for TCP listeners: a unix socket stays on this host".into(),
                ));
            }
            if self.reuseport == Some(true) {
                return Err(key_err(
                    "reuseport",
                    "'reuseport' is for TCP listeners, not a unix socket".into(),
                ));
            }
        }
        let raw_tls = tls::RawTls {
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_ca: self.tls_ca,
            server_tls: self.server_tls,
            server_tls_ca: self.server_tls_ca,
            server_tls_cert: self.server_tls_cert,
            server_tls_key: self.server_tls_key,
        };
        let listen_tls = tls::listen_tls(&raw_tls).map_err(|(key, e)| key_err(key, e))?;
        let server_tls = tls::server_tls(&raw_tls).map_err(|(key, e)| key_err(key, e))?;
        let zookeeper = zookeeper_keys(
            self.zookeeper_host,
            self.zookeeper_path,
            self.zookeeper_redis_path,
            zookeeper_auth,
        )
        .map_err(err)?;
        Ok(PoolConfig {
            name,
            listen,
            listen_unix,
            hash,
            hash_tag,
            distribution,
            timeout,
            backlog: self.backlog.unwrap_or(512),
            client_connections: self.client_connections.unwrap_or(0),
            preconnect: self.preconnect.unwrap_or(false),
            redis_auth,
            redis_user,
            users,
            redis_db,
            server_connections,
            auto_eject_hosts: self.auto_eject_hosts.unwrap_or(false),
            server_retry_timeout: Duration::from_millis(
                self.server_retry_timeout.unwrap_or(30_000),
            ),
            server_failure_limit,
            tcpkeepalive: self.tcpkeepalive.unwrap_or(false),
            reuseport: self.reuseport.unwrap_or(false),
            max_request_size,
            client_output_limit,
            allow_flush: self.allow_flush.unwrap_or(false),
            max_dedicated_connections: self
                .max_dedicated_connections
                .unwrap_or(DEFAULT_MAX_DEDICATED_CONNECTIONS),
            max_subscriber_connections: self
                .max_subscriber_connections
                .unwrap_or(DEFAULT_MAX_SUBSCRIBER_CONNECTIONS),
            zookeeper,
            tls: listen_tls,
            server_tls,
            servers,
            range_form,
        })
    }
}

/// Longest unix socket path the kernel takes (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A server's unix socket path: no ':' (nutcracker refuses one, and a
/// typo such as `/path::1` would otherwise name another file), and short
/// enough to be connected to at all.
fn check_socket_path(path: &str) -> Result<(), String> {
    if path.contains(':') {
        return Err(format!(
            "the unix socket path '{path}' contains ':' (nutcracker's form is \
             '/path/to/socket:weight [name]', the path without ':')"
        ));
    }
    if path.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "the unix socket path is {} bytes long; at most {MAX_SOCKET_PATH} can be connected to",
            path.len()
        ));
    }
    Ok(())
}

/// Servers on unix sockets live on this host: no TLS to them, and not in
/// a pool whose servers ZooKeeper manages (watchdogs register `host:port`,
/// and moves between shards connect over TCP).
fn check_unix_servers(pool: &RawPool, path: &str) -> Result<(), String> {
    if pool.zookeeper_host.is_some() {
        return Err(format!(
            "server '{path}' is a unix socket: a pool with 'zookeeper_host' takes \
             host:port servers only"
        ));
    }
    if pool.server_tls == Some(true) {
        return Err(format!(
            "server '{path}' is a unix socket: 'server_tls' is for TCP servers"
        ));
    }
    Ok(())
}

/// All servers must use one form; returns true for the range form.
fn check_server_forms(servers: &[ServerConfig]) -> Result<bool, String> {
    let ranged = servers.iter().filter(|s| s.range.is_some()).count();
    match ranged {
        0 => Ok(false),
        n if n == servers.len() => Ok(true),
        _ => {
            Err("servers mix 'host:port:weight' and 'host:port:LO-HI' entries; use one form".into())
        }
    }
}

/// Twemproxy rejects two servers with the same name (explicit or address).
fn check_server_names(servers: &[ServerConfig]) -> Result<(), String> {
    for (i, server) in servers.iter().enumerate() {
        let name = server.node_name();
        if servers[..i].iter().any(|s| s.node_name() == name) {
            return Err(format!("two servers have the same name '{name}'"));
        }
    }
    Ok(())
}

/// twemproxy adds the weights up in 32 bits; a sum past that wraps there
/// (nutcracker crashes) and would give one server every point here.
fn check_weight_sum(servers: &[ServerConfig]) -> Result<(), String> {
    let sum: u64 = servers.iter().map(|s| u64::from(s.weight)).sum();
    if sum > u64::from(u32::MAX) {
        return Err(format!(
            "the servers' weights add up to {sum}, more than {} (twemproxy adds them in 32 bits)",
            u32::MAX
        ));
    }
    Ok(())
}

/// Ranges must tile `[0, S)` with `S = max(HI) + 1`: no gap, no overlap.
fn check_ranges_tile(servers: &[ServerConfig]) -> Result<(), String> {
    let mut ranges: Vec<(u32, u32, String)> = servers
        .iter()
        .map(|s| {
            let (lo, hi) = s.range.expect("range form");
            (lo, hi, s.display_name())
        })
        .collect();
    ranges.sort();
    let mut next = 0u64;
    for (lo, hi, name) in &ranges {
        let lo = u64::from(*lo);
        if lo > next {
            return Err(format!(
                "slots {next}-{} are not covered by any server (gap before {name})",
                lo - 1
            ));
        }
        if lo < next {
            return Err(format!(
                "range of {name} overlaps the previous range at slot {lo}"
            ));
        }
        next = u64::from(*hi) + 1;
    }
    Ok(())
}

fn zookeeper_keys(
    hosts: Option<String>,
    proxy_path: Option<String>,
    redis_path: Option<String>,
    auth: Option<crate::zk::ZkAuth>,
) -> Result<Option<ZooKeeperConfig>, String> {
    for (key, path) in [
        ("zookeeper_path", &proxy_path),
        ("zookeeper_redis_path", &redis_path),
    ] {
        if let Some(p) = path {
            if !p.starts_with('/') || (p.len() > 1 && p.ends_with('/')) || p.contains("//") {
                return Err(format!(
                    "'{key}' must be an absolute ZooKeeper path, got '{p}'"
                ));
            }
        }
    }
    match hosts.filter(|h| !h.trim().is_empty()) {
        Some(hosts) => {
            check_zookeeper_hosts(&hosts)?;
            Ok(Some(ZooKeeperConfig {
                hosts,
                proxy_path,
                redis_path,
                auth,
            }))
        }
        None if proxy_path.is_some() || redis_path.is_some() || auth.is_some() => Err(
            "'zookeeper_path', 'zookeeper_redis_path' and 'zookeeper_auth' need 'zookeeper_host'"
                .into(),
        ),
        None => Ok(None),
    }
}

/// `zookeeper_host`: `host:port` entries separated by commas, as the
/// ZooKeeper client takes them (a chroot suffix is not supported: the
/// paths are whole).
fn check_zookeeper_hosts(hosts: &str) -> Result<(), String> {
    for entry in hosts.split(',') {
        parse_host_port(entry.trim()).map_err(|e| format!("'zookeeper_host': {e}"))?;
    }
    Ok(())
}

/// Splits `host:port` and checks the port.
pub(super) fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("'{text}' is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("'{text}' has no host"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("'{text}' has an invalid port '{port}'"))?;
    Ok((host.to_string(), port))
}

fn parse_hash(text: &str) -> Result<HashKind, String> {
    HashKind::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = HashKind::ALL.iter().map(|h| h.name()).collect();
        format!(
            "unknown hash '{text}', expected one of: {}",
            names.join(", ")
        )
    })
}

fn parse_distribution(text: &str) -> Result<DistributionKind, String> {
    DistributionKind::from_name(text).ok_or_else(|| {
        format!("unknown distribution '{text}', expected one of: ketama, modula, random")
    })
}

/// `hash_tag: "{}"`: exactly two characters.
fn parse_hash_tag(text: &str) -> Result<[u8; 2], String> {
    match text.as_bytes() {
        [open, close] => Ok([*open, *close]),
        _ => Err(format!(
            "hash_tag '{text}' must be exactly two characters, like \"{{}}\""
        )),
    }
}

/// One `servers` line: `host:port:weight [name]` or `host:port:LO-HI [name]`.
fn parse_server(text: &str) -> Result<ServerConfig, String> {
    let mut words = text.split_whitespace();
    let spec = words.next().ok_or("empty server entry")?;
    let name = words.next().map(str::to_string);
    let unix = crate::redis_client::is_unix_path(spec);
    if words.next().is_some() {
        return Err(if unix {
            "expected '/path/to/socket:weight [name]'"
        } else {
            "expected 'host:port:weight [name]'"
        }
        .into());
    }
    let (addr, weight_text) = spec.rsplit_once(':').ok_or(if unix {
        "expected '/path/to/socket:weight [name]' or '/path/to/socket:LO-HI [name]'"
    } else {
        "expected 'host:port:weight [name]' or 'host:port:LO-HI [name]'"
    })?;
    // A unix socket (nutcracker's `/path:weight`) has no port.
    let (host, port) = if unix {
        check_socket_path(addr)?;
        (addr.to_string(), 0)
    } else {
        parse_host_port(addr)?
    };
    let (weight, range) = match weight_text.split_once('-') {
        Some((lo, hi)) => {
            let lo: u32 = lo
                .parse()
                .map_err(|_| format!("invalid range start '{lo}'"))?;
            let hi: u32 = hi
                .parse()
                .map_err(|_| format!("invalid range end '{hi}'"))?;
            if lo > hi {
                return Err(format!("range {lo}-{hi} is empty (start after end)"));
            }
            if hi == u32::MAX {
                return Err(format!("range end {hi} is too large"));
            }
            (hi - lo + 1, Some((lo, hi)))
        }
        None => {
            let weight: u32 = weight_text
                .parse()
                .map_err(|_| format!("invalid weight '{weight_text}'"))?;
            if weight == 0 {
                return Err("weight must be at least 1".into());
            }
            if weight > i32::MAX as u32 {
                // twemproxy's limit: it reads weights as a signed int.
                return Err(format!("weight must be at most {}", i32::MAX));
            }
            (weight, None)
        }
    };
    Ok(ServerConfig {
        host,
        port,
        weight,
        range,
        name,
        // nutcracker names an unnamed unix socket server by its path and
        // the ':' before the (absent) port, and places it by that name.
        written_addr: if unix {
            format!("{addr}:")
        } else {
            addr.to_string()
        },
    })
}

#[cfg(test)]
mod tests;
