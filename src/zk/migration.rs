//! A range migration's state in ZooKeeper, shared by the proxies (which
//! route by it) and the admin tool (which drives it).
//!
//! ```text
//! /redis/control/<cluster>/migration                  data MigrationState; EPHEMERAL in a new
//!                                                     migration's prepare (it ends with its
//!                                                     run's session), persistent from moving
//! /redis/control/<cluster>/migration-acks/<proxy>     EPHEMERAL, data Ack: what a proxy follows
//! /redis/control/<cluster>/proxies/<proxy>            persistent, the roster: every proxy that
//!                                                     runs, registered or cut off
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
pub const ROSTER_NODE: &str = "proxies";

/// The control directory of the cluster rooted at `root`: its parent
/// directory replaced by `control`, e.g. `/redis/cluster/icd` ->
/// `/redis/control/icd` (and `/icd` -> `/control/icd`). `None` for the
/// ZooKeeper root itself. Planned switchovers (`<control>/<shard>`) and
/// migrations live there, beside the cluster.
pub fn control_root(root: &str) -> Option<String> {
    let segments: Vec<&str> = root.split('/').filter(|s| !s.is_empty()).collect();
    let [base @ .., cluster] = segments.as_slice() else {
        return None;
    };
    let base = &base[..base.len().saturating_sub(1)];
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

/// `<control>/proxies` of the cluster rooted at `root`: the roster. A
/// proxy enters it when it starts and leaves it only when it shuts down
/// cleanly, so a proxy cut off from ZooKeeper stays in it after its
/// session (and its registration) expired, while it may still serve from
/// its last table. The admin moves no range until every proxy of the
/// roster acknowledged, so such a proxy can never write to a source
/// whose keys have moved; `forget-proxy` takes out one that is gone.
pub fn roster_path(root: &str) -> Option<String> {
    control_root(root).map(|c| format!("{c}/{ROSTER_NODE}"))
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
    /// Keys the admin expected to move, estimated when it planned the
    /// migration (the source's DBSIZE times the range's share of its
    /// slots); `status` derives the ETA from it. Absent in znodes written
    /// before it existed, and when the source did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<u64>,
}

/// What `abort` adds to a moving migration's id when it turns it around.
pub const TURNED_AROUND: &str = "-back";

impl MigrationState {
    /// True for a migration `abort` turned around: keys moved before it
    /// must go back, so it cannot simply be called off, even in prepare.
    pub fn turned_around(&self) -> bool {
        self.id.ends_with(TURNED_AROUND)
    }

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

    /// The mover's average keys per second so far (0 before a whole
    /// second went by or before any key moved).
    pub fn keys_per_second(&self) -> u64 {
        let secs = self.updated.saturating_sub(self.started);
        if secs == 0 {
            return 0;
        }
        self.moved / secs
    }

    /// Seconds left at the current rate: the estimated keys not moved yet
    /// over keys per second. `None` ("unknown") without an estimate or
    /// before the rate is known; 0 once the estimate is reached (it is an
    /// estimate: the mover ends when a pass finds no key, not at a count).
    pub fn eta_seconds(&self) -> Option<u64> {
        let estimate = self.estimate?;
        let rate = self.keys_per_second();
        if rate == 0 {
            return None;
        }
        Some(estimate.saturating_sub(self.moved).div_ceil(rate))
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
        assert_eq!(control_root("/icd").as_deref(), Some("/control/icd"));
        assert_eq!(control_root("/"), None);
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
            estimate: Some(100),
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

    #[test]
    fn old_znodes_without_an_estimate_still_parse() {
        let old =
            br#"{"id":"m1","range":"0-9","source":"a","target":"b","phase":"moving","moved":3}"#;
        let state = MigrationState::parse(old).unwrap();
        assert_eq!(state.estimate, None);
        assert_eq!(state.eta_seconds(), None);
        // And a state without one writes no field an old proxy would see.
        assert!(!String::from_utf8(state.to_json())
            .unwrap()
            .contains("estimate"));
    }

    fn at(moved: u64, secs: u64, estimate: Option<u64>) -> MigrationState {
        MigrationState {
            id: "m".into(),
            range: "0-9".into(),
            source: "a".into(),
            target: "b".into(),
            phase: Phase::Moving,
            paused: false,
            rate: 0,
            moved,
            started: 1000,
            updated: 1000 + secs,
            estimate,
        }
    }

    #[test]
    fn eta_is_the_keys_left_over_the_rate() {
        // 1,000 of 5,000 keys in 2 s: 500 keys/s, 4,000 left, 8 s.
        let state = at(1000, 2, Some(5000));
        assert_eq!(state.keys_per_second(), 500);
        assert_eq!(state.eta_seconds(), Some(8));
        // Rounded up: 1 key left at 500 keys/s is 1 s, not 0.
        assert_eq!(at(4999 * 2, 4, Some(10_000)).eta_seconds(), Some(1));
        // Past the estimate: nothing left by it.
        assert_eq!(at(6000, 2, Some(5000)).eta_seconds(), Some(0));
        // Unknown: no estimate, no time gone by yet, nothing moved yet.
        assert_eq!(at(1000, 2, None).eta_seconds(), None);
        assert_eq!(at(1000, 0, Some(5000)).eta_seconds(), None);
        assert_eq!(at(0, 5, Some(5000)).eta_seconds(), None);
        assert_eq!(at(0, 5, Some(5000)).keys_per_second(), 0);
        // A clock that went backwards is no rate either.
        let mut back = at(10, 0, Some(50));
        back.updated = 900;
        assert_eq!(back.eta_seconds(), None);
    }
}
