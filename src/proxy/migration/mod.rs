//! Serving a range while it moves to another shard (see
//! `crate::zk::migration` for the phases).
//!
//! The routing table carries the migration as a [`MigrationRoute`]. A
//! request whose keys all fall in the moving range is not sent to the
//! source shard: it goes to the session's [`lane`], which runs its jobs
//! one after another, in the order the client sent them:
//! - `prepare`: the job waits for the next phase (a few milliseconds, the
//!   time the proxies take to acknowledge), at most [`HOLD`], then answers
//!   `-TRYAGAIN`;
//! - `moving`: `MIGRATE ... KEYS` on the source moves the request's keys
//!   to the target if the source still holds them (atomically, on the
//!   source), then the request runs on the target. When keys did move, a
//!   `WAIT` for the source's replicas comes first: a replica promoted after
//!   a crash must not bring back a key whose newer value lives on the
//!   target (the next MIGRATE ... REPLACE would overwrite it). So a key lives on
//!   exactly one shard at every moment; once it moved, every proxy finds it
//!   on the target (`NOKEY` from the source).
//! - committed and installed: the range is the target's; requests route
//!   as usual.
//!
//! A request with keys both inside and outside the range on the source
//! gets `-TRYAGAIN` (they are about to live on two shards); blocking
//! commands and transactions on the range get it too while it moves.
//! [`acks`] tells the admin tool which phase this proxy follows.

pub mod acks;
pub mod lane;
pub mod scripts;
pub mod silence;

use crate::proxy::backend::Backend;
use crate::proxy::router::{RoutingTable, ShardName};
use crate::zk::migration::Phase;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// How long a request of the range waits for `prepare` to end.
pub const HOLD: Duration = Duration::from_secs(5);

/// What the table builder needs to know of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSpec {
    pub id: String,
    pub lo: u32,
    pub hi: u32,
    /// Shard names.
    pub source: String,
    pub target: String,
    /// The shards' masters.
    pub source_addr: String,
    pub target_addr: String,
    /// Replicas in the source's line: a MIGRATE that moved keys waits for
    /// them (see [`lane`]).
    pub source_replicas: usize,
    pub phase: Phase,
}

/// A migration as the routing table holds it.
pub struct MigrationRoute {
    pub id: Arc<str>,
    pub lo: u32,
    pub hi: u32,
    pub source_name: ShardName,
    /// The source's master on the pool's shared connections (drained
    /// before `prepare` is acknowledged).
    pub source: Arc<Backend>,
    /// The same server as the migration user: the take script and its
    /// WAIT go there.
    pub mover: Arc<Backend>,
    pub source_replicas: usize,
    pub target_name: ShardName,
    pub target: Arc<Backend>,
    /// Whether the target answered the lanes' last move.
    pub target_silence: silence::TargetSilence,
    pub phase: Phase,
    /// The range is served through the lane: the table does not give it
    /// to the target yet (the commit not seen).
    pub active: bool,
}

impl MigrationRoute {
    /// True while the range is served through the lane.
    pub fn active(&self) -> bool {
        self.active
    }

    /// True when `slot` is in the moving range.
    pub fn covers(&self, slot: Option<u32>) -> bool {
        slot.is_some_and(|slot| (self.lo..=self.hi).contains(&slot))
    }
}

/// How a request's keys stand against the table's migration.
#[derive(Debug, PartialEq, Eq)]
pub enum Moving {
    /// No key in the moving range: route as usual.
    No,
    /// Every key is: the lane serves it.
    All,
    /// Some are, some are not.
    Mixed,
}

/// The refusal of a request that cannot run while its keys move.
pub const TRYAGAIN_MIXED: &str =
    "TRYAGAIN keys of this request are split by a range migration in progress; retry";
pub const TRYAGAIN_DEDICATED: &str =
    "TRYAGAIN blocking commands and transactions on a migrating range are refused until it is moved; retry";

/// Where the keys `keys` of a request stand.
pub fn moving<'a>(table: &RoutingTable, keys: impl Iterator<Item = &'a [u8]>) -> Moving {
    let Some(m) = table.active_migration() else {
        return Moving::No;
    };
    let (mut inside, mut outside) = (false, false);
    for key in keys {
        if m.covers(table.slot_of(key)) {
            inside = true;
        } else {
            outside = true;
        }
    }
    match (inside, outside) {
        (false, _) => Moving::No,
        (true, false) => Moving::All,
        (true, true) => Moving::Mixed,
    }
}

/// `host` and `port` of `addr` as MIGRATE takes them (no IPv6 brackets).
pub fn host_port(addr: &str) -> Option<(&str, &str)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port))
}

/// The proxies' move on access ([`scripts::take_script`]): `MIGRATE`
/// of `keys` from the source to `target` if the source holds them, unless
/// one is locked or big. `REPLACE`, because while the source holds a key
/// its copy is the only true one (a copy on the target can only be left by
/// an earlier MIGRATE whose reply was lost). Credentials are the pool's,
/// which the target shares.
pub fn take_command(
    target: &str,
    db: u32,
    timeout_ms: u64,
    auth: Option<(&Option<String>, &str)>,
    keys: &[Bytes],
) -> Option<Vec<Bytes>> {
    static SCRIPT: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| Bytes::from(scripts::take_script()));
    let (host, port) = host_port(target)?;
    let text = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let mut args: Vec<Bytes> = vec![
        Bytes::from_static(b"EVAL"),
        script.clone(),
        Bytes::from(keys.len().to_string()),
    ];
    args.extend(keys.iter().cloned());
    args.extend([
        Bytes::from(scripts::BIG_ELEMENTS.to_string()),
        Bytes::from(scripts::BIG_STRING_BYTES.to_string()),
        text(host),
        text(port),
        Bytes::from(db.to_string()),
        Bytes::from(timeout_ms.to_string()),
    ]);
    match auth {
        Some((Some(user), password)) => {
            args.extend([Bytes::from_static(b"AUTH2"), text(user), text(password)])
        }
        Some((None, password)) => args.extend([Bytes::from_static(b"AUTH"), text(password)]),
        None => {}
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_strips_ipv6_brackets() {
        assert_eq!(host_port("127.0.0.1:6379"), Some(("127.0.0.1", "6379")));
        assert_eq!(host_port("[::1]:6380"), Some(("::1", "6380")));
        assert_eq!(host_port("nohost"), None);
    }

    #[test]
    fn take_names_the_keys_and_the_credentials() {
        let keys = [Bytes::from("a"), Bytes::from("b")];
        let text = |args: Vec<Bytes>| {
            args[2..]
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let plain = take_command("10.0.0.2:6379", 0, 1000, None, &keys).unwrap();
        assert_eq!(text(plain), "2 a b 5000 16777216 10.0.0.2 6379 0 1000");
        let user = Some("proxy".to_string());
        let acl = take_command("[::1]:6379", 3, 1000, Some((&user, "pw")), &keys).unwrap();
        assert_eq!(
            text(acl),
            "2 a b 5000 16777216 ::1 6379 3 1000 AUTH2 proxy pw"
        );
    }
}
