//! The routing table of a pool: which shard owns a key, and which backend
//! serves each shard. A table is an immutable value; a change (ZooKeeper,
//! reload, ejection) builds a new one and swaps it in atomically, so the
//! request path only ever loads a pointer and never waits.

use crate::backend::{Backend, BackendRegistry};
use crate::config::PoolConfig;
use crate::hash::HashKind;
use crate::route::{hashable_key, Distribution, DistributionKind, Node};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// One shard: a slice of the key space and the backend that serves it.
pub struct Shard {
    /// The server's name in the pool file, or the shard znode's name.
    pub name: Arc<str>,
    pub backend: Arc<Backend>,
    /// The inclusive slot range, in range form.
    pub range: Option<(u32, u32)>,
}

/// An immutable routing table.
pub struct RoutingTable {
    pub hash: HashKind,
    pub hash_tag: Option<[u8; 2]>,
    pub distribution: Distribution,
    pub shards: Vec<Shard>,
    /// Increases with every table the pool builds.
    pub version: u64,
    /// Where the table came from ("file", "zookeeper", ...), for INFO.
    pub source: &'static str,
    pub built_at: SystemTime,
}

impl RoutingTable {
    /// Index into `shards` of the shard owning `key`.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        let hash = self.hash.hash(hashable_key(key, self.hash_tag));
        self.distribution.pick(hash)
    }
}

/// What a table is built from: a server list (the file) or ranges (the
/// file's range form, or ZooKeeper's shards).
pub struct ShardSpec {
    pub name: String,
    pub addr: String,
    pub weight: u32,
    pub range: Option<(u32, u32)>,
}

/// Builds tables for one pool and holds the current one.
pub struct Router {
    table: ArcSwap<RoutingTable>,
    registry: BackendRegistry,
    hash: HashKind,
    hash_tag: Option<[u8; 2]>,
    distribution: DistributionKind,
    versions: AtomicU64,
}

impl Router {
    /// The router of `pool`, starting from the file's servers. Must run
    /// inside a tokio runtime (backends spawn their connection tasks).
    pub fn new(pool: &PoolConfig, registry: BackendRegistry) -> Router {
        let specs = file_shards(pool);
        let versions = AtomicU64::new(1);
        let table = build(
            &registry,
            pool.hash,
            pool.hash_tag,
            pool.distribution,
            &specs,
            1,
            "file",
        );
        Router {
            table: ArcSwap::from_pointee(table),
            registry,
            hash: pool.hash,
            hash_tag: pool.hash_tag,
            distribution: pool.distribution,
            versions,
        }
    }

    /// The current table.
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    /// The current table, as an owned pointer.
    pub fn current(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Builds a table from `specs` and makes it current. Specs with ranges
    /// use the range form; otherwise the pool's distribution.
    pub fn install(&self, specs: &[ShardSpec], source: &'static str) -> Arc<RoutingTable> {
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let table = Arc::new(build(
            &self.registry,
            self.hash,
            self.hash_tag,
            self.distribution,
            specs,
            version,
            source,
        ));
        self.table.store(table.clone());
        table
    }

    pub fn registry(&self) -> &BackendRegistry {
        &self.registry
    }
}

/// The shards the pool file describes.
pub fn file_shards(pool: &PoolConfig) -> Vec<ShardSpec> {
    pool.servers
        .iter()
        .map(|s| ShardSpec {
            name: s.node_name(),
            addr: s.addr(),
            weight: s.weight,
            range: s.range,
        })
        .collect()
}

fn build(
    registry: &BackendRegistry,
    hash: HashKind,
    hash_tag: Option<[u8; 2]>,
    kind: DistributionKind,
    specs: &[ShardSpec],
    version: u64,
    source: &'static str,
) -> RoutingTable {
    let ranged = !specs.is_empty() && specs.iter().all(|s| s.range.is_some());
    let distribution = if ranged {
        let ranges: Vec<(u32, u32)> = specs.iter().map(|s| s.range.expect("ranged")).collect();
        Distribution::ranges(&ranges)
    } else {
        let nodes: Vec<Node> = specs
            .iter()
            .map(|s| Node {
                name: s.name.clone(),
                weight: s.weight,
            })
            .collect();
        match kind {
            DistributionKind::Ketama => Distribution::ketama(&nodes),
            DistributionKind::Modula => Distribution::modula(&nodes),
            DistributionKind::Random => Distribution::random(&nodes),
        }
    };
    let shards = specs
        .iter()
        .map(|s| Shard {
            name: Arc::from(s.name.as_str()),
            backend: registry.get(&s.addr),
            range: s.range,
        })
        .collect();
    RoutingTable {
        hash,
        hash_tag,
        distribution,
        shards,
        version,
        source,
        built_at: SystemTime::now(),
    }
}
