//! Monitoring endpoints: twemproxy's stats port (`-s/-a`: connect, read one
//! JSON document, disconnected) with twemproxy's field names so existing
//! twemproxy monitoring keeps working, and a Prometheus text endpoint
//! (`--metrics ADDR`, `GET /metrics`).

use crate::proxy::accept::Acceptor;
use crate::proxy::input_memory;
use crate::proxy::pipeline_loan;
use crate::proxy::pool::Pool;
use crate::proxy::stats::{PoolStats, LATENCY_BUCKETS};
use crate::proxy::zk::SessionState;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::AbortHandle;

/// Where the monitoring endpoints listen.
#[derive(Debug, Clone, Default)]
pub struct Monitoring {
    /// twemproxy's stats port, `host:port` (`-a`, `-s`).
    pub stats_addr: String,
    /// The Prometheus endpoint, `host:port` (`--metrics`), if enabled.
    pub metrics_addr: Option<String>,
}

/// Samples of one metric family: (labels, value).
type Samples = Vec<(String, String)>;

/// Largest HTTP request head the metrics endpoint reads.
const MAX_HTTP_REQUEST: usize = 8 * 1024;

/// Connections each monitoring port serves at once; past it the stats
/// port closes new ones, and the metrics port the oldest that has not sent
/// its request yet. Scrapers open one at a time: the cap only stops
/// connections held open from using up the process's descriptors, which
/// the client port needs too (review: 300 slow `/metrics` requests held
/// them all, and Redis clients got no answer).
const MAX_MONITORING_CONNECTIONS: usize = 16;

/// The time a monitoring connection has to send its request and take the
/// answer, in all (a per-read limit let a request sent a byte at a time
/// hold its connection for ever).
const MONITORING_DEADLINE: Duration = Duration::from_secs(5);

/// The stats document, as twemproxy's stats port sends it.
pub fn twemproxy_json(pools: &[Arc<Pool>]) -> String {
    let now = SystemTime::now();
    let timestamp = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut doc = Map::new();
    doc.insert("service".into(), json!("nutcracker"));
    doc.insert("source".into(), json!(hostname()));
    doc.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    let uptime = pools.first().map(|p| p.stats.uptime_secs()).unwrap_or(0);
    doc.insert("uptime".into(), json!(uptime));
    doc.insert("timestamp".into(), json!(timestamp));
    let total: u64 = pools
        .iter()
        .map(|p| PoolStats::get(&p.stats.connections_received))
        .sum();
    let current: u64 = pools
        .iter()
        .map(|p| PoolStats::get(&p.stats.connected_clients))
        .sum();
    doc.insert("total_connections".into(), json!(total));
    doc.insert("curr_connections".into(), json!(current));
    for pool in pools {
        doc.insert(pool.name.clone(), pool_json(pool));
    }
    Value::Object(doc).to_string()
}

