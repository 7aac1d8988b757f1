//! `shardproxy-admin`, the ops tool: creates the ZooKeeper layout a pool
//! file describes (`init`), shows the cluster's state (`status`), and asks
//! for a planned switchover (`failover`).
//!
//! - [`target`]: which pool, ZooKeeper hosts and paths a command works on.
//! - `znodes`: reading the shard znodes, for `init`, `status` and moves.
//! - [`init`]: compare the file's shards with ZooKeeper's; create or fix.
//! - [`status`], [`report`], [`render`]: read, judge, print.
//! - [`redis`]: each Redis's `INFO replication`, through the watchdog's
//!   client.
//! - [`failover`]: the planned switchover, done by the watchdogs.
//! - [`migrate`]: growing online (`add-shard`, `migrate`, `pause`, ...);
//!   [`rebalance`] plans and runs the moves that match the weights.
//!
//! Exit codes: 0 success (`status`: healthy); 1 `status` found warnings
//! only; 2 `status` found errors, or the command could not do its job (as
//! for clap's usage errors).

pub mod failover;
pub mod init;
pub mod migrate;
pub mod output;
pub mod promote;
pub mod rebalance;
pub mod redis;
pub mod render;
pub mod report;
pub mod status;
pub mod target;
mod znodes;

use crate::config::{Config, ConfigError};
use clap::{Parser, Subcommand};
use report::Level;
use std::path::PathBuf;
use std::process::ExitCode;
use target::Target;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "shardproxy-admin",
    version,
    about = "Set up and inspect a shardproxy cluster in ZooKeeper",
    after_help = "ZooKeeper hosts and paths come from the pool's zookeeper_host, \
                  zookeeper_path and zookeeper_redis_path keys."
)]
pub struct Args {
    /// The pool file (twemproxy YAML with ZooKeeper keys).
    #[arg(short = 'c', long = "conf-file", value_name = "POOL_FILE")]
    pub conf_file: PathBuf,
    /// ZooKeeper hosts (`host:port,host:port`), instead of the file's
    /// zookeeper_host.
    #[arg(long = "zk", value_name = "HOSTS")]
    pub zk: Option<String>,
    /// The pool to work on; default: the first with zookeeper_redis_path.
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
    /// TLS to the Redis servers; default: the pool's `server_tls` keys.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the proxy and cluster roots and one redis-NNNN shard per range
    /// server; does nothing when ZooKeeper already matches the file.
    Init {
        /// Change existing shards to match the file (ranges, missing and
        /// extra shards) instead of refusing.
        #[arg(long)]
        force: bool,
    },
    /// Show proxies, shards, members and replication.
    /// Exit 0 when healthy, 1 on warnings, 2 on errors.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Planned switchover: the master's watchdog pauses writes until the
    /// next in line has them all, then hands SHARD over to it; no
    /// acknowledged write is lost. Needs a watchdog beside every Redis.
    Failover {
        /// The shard, e.g. redis-0001.
        shard: String,
        /// Longest write pause allowed while the replica catches up; if it
        /// is not enough, writes resume and nothing changes.
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        max_pause_ms: u64,
    },
    /// Create a shard that owns no range yet, to grow the cluster: start
    /// its watchdogs, then `migrate` ranges to it.
    AddShard {
        /// The shard's name, e.g. redis-0002.
        name: String,
    },
    /// Move a range of slots, with its keys, to another shard while
    /// clients keep reading and writing; run it again to continue one that
    /// stopped.
    Migrate(MigrateArgs),
    /// Move ranges between neighbouring shards, one migration at a time,
    /// until each shard's share of the slots matches its weight (every
    /// shard 1 unless --weight says otherwise); run it again to continue
    /// one that stopped.
    Rebalance(RebalanceArgs),
    /// Pause the running migration's mover (requests keep being served).
    Pause,
    /// Resume a paused migration.
    Resume,
    /// Call off the migration: before any key moved it just ends; later,
    /// the keys already moved are moved back (run `migrate` with the
    /// reversed range and target, which `abort` prints).
    Abort,
    /// Print the pool file `servers:` lines that match ZooKeeper's shards.
    Export,
    /// Take a proxy that is down for good (killed, its host lost) out of
    /// the roster that migrations wait for. Never for one that may still
    /// run cut off from ZooKeeper: it would keep writing where a moved
    /// range used to be.
    ForgetProxy {
        /// The proxy, ip:port (its znode's name, as `status` lists it).
        name: String,
    },
    /// A shard with no eligible master (its data was last on a history no
    /// live Redis holds): say what ADDR holds against it and, with --force,
    /// make ADDR the shard's master, accepting the loss.
    Promote {
        /// The shard, e.g. redis-0001.
        shard: String,
        /// The Redis to lead it, host:port.
        addr: String,
        /// Accept losing what the recorded history has and ADDR lacks.
        #[arg(long)]
        force: bool,
    },
}

