//! The cluster watch: follows `zookeeper_redis_path` and hands every new
//! valid [`ClusterView`] to the proxy.
//!
//! It sets ZooKeeper one-shot watches (no polling) on the root's children
//! (shards), each shard's data (range) and each shard's children (members),
//! and re-reads exactly what fired, re-arming its watch. One-shot watches
//! work with every ZooKeeper version the deployment may run.
//!
//! Changes made together (one transaction, or a burst) give one view:
//! ZooKeeper sends a client its watch events before the reply to any later
//! request, so once a re-read returns, every event of the change that caused
//! it is ready on its watcher. The watch takes those too before it builds
//! the view. This is why the watchers are polled here rather than in tasks
//! of their own.
//!
//! Invalid state (bad JSON, gap, overlap, bad member name, missing root)
//! keeps the last good view; the path and reason are logged and recorded in
//! [`ZkStatus`]. A shard with no members keeps its last known master and is
//! flagged. While ZooKeeper is unreachable the last view stays; a new
//! session re-reads everything.

use super::session::{close, connect, session_over};
use super::status::{Task, ZkStatus};
use crate::zk::layout::{child_path, MemberData};
use crate::zk::migration::MigrationState;
use crate::zk::view::{members_in_line, ClusterView, ShardView};
use crate::zk::{is_session_over, shutdown_requested, Backoff};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::watch as signal;
use tokio::time::Instant;
use tracing::{info, warn};
use zookeeper_client as zk;

/// Called with each new valid view, from the watch task. It should only
/// build and swap in a routing table: it must not block. An `Err` (why)
/// refuses the view: it is recorded as invalid and the last one is kept.
pub type OnChange = Arc<dyn Fn(ClusterView) -> Result<(), String> + Send + Sync>;

/// Watches the cluster under `root` (`zookeeper_redis_path`) and calls
/// `on_change` with every new valid view (an unchanged view is not
/// repeated).
///
/// Runs until `shutdown` turns `true` (or its sender is dropped); meant to be
/// spawned. `hosts` is the `zookeeper_host` connect string. Never returns
/// early: failures are logged, recorded in `status`, and retried with
/// backoff, while the proxy keeps routing on the last view. `file_slots` is
/// the pool file's slot space when its servers have ranges: the first view
/// leaves out shards wholly beyond it (see `Session::beyond_the_file`).
pub async fn watch_cluster(
    hosts: String,
    auth: Option<crate::zk::ZkAuth>,
    root: String,
    file_slots: Option<u32>,
    on_change: OnChange,
    status: Arc<ZkStatus>,
    mut shutdown: signal::Receiver<bool>,
) {
    let task = Task::Watch;
    // The last view handed over, kept across sessions: it supplies the last
    // known master of a shard without members, and avoids repeating a view.
    let mut last: Option<ClusterView> = None;
    while let Some(client) =
        connect(&hosts, auth.as_ref(), &root, task, &status, &mut shutdown).await
    {
        let mut states = client.state_watcher();
        let mut session = Session::new(&client, &root, &status, file_slots);
        let stop = tokio::select! {
            _ = session.run(&mut last, &on_change) => false,
            _ = session_over(&mut states, &status, task, &hosts) => false,
            _ = shutdown_requested(&mut shutdown) => true,
        };
        drop(session);
        if stop {
            close(client, &status, task).await;
            return;
        }
        warn!(root = %root, "ZooKeeper session over; watching again with a new session");
    }
}

/// What a watch is on. Ordered so the root is read before its shards.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    /// The root's children, or the root's existence while it is missing.
    Root,
    /// A shard's data.
    Data(String),
    /// A shard's children.
    Members(String),
    /// The migration znode's data, or its existence while it is missing.
    Migration,
}

/// A watch set on ZooKeeper, resolving when it fires.
type Armed = Pin<Box<dyn Future<Output = zk::WatchedEvent> + Send>>;

/// What was last read of one shard; `None` until read.
#[derive(Default)]
struct ShardNodes {
    data: Option<Vec<u8>>,
    /// The children, less the members made by hand.
    members: Option<Vec<String>>,
    /// Children named as members but not ephemeral: no watchdog made them
    /// (the watchdogs do not follow them either), so they are strays.
    hand_made: Vec<String>,
    /// Whether each member znode seen is ephemeral (names are never
    /// reused: each carries a new sequence number).
    ephemeral: HashMap<String, bool>,
    /// The `run_id` in each head member's data, as read when it came to
    /// the head of the line (a member's `run_id` is never rewritten).
    run_ids: HashMap<String, Option<String>>,
}

