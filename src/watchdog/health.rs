//! Health of the watched Redis (DESIGN.md watchdog rule 1): PING and
//! `INFO replication` every interval through one kept connection, its
//! `run_id` (a new one means the Redis restarted with whatever data it
//! loaded), and how many checks failed in a row.

use super::proxy_user::ProxyUser;
use crate::redis_client::{info_field, RedisConn, RedisError};
use crate::zk::layout::Role;
use std::time::Duration;
use tracing::{info, warn};

/// What one successful check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisState {
    /// `run_id` (INFO server), read once per connection: a restart also
    /// breaks the connection.
    pub run_id: String,
    pub role: Role,
    /// For a replica: the `master_host` and `master_port` it follows.
    pub master: Option<(String, u16)>,
    /// For a replica: `master_link_status:up`.
    pub link_up: bool,
    /// For a replica: `master_sync_in_progress:1`, a full sync is running,
    /// so its dataset is incomplete.
    pub sync_in_progress: bool,
    /// Replication offset: `master_repl_offset` on a master,
    /// `slave_repl_offset` (how far it has applied its master's stream) on
    /// a replica.
    pub offset: u64,
    /// `master_replid`: the history the offset counts in (on a replica, its
    /// master's).
    pub replid: String,
    /// For a replica whose link is down: `master_link_down_since_seconds`.
    pub link_down_secs: Option<u64>,
    /// `master_replid2`: the history a promoted replica continues (or a
    /// master restarted from a snapshot it took as a replica).
    pub replid2: String,
    /// How far it holds `replid2`'s history: the offset it was at when it
    /// left it (`second_repl_offset` less one; 0 without a `replid2`).
    pub replid2_until: u64,
}

impl RedisState {
    /// Reads `INFO replication` text; `None` without a `role` line.
    pub fn parse(run_id: &str, info: &str) -> Option<RedisState> {
        let role = match info_field(info, "role")? {
            "master" => Role::Master,
            "slave" | "replica" => Role::Replica,
            _ => return None,
        };
        let offset_key = match role {
            Role::Master => "master_repl_offset",
            Role::Replica => "slave_repl_offset",
        };
        let master = match role {
            Role::Replica => info_field(info, "master_host").and_then(|host| {
                let port = info_field(info, "master_port")?.parse().ok()?;
                Some((host.to_string(), port))
            }),
            Role::Master => None,
        };
        Some(RedisState {
            run_id: run_id.to_string(),
            role,
            master,
            link_up: info_field(info, "master_link_status") == Some("up"),
            sync_in_progress: info_field(info, "master_sync_in_progress") == Some("1"),
            offset: info_field(info, offset_key)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            replid: info_field(info, "master_replid")
                .unwrap_or_default()
                .to_string(),
            link_down_secs: info_field(info, "master_link_down_since_seconds")
                .and_then(|n| n.parse().ok()),
            replid2: info_field(info, "master_replid2")
                .unwrap_or_default()
                .to_string(),
            replid2_until: info_field(info, "second_repl_offset")
                .and_then(|n| n.parse::<i64>().ok())
                .map_or(0, |n| u64::try_from(n - 1).unwrap_or(0)),
        })
    }

    /// True when this Redis's data continues the history `replid` at
    /// least as far as `offset`: its replication ID with its offset there,
    /// or the one it continued (when promoted, or restarted from a
    /// snapshot) from at least there. The offset tells a Redis that holds
    /// the history from one that holds only its start (review: a replica
    /// restarted from the snapshot of its first sync, 0 keys, led the
    /// emptied shard and then wiped its old master's data).
    pub fn holds_history(&self, replid: &str, offset: u64) -> bool {
        self.history_reach(replid)
            .is_some_and(|reach| reach >= offset)
    }

    /// How far this Redis holds the history `replid`: its offset when it
    /// is its replication ID, [`RedisState::replid2_until`] when it is the
    /// one it continued; `None` for another history (or none named).
    pub fn history_reach(&self, replid: &str) -> Option<u64> {
        if replid.is_empty() {
            None
        } else if self.replid == replid {
            Some(self.offset)
        } else if self.replid2 == replid {
            Some(self.replid2_until)
        } else {
            None
        }
    }

