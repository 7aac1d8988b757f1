//! The watchdog beside every Redis instance (`shardproxy-watchdog`): it
//! health-checks its Redis, keeps it in its shard's line of members in
//! ZooKeeper, promotes or demotes it, and performs planned switchovers
//! (DESIGN.md, "Watchdog rules").
//!
//! - [`config`]: flags and the `zoo-watchdog.conf` file -> [`Settings`].
//! - [`health`]: PING / INFO replication, run_id, failures in a row.
//! - [`membership`]: the rules as one pure decision.
//! - [`proxy_user`]: the proxies' ACL user, made on the Redis when asked.
//! - [`guard`]: the split-brain guard, which pauses writes on a master
//!   whose watchdog is not the connected lowest member.
//! - [`agent`]: the watchdog's state and loop; [`session`] its ZooKeeper
//!   session and the reading of the line; [`actions`] carries the
//!   decisions out against ZooKeeper and Redis.
//! - [`switchover`]: the control znode and [`request_switchover`] for the
//!   admin tool; [`handover`] the master's side of a switchover.
//!
//! # Usage
//! ```no_run
//! # async fn example() -> Result<(), shardproxy::watchdog::SwitchoverError> {
//! use std::time::Duration;
//! let report = shardproxy::watchdog::request_switchover(
//!     "172.16.10.163:2181,172.16.10.96:2181",
//!     None, // the ZooKeeper identity, with zookeeper_auth
//!     "/redis/cluster/icd/redis-0000",
//!     Duration::from_secs(1),
//! )
//! .await?;
//! println!("{} -> {} (writes paused {:?})", report.old_master, report.new_master, report.pause);
//! # Ok(())
//! # }
//! ```

pub mod actions;
pub mod agent;
mod claims;
pub mod config;
mod fence;
pub mod guard;
pub mod handover;
pub mod health;
pub mod membership;
pub mod proxy_user;
pub mod session;
pub mod switchover;

pub use agent::run;
pub use config::{Args, ConfigError, Settings};
pub use switchover::{
    control_path, request_switchover, request_switchover_unless, SwitchoverError, SwitchoverReport,
    SwitchoverRequest,
};

use crate::logging;
use clap::Parser;
use std::process::ExitCode;
use tokio::sync::watch as signal;

/// The `shardproxy-watchdog` program: parses the flags, sets up logging,
/// runs until SIGTERM or SIGINT. Exit code 0 on a stop signal, 1 for bad
/// settings.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let daemonize = args.daemonize;
    // Every connection to the Redis (checks, failover steps) speaks TLS
    // once this is set.
    match args.tls.load() {
        Ok(Some(tls)) => crate::tls::set_control_tls(tls),
        Ok(None) => {}
        Err(e) => {
            eprintln!("shardproxy-watchdog: {e}");
            return ExitCode::FAILURE;
        }
    }
    let settings = match Settings::from_args(args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("shardproxy-watchdog: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Settings are checked first, so a bad command line fails in the
    // foreground.
    if daemonize {
        return logging::daemonize("shardproxy-watchdog");
    }
    if let Err(e) = logging::init(settings.log_level, settings.log_file.as_deref()) {
        eprintln!("shardproxy-watchdog: cannot open the log file: {e}");
        return ExitCode::FAILURE;
    }
    // One loop does all the work: a single thread is enough.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("shardproxy-watchdog: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let (stop, shutdown) = signal::channel(false);
        // Handlers are in place before the work starts, so an early SIGTERM
        // still closes the session.
        let stop_signal = logging::stop_signal();
        logging::ops_signals();
        tokio::spawn(async move {
            stop_signal.await;
            tracing::info!("stop signal received");
            let _ = stop.send(true);
        });
        run(settings, shutdown).await;
    });
    ExitCode::SUCCESS
}
