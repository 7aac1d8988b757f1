//! The routing table of a pool: which shard owns a key, and which backend
//! serves each shard. A table is an immutable value; a change (ZooKeeper,
//! reload, ejection) builds a new one and swaps it in atomically, so the
//! request path only ever loads a pointer and never waits.

use crate::config::PoolConfig;
use crate::hash::HashKind;
use crate::protocol::{encode_request, Proto};
use crate::proxy::backend::{Backend, BackendRegistry, BackendSettings, ReplyReceiver};
use crate::proxy::migration::{MigrationRoute, MigrationSpec};
use crate::route::{hashable_key, Distribution, DistributionKind, Node};
use crate::zk::migration::Phase;
use arc_swap::ArcSwap;
use bytes::BytesMut;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

/// A shard's name, as the request path carries it: an interned string,
/// copied without touching a reference count (it rides along with every
/// forwarded request, for the error text should the request fail).
pub type ShardName = &'static str;

/// The one copy of `name` kept for the life of the process. Names come from
/// the pool file and the shard znodes, so there are few of them; each is
/// kept once however many tables name it.
pub fn intern(name: &str) -> ShardName {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().expect("shard names lock");
    if let Some(&known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// One shard: a slice of the key space and the backend that serves it.
pub struct Shard {
    /// The server's name in the pool file, or the shard znode's name.
    pub name: ShardName,
    pub backend: Arc<Backend>,
    /// The inclusive slot range, in range form.
    pub range: Option<(u32, u32)>,
}

/// The hash, distribution and servers of a routing table
/// ([`RoutingTable::placement`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    hash: HashKind,
    hash_tag: Option<[u8; 2]>,
    distribution: Distribution,
    servers: Vec<(ShardName, Arc<str>)>,
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
    /// A range moving between two shards, from ZooKeeper.
    pub migration: Option<Arc<MigrationRoute>>,
    /// The end of an active migration that the table has no shard for:
    /// its target while it owns no range yet (a new shard), or its source
    /// when such a move was turned around by `abort`. It holds keys of the
    /// range, so the commands over every shard (DBSIZE, SCAN, FLUSHALL,
    /// SCRIPT LOAD...) and pub/sub ask it too.
    pub receiving: Option<Shard>,
}

impl RoutingTable {
    /// Sends the command `args` once to every distinct backend of the table
    /// (a backend serving several shards is asked once); returns each
    /// reply's channel with the name of the shard it was sent for. On the
    /// connection of `affinity` (the session's), so that it runs after the
    /// session's earlier requests.
    pub fn send_to_every_backend<A: AsRef<[u8]>>(
        &self,
        proto: Proto,
        affinity: usize,
        args: &[A],
    ) -> Vec<(ShardName, ReplyReceiver)> {
        let mut request = BytesMut::new();
        encode_request(args, &mut request);
        let request = request.freeze();
        self.distinct_shards()
            .into_iter()
            .map(|i| {
                let shard = self.shard(i);
                (
                    shard.name,
                    shard.backend.send(proto, affinity, request.clone()),
                )
            })
            .collect()
    }

    /// The shards with distinct backends, in table order, with the
    /// receiving shard where its name sorts among them (the place it takes
    /// in ZooKeeper's tables once it owns a range, so that a SCAN cursor
    /// keeps naming the same shards across the commit): indexes for
    /// [`Self::shard`]. A backend serving several shards is listed once,
    /// since it holds one keyspace.
    pub fn distinct_shards(&self) -> Vec<usize> {
        let mut every: Vec<usize> = (0..self.shards.len()).collect();
        if let Some(receiving) = &self.receiving {
            let at = self
                .shards
                .iter()
                .position(|s| s.name > receiving.name)
                .unwrap_or(self.shards.len());
            every.insert(at, self.shards.len());
        }
        let mut chosen: Vec<usize> = Vec::new();
        for i in every {
            let shard = self.shard(i);
            if !chosen
                .iter()
                .any(|&c| self.shard(c).backend.addr == shard.backend.addr)
            {
                chosen.push(i);
            }
        }
        chosen
    }

    /// The indexes (for [`Self::shard`]) of the active migration's source
    /// and target, when the table has them.
    pub fn migration_ends(&self) -> Option<(usize, usize)> {
        let m = self.active_migration()?;
        Some((self.index_of(m.source_name)?, self.index_of(m.target_name)?))
    }

    /// The table's migration, active or committed (the table gives the
    /// range to its target already): the indexes (for [`Self::shard`]) of
    /// its source, if the table still has it, and its target. SCAN walks
    /// the target again when keys may have moved to it after it was walked.
    pub fn migration_between(&self) -> Option<(Option<usize>, usize)> {
        let m = self.migration.as_deref()?;
        let target = self.index_of(m.target_name)?;
        Some((self.index_of(m.source_name), target))
    }

    /// The index (for [`Self::shard`]) of the shard named `name`.
    fn index_of(&self, name: ShardName) -> Option<usize> {
        match self.shards.iter().position(|s| s.name == name) {
            Some(i) => Some(i),
            None => self
                .receiving
                .as_ref()
                .filter(|r| r.name == name)
                .map(|_| self.shards.len()),
        }
    }

    /// The shard at `i`: one of `shards`, or just past them the receiving
    /// shard.
    pub fn shard(&self, i: usize) -> &Shard {
        match self.shards.get(i) {
            Some(shard) => shard,
            None => self.receiving.as_ref().expect("a shard index"),
        }
    }

    /// The slot `key` falls on (modula and range forms).
    pub fn slot_of(&self, key: &[u8]) -> Option<u32> {
        self.distribution.slot(self.key_hash(key))
    }

    /// Where `key` sits among the distribution's position runs (see
    /// [`crate::route::Distribution::position`]): what a reload compares
    /// to tell whether the key moved.
    pub fn position_of(&self, key: &[u8]) -> Option<u32> {
        self.distribution.position(self.key_hash(key))
    }

    /// The pool's hash of `key` (of its hash tag's part, with one).
    fn key_hash(&self, key: &[u8]) -> u32 {
        self.hash.hash(hashable_key(key, self.hash_tag))
    }

    /// What decides where every key goes: two tables with equal
    /// placements put each key on the same server (for tables without
    /// ranges, where that is the only way to tell).
    pub fn placement(&self) -> Placement {
        Placement {
            hash: self.hash,
            hash_tag: self.hash_tag,
            distribution: self.distribution.clone(),
            servers: self
                .shards
                .iter()
                .map(|s| (s.name, s.backend.addr.clone()))
                .collect(),
        }
    }

    /// The migration this table serves through the lane, if any.
    pub fn active_migration(&self) -> Option<&MigrationRoute> {
        self.migration.as_deref().filter(|m| m.active())
    }

    /// Where a split command sends `key`: its shard's index, or
    /// `shards.len()` for a key of the moving range (served by the
    /// session's migration lane).
    pub fn split_index(&self, key: &[u8]) -> usize {
        match self.active_migration() {
            Some(m) if m.covers(self.slot_of(key)) => self.shards.len(),
            _ => self.shard_of(key),
        }
    }

    /// Index into `shards` of the shard owning `key`.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        self.distribution.pick(self.key_hash(key))
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
    /// The `run_id` the server must have (its watchdog registered it), if
    /// known: ZooKeeper's shards only.
    pub run_id: Option<String>,
    /// Slots no known server owns (why): the spec's backend is a stand-in
    /// answering its requests with this error (`addr` is the name).
    pub unplaced: Option<String>,
}

/// The backends of `specs`, each told the `run_id` its spec expects.
fn backends_for(registry: &BackendRegistry, specs: &[ShardSpec]) -> Vec<Arc<Backend>> {
    specs
        .iter()
        .map(|spec| {
            if let Some(reason) = &spec.unplaced {
                return registry.unplaced(&spec.addr, reason);
            }
            let backend = registry.get(&spec.addr);
            backend.expect_run_id(spec.run_id.as_deref());
            backend
        })
        .collect()
}

/// Builds tables for one pool and holds the current one.
pub struct Router {
    table: ArcSwap<RoutingTable>,
    versions: AtomicU64,
    /// The current table's version, readable without loading the table.
    current: AtomicU64,
    /// Announces each new table's version, for the sessions that must act
    /// on a change at once (subscribers follow a failover).
    changes: watch::Sender<u64>,
    // A short sync lock, never held across an await: what the current table
    // was built from, kept so it can be rebuilt when servers are ejected or
    // come back, or the pool file is reloaded.
    state: Mutex<State>,
}

/// A table's servers came from the pool file.
pub const FILE: &str = "file";
/// A table's servers came from ZooKeeper's shard znodes.
pub const ZOOKEEPER: &str = "zookeeper";

/// How keys are hashed and servers connected: the pool file's settings that
/// a reload may change.
#[derive(Clone)]
pub struct RouteSettings {
    pub hash: HashKind,
    pub hash_tag: Option<[u8; 2]>,
    pub distribution: DistributionKind,
    /// Route around ejected servers (`auto_eject_hosts`, weighted pools).
    pub auto_eject: bool,
    pub backends: BackendSettings,
}

impl RouteSettings {
    pub fn of(pool: &PoolConfig) -> RouteSettings {
        RouteSettings {
            hash: pool.hash,
            hash_tag: pool.hash_tag,
            distribution: pool.distribution,
            auto_eject: pool.auto_eject_hosts && !pool.range_form,
            backends: BackendSettings {
                timeout: pool.timeout,
                auth: pool.redis_auth.clone(),
                user: pool.redis_user.clone(),
                db: pool.redis_db,
                connections: pool.server_connections as usize,
                preconnect: pool.preconnect,
                tcpkeepalive: pool.tcpkeepalive,
                failure_limit: pool.server_failure_limit,
                retry_timeout: pool.server_retry_timeout,
                tls: pool.server_tls.clone(),
            },
        }
    }
}

/// The inputs of the current table. The backends are held even while
/// ejected, so their failure counts and ejection deadlines survive.
#[derive(Clone)]
struct State {
    settings: RouteSettings,
    registry: Arc<BackendRegistry>,
    /// Connections of the migration user (its own ACL user with
    /// `redis_user`), which move keys of a migrating range.
    migrators: Arc<BackendRegistry>,
    specs: Vec<ShardSpec>,
    backends: Vec<Arc<Backend>>,
    source: &'static str,
    migration: Option<MigrationSpec>,
}

impl Router {
    /// The router of `pool`, starting from the file's servers. Must run
    /// inside a tokio runtime (backends spawn their connection tasks).
    pub fn new(pool: &PoolConfig) -> Router {
        let settings = RouteSettings::of(pool);
        let registry = Arc::new(BackendRegistry::new(settings.backends.clone()));
        let migrators = migrator_registry(&settings.backends, &registry);
        let specs = file_shards(pool);
        let backends: Vec<Arc<Backend>> = specs.iter().map(|s| registry.get(&s.addr)).collect();
        let table = build(&settings, &specs, &backends, 1, FILE, None);
        Router {
            table: ArcSwap::from_pointee(table),
            versions: AtomicU64::new(1),
            current: AtomicU64::new(1),
            changes: watch::Sender::new(1),
            state: Mutex::new(State {
                settings,
                registry,
                migrators,
                specs,
                backends,
                source: FILE,
                migration: None,
            }),
        }
    }

    /// The current table.
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    /// The current table, owned.
    pub fn load_full(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// The current table's version: changes with every new table.
    pub fn version(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// Tells of every new table (its version) from now on.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Builds a table from `specs` and makes it current. Specs with ranges
    /// use the range form; otherwise the pool's distribution, without the
    /// servers that are ejected now (with `auto_eject_hosts`).
    pub fn install(
        &self,
        specs: &[ShardSpec],
        source: &'static str,
        migration: Option<MigrationSpec>,
    ) -> Arc<RoutingTable> {
        let mut state = self.lock();
        // The mover rewrites the migration znode's progress every second;
        // a view that changes nothing the table is built from keeps the
        // table, so the sessions are not woken to re-route for nothing.
        if state.specs == specs && state.source == source && state.migration == migration {
            return self.table.load_full();
        }
        state.migration = migration;
        state.backends = backends_for(&state.registry, specs);
        state.specs = specs.to_vec();
        state.source = source;
        self.rebuild_locked(&state)
    }

    /// New hashing and connection settings (a reload). Changed connection
    /// settings take a new set of backends: the old connections finish the
    /// replies they owe and close. The pool file's servers, `file_specs`,
    /// replace the current ones unless ZooKeeper's drive the routing; that
    /// is decided under the lock, so a view installed while the file was
    /// read is kept (it was overwritten by the file's servers until
    /// ZooKeeper's next change: review, from reading).
    pub fn reconfigure(
        &self,
        settings: RouteSettings,
        file_specs: &[ShardSpec],
    ) -> Arc<RoutingTable> {
        let mut state = self.lock();
        if settings.backends != state.settings.backends {
            state.registry = Arc::new(state.registry.succeeding(settings.backends.clone()));
            state.migrators = migrator_registry(&settings.backends, &state.registry);
        }
        state.settings = settings;
        if state.source != ZOOKEEPER {
            state.specs = file_specs.to_vec();
            state.source = FILE;
        }
        state.backends = backends_for(&state.registry, &state.specs);
        self.rebuild_locked(&state)
    }

    /// Rebuilds the table from its inputs, leaving out the servers ejected
    /// now. Twemproxy does the same: an ejected server's keys are spread
    /// over the others until it is retried.
    pub fn rebuild(&self) -> Arc<RoutingTable> {
        let state = self.lock();
        self.rebuild_locked(&state)
    }

    fn rebuild_locked(&self, state: &State) -> Arc<RoutingTable> {
        let live: Vec<usize> = (0..state.specs.len())
            .filter(|&i| !state.settings.auto_eject || !is_ejected(&state.backends[i]))
            .collect();
        // With every server ejected there is nothing better than all of them.
        let chosen: Vec<usize> = if live.is_empty() {
            (0..state.specs.len()).collect()
        } else {
            live
        };
        let specs: Vec<ShardSpec> = chosen.iter().map(|&i| state.specs[i].clone()).collect();
        let backends: Vec<Arc<Backend>> =
            chosen.iter().map(|&i| state.backends[i].clone()).collect();
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let migration = state.migration.as_ref().map(|m| {
            Arc::new(migration_route(
                m,
                &specs,
                state.registry.get(&m.source_addr),
                state.migrators.get(&m.source_addr),
                state.registry.get(&m.target_addr),
            ))
        });
        let table = Arc::new(build(
            &state.settings,
            &specs,
            &backends,
            version,
            state.source,
            migration,
        ));
        self.table.store(table.clone());
        self.current.store(version, Ordering::Release);
        self.changes.send_replace(version);
        table
    }

    /// True when the servers the current table leaves out are not exactly
    /// the ones ejected now: time to rebuild.
    pub fn ejections_changed(&self) -> bool {
        let state = self.lock();
        if !state.settings.auto_eject {
            return false;
        }
        let ejected: Vec<bool> = state.backends.iter().map(is_ejected).collect();
        let all_ejected = ejected.iter().all(|e| *e);
        let table = self.table.load();
        state
            .backends
            .iter()
            .zip(ejected)
            .any(|(backend, ejected)| {
                let in_table = table
                    .shards
                    .iter()
                    .any(|s| Arc::ptr_eq(&s.backend, backend));
                in_table != (all_ejected || !ejected)
            })
    }

    /// Every server the routing is built from, by name, ejected ones
    /// included: the stats and metrics list them all, since a server routed
    /// around is the one ops are watching (review: an ejected server
    /// vanished from the stats JSON, its `server_ejected_at` never shown).
    pub fn servers(&self) -> Vec<(ShardName, Arc<Backend>)> {
        let state = self.lock();
        state
            .specs
            .iter()
            .zip(&state.backends)
            .map(|(spec, backend)| (intern(&spec.name), backend.clone()))
            .collect()
    }

    /// Whether this router routes around failing servers.
    pub fn auto_ejects(&self) -> bool {
        self.lock().settings.auto_eject
    }

    /// Whether `backend` is ejected, as INFO, the stats and the metrics say:
    /// failing, in a pool that routes around failing servers (without
    /// `auto_eject_hosts`, nothing does).
    pub fn ejected(&self, backend: &Arc<Backend>) -> bool {
        self.auto_ejects() && is_ejected(backend)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("router state lock")
    }
}

fn is_ejected(backend: &Arc<Backend>) -> bool {
    backend.health.ejected_until().is_some()
}

/// The backends of the migration user: the pool's settings as the
/// migration user when the pool has `redis_user`, else the pool's own.
fn migrator_registry(
    settings: &BackendSettings,
    registry: &Arc<BackendRegistry>,
) -> Arc<BackendRegistry> {
    match &settings.user {
        Some(user) => Arc::new(BackendRegistry::new(BackendSettings {
            user: Some(crate::zk::migration::migrator_user(user)),
            ..settings.clone()
        })),
        None => registry.clone(),
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
            run_id: None,
            unplaced: None,
        })
        .collect()
}

fn build(
    settings: &RouteSettings,
    specs: &[ShardSpec],
    backends: &[Arc<Backend>],
    version: u64,
    source: &'static str,
    migration: Option<Arc<MigrationRoute>>,
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
        match settings.distribution {
            DistributionKind::Ketama => Distribution::ketama(&nodes),
            DistributionKind::Modula => Distribution::modula(&nodes),
            DistributionKind::Random => Distribution::random(&nodes),
        }
    };
    let shards = specs
        .iter()
        .zip(backends)
        .map(|(s, backend)| Shard {
            name: intern(&s.name),
            backend: backend.clone(),
            range: s.range,
        })
        .collect::<Vec<Shard>>();
    // `receiving`: an end is absent when the table has no shard of its
    // name or address, however its master is recorded (an end with no
    // master has no address, and is not asked).
    let absent = |name: ShardName, backend: &Arc<Backend>| {
        !backend.addr.is_empty()
            && !shards
                .iter()
                .any(|s| s.name == name || s.backend.addr == backend.addr)
    };
    let receiving = migration
        .as_deref()
        .filter(|m| m.active())
        .and_then(|m| {
            [(m.target_name, &m.target), (m.source_name, &m.source)]
                .into_iter()
                .find(|(name, backend)| absent(name, backend))
        })
        .map(|(name, backend)| Shard {
            name,
            backend: backend.clone(),
            range: None,
        });
    RoutingTable {
        hash: settings.hash,
        hash_tag: settings.hash_tag,
        distribution,
        shards,
        version,
        source,
        built_at: SystemTime::now(),
        migration,
        receiving,
    }
}

/// The table's view of a migration: the range is served through the lane
/// until the commit, and the target's range covers it, are both seen.
fn migration_route(
    m: &MigrationSpec,
    specs: &[ShardSpec],
    source: Arc<Backend>,
    mover: Arc<Backend>,
    target: Arc<Backend>,
) -> MigrationRoute {
    // Before the commit the range is served through the lane even where
    // the target owns it (a migration turned around by `abort`).
    let committed = m.phase == Phase::Committed
        && specs.iter().any(|s| {
            s.name == m.target && s.range.is_some_and(|(lo, hi)| lo <= m.lo && m.hi <= hi)
        });
    MigrationRoute {
        id: Arc::from(m.id.as_str()),
        lo: m.lo,
        hi: m.hi,
        source_name: intern(&m.source),
        source,
        mover,
        source_replicas: m.source_replicas,
        target_name: intern(&m.target),
        target,
        target_silence: Default::default(),
        phase: m.phase,
        active: !committed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_interned_once() {
        let first = intern("redis-0007");
        let again = intern(&String::from("redis-0007"));
        assert!(std::ptr::eq(first, again));
        assert_eq!(again, "redis-0007");
        assert!(!std::ptr::eq(first, intern("redis-0008")));
    }

    fn router() -> Router {
        let text = "alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n  hash: fnv1a_64\n  distribution: modula\n  servers:\n   - 127.0.0.1:1:0-4999 a\n   - 127.0.0.1:2:5000-9999 b\n";
        let config = crate::config::Config::parse(text).expect("pool file");
        Router::new(&config.pools[0])
    }

    fn migration(phase: Phase) -> MigrationSpec {
        MigrationSpec {
            id: "m1".into(),
            lo: 4000,
            hi: 4999,
            source: "a".into(),
            target: "b".into(),
            source_addr: "127.0.0.1:1".into(),
            target_addr: "127.0.0.1:2".into(),
            source_replicas: 0,
            phase,
        }
    }

    /// The mover's progress writes reach the proxies as views that change
    /// nothing routed: they must keep the table (and its version), or every
    /// session re-routes once a second during a migration.
    #[tokio::test]
    async fn an_unchanged_view_keeps_the_table() {
        let router = router();
        let specs = router.lock().specs.clone();
        let first = router.install(&specs, "zookeeper", Some(migration(Phase::Moving)));
        let again = router.install(&specs, "zookeeper", Some(migration(Phase::Moving)));
        assert_eq!(first.version, again.version);
        assert!(Arc::ptr_eq(&first, &again));
        let committed = router.install(&specs, "zookeeper", Some(migration(Phase::Committed)));
        assert!(committed.version > again.version);
        let without = router.install(&specs, "zookeeper", None);
        assert!(without.version > committed.version);
        let mut moved = specs.clone();
        moved[0].addr = "127.0.0.1:3".into();
        let failover = router.install(&moved, "zookeeper", None);
        assert!(failover.version > without.version);
    }

    /// A move to a shard that owns no range yet: the commands over every
    /// shard reach it (where its name sorts) until the commit gives it the
    /// range, also once `abort` turned it around; a move between two
    /// shards of the table adds nothing.
    #[tokio::test]
    async fn a_new_shard_receiving_a_range_is_asked_by_the_commands_over_every_shard() {
        let router = router();
        let specs = router.lock().specs.clone();
        let mut to_new = migration(Phase::Moving);
        to_new.target = "c".into();
        to_new.target_addr = "127.0.0.1:3".into();
        let table = router.install(&specs, "zookeeper", Some(to_new.clone()));
        let every: Vec<&str> = table
            .distinct_shards()
            .into_iter()
            .map(|i| table.shard(i).name)
            .collect();
        assert_eq!(every, ["a", "b", "c"]);
        assert_eq!(&*table.shard(2).backend.addr, "127.0.0.1:3");

        let mut grown = specs.clone();
        grown[0].range = Some((0, 3999));
        grown.push(ShardSpec {
            name: "c".into(),
            addr: "127.0.0.1:3".into(),
            weight: 1000,
            range: Some((4000, 4999)),
            run_id: None,
            unplaced: None,
        });
        to_new.phase = Phase::Committed;
        let committed = router.install(&grown, "zookeeper", Some(to_new));
        assert!(committed.receiving.is_none());
        assert_eq!(committed.distinct_shards(), [0, 1, 2]);

        let between = router.install(&specs, "zookeeper", Some(migration(Phase::Moving)));
        assert!(between.receiving.is_none());
        assert_eq!(between.distinct_shards(), [0, 1]);

        // A name that sorts between the others takes its sorted place.
        let mut to_aa = migration(Phase::Moving);
        to_aa.target = "aa".into();
        to_aa.target_addr = "127.0.0.1:3".into();
        let table = router.install(&specs, "zookeeper", Some(to_aa.clone()));
        assert_eq!(table.distinct_shards(), [0, 2, 1]);
        assert_eq!(table.migration_ends(), Some((0, 2)));

        // Turned around by abort: the new shard is the source now, and
        // still asked.
        let mut back = to_aa;
        std::mem::swap(&mut back.source, &mut back.target);
        std::mem::swap(&mut back.source_addr, &mut back.target_addr);
        back.id = "m1-back".into();
        let table = router.install(&specs, "zookeeper", Some(back));
        assert_eq!(table.receiving.as_ref().map(|s| s.name), Some("aa"));
        assert_eq!(table.distinct_shards(), [0, 2, 1]);
        assert_eq!(table.migration_ends(), Some((2, 0)));
    }
}