/// The `run_id` expected of `shard`'s master: its head member's, or, with
/// no members, the one recorded with the shard's last master in its data
/// when that is who is served, else the last one known for the same
/// address (the Redis that is routed to until a member appears).
fn head_run_id(
    nodes: &ShardNodes,
    shard: &ShardView,
    last_shard: Option<&ShardView>,
) -> Option<String> {
    match shard.members.first() {
        Some(head) => nodes.run_ids.get(&head.znode).cloned().flatten(),
        None => shard.master_run_id.clone().or_else(|| {
            last_shard
                .filter(|last| last.master == shard.master)
                .and_then(|last| last.master_run_id.clone())
        }),
    }
}

/// The watch over one session: the znodes read so far and the watches set.
struct Session<'a> {
    client: &'a zk::Client,
    root: &'a str,
    status: &'a ZkStatus,
    file_slots: Option<u32>,
    /// `None` while the root does not exist.
    shards: Option<BTreeMap<String, ShardNodes>>,
    /// The migration znode's path and last data (`None`: no migration).
    migration_path: Option<String>,
    migration: Option<Vec<u8>>,
    /// Reads to do (each re-arms its watch).
    pending: BTreeSet<Key>,
    /// The live watch per key. Replacing or removing one drops it, which
    /// unregisters it from the client.
    armed: HashMap<Key, Armed>,
}

