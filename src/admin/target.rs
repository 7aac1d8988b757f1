//! What the admin tool works on: the pool picked from the pool file, the
//! ZooKeeper ensemble and paths it names, and the shards its range servers
//! describe; plus the one ZooKeeper session a command uses.

use super::AdminError;
use crate::config::{Config, PoolConfig};
use crate::redis_client::{RedisConn, RedisError};
use crate::zk::layout::{child_path, node_name};
use std::time::Duration;
use zookeeper_client as zk;

/// How long connecting to ZooKeeper, and any one ZooKeeper step of a
/// command, may take before the tool gives up with a clear error.
pub const ZK_TIMEOUT: Duration = Duration::from_secs(15);

/// A shard as the pool file describes it: `redis-NNNN`, numbered in slot
/// order, owning the range of one range-form server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileShard {
    /// `redis-0000`, `redis-0001`, ...
    pub name: String,
    /// First slot.
    pub lo: u32,
    /// Last slot (inclusive).
    pub hi: u32,
    /// The server the file gives this range to (`host:port`).
    pub server: String,
}

/// The pool, ZooKeeper hosts and paths one admin command works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The pool's name in the file.
    pub pool: String,
    /// The ZooKeeper connect string.
    pub hosts: String,
    /// `/redis/proxy/<cluster>`: where proxies register.
    pub proxy_root: String,
    /// `/redis/cluster/<cluster>` (`zookeeper_redis_path`): the shards.
    pub cluster_root: String,
    /// The file's shards, in slot order; `None` when the pool's servers are
    /// in the `host:port:weight` form.
    pub shards: Option<Vec<FileShard>>,
    /// The password sent to every Redis the tool queries: `redis_auth`,
    /// unless `redis_user` makes that the proxies' own password, or
    /// `SHARDPROXY_REDIS_AUTH` gives it.
    pub redis_auth: Option<String>,
    /// `zookeeper_auth`: sessions authenticate with it, and what the tool
    /// creates is writable only by it.
    pub zk_auth: Option<crate::zk::ZkAuth>,
    /// How the pool hashes keys onto slots (migrations find a range's keys).
    pub hash: crate::hash::HashKind,
    pub hash_tag: Option<[u8; 2]>,
    /// `redis_db`: the database the pool's keys live in, which migrations
    /// scan and move.
    pub db: u32,
}

/// The name of the `index`-th shard in slot order.
pub fn shard_name(index: usize) -> String {
    format!("redis-{index:04}")
}

impl Target {
    /// Picks the pool named `pool`, or else the first pool with
    /// `zookeeper_redis_path`, and resolves its ZooKeeper hosts (`zk`
    /// overrides the file's) and paths.
    ///
    /// # Errors
    /// No such pool, no pool with ZooKeeper keys, or no hosts.
    pub fn from_config(
        config: &Config,
        pool: Option<&str>,
        zk: Option<&str>,
    ) -> Result<Target, AdminError> {
        let has_cluster =
            |p: &&PoolConfig| p.zookeeper.as_ref().is_some_and(|z| z.redis_path.is_some());
        let chosen = match pool {
            Some(name) => config
                .pools
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| AdminError::NoSuchPool(name.to_string()))?,
            None => config
                .pools
                .iter()
                .find(has_cluster)
                .ok_or(AdminError::NoZooKeeperPool)?,
        };
        let keys = chosen.zookeeper.as_ref();
        let cluster_root = keys
            .and_then(|z| z.redis_path.clone())
            .ok_or_else(|| AdminError::NoClusterPath(chosen.name.clone()))?;
        let hosts = match zk {
            Some(hosts) => hosts.to_string(),
            // The config layer only keeps ZooKeeper keys that have hosts.
            None => keys
                .map(|z| z.hosts.clone())
                .ok_or_else(|| AdminError::NoClusterPath(chosen.name.clone()))?,
        };
        let proxy_root = match keys.and_then(|z| z.proxy_path.as_deref()) {
            Some(path) => parent(path),
            // DESIGN.md's layout: proxies of cluster <c> live under
            // /redis/proxy/<c>, <c> being the last segment of the root.
            None => child_path("/redis/proxy", node_name(&cluster_root)),
        };
        Ok(Target {
            pool: chosen.name.clone(),
            hosts,
            proxy_root,
            cluster_root,
            shards: file_shards(chosen),
            // With `redis_user`, `redis_auth` is the proxies' own password,
            // not the one of the Redis's default user the tool reads as.
            redis_auth: chosen
                .redis_auth
                .clone()
                .filter(|_| chosen.redis_user.is_none()),
            zk_auth: keys.and_then(|z| z.auth.clone()),
            hash: chosen.hash,
            hash_tag: chosen.hash_tag,
            db: chosen.redis_db,
        })
    }

    /// A connection to the Redis at `addr`, authenticated as the tool
    /// reads, in the pool's database.
    ///
    /// # Errors
    /// Connecting, AUTH or SELECT failing.
    pub async fn redis(&self, addr: &str, timeout: Duration) -> Result<RedisConn, RedisError> {
        let mut conn = RedisConn::connect(addr, self.redis_auth.as_deref(), timeout).await?;
        conn.select(self.db).await?;
        Ok(conn)
    }
}

