//! Names and data of the ZooKeeper layout (DESIGN.md "ZooKeeper layout"),
//! as pure functions shared by the proxy, the watchdog and the admin tool.
//!
//! ```text
//! <root>/redis-0000                         shard, data {"weight":"LO-HI"}
//! <root>/redis-0000/<ip:port>-0000000003    member, data MemberData
//! /redis/proxy/<cluster>/<ip:port>          proxy, data ProxyData
//! ```
//!
//! What they mean for routing, validated, is [`super::view`]'s.

use serde::{Deserialize, Serialize};
use std::net::Ipv6Addr;

/// Why the znodes under a cluster root do not make a usable
/// [`ClusterView`](super::view::ClusterView).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A range text is not `LO-HI` with `LO <= HI < u32::MAX`.
    #[error(
        "bad range {text:?}: want LO-HI, two whole numbers with LO <= HI (slots count from 0)"
    )]
    BadRange { text: String },
    /// A shard's data is not `{"weight":"LO-HI"}`.
    #[error("{path}: bad shard data: {reason}")]
    BadShardData { path: String, reason: String },
    /// The cluster root has no shards.
    #[error("no shards")]
    NoShards,
    /// Slots `lo..=hi` belong to no shard.
    #[error("slots {lo}-{hi} belong to no shard (gap {})", gap_place(.after, .before))]
    Gap {
        lo: u32,
        hi: u32,
        /// The shard whose range ends just below the gap, if any.
        after: Option<String>,
        /// The shard whose range starts just above the gap.
        before: String,
    },
    /// Slots `lo..=hi` belong to two shards.
    #[error("shards {first} and {second} overlap on slots {lo}-{hi}")]
    Overlap {
        lo: u32,
        hi: u32,
        first: String,
        second: String,
    },
    /// One shard's master is in another shard's line too: one of them would
    /// be routed to the other's data (a member made by hand, or a watchdog
    /// pointed at the wrong shard).
    #[error("redis {addr} is a member of shards {first} and {second}")]
    SharedMember {
        addr: String,
        first: String,
        second: String,
    },
}

fn gap_place(after: &Option<String>, before: &str) -> String {
    match after {
        Some(after) => format!("between shards {after} and {before}"),
        None => format!("before shard {before}"),
    }
}

