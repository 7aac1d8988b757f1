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
use std::sync::{Arc, Mutex};
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Route around ejected servers (`auto_eject_hosts`, weighted pools).
    auto_eject: bool,
    // A short sync lock: the specs of the current table, kept so a table
    // can be rebuilt when servers are ejected or come back.
    specs: Mutex<Installed>,
}

/// The last specs installed, with their backends held even while ejected
/// (so their failure counts and ejection deadlines survive).
#[derive(Clone)]
struct Installed {
    specs: Vec<ShardSpec>,
    backends: Vec<Arc<Backend>>,
    source: &'static str,
}

impl Router {
    /// The router of `pool`, starting from the file's servers. Must run
    /// inside a tokio runtime (backends spawn their connection tasks).
    pub fn new(pool: &PoolConfig, registry: BackendRegistry) -> Router {
        let specs = file_shards(pool);
        let table: RoutingTable = build(
            &registry,
            pool.hash,
            pool.hash_tag,
            pool.distribution,
            &specs,
            1,
            "file",
        );
        let table = Arc::new(table);
        Router {
            table: ArcSwap::new(table.clone()),
            registry,
            hash: pool.hash,
            hash_tag: pool.hash_tag,
            distribution: pool.distribution,
            versions: AtomicU64::new(1),
            auto_eject: pool.auto_eject_hosts && !pool.range_form,
            specs: Mutex::new(Installed {
                backends: table.shards.iter().map(|s| s.backend.clone()).collect(),
                specs,
                source: "file",
            }),
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
    /// use the range form; otherwise the pool's distribution, without the
    /// servers that are ejected now (with `auto_eject_hosts`).
    pub fn install(&self, specs: &[ShardSpec], source: &'static str) -> Arc<RoutingTable> {
        let backends = specs.iter().map(|s| self.registry.get(&s.addr)).collect();
        *self.specs.lock().expect("router specs lock") = Installed {
            specs: specs.to_vec(),
            backends,
            source,
        };
        self.rebuild()
    }

    /// Rebuilds the table from the last specs, leaving out the servers
    /// ejected now. Twemproxy does the same: an ejected server's keys are
    /// spread over the others until it is retried.
    pub fn rebuild(&self) -> Arc<RoutingTable> {
        let Installed {
            specs,
            backends,
            source,
        } = self.specs.lock().expect("router specs lock").clone();
        let live: Vec<ShardSpec> = if self.auto_eject {
            specs
                .iter()
                .zip(&backends)
                .filter(|(_, b)| b.health.ejected_until().is_none())
                .map(|(s, _)| s.clone())
                .collect()
        } else {
            Vec::new()
        };
        // With every server ejected there is nothing better than all of them.
        let specs = if live.is_empty() { specs } else { live };
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let table = Arc::new(build(
            &self.registry,
            self.hash,
            self.hash_tag,
            self.distribution,
            &specs,
            version,
            source,
        ));
        self.table.store(table.clone());
        table
    }

    /// True when the servers the current table leaves out are not exactly
    /// the ones ejected now: time to rebuild.
    pub fn ejections_changed(&self) -> bool {
        if !self.auto_eject {
            return false;
        }
        let installed = self.specs.lock().expect("router specs lock").clone();
        let specs = installed.specs;
        let ejected: Vec<bool> = installed
            .backends
            .iter()
            .map(|b| b.health.ejected_until().is_some())
            .collect();
        let all_ejected = ejected.iter().all(|e| *e);
        let table = self.table.load();
        specs.iter().zip(ejected).any(|(spec, ejected)| {
            let in_table = table.shards.iter().any(|s| *s.backend.addr == *spec.addr);
            in_table != (all_ejected || !ejected)
        })
    }

    /// Whether this router routes around failing servers.
    pub fn auto_ejects(&self) -> bool {
        self.auto_eject
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