/// The parent of an absolute path (`/` for a top-level one).
fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((parent, _)) => parent.to_string(),
    }
}

/// The pool's range servers as shards in slot order; `None` unless the
/// pool uses the range form.
fn file_shards(pool: &PoolConfig) -> Option<Vec<FileShard>> {
    if !pool.range_form {
        return None;
    }
    let mut ranged: Vec<(u32, u32, String)> = pool
        .servers
        .iter()
        .filter_map(|s| s.range.map(|(lo, hi)| (lo, hi, s.addr())))
        .collect();
    ranged.sort();
    Some(
        ranged
            .into_iter()
            .enumerate()
            .map(|(i, (lo, hi, server))| FileShard {
                name: shard_name(i),
                lo,
                hi,
                server,
            })
            .collect(),
    )
}

/// Opens a ZooKeeper session to `hosts`, trying each host once.
///
/// # Errors
/// [`AdminError::ZooKeeper`] when no host accepts a session within
/// [`ZK_TIMEOUT`].
pub async fn connect(
    hosts: &str,
    auth: Option<&crate::zk::ZkAuth>,
) -> Result<zk::Client, AdminError> {
    let attempt = crate::zk::connect_once(hosts, Some(crate::zk::SESSION_TIMEOUT), auth);
    match tokio::time::timeout(ZK_TIMEOUT, attempt).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => Err(AdminError::ZooKeeper {
            hosts: hosts.to_string(),
            reason: format!("cannot connect: {error}"),
        }),
        Err(_) => Err(AdminError::ZooKeeper {
            hosts: hosts.to_string(),
            reason: format!("no session within {} s", ZK_TIMEOUT.as_secs()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
web:
  listen: 127.0.0.1:22120
  redis: true
  servers:
   - 127.0.0.1:6379:1
alpha:
  listen: 172.17.32.105:22121
  hash: md5
  distribution: modula
  zookeeper_host: 172.16.10.163:2181,172.16.10.96:2181
  zookeeper_path: /redis/proxy/icd/172.17.32.105:22121
  zookeeper_redis_path: /redis/cluster/icd
  redis_auth: secret
  redis: true
  servers:
   - 172.17.32.106:6379:2048-4095
   - 172.17.32.105:6379:0-2047
beta:
  listen: 172.17.32.105:22122
  zookeeper_host: zk:2181
  zookeeper_redis_path: /redis/cluster/other
  redis: true
  servers:
   - 10.0.0.1:6379:1
";

    fn config() -> Config {
        Config::parse(FILE).unwrap()
    }

    #[test]
    fn default_pool_is_the_first_with_zookeeper_keys() {
        let target = Target::from_config(&config(), None, None).unwrap();
        assert_eq!(target.pool, "alpha");
        assert_eq!(target.hosts, "172.16.10.163:2181,172.16.10.96:2181");
        assert_eq!(target.proxy_root, "/redis/proxy/icd");
        assert_eq!(target.cluster_root, "/redis/cluster/icd");
        assert_eq!(target.redis_auth.as_deref(), Some("secret"));
    }

    #[test]
    fn file_shards_are_numbered_in_slot_order() {
        let target = Target::from_config(&config(), None, None).unwrap();
        let shards = target.shards.unwrap();
        let got: Vec<(&str, u32, u32, &str)> = shards
            .iter()
            .map(|s| (s.name.as_str(), s.lo, s.hi, s.server.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("redis-0000", 0, 2047, "172.17.32.105:6379"),
                ("redis-0001", 2048, 4095, "172.17.32.106:6379"),
            ]
        );
    }

    #[test]
    fn zk_flag_overrides_hosts() {
        let target = Target::from_config(&config(), None, Some("127.0.0.1:2181")).unwrap();
        assert_eq!(target.hosts, "127.0.0.1:2181");
    }

    #[test]
    fn pool_flag_picks_a_pool_and_proxy_root_defaults_from_the_cluster_name() {
        let target = Target::from_config(&config(), Some("beta"), None).unwrap();
        assert_eq!(target.cluster_root, "/redis/cluster/other");
        assert_eq!(target.proxy_root, "/redis/proxy/other");
        assert_eq!(target.shards, None, "weight form has no file shards");
    }

    #[test]
    fn rejects_unknown_pool() {
        let err = Target::from_config(&config(), Some("gamma"), None).unwrap_err();
        assert_eq!(err.to_string(), "the pool file has no pool named 'gamma'");
    }

    #[test]
    fn rejects_pool_without_zookeeper_keys() {
        let err = Target::from_config(&config(), Some("web"), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("pool 'web' has no zookeeper_redis_path"),
            "{err}"
        );
    }

    #[test]
    fn rejects_file_without_zookeeper_pools() {
        let file = Config::parse(
            "web:\n  listen: 127.0.0.1:1\n  redis: true\n  servers:\n   - 1.2.3.4:1:1\n",
        );
        let err = Target::from_config(&file.unwrap(), None, None).unwrap_err();
        assert!(err
            .to_string()
            .contains("no pool with zookeeper_redis_path"));
    }

    #[test]
    fn parent_of_top_level_path_is_root() {
        assert_eq!(parent("/proxy"), "/");
        assert_eq!(parent("/a/b/c"), "/a/b");
    }
}