    /// A replica that can take over without losing what others have: no
    /// full sync running, and its link up or down for at most `stale`
    /// (down since the master failed, not from before).
    pub fn in_sync(&self, stale: Duration) -> bool {
        self.role == Role::Replica
            && !self.sync_in_progress
            && (self.link_up || self.link_down_secs.is_some_and(|s| s <= stale.as_secs()))
    }

    /// True when this Redis is a replica of `addr` (`host:port`), whatever
    /// the state of its link.
    pub fn follows(&self, addr: &str) -> bool {
        self.role == Role::Replica && self.master.is_some() && self.master == split_addr(addr)
    }

    /// True when this Redis replicates from `addr` with the link up and no
    /// full sync running: it has the master's data (rule 3).
    pub fn synced_from(&self, addr: &str) -> bool {
        self.follows(addr) && self.link_up && !self.sync_in_progress
    }

    /// `host:port` of the master this replica follows, or "none".
    pub fn master_addr(&self) -> String {
        match &self.master {
            Some((host, port)) if host.contains(':') => format!("[{host}]:{port}"),
            Some((host, port)) => format!("{host}:{port}"),
            None => "none".to_string(),
        }
    }
}

/// A connection to another Redis (a member's, or the old master's) and
/// its `INFO replication`; `None` if it cannot say within `timeout`.
pub async fn replication_at(
    addr: &str,
    auth: Option<&str>,
    timeout: Duration,
) -> Option<(RedisConn, RedisState)> {
    let mut conn = RedisConn::connect(addr, auth, timeout).await.ok()?;
    let info = tokio::time::timeout(timeout, conn.text(&["INFO", "replication"]))
        .await
        .ok()?
        .ok()?;
    let state = RedisState::parse("", &info)?;
    Some((conn, state))
}

