//! What the three programs share at start-up: nutcracker's log levels,
//! logging to stderr or a file, and the stop signals.

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
    fn nutcracker_levels_map_onto_tracing() {
        assert_eq!(nutcracker_level(5), Some(LevelFilter::INFO));
        assert_eq!(nutcracker_level(4), Some(LevelFilter::WARN));
        assert_eq!(nutcracker_level(11), Some(LevelFilter::TRACE));
        assert_eq!(nutcracker_level(12), None);
    }
}