fn pool_json(pool: &Pool) -> Value {
    let stats = &pool.stats;
    let received = PoolStats::get(&stats.connections_received);
    let open = PoolStats::get(&stats.connected_clients);
    let client_err = PoolStats::get(&stats.protocol_errors);
    let mut out = Map::new();
    out.insert(
        "client_eof".into(),
        json!(received.saturating_sub(open + client_err)),
    );
    out.insert("client_err".into(), json!(client_err));
    out.insert("client_connections".into(), json!(open));
    out.insert(
        "server_ejects".into(),
        json!(PoolStats::get(&stats.server_ejects)),
    );
    out.insert(
        "forward_error".into(),
        json!(PoolStats::get(&stats.forward_errors)),
    );
    out.insert("fragments".into(), json!(PoolStats::get(&stats.fragments)));
    for (name, backend) in pool.router.servers() {
        let b = &backend.stats;
        let ejected_at = u8::from(pool.router.ejected(&backend));
        out.insert(
            name.to_string(),
            json!({
                "server_eof": PoolStats::get(&b.eof),
                "server_err": PoolStats::get(&b.errors),
                "server_timedout": PoolStats::get(&b.timeouts),
                "server_connections": PoolStats::get(&b.connections),
                "server_ejected_at": ejected_at,
                "requests": PoolStats::get(&b.requests),
                "request_bytes": PoolStats::get(&b.request_bytes),
                "responses": PoolStats::get(&b.responses),
                "response_bytes": PoolStats::get(&b.response_bytes),
                "in_queue": 0,
                "in_queue_bytes": 0,
                "out_queue": 0,
                "out_queue_bytes": 0,
            }),
        );
    }
    Value::Object(out)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// The Prometheus text exposition of every pool.
pub fn prometheus_text(pools: &[Arc<Pool>]) -> String {
    let mut out = String::new();
    let each_pool = |f: &dyn Fn(&Pool) -> u64| -> Vec<(String, String)> {
        pools
            .iter()
            .map(|p| {
                (
                    format!("{{pool=\"{}\"}}", escape(&p.name)),
                    f(p).to_string(),
                )
            })
            .collect()
    };
    family(
        &mut out,
        "shardproxy_client_connections",
        "gauge",
        "Client connections open now.",
        &each_pool(&|p| PoolStats::get(&p.stats.connected_clients)),
    );
    family(
        &mut out,
        "shardproxy_dedicated_connections",
        "gauge",
        "Backend connections held by clients for blocking commands and transactions.",
        &each_pool(&|p| u64::from(p.dedicated.in_use())),
    );
    family(
        &mut out,
        "shardproxy_dedicated_connections_parked",
        "gauge",
        "Dedicated backend connections no client holds, kept open for the next blocking command or transaction.",
        &each_pool(&|p| u64::from(p.dedicated.parked())),
    );
    family(
        &mut out,
        "shardproxy_subscriber_connections",
        "gauge",
        "Backend connections held by subscribed clients (one per client and shard in use).",
        &each_pool(&|p| u64::from(p.subscribers.in_use())),
    );
    family(
        &mut out,
        "shardproxy_client_connections_received_total",
        "counter",
        "Client connections accepted.",
        &each_pool(&|p| PoolStats::get(&p.stats.connections_received)),
    );
    family(
        &mut out,
        "shardproxy_client_connections_rejected_total",
        "counter",
        "Client connections refused by client_connections.",
        &each_pool(&|p| PoolStats::get(&p.stats.rejected_connections)),
    );
    family(
        &mut out,
        "shardproxy_client_tls_handshake_failures_total",
        "counter",
        "Client connections closed because their TLS handshake failed.",
        &each_pool(&|p| PoolStats::get(&p.stats.tls_handshake_failures)),
    );
    family(
        &mut out,
        "shardproxy_requests_total",
        "counter",
        "Requests received from clients.",
        &each_pool(&|p| p.stats.requests()),
    );
    family(
        &mut out,
        "shardproxy_client_received_bytes_total",
        "counter",
        "Bytes read from clients.",
        &each_pool(&|p| p.stats.commands.net_input()),
    );
    family(
        &mut out,
        "shardproxy_client_sent_bytes_total",
        "counter",
        "Bytes written to clients.",
        &each_pool(&|p| p.stats.commands.net_output()),
    );
    family(
        &mut out,
        "shardproxy_proxy_errors_total",
        "counter",
        "Error replies built by the proxy.",
        &each_pool(&|p| PoolStats::get(&p.stats.errors)),
    );
    family(
        &mut out,
        "shardproxy_protocol_errors_total",
        "counter",
        "Client connections closed after a protocol error.",
        &each_pool(&|p| PoolStats::get(&p.stats.protocol_errors)),
    );
    family(
        &mut out,
        "shardproxy_auth_failures_total",
        "counter",
        "Failed AUTH and HELLO AUTH attempts; a connection is closed after 10.",
        &each_pool(&|p| PoolStats::get(&p.stats.auth_failures)),
    );
    family(
        &mut out,
        "shardproxy_server_ejects_total",
        "counter",
        "Servers ejected by auto_eject_hosts.",
        &each_pool(&|p| PoolStats::get(&p.stats.server_ejects)),
    );
    family(
        &mut out,
        "shardproxy_routing_version",
        "gauge",
        "Version of the routing table in use.",
        &each_pool(&|p| p.router.load().version),
    );
    family(
        &mut out,
        "shardproxy_migration_active",
        "gauge",
        "1 while a range migration is served through the migration lane.",
        &each_pool(&|p| u64::from(p.router.load().active_migration().is_some())),
    );
    family(
        &mut out,
        "shardproxy_migration_keys_moved",
        "gauge",
        "Keys the running migration's mover reports moved (from ZooKeeper).",
        &each_pool(&|p| {
            p.zk_status
                .snapshot()
                .view
                .as_ref()
                .and_then(|v| v.migration.as_ref())
                .map_or(0, |m| m.moved)
        }),
    );
    family(
        &mut out,
        "shardproxy_routing_views_total",
        "counter",
        "Cluster views applied from ZooKeeper.",
        &each_pool(&|p| p.zk_status.snapshot().views_applied),
    );

    let mut calls = Vec::new();
    for p in pools {
        for (command, n) in p.stats.commands.calls() {
            calls.push((
                format!("{{pool=\"{}\",command=\"{command}\"}}", escape(&p.name)),
                n.to_string(),
            ));
        }
    }
    family(
        &mut out,
        "shardproxy_command_calls_total",
        "counter",
        "Requests per command.",
        &calls,
    );

    let _ = writeln!(
        out,
        "# HELP shardproxy_request_duration_seconds Time from a request's arrival to its reply.\n\
         # TYPE shardproxy_request_duration_seconds histogram"
    );
    for p in pools {
        let pool = escape(&p.name);
        let (buckets, sum) = p.stats.commands.histogram();
        for (i, count) in buckets.iter().enumerate() {
            let le = LATENCY_BUCKETS
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(
                out,
                "shardproxy_request_duration_seconds_bucket{{pool=\"{pool}\",le=\"{le}\"}} {count}"
            );
        }
        let count = buckets.last().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "shardproxy_request_duration_seconds_sum{{pool=\"{pool}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "shardproxy_request_duration_seconds_count{{pool=\"{pool}\"}} {count}"
        );
    }

    let mut backend_families: Vec<(&str, &str, &str, Samples)> = vec![
        (
            "shardproxy_backend_requests_total",
            "counter",
            "Requests sent to the backend.",
            Vec::new(),
        ),
        (
            "shardproxy_backend_errors_total",
            "counter",
            "Requests failed by a backend connection error.",
            Vec::new(),
        ),
        (
            "shardproxy_backend_timeouts_total",
            "counter",
            "Requests that timed out.",
            Vec::new(),
        ),
        (
            "shardproxy_backend_connections",
            "gauge",
            "Connections open to the backend.",
            Vec::new(),
        ),
        (
            "shardproxy_backend_ejected",
            "gauge",
            "1 while the backend is ejected.",
            Vec::new(),
        ),
    ];
    for p in pools {
        for (name, backend) in p.router.servers() {
            let labels = format!(
                "{{pool=\"{}\",shard=\"{}\",backend=\"{}\"}}",
                escape(&p.name),
                escape(name),
                escape(&backend.addr)
            );
            let b = &backend.stats;
            let values = [
                PoolStats::get(&b.requests),
                PoolStats::get(&b.errors),
                PoolStats::get(&b.timeouts),
                PoolStats::get(&b.connections),
                u64::from(p.router.ejected(&backend)),
            ];
            for (family, value) in backend_families.iter_mut().zip(values) {
                family.3.push((labels.clone(), value.to_string()));
            }
        }
    }
    for (name, kind, help, samples) in &backend_families {
        family(&mut out, name, kind, help, samples);
    }

    let mut sessions = Vec::new();
    let mut invalid_shards = Vec::new();
    let mut replicas = Vec::new();
    let mut no_eligible = Vec::new();
    let mut state_valid = Vec::new();
    for p in pools.iter().filter(|p| p.zookeeper.is_some()) {
        let status = p.zk_status.snapshot();
        state_valid.push((
            format!("{{pool=\"{}\"}}", escape(&p.name)),
            u8::from(status.state_valid).to_string(),
        ));
        for shard in status.view.iter().flat_map(|view| &view.shards) {
            let labels = format!(
                "{{pool=\"{}\",shard=\"{}\"}}",
                escape(&p.name),
                escape(&shard.name)
            );
            let in_line = shard.members.len().saturating_sub(1);
            replicas.push((labels.clone(), in_line.to_string()));
            let stuck = shard.no_members && shard.recorded_master.is_some();
            no_eligible.push((labels.clone(), u8::from(stuck).to_string()));
            invalid_shards.push((labels, u8::from(shard.invalid.is_some()).to_string()));
        }
        for (session, state) in [
            ("registration", status.registration_session),
            ("watch", status.watch_session),
        ] {
            let up = u8::from(state == SessionState::Connected);
            sessions.push((
                format!("{{pool=\"{}\",session=\"{session}\"}}", escape(&p.name)),
                up.to_string(),
            ));
        }
    }
    family(
        &mut out,
        "shardproxy_zookeeper_session_connected",
        "gauge",
        "1 while the ZooKeeper session is connected.",
        &sessions,
    );
    family(
        &mut out,
        "shardproxy_zookeeper_state_valid",
        "gauge",
        "1 while every znode of the pool's last ZooKeeper state was valid; 0 while some are not (see INFO zookeeper's last_error): shards with bad data keep their last good routing, or are left out.",
        &state_valid,
    );
    family(
        &mut out,
        "shardproxy_zookeeper_shard_invalid",
        "gauge",
        "1 while a shard's znodes are invalid and its last good routing is kept.",
        &invalid_shards,
    );
    family(
        &mut out,
        "shardproxy_zookeeper_shard_replicas",
        "gauge",
        "Replicas in a shard's line (live, registered by their watchdog); 0 means degraded: one failure from losing the shard.",
        &replicas,
    );
    family(
        &mut out,
        "shardproxy_zookeeper_shard_no_eligible_master",
        "gauge",
        "1 while a shard that held data has no member: only a Redis with its last master's history may lead it (shardproxy-admin promote).",
        &no_eligible,
    );
    // Process-wide: sessions of every pool share the read-ahead budget.
    family(
        &mut out,
        "shardproxy_client_read_ahead_bytes",
        "gauge",
        "Bytes of the read-ahead budget held by clients whose window waits on a stalled shard.",
        &[(String::new(), input_memory::read_ahead_held().to_string())],
    );
    family(
        &mut out,
        "shardproxy_client_grown_input_buffers",
        "gauge",
        "Clients holding an input buffer grown for a large request or a read ahead.",
        &[(String::new(), input_memory::grown_inputs().to_string())],
    );
    family(
        &mut out,
        "shardproxy_client_pipeline_loaned_bytes",
        "gauge",
        "Bytes of input lent to clients that go on sending while their replies fill client_output_limit (a whole pipeline written before reading).",
        &[(String::new(), pipeline_loan::loaned().to_string())],
    );
    out
}

/// Writes one metric family: its help, type and samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// Escapes a Prometheus label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves the stats port: every connection gets the JSON document and is
/// closed, as with twemproxy.
pub async fn serve_stats(
    listener: TcpListener,
    pools: Vec<Arc<Pool>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut acceptor = Acceptor::new(listener, "stats");
    let room = Arc::new(Semaphore::new(MAX_MONITORING_CONNECTIONS));
    loop {
        let mut stream = tokio::select! {
            stream = acceptor.accept() => stream,
            _ = shutdown.changed() => return,
        };
        let Ok(turn) = room.clone().try_acquire_owned() else {
            continue;
        };
        let doc = twemproxy_json(&pools);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(MONITORING_DEADLINE, async {
                let _ = stream.write_all(doc.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
            drop(turn);
        });
    }
}

/// Serves `GET /metrics` over HTTP/1.x, one request per connection.
pub async fn serve_metrics(
    listener: TcpListener,
    pools: Vec<Arc<Pool>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut acceptor = Acceptor::new(listener, "metrics");
    // The connections being served, oldest first, each with how far its
    // request has come ([`Asked`]).
    let mut open: VecDeque<(AbortHandle, Arc<AtomicU8>)> = VecDeque::new();
    loop {
        let stream = tokio::select! {
            stream = acceptor.accept() => stream,
            _ = shutdown.changed() => return,
        };
        open.retain(|(task, _)| !task.is_finished());
        if open.len() >= MAX_MONITORING_CONNECTIONS {
            // Full: the oldest connection that has sent nothing makes room,
            // else the oldest whose request is still coming, so that silent
            // ones cannot keep a scrape out (review: 16 idle connections,
            // opened again every 5 s, refused every scrape; then a flood of
            // silent ones starved a scraper sending a byte at a time).
            let at = |stage: u8| {
                open.iter()
                    .position(|(_, asked)| asked.load(Ordering::Relaxed) == stage)
            };
            let Some(silent) = at(Asked::NOTHING).or_else(|| at(Asked::PART)) else {
                continue;
            };
            if let Some((task, _)) = open.remove(silent) {
                task.abort();
                // Its descriptor goes when the task is dropped: before
                // the next accept, so the cap bounds descriptors too.
                tokio::task::yield_now().await;
            }
        }
        let asked = Arc::new(AtomicU8::new(Asked::NOTHING));
        let answer = answer_http(stream, pools.clone(), asked.clone());
        let task = tokio::spawn(tokio::time::timeout(MONITORING_DEADLINE, answer));
        open.push_back((task.abort_handle(), asked));
    }
}

/// How far a metrics connection's request has come.
struct Asked;

impl Asked {
    const NOTHING: u8 = 0;
    const PART: u8 = 1;
    const WHOLE: u8 = 2;
}

/// Reads one request and answers it, telling `asked` how far the request
/// has come.
async fn answer_http(
    mut stream: tokio::net::TcpStream,
    pools: Vec<Arc<Pool>>,
    asked: Arc<AtomicU8>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HTTP_REQUEST {
        match stream.read(&mut buf).await {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
        asked.store(Asked::PART, Ordering::Relaxed);
    }
    asked.store(Asked::WHOLE, Ordering::Relaxed);
    let request_line = String::from_utf8_lossy(&head);
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus_text(&pools),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served here\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "use GET /metrics\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
