//! INFO through the proxy: the proxy's own `server`, `clients`, `stats`,
//! `cpu` and `zookeeper` sections, and the sections about the data
//! (`memory`, `persistence`, `replication`, `keyspace`) merged from every
//! backend's and `commandstats` and `errorstats` added up from them, in
//! Redis's text format and order so monitoring that parses Redis's INFO
//! keeps working.

mod merged;
mod tallies;

use crate::protocol::{encode, parse_reply, Proto, Value};
use crate::proxy::backend::ReplyReceiver;
use crate::proxy::descriptors;
use crate::proxy::input_memory;
use crate::proxy::pending::Pending;
use crate::proxy::pipeline_loan;
use crate::proxy::router::ShardName;
use crate::proxy::session::Session;
use crate::proxy::stats::PoolStats;
use crate::proxy::workers;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::fmt::Write;

/// Every section, in the order Redis writes them.
const SECTIONS: [&str; 11] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "commandstats",
    "errorstats",
    "zookeeper",
    "keyspace",
];

/// Sections that INFO with no argument (or `default`) leaves out, as Redis
/// does: long, and read only when asked for.
const NOT_DEFAULT: [&str; 1] = ["commandstats"];

/// Sections made from the backends' INFO rather than the proxy's state.
fn from_backends(section: &str) -> bool {
    section == "keyspace"
        || merged::SECTIONS.iter().any(|(name, _)| *name == section)
        || tallies::SECTIONS.iter().any(|(name, ..)| *name == section)
}

/// Sections of the proxy's own followed by fields merged from the
/// backends' section of the same name.
fn completed_by_backends(section: &str) -> bool {
    section == "stats"
}

/// INFO's reply: the proxy's sections now, the backends' when they have
/// answered.
pub struct InfoReply {
    /// The sections asked for, in Redis's order.
    parts: Vec<Part>,
    asked: Vec<(ShardName, ReplyReceiver)>,
    proto: Proto,
    /// The backends' database the pool uses (`redis_db`): the client's db0.
    db: u32,
}

enum Part {
    /// A section of the proxy's own, written when INFO arrived.
    Own(String),
    /// One of the proxy's own, then the backends' merged fields of it.
    OwnAndBackends(String, &'static str),
    /// A section merged from the backends' answers.
    Backends(&'static str),
}

/// `INFO [section ...]`.
pub fn run(session: &Session, args: &[Bytes]) -> InfoReply {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted
        .iter()
        .any(|w| matches!(w.as_str(), "all" | "everything"));
    let default = wanted.is_empty() || wanted.iter().any(|w| w == "default");
    let include = |section: &str| {
        all || (default && !NOT_DEFAULT.contains(&section)) || wanted.iter().any(|w| w == section)
    };
    let mut parts = Vec::new();
    let mut backend_sections = Vec::new();
    for section in SECTIONS.into_iter().filter(|s| include(s)) {
        if from_backends(section) {
            backend_sections.push(section);
            parts.push(Part::Backends(section));
        } else {
            let mut text = String::new();
            write_section(session, section, &mut text);
            if completed_by_backends(section) {
                backend_sections.push(section);
                parts.push(Part::OwnAndBackends(text, section));
            } else {
                parts.push(Part::Own(text));
            }
        }
    }
    // One request per backend: its one section, or its default sections,
    // which hold them all (INFO of several sections is Redis 7's only).
    let asked = match backend_sections[..] {
        [] => Vec::new(),
        [one] => ask_backends(session, one),
        // `all` for commandstats, which `default` leaves out.
        _ if backend_sections.contains(&"commandstats") => ask_backends(session, "all"),
        _ => ask_backends(session, "default"),
    };
    InfoReply {
        parts,
        asked,
        proto: session.proto,
        db: session.pool.config().redis_db,
    }
}

/// INFO's `multiplexing_api`: what tokio waits on, named as Redis names
/// its own.
fn multiplexing_api() -> &'static str {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        "epoll"
    } else if cfg!(any(target_os = "macos", target_os = "freebsd")) {
        "kqueue"
    } else {
        "poll"
    }
}

