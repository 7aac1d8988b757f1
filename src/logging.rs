//! What the three programs share at start-up: nutcracker's log levels,
//! logging to stderr or a file, running in the background, and the stop
//! signals.

use std::future::Future;
use std::path::Path;
use tracing::level_filters::LevelFilter;

/// nutcracker's `-v` scale: 0..3 error, 4 warn, 5 (notice) and 6 info,
/// 7..8 debug, 9..11 trace; `None` above 11.
pub fn nutcracker_level(verbose: u8) -> Option<LevelFilter> {
    match verbose {
        0..=3 => Some(LevelFilter::ERROR),
        4 => Some(LevelFilter::WARN),
        5 | 6 => Some(LevelFilter::INFO),
        7 | 8 => Some(LevelFilter::DEBUG),
        9..=11 => Some(LevelFilter::TRACE),
        _ => None,
    }
}

/// Starts this program again without `-d`, detached in its own process
/// group with no terminal, and returns at once, as nutcracker's `-d` (and
/// the old watchdog's `-dc HOST:PORT`) do. `program` names it in errors.
pub fn daemonize(program: &str) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter_map(without_daemonize)
        .collect();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("{program}: cannot daemonize: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let spawned = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: cannot daemonize: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// An argument with the daemonize flag taken out: `-d` and `--daemonize`
/// go, a cluster of short flags that starts with it (`-dc`) loses the `d`.
fn without_daemonize(arg: String) -> Option<String> {
    if arg == "-d" || arg == "--daemonize" {
        return None;
    }
    match arg.strip_prefix("-d") {
        Some(rest)
            if !arg.starts_with("--") && rest.starts_with(|c: char| c.is_ascii_alphabetic()) =>
        {
            Some(format!("-{rest}"))
        }
        _ => Some(arg),
    }
}

/// Logs at `level` to `output` (appended), or to stderr.
///
/// # Errors
/// The log file cannot be opened.
pub fn init(level: LevelFilter, output: Option<&Path>) -> std::io::Result<()> {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false);
    match output {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder.with_writer(std::sync::Mutex::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers at once (so a signal that
/// arrives early is not lost); the future resolves on either.
pub fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            // Without handlers the default action (exit) still stops us.
            _ => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemonize_flag_is_taken_out_of_the_arguments() {
        let kept: Vec<String> = [
            "-f",
            "w.conf",
            "-dc",
            "10.0.0.1:6379",
            "-d",
            "--daemonize",
            "/r/c/s",
            "-v",
        ]
        .iter()
        .map(|a| a.to_string())
        .filter_map(without_daemonize)
        .collect();
        assert_eq!(
            kept,
            ["-f", "w.conf", "-c", "10.0.0.1:6379", "/r/c/s", "-v"]
        );
    }

    #[test]
    fn nutcracker_levels_map_onto_tracing() {
        assert_eq!(nutcracker_level(5), Some(LevelFilter::INFO));
        assert_eq!(nutcracker_level(4), Some(LevelFilter::WARN));
        assert_eq!(nutcracker_level(11), Some(LevelFilter::TRACE));
        assert_eq!(nutcracker_level(12), None);
    }
}
