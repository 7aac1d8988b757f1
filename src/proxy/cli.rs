//! The `shardproxy` command line, compatible with twemproxy's `nutcracker`
//! (`-c -t -d -o -p -s -a -i -v -m -D -V -h`), so ops can swap the binary in
//! their scripts and units unchanged.

use crate::config::Config;
use crate::logging;
use crate::proxy::descriptors;
use crate::proxy::listener::Proxy;
use crate::proxy::reload;
use crate::proxy::stats_server::Monitoring;
use crate::proxy::workers;
use clap::Parser;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tracing::level_filters::LevelFilter;

/// nutcracker's flags, with its long names and defaults.
#[derive(Parser, Debug)]
#[command(
    name = "shardproxy",
    disable_version_flag = true,
    about = "A Redis sharding proxy, drop-in for twemproxy (nutcracker)"
)]
pub struct Args {
    /// Show version and exit.
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    /// Test the configuration file for syntax errors and exit.
    #[arg(short = 't', long = "test-conf")]
    pub test_conf: bool,
    /// Run as a daemon.
    #[arg(short = 'd', long = "daemonize")]
    pub daemonize: bool,
    /// Print the stats description and exit (accepted for compatibility).
    #[arg(short = 'D', long = "describe-stats")]
    pub describe_stats: bool,
    /// Logging level, nutcracker's scale 0..11 (5 = notice).
    #[arg(short = 'v', long = "verbose", default_value_t = 5)]
    pub verbose: u8,
    /// Log file (default: stderr).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Pool file.
    #[arg(short = 'c', long = "conf-file", default_value = "conf/nutcracker.yml")]
    pub conf_file: PathBuf,
    /// Stats monitoring port.
    #[arg(short = 's', long = "stats-port", default_value_t = 22222)]
    pub stats_port: u16,
    /// Stats aggregation interval in msec.
    #[arg(short = 'i', long = "stats-interval", default_value_t = 30000)]
    pub stats_interval: u64,
    /// Stats monitoring address.
    #[arg(short = 'a', long = "stats-addr", default_value = "0.0.0.0")]
    pub stats_addr: String,
    /// Pid file.
    #[arg(short = 'p', long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Mbuf chunk size (accepted for compatibility; buffers grow as needed).
    #[arg(short = 'm', long = "mbuf-size", default_value_t = 16384)]
    pub mbuf_size: usize,
    /// Serve Prometheus metrics over HTTP at `host:port` (GET /metrics).
    #[arg(long = "metrics")]
    pub metrics: Option<String>,
    /// Worker threads (default: one per core; 1 on machines of 2 cores or fewer).
    #[arg(long = "threads")]
    pub threads: Option<usize>,
}