/// The keys `INFO keyspace` counts (`db0:keys=N,...` lines, summed).
pub fn keyspace_keys(info: &str) -> u64 {
    info.lines()
        .filter(|line| line.starts_with("db"))
        .filter_map(|line| {
            line.split_once(":keys=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// [`replication_at`] without the connection.
pub async fn probe(addr: &str, auth: Option<&str>, timeout: Duration) -> Option<RedisState> {
    replication_at(addr, auth, timeout)
        .await
        .map(|(_, state)| state)
}

/// Splits `host:port` or `[ipv6]:port` into what REPLICAOF takes.
pub fn split_addr(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host.to_string(), port.parse().ok()?))
}

/// True when a failed check says the Redis is there but busy, not gone: it
/// did not answer in time (a long command, a slow disk, a stalled host), or
/// it answered -BUSY (a long script) or -LOADING (loading its data set).
/// A refused or dropped connection means gone.
pub fn is_busy(error: &RedisError) -> bool {
    match error {
        RedisError::Timeout { .. } => true,
        RedisError::Connect { source, .. } => source.kind() == std::io::ErrorKind::TimedOut,
        RedisError::Reply { message, .. } => {
            message.starts_with("BUSY") || message.starts_with("LOADING")
        }
        _ => false,
    }
}

/// True when the Redis answered -BUSY: a script or function runs too long.
pub fn is_busy_script(error: &RedisError) -> bool {
    matches!(error, RedisError::Reply { message, .. } if message.starts_with("BUSY"))
}

/// Consecutive failed checks; `down_after` of them in a row mean down.
#[derive(Debug)]
pub struct Failures {
    count: u32,
    down_after: u32,
}

impl Failures {
    pub fn new(down_after: u32) -> Failures {
        Failures {
            count: 0,
            down_after,
        }
    }

    /// Records one check; returns true while the Redis counts as down.
    pub fn record(&mut self, ok: bool) -> bool {
        self.count = if ok { 0 } else { self.count.saturating_add(1) };
        self.is_down()
    }

    pub fn is_down(&self) -> bool {
        self.count >= self.down_after
    }

    pub fn count(&self) -> u32 {
        self.count
    }
}

/// The kept connection to one Redis, made again after any failure.
pub struct RedisLink {
    addr: String,
    auth: Option<String>,
    timeout: Duration,
    conn: Option<RedisConn>,
    run_id: String,
    /// The proxies' ACL user, made again on every new connection (a
    /// restarted Redis has forgotten it).
    proxy_user: Option<ProxyUser>,
    /// Our connection's `CLIENT ID`: the lower of two watchdogs' ids is
    /// the older one. Our earlier connections' ids too (the last few): one
    /// we dropped may still be listed until Redis notices.
    client_id: i64,
    earlier_ids: Vec<i64>,
    /// Counts connections made, so a caller sees a new one.
    pub connections: u64,
    /// Named [`CLIENT_NAME`] (else [`PENDING_NAME`]).
    announced: bool,
}

/// The name of a watchdog's connection to its Redis (`CLIENT SETNAME`).
pub const CLIENT_NAME: &str = "shardproxy-watchdog";

/// The name of a watchdog's connection before the watchdog has found its
/// Redis to be its shard's (a ZooKeeper session, and no other shard
/// claiming it: [`RedisLink::announce`]). Other watchdogs do not count
/// such a connection as the Redis's watchdog (review: one started with a
/// wrong `--shard` or an unreachable `--zk` made the real one stand by
/// after a restart, and the shard failed over).
pub const PENDING_NAME: &str = "shardproxy-watchdog-pending";

/// The lines of a `CLIENT LIST` reply that are watchdogs' connections.
fn watchdog_lines(clients: &str) -> impl Iterator<Item = &str> {
    let named = format!("name={CLIENT_NAME}");
    clients
        .lines()
        .filter(move |line| line.split(' ').any(|f| f == named))
}

/// The watchdogs' connections in a `CLIENT LIST` reply: each one's id and
/// `addr=...` field.
pub fn watchdog_connections(clients: &str) -> impl Iterator<Item = (i64, &str)> {
    watchdog_lines(clients).filter_map(|line| {
        let mut fields = line.split(' ');
        let id = fields.next()?.strip_prefix("id=")?.parse().ok()?;
        Some((id, fields.next().unwrap_or_default()))
    })
}

/// True when a watchdog's connection in a `CLIENT LIST` reply ran a
/// command within `fresh` (its `idle=` seconds): a watchdog checks its
/// Redis every interval, while a stopped or hung one leaves its
/// connection idle (and still connected).
pub fn live_watchdog(clients: &str, fresh: Duration) -> bool {
    watchdog_lines(clients).any(|line| {
        line.split(' ')
            .find_map(|f| f.strip_prefix("idle="))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|idle| idle <= fresh.as_secs())
    })
}

impl RedisLink {
    /// A link to `addr`; nothing is connected until the first call.
    pub fn new(addr: &str, auth: Option<String>, timeout: Duration) -> RedisLink {
        RedisLink {
            addr: addr.to_string(),
            auth,
            timeout,
            conn: None,
            run_id: String::new(),
            proxy_user: None,
            client_id: i64::MAX,
            earlier_ids: Vec::new(),
            connections: 0,
            announced: false,
        }
    }

    /// From now on the connection is named [`CLIENT_NAME`], as the
    /// Redis's watchdog. The connection is opened again, so that its
    /// `CLIENT ID` is newer than any watchdog that announced itself before:
    /// [`RedisLink::older_watchdog`] then finds that one.
    pub fn announce(&mut self) {
        if !self.announced {
            self.announced = true;
            self.conn = None;
        }
    }

    /// Keeps `user` defined on the Redis (`--proxy-user`).
    pub fn with_proxy_user(mut self, user: Option<ProxyUser>) -> RedisLink {
        self.proxy_user = user;
        self
    }

    /// PING, then `INFO replication`.
    ///
    /// # Errors
    /// Any failure to connect or to get both answers.
    pub async fn check(&mut self) -> Result<RedisState, RedisError> {
        self.command(&["PING"]).await?;
        self.replication().await
    }

    /// `INFO replication` alone.
    ///
    /// # Errors
    /// Any failure to connect or to get a parsable answer.
    pub async fn replication(&mut self) -> Result<RedisState, RedisError> {
        let args = ["INFO", "replication"];
        let conn = self.connected().await?;
        let result = conn.text(&args).await;
        let info = self.keep_if_usable(result)?;
        RedisState::parse(&self.run_id, &info).ok_or_else(|| RedisError::Unexpected {
            addr: self.addr.clone(),
            command: "INFO".into(),
            reply: "no role line".into(),
        })
    }

    /// How many keys the Redis holds, over all its databases (`INFO
    /// keyspace`).
    ///
    /// # Errors
    /// Any failure to connect or to get the answer.
    pub async fn keys(&mut self) -> Result<u64, RedisError> {
        let conn = self.connected().await?;
        let result = conn.text(&["INFO", "keyspace"]).await;
        let info = self.keep_if_usable(result)?;
        Ok(keyspace_keys(&info))
    }

    /// Sends a command that answers with a status (`+OK`).
    ///
    /// # Errors
    /// Any failure to connect, or the error reply.
    pub async fn command(&mut self, args: &[&str]) -> Result<(), RedisError> {
        let conn = self.connected().await?;
        let result = conn.ok(args).await;
        self.keep_if_usable(result)
    }

    /// Another watchdog of this Redis to leave it to: one that connected
    /// before us (a lower `CLIENT ID` under [`CLIENT_NAME`]), or, while we
    /// have not announced ourselves, any that has. Its `id=... addr=...`.
    ///
    /// # Errors
    /// Any failure to connect or to list the clients.
    pub async fn older_watchdog(&mut self) -> Result<Option<String>, RedisError> {
        let conn = self.connected().await?;
        let result = conn.text(&["CLIENT", "LIST", "TYPE", "normal"]).await;
        let clients = self.keep_if_usable(result)?;
        let ours = |id: i64| id == self.client_id || self.earlier_ids.contains(&id);
        let older = watchdog_connections(&clients)
            .find(|&(id, _)| !ours(id) && (id < self.client_id || !self.announced))
            .map(|(id, addr)| format!("id={id} {addr}"));
        Ok(older)
    }

    /// Drops the connection after a failure that leaves it unusable (an
    /// error reply leaves it fine).
    fn keep_if_usable<T>(&mut self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        if matches!(&result, Err(e) if !matches!(e, RedisError::Reply { .. })) {
            self.conn = None;
        }
        result
    }

    async fn connected(&mut self) -> Result<&mut RedisConn, RedisError> {
        if self.conn.is_none() {
            let mut conn =
                RedisConn::connect(&self.addr, self.auth.as_deref(), self.timeout).await?;
            // Named, so a switchover can see that this Redis's watchdog is
            // there to promote it.
            let name = if self.announced {
                CLIENT_NAME
            } else {
                PENDING_NAME
            };
            if let Err(e) = conn.ok(&["CLIENT", "SETNAME", name]).await {
                // Timed out (a busy Redis): its late reply would be read as
                // the next command's (review: INFO got CLIENT ID's).
                if !matches!(e, RedisError::Reply { .. }) {
                    return Err(e);
                }
                warn!(redis = %self.addr, error = %e, "cannot name the watchdog's connection");
            }
            let id = match conn.call(&["CLIENT", "ID"]).await? {
                crate::protocol::Value::Integer(id) => id,
                _ => i64::MAX,
            };
            if self.client_id != i64::MAX {
                if self.earlier_ids.len() == 8 {
                    self.earlier_ids.remove(0);
                }
                self.earlier_ids.push(self.client_id);
            }
            self.client_id = id;
            self.connections += 1;
            let info = conn.text(&["INFO", "server"]).await?;
            self.run_id = info_field(&info, "run_id").unwrap_or_default().to_string();
            if let Some(pass) = &self.auth {
                // Replicas of this Redis and this Redis as a replica share
                // the password; without masterauth a replica cannot sync.
                if let Err(e) = conn.ok(&["CONFIG", "SET", "masterauth", pass]).await {
                    warn!(redis = %self.addr, error = %e, "cannot set masterauth");
                }
            }
            if let Some(user) = &self.proxy_user {
                for command in [user.setuser_command(), user.migrator_setuser_command()] {
                    let args: Vec<&str> = command.iter().map(String::as_str).collect();
                    match conn.ok(&args).await {
                        Ok(()) => info!(redis = %self.addr, user = %args[2], "proxy ACL user set"),
                        Err(e) => warn!(redis = %self.addr, user = %args[2], error = %e,
                            "cannot set the proxy ACL user"),
                    }
                }
            }
            self.conn = Some(conn);
        }
        // Just set when it was None.
        self.conn.as_mut().ok_or_else(|| RedisError::Closed {
            addr: self.addr.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keyspace_keys_sum_every_database() {
        let info =
            "# Keyspace\r\ndb0:keys=100,expires=2,avg_ttl=0\r\ndb3:keys=5,expires=0,avg_ttl=0\r\n";
        assert_eq!(super::keyspace_keys(info), 105);
        assert_eq!(super::keyspace_keys("# Keyspace\r\n"), 0);
    }

    use super::*;

    #[test]
    fn a_watchdog_is_live_while_its_connection_is_used() {
        let list = |idle: u64| {
            format!(
                "id=3 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=8 name=other age=9 idle=0 flags=N\n\
                 id=7 addr=127.0.0.1:5001 laddr=127.0.0.1:6379 fd=9 name=shardproxy-watchdog age=99 idle={idle} flags=N\n"
            )
        };
        let fresh = Duration::from_secs(2);
        assert!(live_watchdog(&list(0), fresh));
        assert!(live_watchdog(&list(2), fresh));
        assert!(!live_watchdog(&list(3), fresh));
        assert!(!live_watchdog("id=3 addr=x name=other idle=0\n", fresh));
    }

    const REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\n\
        master_port:6379\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:1\r\n\
        master_sync_in_progress:0\r\nslave_repl_offset:1234\r\nmaster_repl_offset:1240\r\n";

    #[test]
    fn parses_a_synced_replica() {
        let state = RedisState::parse("abc", REPLICA).unwrap();
        assert_eq!(state.role, Role::Replica);
        assert_eq!(state.master, Some(("10.0.0.1".to_string(), 6379)));
        assert!(state.link_up && !state.sync_in_progress);
        assert_eq!(state.offset, 1234);
        assert_eq!(state.run_id, "abc");
        assert!(state.follows("10.0.0.1:6379"));
        assert!(state.synced_from("10.0.0.1:6379"));
        assert!(!state.follows("10.0.0.1:6380"));
        assert_eq!(state.master_addr(), "10.0.0.1:6379");
    }

    #[test]
    fn a_replica_whose_link_went_down_long_ago_is_not_in_sync() {
        let down = REPLICA
            .replace("link_status:up", "link_status:down")
            .replace(
                "master_last_io_seconds_ago:1",
                "master_link_down_since_seconds:120",
            );
        let state = RedisState::parse("abc", &down).unwrap();
        assert_eq!(state.link_down_secs, Some(120));
        assert!(!state.in_sync(Duration::from_secs(40)));
        let recent = down.replace("since_seconds:120", "since_seconds:3");
        assert!(RedisState::parse("abc", &recent)
            .unwrap()
            .in_sync(Duration::from_secs(40)));
        assert!(RedisState::parse("abc", REPLICA)
            .unwrap()
            .in_sync(Duration::from_secs(40)));
    }

    #[test]
    fn replica_in_full_sync_is_not_synced() {
        let info = REPLICA
            .replace("link_status:up", "link_status:down")
            .replace("sync_in_progress:0", "sync_in_progress:1");
        let state = RedisState::parse("abc", &info).unwrap();
        assert!(state.follows("10.0.0.1:6379"));
        assert!(!state.synced_from("10.0.0.1:6379"));
        assert!(state.sync_in_progress);
    }

    #[test]
    fn parses_a_master() {
        let info = "role:master\r\nconnected_slaves:0\r\nmaster_repl_offset:99\r\n";
        let state = RedisState::parse("r", info).unwrap();
        assert_eq!(state.role, Role::Master);
        assert_eq!(state.master, None);
        assert_eq!(state.offset, 99);
        assert!(!state.follows("10.0.0.1:6379"));
        assert_eq!(state.master_addr(), "none");
    }

    #[test]
    fn a_history_is_held_only_as_far_as_the_offset_reached() {
        // A master restarted from a snapshot it took as a replica at 500.
        let restarted = "role:master\r\nmaster_replid:new\r\nmaster_replid2:old\r\n\
            master_repl_offset:500\r\nsecond_repl_offset:501\r\n";
        let state = RedisState::parse("r", restarted).unwrap();
        assert_eq!(state.replid2_until, 500);
        assert!(state.holds_history("old", 500));
        assert!(!state.holds_history("old", 501), "recorded further on");
        assert!(!state.holds_history("other", 0));
        assert!(!state.holds_history("", 0));
        // Its own history: as far as its offset.
        assert!(state.holds_history("new", 500) && !state.holds_history("new", 501));
        // No replid2: Redis says -1.
        let plain = "role:master\r\nmaster_replid:a\r\nmaster_replid2:0000\r\n\
            master_repl_offset:7\r\nsecond_repl_offset:-1\r\n";
        assert_eq!(RedisState::parse("r", plain).unwrap().replid2_until, 0);
    }

    #[test]
    fn rejects_info_without_role() {
        assert_eq!(RedisState::parse("r", "# Replication\r\n"), None);
        assert_eq!(RedisState::parse("r", "role:sentinel\r\n"), None);
    }

    #[test]
    fn splits_ipv4_ipv6_and_hostnames() {
        assert_eq!(split_addr("10.0.0.1:6379"), Some(("10.0.0.1".into(), 6379)));
        assert_eq!(split_addr("[::1]:6380"), Some(("::1".into(), 6380)));
        assert_eq!(split_addr("redis-a:7000"), Some(("redis-a".into(), 7000)));
        assert_eq!(split_addr("redis-a"), None);
        let info = "role:slave\r\nmaster_host:::1\r\nmaster_port:6380\r\n";
        let state = RedisState::parse("r", info).unwrap();
        assert!(state.follows("[::1]:6380"));
        assert_eq!(state.master_addr(), "[::1]:6380");
    }

    #[test]
    fn busy_is_told_from_gone() {
        let addr = "10.0.0.1:6379".to_string();
        let reply = |message: &str| RedisError::Reply {
            addr: addr.clone(),
            command: "PING".into(),
            message: message.into(),
        };
        let timeout = RedisError::Timeout {
            addr: addr.clone(),
            timeout: Duration::from_secs(1),
        };
        assert!(is_busy(&timeout));
        assert!(is_busy(&reply("BUSY Redis is busy running a script.")));
        assert!(is_busy_script(&reply(
            "BUSY Redis is busy running a script."
        )));
        assert!(is_busy(&reply(
            "LOADING Redis is loading the dataset in memory"
        )));
        assert!(!is_busy_script(&reply(
            "LOADING Redis is loading the dataset in memory"
        )));
        let refused = RedisError::Connect {
            addr: addr.clone(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(!is_busy(&refused));
        assert!(!is_busy(&RedisError::Closed { addr: addr.clone() }));
        assert!(!is_busy(&reply("NOAUTH Authentication required.")));
    }

    #[test]
    fn down_after_failures_in_a_row() {
        let mut failures = Failures::new(3);
        assert!(!failures.record(false));
        assert!(!failures.record(false));
        assert!(!failures.record(true), "a success resets the count");
        assert!(!failures.record(false));
        assert!(!failures.record(false));
        assert!(failures.record(false));
        assert_eq!(failures.count(), 3);
        assert!(!failures.record(true));
    }
}