/// INFO's `server_time_usec`: the wall clock, in microseconds.
fn server_time_usec() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// INFO's `executable`: the running program's absolute path, as Redis
/// gives its own (tools find the binary to restart by it).
fn executable() -> String {
    std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_default()
}

/// INFO's `tcp_port`: 0 for a unix socket, as Redis shows when it has
/// no TCP port.
fn tcp_port(listen: &str) -> &str {
    if listen.starts_with('/') {
        return "0";
    }
    listen.rsplit(':').next().unwrap_or("")
}

fn write_section(session: &Session, section: &str, out: &mut String) {
    let pool = &session.pool;
    let stats = &pool.stats;
    let table = pool.router.load();
    match section {
        "server" => {
            // `redis_mode` is one of Redis's three: clients choose how to
            // talk by it, and to them the proxy is a standalone server
            // (`proxy:` says what it is).
            let _ = write!(
                out,
                "# Server\r\nredis_version:{}\r\nredis_mode:standalone\r\n\
                 proxy:shardproxy\r\nproxy_version:{}\r\nos:{}\r\narch_bits:{}\r\n\
                 multiplexing_api:{}\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\n\
                 server_time_usec:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n\
                 executable:{}\r\npool:{}\r\nrouting_version:{}\r\n\
                 routing_source:{}\r\nshards:{}\r\n",
                pool.redis_version(),
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                usize::BITS,
                multiplexing_api(),
                std::process::id(),
                run_id(),
                tcp_port(&pool.listen),
                server_time_usec(),
                stats.uptime_secs(),
                stats.uptime_secs() / 86_400,
                executable(),
                pool.name,
                table.version,
                table.source,
                table.shards.len(),
            );
            // Every pool's clients, per worker thread.
            let per_worker = workers::sessions();
            let _ = write!(out, "worker_threads:{}\r\n", workers::count());
            if !per_worker.is_empty() {
                let counts: Vec<String> = per_worker.iter().map(usize::to_string).collect();
                let _ = write!(out, "worker_clients:{}\r\n", counts.join(","));
            }
            for (i, shard) in table.shards.iter().enumerate() {
                let range = shard
                    .range
                    .map(|(lo, hi)| format!("{lo}-{hi}"))
                    .unwrap_or_default();
                let _ = write!(
                    out,
                    "shard{i}:name={},backend={},range={range},connections={},ejected={}\r\n",
                    shard.name,
                    shard.backend.addr,
                    PoolStats::get(&shard.backend.stats.connections),
                    u8::from(pool.router.ejected(&shard.backend)),
                );
            }
        }
        "clients" => {
            let _ = write!(
                out,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\ndedicated_connections:{}\r\ndedicated_connections_parked:{}\r\n\
                 subscriber_connections:{}\r\nclient_read_ahead_bytes:{}\r\nclient_grown_input_buffers:{}\r\n\
                 client_pipeline_loaned_bytes:{}\r\n",
                PoolStats::get(&stats.connected_clients),
                descriptors::max_clients(pool.client_connections),
                PoolStats::get(&stats.blocked_clients),
                session.pool.dedicated.in_use(),
                session.pool.dedicated.parked(),
                session.pool.subscribers.in_use(),
                input_memory::read_ahead_held(),
                input_memory::grown_inputs(),
                pipeline_loan::loaned(),
            );
        }
        "stats" => {
            let [ops, input, output] = stats.rates.current();
            let _ = write!(
                out,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 instantaneous_ops_per_sec:{}\r\ntotal_net_input_bytes:{}\r\n\
                 total_net_output_bytes:{}\r\ninstantaneous_input_kbps:{:.2}\r\n\
                 instantaneous_output_kbps:{:.2}\r\n\
                 rejected_connections:{}\r\nproxy_error_replies:{}\r\nprotocol_errors:{}\r\n\
                 auth_failures:{}\r\ntls_handshake_failures:{}\r\n",
                PoolStats::get(&stats.connections_received),
                stats.requests(),
                ops.round() as u64,
                stats.commands.net_input(),
                stats.commands.net_output(),
                input / 1024.0,
                output / 1024.0,
                PoolStats::get(&stats.rejected_connections),
                PoolStats::get(&stats.errors),
                PoolStats::get(&stats.protocol_errors),
                PoolStats::get(&stats.auth_failures),
                PoolStats::get(&stats.tls_handshake_failures),
            );
        }
        "cpu" => write_cpu(out),
        "zookeeper" => write_zookeeper(session, out),
        _ => {}
    }
}