impl<'a> Session<'a> {
    fn new(
        client: &'a zk::Client,
        root: &'a str,
        status: &'a ZkStatus,
        file_slots: Option<u32>,
    ) -> Session<'a> {
        Session {
            client,
            root,
            status,
            file_slots,
            shards: None,
            migration_path: crate::zk::migration::migration_path(root),
            migration: None,
            pending: BTreeSet::from([Key::Root, Key::Migration]),
            armed: HashMap::new(),
        }
    }

    /// Reads, publishes and waits for watches, until the session is over.
    async fn run(&mut self, last: &mut Option<ClusterView>, on_change: &OnChange) {
        let mut backoff = Backoff::new();
        loop {
            let retry_at = match self.read_pending().await {
                Ok(()) => {
                    backoff.reset();
                    // Events of the change that caused these reads are ready
                    // now; read what they touched before building the view.
                    if poll_fn(|cx| Poll::Ready(self.take_fired(cx))).await {
                        continue;
                    }
                    self.publish(last, on_change);
                    None
                }
                Err(error) if is_session_over(&error) => return,
                Err(error) => {
                    let delay = backoff.next();
                    warn!(
                        root = %self.root,
                        error = %error,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot read the cluster from ZooKeeper"
                    );
                    self.status
                        .record_error(self.root, format!("cannot read: {error}"));
                    Some(Instant::now() + delay)
                }
            };
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let fired = poll_fn(|cx| {
                if self.take_fired(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            tokio::select! {
                _ = fired => {}
                _ = retry => {}
            }
        }
    }

    /// Takes the watches that fired, making their reads pending; true if
    /// any did. Polling registers `cx` to be woken by the others.
    fn take_fired(&mut self, cx: &mut Context<'_>) -> bool {
        let mut fired = Vec::new();
        for (key, armed) in self.armed.iter_mut() {
            if let Poll::Ready(event) = armed.as_mut().poll(cx) {
                fired.push((key.clone(), event.event_type));
            }
        }
        for (key, event) in &fired {
            self.armed.remove(key);
            // A session event means the session is over; run()'s caller
            // sees that from the session state.
            if *event != zk::EventType::Session {
                self.pending.insert(key.clone());
            }
        }
        !fired.is_empty()
    }

    /// Does the pending reads in order; a failed read stays pending.
    async fn read_pending(&mut self) -> Result<(), zk::Error> {
        while let Some(key) = self.pending.pop_first() {
            if let Err(error) = self.read(&key).await {
                self.pending.insert(key);
                return Err(error);
            }
        }
        Ok(())
    }

    async fn read(&mut self, key: &Key) -> Result<(), zk::Error> {
        match key {
            Key::Root => self.read_root().await,
            Key::Migration => self.read_migration().await,
            Key::Data(name) => {
                if !self.has_shard(name) {
                    return Ok(());
                }
                match self
                    .client
                    .get_and_watch_data(&child_path(self.root, name))
                    .await
                {
                    Ok((data, _, watcher)) => {
                        self.shard_mut(name).data = Some(data);
                        self.arm(key.clone(), watcher);
                        Ok(())
                    }
                    Err(zk::Error::NoNode) => {
                        self.forget_shard(name);
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            }
            Key::Members(name) => {
                if !self.has_shard(name) {
                    return Ok(());
                }
                match self
                    .client
                    .list_and_watch_children(&child_path(self.root, name))
                    .await
                {
                    Ok((children, watcher)) => {
                        self.arm(key.clone(), watcher);
                        self.read_members(name, children).await
                    }
                    Err(zk::Error::NoNode) => {
                        self.forget_shard(name);
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            }
        }
    }

    /// Lists the shards; new ones get read, gone ones forgotten. A missing
    /// root is watched for creation.
    async fn read_root(&mut self) -> Result<(), zk::Error> {
        let names = match self.client.list_and_watch_children(self.root).await {
            Ok((names, watcher)) => {
                self.arm(Key::Root, watcher);
                names
            }
            Err(zk::Error::NoNode) => {
                self.shards = None;
                // The shards' watches go with the root; the migration znode
                // lives outside it and is still watched (review: a proxy
                // started before `init` never read a migration, and every
                // migration timed out waiting for its acknowledgement).
                let kept = |key: &Key| matches!(key, Key::Root | Key::Migration);
                self.armed.retain(|key, _| kept(key));
                self.pending.retain(kept);
                let (stat, watcher) = self.client.check_and_watch_stat(self.root).await?;
                if stat.is_some() {
                    // Created between the two calls: list it now.
                    self.pending.insert(Key::Root);
                } else {
                    self.arm(Key::Root, watcher);
                }
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let shards = self.shards.get_or_insert_with(BTreeMap::new);
        let gone: Vec<String> = shards
            .keys()
            .filter(|name| !names.contains(name))
            .cloned()
            .collect();
        for name in names {
            if !shards.contains_key(&name) {
                shards.insert(name.clone(), ShardNodes::default());
                self.pending.insert(Key::Data(name.clone()));
                self.pending.insert(Key::Members(name));
            }
        }
        for name in gone {
            self.forget_shard(&name);
        }
        Ok(())
    }

    /// Reads the migration znode, or watches for its creation.
    async fn read_migration(&mut self) -> Result<(), zk::Error> {
        let Some(path) = self.migration_path.clone() else {
            return Ok(());
        };
        match self.client.get_and_watch_data(&path).await {
            Ok((data, _, watcher)) => {
                self.migration = Some(data);
                self.arm(Key::Migration, watcher);
                Ok(())
            }
            Err(zk::Error::NoNode) => {
                self.migration = None;
                let (stat, watcher) = self.client.check_and_watch_stat(&path).await?;
                if stat.is_some() {
                    self.pending.insert(Key::Migration);
                } else {
                    self.arm(Key::Migration, watcher);
                }
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    fn has_shard(&self, name: &str) -> bool {
        self.shards
            .as_ref()
            .is_some_and(|shards| shards.contains_key(name))
    }

    /// Keeps `children` of shard `name`, less the members made by hand
    /// (not ephemeral), which are set apart as strays.
    async fn read_members(&mut self, name: &str, children: Vec<String>) -> Result<(), zk::Error> {
        let shard = child_path(self.root, name);
        let mut known = std::mem::take(&mut self.shard_mut(name).ephemeral);
        known.retain(|child, _| children.contains(child));
        let (mut members, mut hand_made) = (Vec::new(), Vec::new());
        for child in children {
            if crate::zk::layout::parse_member_name(&child).is_none() {
                members.push(child);
                continue;
            }
            let ephemeral = match known.get(&child) {
                Some(&ephemeral) => ephemeral,
                None => match self.client.check_stat(&child_path(&shard, &child)).await? {
                    Some(stat) => *known
                        .entry(child.clone())
                        .or_insert(stat.ephemeral_owner != 0),
                    // Gone since the listing: the watch brings the next.
                    None => continue,
                },
            };
            if ephemeral {
                members.push(child);
            } else {
                hand_made.push(child);
            }
        }
        let mut run_ids = std::mem::take(&mut self.shard_mut(name).run_ids);
        run_ids.retain(|child, _| members.contains(child));
        if let Some(head) = members_in_line(&members).into_iter().next() {
            if let std::collections::hash_map::Entry::Vacant(entry) = run_ids.entry(head.znode) {
                let path = child_path(&shard, entry.key());
                match self.client.get_data(&path).await {
                    // Junk is the watchdogs' to correct: it only costs
                    // the check of a restarted master.
                    Ok((data, _)) => {
                        entry.insert(MemberData::registered_run_id(&data));
                    }
                    // Gone since the listing: the watch brings the next.
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let nodes = self.shard_mut(name);
        nodes.members = Some(members);
        nodes.hand_made = hand_made;
        nodes.ephemeral = known;
        nodes.run_ids = run_ids;
        Ok(())
    }

    fn shard_mut(&mut self, name: &str) -> &mut ShardNodes {
        self.shards
            .get_or_insert_with(BTreeMap::new)
            .entry(name.to_string())
            .or_default()
    }

    /// Drops a shard that is gone from ZooKeeper, and its watches.
    fn forget_shard(&mut self, name: &str) {
        if let Some(shards) = self.shards.as_mut() {
            shards.remove(name);
        }
        for key in [Key::Data(name.to_string()), Key::Members(name.to_string())] {
            self.armed.remove(&key);
            self.pending.remove(&key);
        }
    }

    /// Makes `watcher` the live watch for `key`.
    fn arm(&mut self, key: Key, watcher: zk::OneshotWatcher) {
        self.armed.insert(key, Box::pin(watcher.changed()));
    }

    /// Builds the view from what was read; hands it over if valid and new,
    /// else keeps the last one and records why.
    fn publish(&self, last: &mut Option<ClusterView>, on_change: &OnChange) {
        let Some(shards) = self.shards.as_ref() else {
            warn!(path = %self.root, "cluster root does not exist; keeping the last view");
            self.status
                .record_error(self.root, "no such znode".to_string());
            self.status.set_state_valid(false);
            return;
        };
        let mut invalid = false;
        let mut unreadable = false;
        let mut read = Vec::with_capacity(shards.len());
        for (name, nodes) in shards {
            let last_shard = last.as_ref().and_then(|view| view.shard(name));
            let last_master = last_shard.and_then(|shard| shard.master.as_deref());
            let path = child_path(self.root, name);
            let children = nodes.members.as_deref().unwrap_or_default();
            let shard = ShardView::from_znodes(
                &path,
                nodes.data.as_deref().unwrap_or_default(),
                children,
                last_master,
            );
            let shard = match shard {
                Ok(mut shard) => {
                    shard.master_run_id = head_run_id(nodes, &shard, last_shard);
                    shard.strays.extend(nodes.hand_made.iter().cloned());
                    if !shard.strays.is_empty() {
                        warn!(path = %path, strays = ?shard.strays, "children that are not members are left out of the line");
                    }
                    shard
                }
                Err(error) => {
                    self.status.record_error(&path, error.to_string());
                    invalid = true;
                    // A stand-in in its place was never read valid either.
                    match last_shard.filter(|last| !last.is_left_out() && !last.unowned) {
                        // One shard's bad data freezes that shard's range
                        // only, flagged: its members are still followed
                        // (they are valid), so a failover meanwhile still
                        // moves routing.
                        Some(last_shard) => {
                            warn!(path = %path, error = %error, "invalid shard data in ZooKeeper; keeping its last good range");
                            let mut kept = last_shard.clone();
                            kept.invalid = Some(error.to_string());
                            let line = members_in_line(children);
                            if let Some(first) = line.first() {
                                kept.master = Some(first.addr.clone());
                            }
                            kept.no_members = line.is_empty();
                            kept.members = line;
                            kept.master_run_id = head_run_id(nodes, &kept, Some(last_shard));
                            kept
                        }
                        // A shard never valid (a znode created by hand, its
                        // data still to be set) is left out, flagged; the
                        // others are still followed (review: one such znode
                        // froze every shard's routing, failovers included).
                        None => {
                            warn!(path = %path, error = %error, "invalid data in a new shard znode; leaving it out of routing");
                            unreadable = true;
                            // Its line is still read: a stand-in in its
                            // place follows its master (review: it kept the
                            // pool file's server through a failover).
                            ShardView {
                                members: members_in_line(children),
                                ..ShardView::left_out(&path, error.to_string())
                            }
                        }
                    }
                }
            };
            read.push(shard);
        }
        if last.is_none() && unreadable && self.file_slots.is_none() {
            // A pool file in the weight form gives no slot space: the shards
            // that can be read may tile a smaller one, which would move
            // every key (review: the last shard's junk made 0-2047 the
            // space, and the proxy refused the mended view after). Routed
            // by the file until the data is mended.
            warn!(path = %self.root, "a shard's data is unreadable and the pool file gives no ranges: routing by the pool file until it is mended");
            self.status.set_state_valid(false);
            return;
        }
        if last.is_none() {
            let beyond;
            (read, beyond) = self.beyond_the_file(read);
            invalid |= beyond;
        }
        let (migration, migration_invalid) = self.checked_migration(last.as_ref());
        invalid |= migration_invalid;
        let mut offered = self.offer(read.clone(), migration.clone(), last, on_change);
        if let Err((_, error)) = &offered {
            // A new shard whose range does not fit beside the others (a
            // typo, a range set before the others were shrunk) is left
            // out, and the view offered again without it.
            let why = format!("its range does not fit beside the other shards': {error}");
            let mut fits = read.clone();
            let mut left_out = Vec::new();
            for shard in fits.iter_mut() {
                // New: never in a view, or only left out. With no view yet
                // (the proxy just started), one that never served data: no
                // members and no master recorded (review: a restarted
                // proxy routed from its file, missing failovers).
                let new = match last.as_ref() {
                    Some(seen) => seen.shard(&shard.name).is_none_or(ShardView::is_left_out),
                    None => shard.members.is_empty() && shard.recorded_master.is_none(),
                };
                if !shard.empty && shard.invalid.is_none() && new {
                    let path = child_path(self.root, &shard.name);
                    *shard = ShardView::left_out(&path, why.clone());
                    left_out.push(path);
                }
            }
            if !left_out.is_empty() {
                offered = self.offer(fits, migration.clone(), last, on_change);
                if offered.is_ok() {
                    for path in &left_out {
                        warn!(path = %path, reason = %why, "new shard left out of routing");
                        self.status.record_error(path, why.clone());
                    }
                    invalid = true;
                }
            }
        }
        if offered.is_err() {
            if let Some(view) = self.with_unowned(read, last.as_ref()) {
                offered = self.offer_view(view, migration, last, on_change);
            }
        }
        match offered {
            Ok(()) => self.status.set_state_valid(!invalid),
            Err((path, error)) => {
                warn!(path = %path, error = %error, "invalid cluster state in ZooKeeper; keeping the last good view");
                self.status.record_error(&path, error);
                self.status.set_state_valid(false);
            }
        }
    }

    /// The first view, with no view before it to compare with (see
    /// `cluster::same_slot_space`): shards wholly beyond the pool file's
    /// slot space are left out (`true`) when the others tile it, as running
    /// proxies leave out such a shard when it appears (a range typed past
    /// the end: every key would move). Review: a restarted proxy took the
    /// wider space and put keys where no other proxy looked for them.
    fn beyond_the_file(&self, read: Vec<ShardView>) -> (Vec<ShardView>, bool) {
        let Some(slots) = self.file_slots else {
            return (read, false);
        };
        let beyond =
            |shard: &ShardView| !shard.empty && shard.invalid.is_none() && shard.lo >= slots;
        if !read.iter().any(beyond) {
            return (read, false);
        }
        let why = format!(
            "its range is beyond the pool file's slots 0-{}: every key would move",
            slots - 1
        );
        let mut left_out = Vec::new();
        let fits: Vec<ShardView> = read
            .iter()
            .map(|shard| {
                if beyond(shard) {
                    let path = child_path(self.root, &shard.name);
                    left_out.push(path.clone());
                    ShardView::left_out(&path, why.clone())
                } else {
                    shard.clone()
                }
            })
            .collect();
        if !ClusterView::new(fits.clone()).is_ok_and(|view| view.slots == slots) {
            return (read, false);
        }
        for path in &left_out {
            warn!(path = %path, reason = %why, "shard left out of routing");
            self.status.record_error(path, why.clone());
        }
        (fits, true)
    }

    /// The view of `read` when shards this process never read valid are
    /// left out (their data unreadable) and the others leave slots of the
    /// slot space unowned: those slots get [`ShardView::unowned`]
    /// stand-ins, which route by the pool file only where it agrees with
    /// ZooKeeper, else answer with an error (`cluster::apply`). Without
    /// them, a proxy started while a shard's data is junk routed every
    /// slot by its file, whose ranges may be older than the last move
    /// (review: that move's keys went to their old shard), and followed
    /// no failover of the shards it could read. The slot space is the
    /// last view's, else the file's ranges'; with neither, `None`. A
    /// proxy that applied a whole view keeps it instead: a new shard's
    /// junk leaves the others tiling the space, and a gap it did not see
    /// before is a znode deleted or mistyped, whose last master is the
    /// best guess.
    fn with_unowned(
        &self,
        read: Vec<ShardView>,
        last: Option<&ClusterView>,
    ) -> Option<ClusterView> {
        let started_unread = last.is_none_or(|view| view.shards.iter().any(|s| s.unowned));
        if !started_unread || !read.iter().any(ShardView::is_left_out) {
            return None;
        }
        let slots = last.map(|view| view.slots).or(self.file_slots)?;
        let why = "no shard that can be read owns these slots: a shard's data in ZooKeeper is \
                   unreadable";
        ClusterView::with_unowned(read, slots, why)
    }

    /// The migration read, checked: bad migration data keeps the migration
    /// last seen (dropping it would send the range's keys back to a source
    /// that gave some away), and says so (`true`).
    fn checked_migration(&self, last: Option<&ClusterView>) -> (Option<MigrationState>, bool) {
        match self.migration.as_deref().map(MigrationState::parse) {
            None => (None, false),
            Some(Ok(state)) => (Some(state), false),
            Some(Err(error)) => {
                let path = self.migration_path.as_deref().unwrap_or(self.root);
                warn!(path = %path, error = %error, "invalid migration in ZooKeeper; keeping the last good one");
                self.status.record_error(path, error);
                (last.and_then(|l| l.migration.clone()), true)
            }
        }
    }

    /// Checks `shards` and `migration` as one view, and hands it over
    /// unless it is the last one; the error names the znode at fault and
    /// why.
    fn offer(
        &self,
        shards: Vec<ShardView>,
        migration: Option<MigrationState>,
        last: &mut Option<ClusterView>,
        on_change: &OnChange,
    ) -> Result<(), (String, String)> {
        let view = ClusterView::new(shards).map_err(|error| {
            let path = error.path().unwrap_or(self.root).to_string();
            (path, error.to_string())
        })?;
        self.offer_view(view, migration, last, on_change)
    }

    /// Hands `view` with `migration` over unless it is the last one.
    fn offer_view(
        &self,
        mut view: ClusterView,
        migration: Option<MigrationState>,
        last: &mut Option<ClusterView>,
        on_change: &OnChange,
    ) -> Result<(), (String, String)> {
        view.migration = migration;
        if last.as_ref() == Some(&view) {
            return Ok(());
        }
        // Refused: offered again with the next change.
        on_change(view.clone()).map_err(|reason| {
            (
                self.root.to_string(),
                format!("cluster view refused; keeping the current routing: {reason}"),
            )
        })?;
        log_changes(self.root, last.as_ref(), &view);
        self.status.view_applied(Arc::new(view.clone()));
        *last = Some(view);
        Ok(())
    }
}

/// Logs what an operator wants to know about a new view: masters that
/// changed, ranges that moved, shards left without members.
fn log_changes(root: &str, old: Option<&ClusterView>, new: &ClusterView) {
    for shard in &new.shards {
        let before = old.and_then(|view| view.shard(&shard.name));
        let master = shard.master.as_deref().unwrap_or("none");
        if before.map(|b| &b.master) != Some(&shard.master) {
            info!(
                root = %root,
                shard = %shard.name,
                old = %before.and_then(|b| b.master.as_deref()).unwrap_or("none"),
                new = %master,
                "master changed"
            );
        }
        if before.map(|b| (b.lo, b.hi)) != Some((shard.lo, shard.hi)) {
            info!(root = %root, shard = %shard.name, lo = shard.lo, hi = shard.hi, "shard range set");
        }
        if shard.no_members && !shard.is_left_out() {
            warn!(
                root = %root,
                shard = %shard.name,
                master = %master,
                "shard has no members; keeping its last known master"
            );
        }
    }
}