/// `migrate`'s options as typed.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The slots to move, LO-HI (inclusive), at one end of their shard's
    /// range.
    pub range: String,
    /// The shard that gets them: one bordering the range, or one with no
    /// range yet (`add-shard`).
    #[arg(long)]
    pub to: String,
    /// Print the plan, the key estimate and the time estimate; change
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub pace: PaceArgs,
}

/// `rebalance`'s options as typed.
#[derive(Debug, clap::Args)]
pub struct RebalanceArgs {
    /// A shard's weight, SHARD=N (repeatable); 0 drains the shard to its
    /// neighbours. Shards not named weigh 1, new empty ones included.
    #[arg(long = "weight", value_name = "SHARD=N")]
    pub weights: Vec<String>,
    /// Print every move (range, source -> target, key and time estimate)
    /// and the ranges before and after; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub pace: PaceArgs,
}

/// How fast a move goes, shared by `migrate` and `rebalance`.
#[derive(Debug, clap::Args)]
pub struct PaceArgs {
    /// Keys per second a move's background mover may move (0: unlimited;
    /// not given: a migration being continued keeps its rate, a new one
    /// is unlimited).
    #[arg(long, value_name = "KEYS")]
    pub rate: Option<u64>,
    /// How long every live proxy gets to acknowledge a phase.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub barrier_timeout_ms: u64,
}

impl PaceArgs {
    pub fn barrier_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.barrier_timeout_ms)
    }
}

/// Why an admin command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("the pool file has no pool named '{0}'")]
    NoSuchPool(String),
    #[error(
        "the pool file has no pool with zookeeper_redis_path and zookeeper_host; \
         name one with --pool"
    )]
    NoZooKeeperPool,
    #[error("pool '{0}' has no zookeeper_redis_path (or no zookeeper_host): nothing to manage")]
    NoClusterPath(String),
    #[error(
        "pool '{0}' lists servers as host:port:weight; init needs the range form \
         host:port:LO-HI"
    )]
    NotRangeForm(String),
    #[error("ZooKeeper {hosts}: {reason}")]
    ZooKeeper { hosts: String, reason: String },
    /// `init` without `--force` found existing shards that differ.
    #[error(
        "{root} differs from pool '{pool}':\n{}\nnothing was changed. On a cluster that \
         serves data, `shardproxy-admin migrate LO-HI --to SHARD` (or `rebalance`) moves \
         ranges with their keys; `init --force` makes ZooKeeper match the file at once, and \
         the keys of slots that change shard are no longer found",
        .diff.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n")
    )]
    Differs {
        root: String,
        pool: String,
        diff: Vec<String>,
    },
    /// `init --force` would delete a shard that still has live members.
    #[error(
        "{shard} is not in the file but still has members ({members} live Redis): \
         stop their watchdogs first; nothing was changed"
    )]
    ShardInUse { shard: String, members: usize },
    #[error("failover: {0}")]
    Failover(String),
    #[error("promote: {0}")]
    Promote(String),
    #[error("migrate: {0}")]
    Migrate(String),
    /// Another command's refusal, named by the command (`add-shard`,
    /// `forget-proxy`).
    #[error("{0}: {1}")]
    Refused(&'static str, String),
    #[error("rebalance: {0}")]
    Rebalance(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
}

impl AdminError {
    /// A ZooKeeper request on `path` failed.
    pub fn zk_path(hosts: &str, path: &str, error: zookeeper_client::Error) -> AdminError {
        AdminError::ZooKeeper {
            hosts: hosts.to_string(),
            reason: format!("{path}: {error}"),
        }
    }
}

/// Runs the admin tool with the process's arguments; what the binary calls.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok((text, code)) => {
            print!("{text}");
            ExitCode::from(code)
        }
        Err(error) => {
            eprintln!("shardproxy-admin: {error}");
            ExitCode::from(2)
        }
    }
}