/// Parses the command line and runs the proxy; the exit code follows
/// nutcracker (0 ok, 1 bad configuration or start-up failure).
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        // --help is not an error; a bad command line exits 1, as
        // nutcracker's does (clap's own is 2).
        Err(e) => {
            // nutcracker reads the whole line before it shows help: `-h`
            // beside a bad option still fails (review revI: exited 0).
            let e = if e.use_stderr() {
                e
            } else {
                let rest = std::env::args_os().filter(|arg| arg != "-h" && arg != "--help");
                match Args::try_parse_from(rest) {
                    Err(bad) if bad.use_stderr() => bad,
                    _ => e,
                }
            };
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if args.version {
        // Not println!: a closed or full stdout must not panic.
        let _ = writeln!(
            std::io::stdout(),
            "This is shardproxy-{}",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    if args.describe_stats {
        println!("pool and server stats: see README.md, section Stats");
        return ExitCode::SUCCESS;
    }
    let conf = args.conf_file.display().to_string();
    let config = match Config::load(&args.conf_file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("shardproxy: configuration file '{conf}' syntax is invalid: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = unregistered_zookeeper_routing(&config) {
        eprintln!("shardproxy: configuration file '{conf}' syntax is invalid: {e}");
        return ExitCode::FAILURE;
    }
    if args.test_conf {
        // As nutcracker's -t: a listen address that does not resolve fails
        // the start, so the file is refused; a server that does not
        // resolve now is only said (the proxy starts, and serves its keys
        // once it does: nutcracker's -t passes it, and an init script that
        // runs -t before start must not be stopped by a DNS outage).
        let (listen, servers) = unresolved(&config);
        if let Some(e) = listen {
            eprintln!("shardproxy: configuration file '{conf}' syntax is invalid: {e}");
            return ExitCode::FAILURE;
        }
        for warning in servers {
            eprintln!("shardproxy: warning: {warning}");
        }
        // On stderr, as nutcracker's: a script that reads -t's stdout
        // gets the same (nothing) from either.
        eprintln!("shardproxy: configuration file '{conf}' syntax is ok");
        return ExitCode::SUCCESS;
    }
    if args.daemonize {
        return logging::daemonize("shardproxy");
    }
    let level = logging::nutcracker_level(args.verbose).unwrap_or(LevelFilter::TRACE);
    if let Err(e) = logging::init(level, args.output.as_deref()) {
        eprintln!("shardproxy: cannot open log file: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(pid_file) = &args.pid_file {
        if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            eprintln!(
                "shardproxy: cannot write pid file '{}': {e}",
                pid_file.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let monitoring = Monitoring {
        stats_addr: format!("{}:{}", args.stats_addr, args.stats_port),
        metrics_addr: args.metrics.clone(),
    };
    let code = run(config, &args.conf_file, args.threads, monitoring);
    if let Some(pid_file) = &args.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    code
}

fn run(
    config: Config,
    conf_file: &Path,
    threads: Option<usize>,
    monitoring: Monitoring,
) -> ExitCode {
    let threads = threads.filter(|n| *n > 0).unwrap_or_else(default_threads);
    warn_of_nutcrackers_database(&config);
    let workers = threads as u64;
    let shared: u64 = config
        .pools
        .iter()
        .map(|pool| pool.servers.len() as u64 * u64::from(pool.server_connections))
        .sum();
    say_descriptor_limits(&config, descriptors::set_up(shared * workers, workers));
    // One thread: everything on one single-threaded runtime, no hand-offs.
    // More: thread-per-core workers serve the clients, and this thread's
    // runtime keeps the control work (accepting, ZooKeeper, stats).
    let workers = if threads > 1 {
        match workers::start(threads) {
            Ok(workers) => Some(workers),
            Err(e) => {
                eprintln!("shardproxy: cannot start {threads} worker threads: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("shardproxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        // The handlers go in before the port is bound: a SIGHUP or SIGTERM
        // sent as soon as the port answers must not meet the default action
        // (exit) instead.
        let stop_signal = logging::stop_signal();
        logging::ops_signals();
        let hup = sighup();
        let proxy = match Proxy::bind(&config, monitoring).await {
            Ok(proxy) => proxy,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("shardproxy: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(reload_on_sighup(
            hup,
            proxy.pools.clone(),
            conf_file.to_path_buf(),
        ));
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop_signal.await;
            tracing::info!("stop signal received; finishing the replies owed");
            let _ = stop.send(true);
            // A second one ends the drain at once (review: it was ignored,
            // and only kill -9, which leaves the registration behind until
            // its session expires, cut a long drain short).
            logging::stop_signal().await;
            crate::proxy::listener::cut_drain_short();
        });
        proxy.run(shutdown).await;
        ExitCode::SUCCESS
    });
    if let Some(workers) = workers {
        workers.stop();
    }
    if code == ExitCode::SUCCESS {
        tracing::info!("stopped");
    }
    code
}

/// nutcracker 0.5.0 sends `SELECT` before `AUTH` (its issue #457): on
/// servers with a password the SELECT fails and it writes to database 0
/// whatever `redis_db` says. This proxy uses `redis_db`, so after a swap
/// the keys nutcracker wrote would seem gone: said once, at start.
fn warn_of_nutcrackers_database(config: &Config) {
    for pool in &config.pools {
        if pool.redis_auth.is_some() && pool.redis_db != 0 {
            tracing::warn!(
                pool = %pool.name,
                redis_db = pool.redis_db,
                "if nutcracker served this pool and its servers have a password, the keys it \
                 wrote are in database 0 (its SELECT came before AUTH and failed); this proxy \
                 uses redis_db: set 'redis_db: 0' to keep serving them"
            );
        }
    }
}

/// Fewer clients than this are worth a warning at start.
const FEW_CLIENTS: u64 = 64;

/// The open files limit and the clients it allows, once at start (Redis
/// logs its `maxclients` when the limit lowers it).
fn say_descriptor_limits(config: &Config, limits: descriptors::Limits) {
    tracing::info!(
        open_files = limits.now,
        raised_from = limits.was,
        max_clients = limits.client_cap,
        "clients past max_clients are refused; the rest of the open files is kept for server connections"
    );
    if limits.client_cap < FEW_CLIENTS {
        tracing::warn!(
            open_files = limits.now,
            max_clients = limits.client_cap,
            "the open files limit leaves room for few clients besides the workers and their \
             server connections; raise it (ulimit -n, LimitNOFILE)"
        );
    }
    for pool in &config.pools {
        if u64::from(pool.client_connections) > limits.client_cap {
            tracing::warn!(
                pool = %pool.name,
                client_connections = pool.client_connections,
                max_clients = limits.client_cap,
                "client_connections is more than the open files limit allows; raise the limit \
                 (ulimit -n, LimitNOFILE) to serve that many"
            );
        }
    }
}

/// Worker threads without `--threads`: one per core, except on machines
/// of 2 cores or fewer, where the proxy shares the cores with the clients and
/// Redis, and one thread measured fastest in every benchmark case
/// (deploy/bench/run.sh: unpipelined GET 0.95x nutcracker with 2 threads,
/// 1.11-1.21x with 1).
fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores <= 2 {
        1
    } else {
        cores
    }
}

/// The SIGHUP handler, installed at once.
fn sighup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).ok()
}

/// Re-reads the pool file on every SIGHUP, as an edit by ops asks.
async fn reload_on_sighup(
    hup: Option<tokio::signal::unix::Signal>,
    pools: Vec<std::sync::Arc<crate::proxy::pool::Pool>>,
    conf_file: PathBuf,
) {
    let Some(mut hup) = hup else {
        tracing::warn!("cannot listen for SIGHUP; reload disabled");
        return;
    };
    while hup.recv().await.is_some() {
        match reload::reload(&pools, &conf_file) {
            Ok(report) => {
                tracing::info!(pools = ?report.applied, "SIGHUP: pool file reloaded");
                for change in &report.need_restart {
                    tracing::warn!(change = %change, "SIGHUP: not applied");
                }
                for change in &report.warnings {
                    tracing::warn!(change = %change, "SIGHUP: applied");
                }
            }
            Err(e) => tracing::error!(file = %conf_file.display(), error = %e,
                "SIGHUP: pool file rejected; keeping the running configuration"),
        }
    }
}

/// Resolves every pool's `listen` and servers, naming the first that does
/// not resolve.
/// A pool that routes from ZooKeeper must register there: an online move
/// waits for every registered proxy, and would move a range under one it
/// cannot see (review: 7 of 300 acknowledged writes lost). The admin tool
/// reads the same files without the need, so the parser allows it.
fn unregistered_zookeeper_routing(config: &Config) -> Result<(), String> {
    let unregistered = config.pools.iter().find(|pool| {
        pool.zookeeper
            .as_ref()
            .is_some_and(|zk| zk.redis_path.is_some() && zk.proxy_path.is_none())
    });
    match unregistered {
        Some(pool) => Err(format!(
            "pool '{}': 'zookeeper_redis_path' needs 'zookeeper_path': a proxy that routes \
             from ZooKeeper registers itself, so that online moves wait for it",
            pool.name
        )),
        None => Ok(()),
    }
}

/// Why a unix socket server cannot be connected to now, if it cannot
/// (nothing listens: a socket file left by a killed Redis, no file, no
/// right to it): a warning only, as for a name that does not resolve (the
/// server may start after the proxy).
fn unreachable_socket(path: &str) -> Option<String> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => None,
        Err(e) => Some(format!("cannot be reached: {e}")),
    }
}

/// The first `listen` address that does not resolve, and every server
/// that does not, each in words.
fn unresolved(config: &Config) -> (Option<String>, Vec<String>) {
    use std::net::ToSocketAddrs;
    let fails = |addr: &str| match addr.to_socket_addrs().map(|mut found| found.next()) {
        Ok(Some(_)) => None,
        Ok(None) => Some("resolves to no address".to_string()),
        Err(e) => Some(format!("does not resolve: {e}")),
    };
    let mut listen = None;
    let mut servers = Vec::new();
    for pool in &config.pools {
        if pool.listen_unix.is_none() && listen.is_none() {
            listen = fails(&pool.listen)
                .map(|why| format!("pool '{}': listen '{}' {why}", pool.name, pool.listen));
        }
        for server in &pool.servers {
            let (shown, why) = if server.is_unix() {
                let why = unreachable_socket(&server.host)
                    .map(|why| format!("{why}; its keys get errors until a server listens there"));
                (&server.host, why)
            } else {
                let why = fails(&server.addr())
                    .map(|why| format!("{why}; its keys get errors until it resolves"));
                (&server.written_addr, why)
            };
            if let Some(why) = why {
                servers.push(format!("pool '{}': server '{shown}' {why}", pool.name));
            }
        }
    }
    (listen, servers)
}
