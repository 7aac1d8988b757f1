//! A script that runs long on a backend. Past its `busy-reply-threshold`
//! (5 s by default) Redis answers other clients' commands `-BUSY` at once
//! instead of running them after the script, so that they can give up or
//! send SCRIPT KILL. Through the proxy the clients share a connection, on
//! which Redis reads nothing while the script runs: their requests waited
//! behind it, without a reply, for as long as it ran (or the pool's
//! `timeout`).
//!
//! So once a script is in flight on a shared connection (EVAL, EVALSHA,
//! FCALL and their `_RO` forms) and no reply has come for [`HOLD_AFTER`]
//! (not only once it is the oldest request: what was written before it in
//! the same batch gets its replies only when it ends, since Redis sends
//! replies between turns of its event loop), the connection writes nothing more (Redis would run
//! nothing before the script ends anyway) and asks Redis, on a connection
//! of its own, whether it is busy ([`super::connect::busy_reply`]). Redis
//! answers that only once the script has run past its own threshold, in
//! its own words: from then on, the requests held and new ones get that
//! reply, until the script's reply comes (SCRIPT KILL and FUNCTION KILL go
//! on connections of their own, so they reach Redis). If the script ends
//! first, or Redis answers PING (it was held up by something else: stopped,
//! paused, a slow command), nothing is answered `-BUSY`: what was held is
//! written once the script's reply comes, or times out with the pool's
//! `timeout`. What was written before runs after the script, with no reply
//! until then: Redis reads it as the script's client's, though a client of
//! its own would have been answered `-BUSY` and its request not run. A
//! client's own connection (transactions, blocking commands) waits, as a
//! Redis client waits behind its own script. So does a client on a shared
//! connection: its requests held behind its own script are written after
//! the script, while the connection's other clients get `-BUSY`.

use bytes::Bytes;
use std::time::Duration;
use tokio::time::Instant;

/// How long a script runs before the requests behind it are held and
/// Redis is asked whether it is busy: long enough that scripts on the
/// request path (rate limiters, EVALSHA per request) never stop a
/// connection's pipelining.
pub(super) const HOLD_AFTER: Duration = Duration::from_millis(500);

/// True when `request` (one RESP command) runs a script.
pub(super) fn is_script(request: &[u8]) -> bool {
    // `*<n>\r\n$<len>\r\n<name>\r\n...`: the name's length decides most
    // requests in a comparison or two.
    let Some(rest) = request.strip_prefix(b"*") else {
        return false;
    };
    let Some(header_end) = rest.iter().take(12).position(|&b| b == b'$') else {
        return false;
    };
    let (len, rest) = match &rest[header_end + 1..] {
        [d, b'\r', b'\n', rest @ ..] if d.is_ascii_digit() => ((d - b'0') as usize, rest),
        [a, b, b'\r', b'\n', rest @ ..] if a.is_ascii_digit() && b.is_ascii_digit() => {
            (((a - b'0') * 10 + (b - b'0')) as usize, rest)
        }
        _ => return false,
    };
    if !matches!(len, 4 | 5 | 7 | 8 | 10) {
        return false;
    }
    let Some(name) = rest.get(..len) else {
        return false;
    };
    [
        &b"EVAL"[..],
        b"EVALSHA",
        b"EVAL_RO",
        b"EVALSHA_RO",
        b"FCALL",
        b"FCALL_RO",
    ]
    .iter()
    .any(|word| name.eq_ignore_ascii_case(word))
}

/// The script at the head of a connection's requests in flight, if any:
/// since when it has been the one Redis runs, and what came of it.
#[derive(Debug, Default)]
pub(super) struct RunningScript {
    since: Option<Instant>,
    /// The affinity of the client whose script it is.
    client: usize,
    stage: Stage,
}

#[derive(Debug, Default)]
enum Stage {
    #[default]
    Running,
    /// Past [`HOLD_AFTER`]: nothing more is written.
    Holding,
    /// Redis said it is busy, in these words: what is not written gets them.
    Busy(Bytes),
}

impl RunningScript {
    /// The first script in flight changed: the affinity of the client
    /// whose script it is (`None`: no script in flight).
    #[inline]
    pub fn head_changed(&mut self, script_of: Option<usize>) {
        self.stage = Stage::Running;
        self.since = script_of.map(|_| Instant::now());
        self.client = script_of.unwrap_or_default();
    }

    /// True while a script in flight is tracked.
    pub fn tracked(&self) -> bool {
        self.since.is_some()
    }

    /// Replies came: Redis is not stuck in the script in flight yet (it is
    /// still answering what came before it), so its time starts again. A
    /// script behind a backlog is held up only once replies stop.
    #[inline]
    pub fn heard(&mut self) {
        if self.since.is_some() && matches!(self.stage, Stage::Running) {
            self.since = Some(Instant::now());
        }
    }

