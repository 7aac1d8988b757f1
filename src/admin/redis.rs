//! What a Redis says about its replication, as `status` shows it: read
//! with the watchdog's Redis client ([`crate::watchdog::health`]) and
//! turned into a [`Replication`] that serializes for `--json`.

use crate::watchdog::health::{RedisLink, RedisState};
use crate::zk::layout::Role;
use serde::Serialize;
use std::time::Duration;

/// How long connecting, and each command, may take: an unreachable or stuck
/// Redis shows up as an error in the report instead of a hang.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis's replication state (`INFO replication`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replication {
    /// `master` or `replica`.
    pub role: Role,
    /// The replication offset: what a replica has applied
    /// (`slave_repl_offset`), a master's `master_repl_offset`.
    pub offset: u64,
    /// A replica's master, `host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// A replica's link to its master is up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_up: Option<bool>,
    /// `run_id` (INFO server): tells a restarted Redis from the same one.
    pub run_id: String,
}

impl From<RedisState> for Replication {
    fn from(state: RedisState) -> Replication {
        let replica = state.role == Role::Replica;
        Replication {
            role: state.role,
            offset: state.offset,
            master: state
                .master
                .is_some()
                .then(|| state.master_addr())
                .filter(|_| replica),
            link_up: replica.then_some(state.link_up),
            run_id: state.run_id,
        }
    }
}

/// Connects to `addr` and reads its replication state.
///
/// # Errors
/// Why the Redis could not be read (the text names the address).
pub async fn read_replication(addr: &str, auth: Option<String>) -> Result<Replication, String> {
    let mut link = RedisLink::new(addr, auth, REDIS_TIMEOUT);
    match link.replication().await {
        Ok(state) => Ok(state.into()),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_has_no_master_and_no_link() {
        let state = RedisState {
            run_id: "abc".into(),
            role: Role::Master,
            master: None,
            link_up: false,
            sync_in_progress: false,
            offset: 1234,
            replid: String::new(),
            link_down_secs: None,
            replid2: String::new(),
            replid2_until: 0,
        };
        let json = serde_json::to_value(Replication::from(state)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"role": "master", "offset": 1234, "run_id": "abc"})
        );
    }

    #[test]
    fn replica_names_its_master_and_link() {
        let state = RedisState {
            run_id: "def".into(),
            role: Role::Replica,
            master: Some(("127.0.0.1".into(), 7001)),
            link_up: true,
            sync_in_progress: false,
            offset: 1200,
            replid: String::new(),
            link_down_secs: None,
            replid2: String::new(),
            replid2_until: 0,
        };
        let info = Replication::from(state);
        assert_eq!(info.master.as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(info.link_up, Some(true));
        assert_eq!(info.offset, 1200);
    }

    #[tokio::test]
    async fn unreachable_redis_is_an_error_naming_it() {
        // Port 1 on loopback: nothing listens there.
        let err = read_replication("127.0.0.1:1", None).await.unwrap_err();
        assert!(err.starts_with("127.0.0.1:1: cannot connect"), "{err}");
    }
}
