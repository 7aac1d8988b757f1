//! The pause between attempts to open a backend connection, so a dead or
//! refusing server is not asked again for every request.

use std::time::Duration;
use tokio::time::Instant;

/// Pause after a failed connect before the next attempt; requests that
/// arrive meanwhile fail at once instead of waiting.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The pause after a connection failed to open or was refused: requests
/// fail at once until it is over, and it doubles with each failure in a
/// row, from [`MIN_BACKOFF`] to [`MAX_BACKOFF`].
pub(super) struct Backoff {
    delay: Duration,
    until: Option<Instant>,
    /// Why the last attempt failed, told to the requests failed meanwhile.
    pub(super) reason: String,
}

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff {
            delay: MIN_BACKOFF,
            until: None,
            reason: String::new(),
        }
    }

    /// Still pausing: requests fail at once.
    pub(super) fn waiting(&self) -> bool {
        self.until.is_some_and(|t| Instant::now() < t)
    }

    pub(super) fn failed(&mut self, reason: String) {
        self.reason = reason;
        self.until = Some(Instant::now() + self.delay);
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
    }

    /// A connection worked: the next failure pauses the shortest time.
    pub(super) fn worked(&mut self) {
        self.delay = MIN_BACKOFF;
    }
}