/// The proxy process's CPU time, as Redis gives its own (`getrusage`'s
/// precision is not needed: `/proc` counts in 1/100 s).
fn write_cpu(out: &mut String) {
    let (user, system) = process_cpu_secs().unwrap_or((0.0, 0.0));
    let _ = write!(
        out,
        "# CPU\r\nused_cpu_sys:{system:.6}\r\nused_cpu_user:{user:.6}\r\n\
         used_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n"
    );
}

/// User and system CPU seconds of this process, from `/proc/self/stat`.
fn process_cpu_secs() -> Option<(f64, f64)> {
    // Linux's USER_HZ, the unit of `utime` and `stime`.
    const TICKS_PER_SEC: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: `state` is the first, `utime` the 12th, `stime` the 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user / TICKS_PER_SEC, system / TICKS_PER_SEC))
}

/// Session states, the routing's last change, the shards as ZooKeeper
/// describes them, and the last error.
fn write_zookeeper(session: &Session, out: &mut String) {
    let pool = &session.pool;
    let Some(config) = &pool.zookeeper else {
        out.push_str("# ZooKeeper\r\nzookeeper:disabled\r\n");
        return;
    };
    let status = pool.zk_status.snapshot();
    let table = pool.router.load();
    let _ = write!(
        out,
        "# ZooKeeper\r\nzookeeper:enabled\r\nzookeeper_hosts:{}\r\n\
         registration_session:{}\r\nregistered:{}\r\nwatch_session:{}\r\n\
         state_valid:{}\r\nviews_applied:{}\r\nrouting_version:{}\r\n\
         routing_source:{}\r\nrouting_changed_at:{}\r\n",
        config.hosts,
        status.registration_session,
        u8::from(status.registered),
        status.watch_session,
        u8::from(status.state_valid),
        status.views_applied,
        table.version,
        table.source,
        unix_secs(table.built_at),
    );
    if let Some(view) = &status.view {
        for (i, shard) in view.shards.iter().enumerate() {
            let _ = write!(
                out,
                "zk_shard{i}:name={},range={}-{},master={},members={},no_members={},invalid={},strays={},no_eligible_master={}\r\n",
                shard.name,
                shard.lo,
                shard.hi,
                shard.master.as_deref().unwrap_or("none"),
                shard.members.len(),
                u8::from(shard.no_members),
                u8::from(shard.invalid.is_some()),
                shard.strays.len(),
                u8::from(shard.no_members && shard.recorded_master.is_some()),
            );
        }
    }
    if let Some(m) = status.view.as_ref().and_then(|v| v.migration.as_ref()) {
        let _ = write!(
            out,
            "migration:id={},range={},source={},target={},phase={},paused={},moved={},lane={}\r\n",
            m.id,
            m.range,
            m.source,
            m.target,
            m.phase.as_str(),
            u8::from(m.paused),
            m.moved,
            u8::from(table.active_migration().is_some()),
        );
    }
    if let Some(error) = &status.last_error {
        let _ = write!(
            out,
            "last_error:{} {}\r\nlast_error_at:{}\r\n",
            error.path,
            error.reason.replace(['\r', '\n'], " "),
            unix_secs(error.at),
        );
    }
}

/// This process's run id, as Redis gives one per run (40 hex digits),
/// made from what tells runs apart: the process id and the time it was
/// first asked for.
fn run_id() -> &'static str {
    static RUN_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN_ID.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let asked = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let digest = Sha256::digest(format!("{} {asked}", std::process::id()).as_bytes());
        digest.iter().take(20).map(|b| format!("{b:02x}")).collect()
    })
}

fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sends `INFO section` to every distinct backend.
fn ask_backends(session: &Session, section: &str) -> Vec<(ShardName, ReplyReceiver)> {
    let table = session.pool.router.load();
    // The session's protocol and connection: on another connection, INFO
    // could overtake the session's own writes.
    table.send_to_every_backend(
        session.proto,
        session.affinity,
        &[&b"INFO"[..], section.as_bytes()],
    )
}

