//! Whether a migration's target answers, as this proxy last saw it.
//!
//! A move on access runs `MIGRATE` inside a script on the source, and
//! Redis runs nothing else meanwhile: while the target does not answer (a
//! stopped or frozen host), each such call holds the whole source shard
//! for MIGRATE's timeout. The take script leaves a note on the source when
//! that happens and answers `SILENT` while it lasts
//! ([`super::scripts::take_script`]); a lane that gets it stops asking the
//! source to move keys and answers `-TRYAGAIN` at once, and after
//! [`QUIET_FOR`] one lane asks the target itself
//! ([`super::scripts::probe_command`], which holds no one else) whether it
//! answers again, before any MIGRATE goes to it.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long the lanes leave a silent target alone before asking again.
pub const QUIET_FOR: Duration = Duration::from_secs(1);

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
    /// What the next move does; a [`Next::Probe`] must be answered by
    /// [`TargetSilence::silent`] or [`TargetSilence::answered`] within
    /// `probe_timeout`, after which another lane may ask.
    pub fn next(&self, now: Instant, probe_timeout: Duration) -> Next {
        let mut until = self.silent_until.lock().unwrap_or_else(|e| e.into_inner());
        match *until {
            None => Next::Move,
            Some(t) if now < t => Next::Refuse,
            Some(_) => {
                // Only one lane asks; the others refuse until it knows.
                *until = Some(now + probe_timeout);
                Next::Probe
            }
        }
    }

    /// The target did not answer (the source said `SILENT`, or the probe).
    pub fn silent(&self) {
        *self.silent_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + QUIET_FOR);
    }

    /// The target answered the probe.
    pub fn answered(&self) {
        *self.silent_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_target_is_asked_again_by_one_lane_after_a_while() {
        let probe = Duration::from_millis(500);
        let silence = TargetSilence::default();
        assert_eq!(silence.next(Instant::now(), probe), Next::Move);
        silence.silent();
        assert_eq!(silence.next(Instant::now(), probe), Next::Refuse);
        tokio::time::advance(QUIET_FOR).await;
        assert_eq!(silence.next(Instant::now(), probe), Next::Probe);
        // While that lane asks, the others refuse; if it never says, the
        // next lane asks once its time is up.
        assert_eq!(silence.next(Instant::now(), probe), Next::Refuse);
        tokio::time::advance(probe).await;
        assert_eq!(silence.next(Instant::now(), probe), Next::Probe);
        silence.answered();
        assert_eq!(silence.next(Instant::now(), probe), Next::Move);
    }
}