impl LayoutError {
    /// The znode the error is about, when it is about one znode (range
    /// errors are about the shards they name, not one path).
    pub fn path(&self) -> Option<&str> {
        match self {
            LayoutError::BadShardData { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// `parent/name`, for a `parent` that is `/` or an absolute path without a
/// trailing slash.
pub fn child_path(parent: &str, name: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The last segment of a znode path.
pub fn node_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Parses a range `LO-HI` (inclusive) of the slot space.
///
/// # Errors
/// [`LayoutError::BadRange`] unless both are decimal `u32`, `LO <= HI`, and
/// `HI < u32::MAX` (so the slot space `HI + 1` fits a `u32`).
pub fn parse_range(text: &str) -> Result<(u32, u32), LayoutError> {
    let bad = || LayoutError::BadRange {
        text: text.to_string(),
    };
    let (lo, hi) = text.split_once('-').ok_or_else(bad)?;
    let number = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u32>().ok()
    };
    match (number(lo), number(hi)) {
        (Some(lo), Some(hi)) if lo <= hi && hi < u32::MAX => Ok((lo, hi)),
        _ => Err(bad()),
    }
}

/// The data of a shard znode: `{"weight":"LO-HI"}`, plus the shard's last
/// master once one led it. Other keys are allowed and ignored, so later
/// versions can add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardData {
    /// The shard's range of slots, `LO-HI` inclusive.
    pub weight: String,
    /// The shard's last master and its replication history, written by its
    /// watchdog when it takes over. While it is set, a Redis may lead the
    /// shard when it is empty only if it holds that history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<MasterRecord>,
    /// Keys this version does not know, written back as they were read
    /// (review: the watchdog's every rewrite dropped them).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Who last led a shard, and the history its data belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterRecord {
    pub addr: String,
    /// Its `master_replid` (kept current by its watchdog); empty when an
    /// operator chose `addr` with `shardproxy-admin promote --force`.
    pub replid: String,
    /// Its replication offset then.
    pub offset: u64,
    /// Its `run_id` (empty: not recorded, as by `promote --force` or an
    /// older watchdog): while the shard has no members, a proxy started
    /// meanwhile serves that address only if it is still that run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// How many keys it held then (all databases; absent: not recorded).
    /// A replica on another history holding fewer than half of them was
    /// emptied by a full sync from a master restarted without its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
}

impl ShardData {
    /// The data for a shard owning slots `lo..=hi`.
    pub fn new(lo: u32, hi: u32) -> ShardData {
        ShardData {
            weight: format!("{lo}-{hi}"),
            master: None,
            other: Default::default(),
        }
    }

    /// Parses a shard znode's data, whatever its range says.
    pub fn parse(data: &[u8]) -> Option<ShardData> {
        serde_json::from_slice(data).ok()
    }

    /// The JSON stored in the znode.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of one String cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Parses a shard znode's data into its range; `path` names the znode in
/// the error.
///
/// # Errors
/// [`LayoutError::BadShardData`] for bad JSON, a missing `weight`, or a bad
/// range.
pub fn parse_shard_data(path: &str, data: &[u8]) -> Result<(u32, u32), LayoutError> {
    let bad = |reason: String| LayoutError::BadShardData {
        path: path.to_string(),
        reason,
    };
    let shard: ShardData = serde_json::from_slice(data).map_err(|e| bad(e.to_string()))?;
    parse_range(&shard.weight).map_err(|e| bad(e.to_string()))
}

/// True for `ip:port`, `[ipv6]:port` or `hostname:port` with a non-zero port.
pub fn is_server_addr(addr: &str) -> bool {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((ip, port)) if ip.parse::<Ipv6Addr>().is_ok() => ("ipv6", port),
            _ => return false,
        }
    } else {
        match addr.rsplit_once(':') {
            Some(parts) => parts,
            None => return false,
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && matches!(port.parse::<u16>(), Ok(p) if p > 0);
    host_ok && port_ok
}

/// Parses a member znode name `<ip:port>-<10-digit sequence>` into the
/// Redis address and the sequence number ZooKeeper gave it.
pub fn parse_member_name(name: &str) -> Option<(String, u64)> {
    let (addr, seq) = name.rsplit_once('-')?;
    if seq.len() != 10 || !seq.bytes().all(|b| b.is_ascii_digit()) || !is_server_addr(addr) {
        return None;
    }
    Some((addr.to_string(), seq.parse().ok()?))
}

/// The path a watchdog creates its EPHEMERAL_SEQUENTIAL member under:
/// ZooKeeper appends the 10-digit sequence.
pub fn member_prefix(shard_path: &str, addr: &str) -> String {
    format!("{}-", child_path(shard_path, addr))
}

/// A Redis instance's role, as its watchdog last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    #[serde(alias = "slave")]
    Replica,
}

/// The data of a member znode, written by its watchdog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberData {
    /// The Redis address, `ip:port`.
    pub addr: String,
    pub role: Role,
    /// Redis `run_id` (INFO server).
    pub run_id: String,
    /// Replication offset (`master_repl_offset`).
    pub offset: u64,
}

impl MemberData {
    /// The `run_id` a member's watchdog registered, from the member's
    /// data; `None` when the data does not say (junk, or an empty one).
    pub fn registered_run_id(data: &[u8]) -> Option<String> {
        serde_json::from_slice::<MemberData>(data)
            .ok()
            .map(|member| member.run_id)
            .filter(|run_id| !run_id.is_empty())
    }
}

/// The data of a proxy's own znode (`zookeeper_path`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyData {
    /// The pool's listen address.
    pub listen: String,
    /// The pool's name.
    pub pool: String,
    /// The proxy's version.
    pub version: String,
    pub pid: u32,
    /// Start time of the process, seconds since the Unix epoch. With `pid`
    /// it tells this process's znode from another's.
    pub started: u64,
    /// Address of the stats (twemproxy JSON) listener.
    pub stats: String,
    /// Address of the Prometheus metrics listener, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// The host's name (empty from versions before it was written).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

impl ProxyData {
    /// The JSON stored in the znode.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// True when `data` is the znode of this same process (same listen,
    /// pid and start time), e.g. left by an earlier session of ours.
    pub fn is_same_process(&self, data: &[u8]) -> bool {
        serde_json::from_slice::<ProxyData>(data).is_ok_and(|other| {
            other.listen == self.listen && other.pid == self.pid && other.started == self.started
        })
    }

    /// True when `data` is the znode of a process that ran before this
    /// one on this host and listen address and has ended (`pid_alive`
    /// says which processes still run): its session expires soon. Any
    /// other holder may be a live proxy given the same `zookeeper_path`.
    pub fn is_predecessor(&self, data: &[u8], pid_alive: impl Fn(u32) -> bool) -> bool {
        self.other_run_here(data).is_some_and(|pid| !pid_alive(pid))
    }

    /// True when `data` is the znode of another process on this host and
    /// listen address that still runs: an earlier run of this proxy still
    /// answering its clients after SIGTERM (a restart that overlaps, or a
    /// `reuseport` hand-over). It leaves ZooKeeper once they are answered.
    pub fn is_earlier_run_stopping(&self, data: &[u8], pid_alive: impl Fn(u32) -> bool) -> bool {
        self.other_run_here(data).is_some_and(pid_alive)
    }

    /// The pid in `data` if it is another process's on this host and
    /// listen address.
    fn other_run_here(&self, data: &[u8]) -> Option<u32> {
        serde_json::from_slice::<ProxyData>(data)
            .ok()
            .filter(|other| {
                other.listen == self.listen
                    && !other.host.is_empty()
                    && other.host == self.host
                    && other.pid != self.pid
            })
            .map(|other| other.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_parses_inclusive_bounds() {
        assert_eq!(parse_range("0-2047"), Ok((0, 2047)));
        assert_eq!(parse_range("5-5"), Ok((5, 5)));
        assert_eq!(parse_range("0-4294967294"), Ok((0, u32::MAX - 1)));
    }

    #[test]
    fn range_rejects_reversed_bounds() {
        assert!(matches!(
            parse_range("10-9"),
            Err(LayoutError::BadRange { .. })
        ));
    }

    #[test]
    fn range_rejects_malformed_text() {
        for text in [
            "",
            "0",
            "-5",
            "5-",
            "a-5",
            "1-2-3",
            " 1-2",
            "+1-2",
            "0-4294967296",
            "0x1-2",
        ] {
            assert!(parse_range(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn range_rejects_hi_that_overflows_the_slot_space() {
        assert!(parse_range("0-4294967295").is_err());
    }

    #[test]
    fn shard_data_parses_weight() {
        assert_eq!(
            parse_shard_data("/c/redis-0000", br#"{"weight":"0-2047"}"#),
            Ok((0, 2047))
        );
        assert_eq!(
            ShardData::new(2048, 4095).to_json(),
            br#"{"weight":"2048-4095"}"#
        );
    }

    #[test]
    fn shard_data_ignores_unknown_keys() {
        let data = br#"{"weight":"0-9","note":"x"}"#;
        assert_eq!(parse_shard_data("/c/s", data), Ok((0, 9)));
    }

    #[test]
    fn shard_data_rejects_bad_json_naming_the_path() {
        let err = parse_shard_data("/c/redis-0001", b"{weight").unwrap_err();
        assert_eq!(err.path(), Some("/c/redis-0001"));
        assert!(
            err.to_string().starts_with("/c/redis-0001: bad shard data"),
            "{err}"
        );
    }

    #[test]
    fn shard_data_rejects_missing_weight() {
        let err = parse_shard_data("/c/s", br#"{"range":"0-9"}"#).unwrap_err();
        assert!(err.to_string().contains("weight"), "{err}");
    }

    #[test]
    fn shard_data_rejects_bad_range() {
        let err = parse_shard_data("/c/s", br#"{"weight":"9-0"}"#).unwrap_err();
        assert!(matches!(err, LayoutError::BadShardData { .. }));
        assert!(err.to_string().contains("\"9-0\""), "{err}");
    }

    #[test]
    fn member_name_parses_ipv4() {
        assert_eq!(
            parse_member_name("172.17.32.105:6379-0000000003"),
            Some(("172.17.32.105:6379".to_string(), 3))
        );
    }

    #[test]
    fn member_name_parses_ipv6() {
        assert_eq!(
            parse_member_name("[::1]:6379-0000000003"),
            Some(("[::1]:6379".to_string(), 3))
        );
    }

    #[test]
    fn member_name_parses_hostname() {
        assert_eq!(
            parse_member_name("redis-a.local:6379-0000000012"),
            Some(("redis-a.local:6379".to_string(), 12))
        );
    }

    #[test]
    fn member_name_rejects_bad_sequence() {
        for name in [
            "1.2.3.4:6379-3",
            "1.2.3.4:6379-00000000003",
            "1.2.3.4:6379-000000000x",
        ] {
            assert_eq!(parse_member_name(name), None, "{name}");
        }
    }

    #[test]
    fn member_name_rejects_bad_address() {
        for name in [
            "1.2.3.4-0000000001",
            "1.2.3.4:0-0000000001",
            "1.2.3.4:99999-0000000001",
            ":6379-0000000001",
            "::1:6379-0000000001",
            "[::g]:6379-0000000001",
            "a b:6379-0000000001",
            "0000000001",
        ] {
            assert_eq!(parse_member_name(name), None, "{name}");
        }
    }

    #[test]
    fn member_prefix_is_where_watchdogs_create() {
        assert_eq!(
            member_prefix("/c/redis-0000", "1.2.3.4:6379"),
            "/c/redis-0000/1.2.3.4:6379-"
        );
        assert_eq!(child_path("/", "a"), "/a");
    }

    #[test]
    fn member_data_round_trips() {
        let data = MemberData {
            addr: "1.2.3.4:6379".into(),
            role: Role::Replica,
            run_id: "abc".into(),
            offset: 42,
        };
        let json = serde_json::to_string(&data).unwrap();
        assert_eq!(
            json,
            r#"{"addr":"1.2.3.4:6379","role":"replica","run_id":"abc","offset":42}"#
        );
        assert_eq!(serde_json::from_str::<MemberData>(&json).unwrap(), data);
        let slave = r#"{"addr":"a:1","role":"slave","run_id":"","offset":0}"#;
        assert_eq!(
            serde_json::from_str::<MemberData>(slave).unwrap().role,
            Role::Replica
        );
    }

    #[test]
    fn proxy_data_round_trips_and_knows_its_process() {
        let data = ProxyData {
            listen: "10.0.0.1:22121".into(),
            pool: "alpha".into(),
            version: "0.1.0".into(),
            pid: 77,
            started: 1_700_000_000,
            stats: "10.0.0.1:22222".into(),
            metrics: None,
            host: "h1".into(),
        };
        let json = data.to_json();
        assert_eq!(serde_json::from_slice::<ProxyData>(&json).unwrap(), data);
        assert!(!String::from_utf8_lossy(&json).contains("metrics"));
        assert!(data.is_same_process(&json));
        let other = ProxyData {
            pid: 78,
            ..data.clone()
        };
        assert!(!data.is_same_process(&other.to_json()));
        assert!(!data.is_same_process(b"not json"));
        // An ended process on this host and address is a predecessor; a
        // live one, or one on another host, may be a second proxy.
        assert!(data.is_predecessor(&other.to_json(), |_| false));
        assert!(!data.is_predecessor(&other.to_json(), |_| true));
        // One that still runs is an earlier run stopping.
        assert!(data.is_earlier_run_stopping(&other.to_json(), |_| true));
        assert!(!data.is_earlier_run_stopping(&other.to_json(), |_| false));
        let elsewhere = ProxyData {
            host: "h2".into(),
            ..other.clone()
        };
        assert!(!data.is_predecessor(&elsewhere.to_json(), |_| false));
        assert!(!data.is_earlier_run_stopping(&elsewhere.to_json(), |_| true));
        let unnamed = ProxyData {
            host: String::new(),
            ..other
        };
        assert!(!data.is_predecessor(&unnamed.to_json(), |_| false));
    }
}