/// The environment variable that gives the password of the Redis's
/// `default` user, overriding the pool file's `redis_auth`.
pub const REDIS_AUTH_ENV: &str = "SHARDPROXY_REDIS_AUTH";

/// Runs one command; returns what to print and the exit code.
///
/// # Errors
/// Whatever kept the command from doing its job.
pub fn run(args: &Args) -> Result<(String, u8), AdminError> {
    let config = Config::load(&args.conf_file)?;
    let mut target = Target::from_config(&config, args.pool.as_deref(), args.zk.as_deref())?;
    // The flags, else the pool's own `server_tls`: the Redis servers are
    // reached as the proxies reach them.
    let tls = match args.tls.load().map_err(AdminError::Tls)? {
        Some(tls) => Some(tls),
        None => config
            .pools
            .iter()
            .find(|p| p.name == target.pool)
            .and_then(|p| p.server_tls.clone()),
    };
    if let Some(tls) = tls {
        crate::tls::set_control_tls(tls);
    }
    if let Ok(pass) = std::env::var(REDIS_AUTH_ENV) {
        // The Redis's own password, when it is not the pool's `redis_auth`
        // (always so with `redis_user`): kept off the command line.
        target.redis_auth = Some(pass).filter(|p| !p.is_empty());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AdminError::Runtime)?;
    runtime.block_on(async {
        match &args.command {
            Command::Init { force } => Ok((init::run(&target, *force).await?, 0)),
            Command::Status { json } => {
                let report = status::report(&target).await?;
                let code = match report.health {
                    Level::Ok => 0,
                    Level::Warning => 1,
                    Level::Error => 2,
                };
                Ok((status::format(&report, *json), code))
            }
            Command::Failover {
                shard,
                max_pause_ms,
            } => {
                let max_pause = std::time::Duration::from_millis(*max_pause_ms);
                Ok((failover::run(&target, shard, max_pause).await?, 0))
            }
            Command::Promote { shard, addr, force } => {
                promote::run(&target, shard, addr, *force).await
            }
            Command::AddShard { name } => Ok((migrate::add_shard(&target, name).await?, 0)),
            Command::Migrate(m) => {
                let options = migrate::MigrateOptions {
                    range: m.range.clone(),
                    to: m.to.clone(),
                    dry_run: m.dry_run,
                    rate: m.pace.rate,
                    barrier_timeout: m.pace.barrier_timeout(),
                };
                migrate::migrate(&target, &options, &mut output::Output::stdout()).await?;
                Ok((String::new(), 0))
            }
            Command::Rebalance(r) => {
                let options = rebalance::RebalanceOptions {
                    weights: r.weights.clone(),
                    dry_run: r.dry_run,
                    rate: r.pace.rate,
                    barrier_timeout: r.pace.barrier_timeout(),
                };
                rebalance::rebalance(&target, &options, &mut output::Output::stdout()).await?;
                Ok((String::new(), 0))
            }
            Command::Pause => Ok((migrate::control::set_paused(&target, true).await?, 0)),
            Command::Resume => Ok((migrate::control::set_paused(&target, false).await?, 0)),
            Command::Abort => Ok((migrate::control::abort(&target).await?, 0)),
            Command::Export => Ok((migrate::control::export(&target).await?, 0)),
            Command::ForgetProxy { name } => {
                Ok((migrate::control::forget_proxy(&target, name).await?, 0))
            }
        }
    })
}
