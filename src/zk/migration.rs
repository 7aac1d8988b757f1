//! A range migration's state in ZooKeeper, shared by the proxies (which
//! route by it) and the admin tool (which drives it).
//!
//! ```text
//! /redis/control/<cluster>/migration                  persistent, data MigrationState
//! /redis/control/<cluster>/migration-acks/<proxy>     EPHEMERAL, data Ack: what a proxy follows
//! ```
//!
//! They live beside the cluster, not under its root, because every child
//! of the root is a shard.
//!
//! Phases, in order:
//! - `prepare`: every proxy holds the range's requests and acknowledges
//!   once the ones it had already sent to the source have answered. No key
//!   moves yet.
//! - `moving`: a key of the range is asked to move first (`MIGRATE` on the
//!   source, which answers `NOKEY` once it is gone) and then served by the
//!   target, so each key lives on exactly one shard at every moment. The
//!   admin's mover moves the keys nobody touches.
//! - `committed`: the source holds no key of the range; the shards' ranges
//!   were changed in the same ZooKeeper transaction. Proxies keep the
//!   `moving` rule until their table gives the range to the target.

use serde::{Deserialize, Serialize};

/// The znode names under the control directory.
pub const MIGRATION_NODE: &str = "migration";
pub const ACKS_NODE: &str = "migration-acks";

/// The control directory of the cluster rooted at `root`: its parent
/// directory replaced by `control`, e.g. `/redis/cluster/icd` ->
/// `/redis/control/icd`. `None` for a root without a parent.
pub fn control_root(root: &str) -> Option<String> {
    let segments: Vec<&str> = root.split('/').filter(|s| !s.is_empty()).collect();
    let [base @ .., _, cluster] = segments.as_slice() else {
        return None;
    };
    let mut path = String::new();
    for segment in base.iter().chain(&["control", cluster]) {
        path.push('/');
        path.push_str(segment);
    }
    Some(path)
}

/// `<control>/migration` of the cluster rooted at `root`.
pub fn migration_path(root: &str) -> Option<String> {
    control_root(root).map(|c| format!("{c}/{MIGRATION_NODE}"))
}

/// `<control>/migration-acks` of the cluster rooted at `root`.
pub fn acks_path(root: &str) -> Option<String> {
    control_root(root).map(|c| format!("{c}/{ACKS_NODE}"))
}

/// The ACL user the proxies move keys as, beside their `redis_user`
/// (same password; created by the watchdogs with MIGRATE and little
/// else), so that the main user never needs MIGRATE.
pub fn migrator_user(user: &str) -> String {
    format!("{user}-migrate")
}

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Prepare,
    Moving,
    Committed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Moving => "moving",
            Phase::Committed => "committed",
        }
    }
}

/// The data of the migration znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationState {
    /// Unique per migration: acknowledgements name it.
    pub id: String,
    /// The slots that move, `LO-HI` inclusive.
    pub range: String,
    /// Shard names.
    pub source: String,
    pub target: String,
    pub phase: Phase,
    /// The mover waits while set (`shardproxy-admin pause`).
    #[serde(default)]
    pub paused: bool,
    /// Keys per second the mover may move; 0 = unlimited.
    #[serde(default)]
    pub rate: u64,
    /// Keys moved by the mover so far (proxies move more on access).
    #[serde(default)]
    pub moved: u64,
    /// Unix seconds: when it started and when `moved` was last written.
    #[serde(default)]
    pub started: u64,
    #[serde(default)]
    pub updated: u64,
}

impl MigrationState {
    /// Parses and checks the znode's data.
    ///
    /// # Errors
    /// Why the data is not a usable migration: bad JSON, a bad range, or
    /// source and target the same shard.
    pub fn parse(data: &[u8]) -> Result<MigrationState, String> {
        let state: MigrationState =
            serde_json::from_slice(data).map_err(|e| format!("bad migration data: {e}"))?;
        state.slots()?;
        if state.source == state.target {
            return Err(format!(
                "bad migration data: source and target are both {}",
                state.source
            ));
        }
        Ok(state)
    }

    /// The moving range `(lo, hi)`, inclusive.
    ///
    /// # Errors
    /// The range text is not `LO-HI`.
    pub fn slots(&self) -> Result<(u32, u32), String> {
        crate::zk::layout::parse_range(&self.range).map_err(|e| format!("bad migration data: {e}"))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The data of a proxy's acknowledgement: the migration and phase it
/// follows now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub id: String,
    pub phase: Phase,
}

impl Ack {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(data: &[u8]) -> Option<Ack> {
        serde_json::from_slice(data).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_root_replaces_the_cluster_directory() {
        assert_eq!(
            control_root("/redis/cluster/icd").as_deref(),
            Some("/redis/control/icd")
        );
        assert_eq!(
            migration_path("/a/b/cluster/icd/").as_deref(),
            Some("/a/b/control/icd/migration")
        );
        assert_eq!(control_root("/icd"), None);
    }

    #[test]
    fn state_round_trips_and_rejects_bad_data() {
        let state = MigrationState {
            id: "m1".into(),
            range: "0-1023".into(),
            source: "redis-0000".into(),
            target: "redis-0002".into(),
            phase: Phase::Moving,
            paused: false,
            rate: 0,
            moved: 7,
            started: 1,
            updated: 2,
        };
        assert_eq!(MigrationState::parse(&state.to_json()), Ok(state.clone()));
        assert_eq!(state.slots(), Ok((0, 1023)));
        let same = MigrationState {
            target: "redis-0000".into(),
            ..state.clone()
        };
        assert!(MigrationState::parse(&same.to_json())
            .unwrap_err()
            .contains("both redis-0000"));
        let bad_range = MigrationState {
            range: "9-1".into(),
            ..state
        };
        assert!(MigrationState::parse(&bad_range.to_json()).is_err());
        assert!(MigrationState::parse(b"{").is_err());
        assert!(MigrationState::parse(
            br#"{"id":"x","range":"0-1","source":"a","target":"b","phase":"flying"}"#
        )
        .is_err());
    }
}
