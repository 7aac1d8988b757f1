//! What the three programs share at start-up: nutcracker's log levels,
//! logging to stderr or a file, running in the background, the stop
//! signals, and nutcracker's other signals (log reopening and level).

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

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

/// The log's level, changed by SIGTTIN and SIGTTOU ([`ops_signals`]).
static LEVEL: OnceLock<reload::Handle<LevelFilter, Registry>> = OnceLock::new();
/// The log file and its path, reopened on SIGHUP ([`ops_signals`]).
static LOG_FILE: OnceLock<(PathBuf, Arc<Mutex<File>>)> = OnceLock::new();

/// Logs at `level` to `output` (appended), or to stderr.
///
/// # Errors
/// The log file cannot be opened.
pub fn init(level: LevelFilter, output: Option<&Path>) -> std::io::Result<()> {
    let (filter, handle) = reload::Layer::new(level);
    let _ = LEVEL.set(handle);
    let lines = tracing_subscriber::fmt::layer().with_ansi(false);
    let logging = tracing_subscriber::registry().with(filter);
    match output {
        Some(path) => {
            let file = Arc::new(Mutex::new(open_log(path)?));
            let _ = LOG_FILE.set((path.to_path_buf(), file.clone()));
            logging.with(lines.with_writer(LogFile(file))).init();
        }
        None => logging.with(lines.with_writer(std::io::stderr)).init(),
    }
    Ok(())
}

fn open_log(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The log file, shared with SIGHUP's reopening.
struct LogFile(Arc<Mutex<File>>);

/// One event's writes, under the file's lock.
struct LogLine<'a>(MutexGuard<'a, File>);

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> LogLine<'a> {
        LogLine(self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Write for LogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Installs, at once, the handlers of the signals nutcracker answers
/// besides SIGTERM and SIGINT, so that an ops team's tooling for it works
/// (and none of them meets the default action, which ends the process):
/// - SIGHUP reopens the log file (logrotate's `postrotate` for nutcracker;
///   the proxy also reloads its pool file on it);
/// - SIGTTIN and SIGTTOU raise and lower the log level by one, when the
///   log goes to a file;
/// - SIGUSR1 and SIGUSR2 are logged and ignored.
pub fn ops_signals() {
    use tokio::signal::unix::{signal, SignalKind};
    // Linux's numbers; tokio names no constant for them.
    const SIGTTIN: i32 = 21;
    const SIGTTOU: i32 = 22;
    let mut handled: Vec<(SignalKind, &'static str, OnSignal)> = vec![
        (SignalKind::hangup(), "SIGHUP", |_| reopen_log()),
        (SignalKind::user_defined1(), "SIGUSR1", ignore),
        (SignalKind::user_defined2(), "SIGUSR2", ignore),
    ];
    // Only while logging to a file: a background process writing to a
    // terminal with `stty tostop` gets SIGTTOU for each write, and one
    // handled makes the write start again for ever (review: 100% CPU).
    if LOG_FILE.get().is_some() {
        handled.push((SignalKind::from_raw(SIGTTIN), "SIGTTIN", |name| {
            step_log_level(name, true)
        }));
        handled.push((SignalKind::from_raw(SIGTTOU), "SIGTTOU", |name| {
            step_log_level(name, false)
        }));
    }
    for (kind, name, act) in handled {
        match signal(kind) {
            Ok(mut received) => {
                tokio::spawn(async move {
                    while received.recv().await.is_some() {
                        act(name);
                    }
                });
            }
            Err(e) => tracing::warn!(signal = name, error = %e, "cannot handle the signal"),
        }
    }
}

/// What a signal does, given its name (for the log).
type OnSignal = fn(&'static str);

fn ignore(name: &'static str) {
    tracing::info!(signal = name, "signal received; ignored");
}

/// SIGHUP: the log file opened again at its path (logrotate moved it).
fn reopen_log() {
    let Some((path, file)) = LOG_FILE.get() else {
        return;
    };
    match open_log(path) {
        Ok(reopened) => {
            *file.lock().unwrap_or_else(PoisonError::into_inner) = reopened;
            tracing::info!(file = %path.display(), "SIGHUP: log file reopened");
        }
        Err(e) => tracing::error!(file = %path.display(), error = %e,
            "SIGHUP: cannot reopen the log file; still writing to the old one"),
    }
}

/// SIGTTIN (`up`) and SIGTTOU: the log level one step up or down.
fn step_log_level(name: &'static str, up: bool) {
    let Some(level) = LEVEL.get() else {
        return;
    };
    let mut now = LevelFilter::OFF;
    let _ = level.modify(|filter| {
        *filter = step_level(*filter, up);
        now = *filter;
    });
    // Shown at every level but the lowest (error only).
    tracing::warn!(level = %now, "{name}: log level changed");
}

/// The next level up (more verbose) or down, within ERROR..TRACE.
fn step_level(level: LevelFilter, up: bool) -> LevelFilter {
    const LEVELS: [LevelFilter; 5] = [
        LevelFilter::ERROR,
        LevelFilter::WARN,
        LevelFilter::INFO,
        LevelFilter::DEBUG,
        LevelFilter::TRACE,
    ];
    let at = LEVELS.iter().position(|l| *l == level).unwrap_or(0);
    let next = if up {
        (at + 1).min(LEVELS.len() - 1)
    } else {
        at.saturating_sub(1)
    };
    LEVELS[next]
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
    fn ttin_and_ttou_step_the_level_within_error_and_trace() {
        assert_eq!(step_level(LevelFilter::INFO, true), LevelFilter::DEBUG);
        assert_eq!(step_level(LevelFilter::INFO, false), LevelFilter::WARN);
        assert_eq!(step_level(LevelFilter::TRACE, true), LevelFilter::TRACE);
        assert_eq!(step_level(LevelFilter::ERROR, false), LevelFilter::ERROR);
    }

    #[test]
    fn nutcracker_levels_map_onto_tracing() {
        assert_eq!(nutcracker_level(5), Some(LevelFilter::INFO));
        assert_eq!(nutcracker_level(4), Some(LevelFilter::WARN));
        assert_eq!(nutcracker_level(11), Some(LevelFilter::TRACE));
        assert_eq!(nutcracker_level(12), None);
    }
}
