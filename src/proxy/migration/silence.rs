//! Whether a migration's target answers, as this proxy last saw it.
//!
//! A move on access runs `MIGRATE` inside a script on the source, and
//! Redis runs nothing else meanwhile: while the target does not answer (a
//! stopped or frozen host), each such call holds the whole source shard
//! for MIGRATE's timeout. Back to back, one request after another, they
//! kept the source's other keys waiting for as long as the target was
//! stopped (review: 8 s of 8). So once a MIGRATE fails for want of an
//! answer, the lanes stop asking the source to move keys and answer
//! `-TRYAGAIN` at once; every [`QUIET_FOR`] one of them asks the target
//! itself (a PING, which holds no one else) whether it answers again.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long the lanes leave a silent target alone before asking again.
pub const QUIET_FOR: Duration = Duration::from_secs(1);
/// How long the target has to answer that PING.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What a lane does with its next move.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The target answered last time: move the keys.
    Move,
    /// The target was silent a moment ago: refuse without a MIGRATE.
    Refuse,
    /// Silent, but a while ago: this lane asks it (the others wait for
    /// the answer, refusing meanwhile).
    Probe,
}

/// Shared by every lane of a migration.
#[derive(Debug, Default)]
pub struct TargetSilence {
    // A short sync lock: read and written without awaiting.
    silent_until: Mutex<Option<Instant>>,
}

impl TargetSilence {
    pub fn next(&self, now: Instant) -> Next {
        let mut until = self.silent_until.lock().unwrap_or_else(|e| e.into_inner());
        match *until {
            None => Next::Move,
            Some(t) if now < t => Next::Refuse,
            Some(_) => {
                // Only one lane asks; the others refuse until it knows.
                *until = Some(now + PROBE_TIMEOUT);
                Next::Probe
            }
        }
    }

    /// The target did not answer (a MIGRATE's I/O error, or the PING).
    pub fn silent(&self) {
        *self.silent_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + QUIET_FOR);
    }

    /// The target answered the PING.
    pub fn answered(&self) {
        *self.silent_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// True for MIGRATE's reply when the target did not answer or could not
/// be reached (`IOERR error or timeout ...`), also as a script's error.
pub fn unanswered(error: &str) -> bool {
    error.contains("IOERR")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_target_is_asked_again_by_one_lane_after_a_while() {
        let silence = TargetSilence::default();
        assert_eq!(silence.next(Instant::now()), Next::Move);
        silence.silent();
        assert_eq!(silence.next(Instant::now()), Next::Refuse);
        tokio::time::advance(QUIET_FOR).await;
        assert_eq!(silence.next(Instant::now()), Next::Probe);
        // While that lane asks, the others refuse.
        assert_eq!(silence.next(Instant::now()), Next::Refuse);
        silence.answered();
        assert_eq!(silence.next(Instant::now()), Next::Move);
    }

    #[test]
    fn migrate_errors_of_an_unreachable_target_are_told_apart() {
        assert!(unanswered(
            "IOERR error or timeout reading to target instance script: abc, on @user_script:14."
        ));
        assert!(!unanswered("ERR Target instance replied with error: OOM"));
    }
}