    /// True when a script runs and the client of `affinity` sent it.
    pub fn sent_by(&self, affinity: usize) -> bool {
        self.since.is_some() && self.client == affinity
    }

    /// When the script at the head will have run long enough to hold what
    /// follows it, unless it has.
    pub fn hold_at(&self) -> Option<Instant> {
        match self.stage {
            Stage::Running => self.since.map(|since| since + HOLD_AFTER),
            _ => None,
        }
    }

    /// True the first time the script is seen to have run [`HOLD_AFTER`]
    /// at `now`: time to hold, and to ask Redis whether it is busy.
    pub fn starts_holding(&mut self, now: Instant) -> bool {
        let due = self.hold_at().is_some_and(|at| now >= at);
        if due {
            self.stage = Stage::Holding;
        }
        due
    }

    /// Redis answered `reply` while the script still runs: it is busy.
    pub fn confirm_busy(&mut self, reply: Bytes) {
        if matches!(self.stage, Stage::Holding) {
            self.stage = Stage::Busy(reply);
        }
    }

    /// True while nothing more may be written.
    #[inline]
    pub fn holding(&self) -> bool {
        !matches!(self.stage, Stage::Running)
    }

    /// Redis's `-BUSY` reply, while the script it was given for runs.
    pub fn busy(&self) -> Option<&Bytes> {
        match &self.stage {
            Stage::Busy(reply) => Some(reply),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_told_by_their_command_name() {
        let cases: [(&[u8], bool); 9] = [
            (b"*3\r\n$4\r\nEVAL\r\n$1\r\nx\r\n$1\r\n0\r\n", true),
            (b"*3\r\n$7\r\nevalsha\r\n$1\r\nx\r\n$1\r\n0\r\n", true),
            (b"*3\r\n$7\r\nEVAL_RO\r\n", true),
            (b"*3\r\n$10\r\nEVALSHA_RO\r\n", true),
            (b"*3\r\n$5\r\nFCall\r\n$1\r\nf\r\n$1\r\n0\r\n", true),
            (b"*3\r\n$8\r\nFCALL_RO\r\n", true),
            (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", false),
            (b"*2\r\n$4\r\nEVAX\r\n", false),
            (b"PING\r\n", false),
        ];
        for (request, want) in cases {
            assert_eq!(
                is_script(request),
                want,
                "{:?}",
                String::from_utf8_lossy(request)
            );
        }
        assert!(is_script(b"*12\r\n$4\r\nEVAL\r\n"));
        assert!(!is_script(b"*1\r\n$4\r\nEVA"));
    }

    #[tokio::test(start_paused = true)]
    async fn replies_before_a_script_put_off_the_hold() {
        let mut running = RunningScript::default();
        running.heard();
        assert_eq!(running.hold_at(), None, "no script in flight");
        running.head_changed(Some(1));
        tokio::time::advance(HOLD_AFTER / 2).await;
        // A backlog ahead of the script is still being answered.
        running.heard();
        let heard = Instant::now();
        assert_eq!(running.hold_at(), Some(heard + HOLD_AFTER));
        tokio::time::advance(HOLD_AFTER).await;
        assert!(running.starts_holding(Instant::now()));
        // Holding: a reply now is no reason to start over.
        running.heard();
        assert!(running.holding());
    }

    #[tokio::test(start_paused = true)]
    async fn a_script_at_the_head_holds_then_is_busy_only_once_redis_says_so() {
        let mut running = RunningScript::default();
        assert_eq!(running.hold_at(), None);
        assert!(!running.starts_holding(Instant::now()));
        assert!(!running.sent_by(0), "no script runs");
        running.head_changed(Some(1));
        assert!(running.sent_by(1) && !running.sent_by(2));
        let start = Instant::now();
        assert_eq!(running.hold_at(), Some(start + HOLD_AFTER));
        assert!(!running.starts_holding(start + HOLD_AFTER / 2));
        assert!(!running.holding());
        assert!(running.starts_holding(start + HOLD_AFTER));
        assert!(running.holding() && running.busy().is_none());
        assert!(!running.starts_holding(start + 2 * HOLD_AFTER), "once");
        let busy = Bytes::from_static(b"-BUSY Redis is busy running a script.\r\n");
        running.confirm_busy(busy.clone());
        assert_eq!(running.busy(), Some(&busy));
        // Its reply came: the next request runs no script.
        running.head_changed(None);
        assert!(!running.holding() && running.busy().is_none());
        assert!(!running.sent_by(1));
        // A late answer for a script that is over changes nothing.
        running.confirm_busy(busy);
        assert!(running.busy().is_none());
    }
}