impl InfoReply {
    pub async fn write_to(self, out: &mut BytesMut) {
        // Each backend's `field:value` lines.
        let mut fields = Vec::new();
        let mut failures = Vec::new();
        for (shard, reply) in self.asked {
            match reply.await {
                // A server that answers with an error (NOAUTH after its
                // password changed, LOADING) has not told its figures:
                // named, not counted as empty (review: its keys vanished
                // from the keyspace without a word).
                Ok(Ok(frame)) if frame.first() == Some(&b'-') => failures.push(format!(
                    "{shard}: {}",
                    String::from_utf8_lossy(&frame[1..]).trim_end()
                )),
                Ok(Ok(frame)) => fields.push(merged::fields(&info_text(&frame))),
                Ok(Err(e)) => failures.push(format!("{shard}: {e}")),
                Err(_) => failures.push(format!("{shard}: request dropped")),
            }
        }
        let mut text = String::new();
        // The servers that did not answer are named once, after the last
        // section they fill (review: once per section, four times in a
        // plain INFO).
        let last_from_backends = self
            .parts
            .iter()
            .rposition(|part| !matches!(part, Part::Own(_)));
        for (i, part) in self.parts.into_iter().enumerate() {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            match part {
                Part::Own(section) => text.push_str(&section),
                Part::OwnAndBackends(own, section) => {
                    text.push_str(&own);
                    merged::write_fields(section, &fields, &mut text);
                }
                Part::Backends(section) => {
                    match merged::SECTIONS.iter().find(|(name, _)| *name == section) {
                        Some((name, title)) => merged::write(name, title, &fields, &mut text),
                        None if tallies::write(section, &fields, &mut text) => {}
                        None => write_keyspace(&fields, self.db, &mut text),
                    }
                }
            }
            if Some(i) == last_from_backends {
                for failure in &failures {
                    let _ = write!(text, "unavailable:{failure}\r\n");
                }
            }
        }
        let value = match self.proto {
            Proto::Resp2 => Value::Bulk(Bytes::from(text)),
            Proto::Resp3 => Value::Verbatim {
                format: *b"txt",
                text: Bytes::from(text),
            },
        };
        encode(&value, self.proto, out);
    }
}

/// The text of a backend's INFO reply (empty if it is not one).
fn info_text(frame: &[u8]) -> String {
    match parse_reply(frame) {
        Ok(Value::Bulk(text)) | Ok(Value::Verbatim { text, .. }) => {
            String::from_utf8_lossy(&text).into_owned()
        }
        _ => String::new(),
    }
}

/// The keyspace section: the pool's database (`db`) on each backend,
/// summed, as the client's only one, db0 (review: every database of the
/// backends was listed under its own number, other tenants' included,
/// and the client's own where SELECT refuses it). `avg_ttl` is the
/// backends' average weighted by their keys with an expiry.
fn write_keyspace(backends: &[HashMap<String, String>], db: u32, out: &mut String) {
    let name = format!("db{db}");
    let (mut keys, mut expires, mut ttl_sum) = (0u64, 0u64, 0u128);
    for fields in backends {
        let Some(line) = fields.get(&name) else {
            continue;
        };
        let field = |wanted: &str| {
            line.split(',')
                .find_map(|kv| kv.strip_prefix(wanted)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        keys += field("keys");
        expires += field("expires");
        ttl_sum += u128::from(field("avg_ttl")) * u128::from(field("expires"));
    }
    out.push_str("# Keyspace\r\n");
    if keys > 0 {
        let avg_ttl = ttl_sum.checked_div(u128::from(expires)).unwrap_or(0);
        let _ = write!(
            out,
            "db0:keys={keys},expires={expires},avg_ttl={avg_ttl}\r\n"
        );
    }
}

impl InfoReply {
    /// The reply owed: complete once the backends sent their keyspace.
    pub fn pending(self) -> Pending {
        Pending::Assembling(Box::pin(async move {
            let mut out = BytesMut::new();
            self.write_to(&mut out).await;
            out.freeze()
        }))
    }
}
