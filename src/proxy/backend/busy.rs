//! A script that runs long on a backend. Past its `busy-reply-threshold`
//! (5 s by default) Redis answers other clients' commands `-BUSY` at once
//! instead of running them after the script, so that they can give up or
//! send SCRIPT KILL. Through the proxy the clients share a connection, on
//! which Redis reads nothing while the script runs: their requests waited
//! behind it, without a reply, for as long as it ran (or the pool's
//! `timeout`).
//!
//! So once the oldest request in flight on a shared connection is a script
//! (EVAL, EVALSHA, FCALL and their `_RO` forms) that has run for
//! [`HOLD_AFTER`], the connection writes nothing more (Redis would run
//! nothing before the script ends anyway), and once it has run for
//! [`BUSY_AFTER`] the requests held are answered with Redis's own `-BUSY`
//! error, and so are new ones, until the script's reply comes (SCRIPT KILL
//! and FUNCTION KILL go on connections of their own, so they reach Redis).
//! If the script ends first, what was held is written then. What was
//! written before runs after the script, as Redis runs what it had read. A
//! client's own connection (transactions, blocking commands) waits, as a
//! Redis client waits behind its own script; on a shared connection a
//! client's request held behind its own script gets `-BUSY` too.

use bytes::Bytes;
use std::time::Duration;
use tokio::time::Instant;

/// Redis's default `busy-reply-threshold` (`lua-time-limit`).
pub(super) const BUSY_AFTER: Duration = Duration::from_secs(5);
/// How long a script runs before the requests behind it are held: long
/// enough that scripts on the request path (rate limiters, EVALSHA per
/// request) never stop a connection's pipelining.
pub(super) const HOLD_AFTER: Duration = Duration::from_millis(500);

/// What kind of script a request runs: Redis's `-BUSY` names the command
/// that stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Script {
    Eval,
    Function,
}

impl Script {
    /// The script `request` (one RESP command) runs, if any.
    pub fn of(request: &[u8]) -> Option<Script> {
        // `*<n>\r\n$<len>\r\n<name>\r\n...`: the name's length decides
        // most requests in a comparison or two.
        let rest = request.strip_prefix(b"*")?;
        let header_end = rest.iter().take(12).position(|&b| b == b'$')?;
        let rest = &rest[header_end + 1..];
        let (len, rest) = match rest {
            [d, b'\r', b'\n', rest @ ..] if d.is_ascii_digit() => ((d - b'0') as usize, rest),
            [a, b, b'\r', b'\n', rest @ ..] if a.is_ascii_digit() && b.is_ascii_digit() => {
                (((a - b'0') * 10 + (b - b'0')) as usize, rest)
            }
            _ => return None,
        };
        if !matches!(len, 4 | 5 | 7 | 8 | 10) {
            return None;
        }
        let name = rest.get(..len)?;
        let is = |word: &[u8]| name.eq_ignore_ascii_case(word);
        if is(b"EVAL") || is(b"EVALSHA") || is(b"EVAL_RO") || is(b"EVALSHA_RO") {
            Some(Script::Eval)
        } else if is(b"FCALL") || is(b"FCALL_RO") {
            Some(Script::Function)
        } else {
            None
        }
    }

    /// Redis's reply to other clients while such a script runs long.
    pub fn busy_reply(self) -> Bytes {
        Bytes::from_static(match self {
            Script::Eval => {
                b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n"
            }
            Script::Function => {
                b"-BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.\r\n"
            }
        })
    }
}

/// The script at the head of a connection's requests in flight, if any:
/// since when it has been the one Redis runs, and how long it has run.
#[derive(Debug, Default)]
pub(super) struct RunningScript {
    head: Option<(Script, Instant)>,
    stage: Stage,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    #[default]
    Running,
    /// Past [`HOLD_AFTER`]: nothing more is written.
    Holding,
    /// Past [`BUSY_AFTER`]: what is not written is answered `-BUSY`.
    Busy,
}

impl RunningScript {
    /// The request at the head of the requests in flight changed: `script`
    /// is what it runs (`None`: no script, or nothing in flight).
    #[inline]
    pub fn head_changed(&mut self, script: Option<Script>) {
        self.stage = Stage::Running;
        self.head = script.map(|script| (script, Instant::now()));
    }

    /// When the script at the head reaches its next stage, if it has one.
    pub fn next_stage_at(&self) -> Option<Instant> {
        let (_, since) = self.head?;
        match self.stage {
            Stage::Running => Some(since + HOLD_AFTER),
            Stage::Holding => Some(since + BUSY_AFTER),
            Stage::Busy => None,
        }
    }

    /// Moves to the stage reached at `now`; the script, the first time it
    /// is seen to have run long.
    pub fn advance(&mut self, now: Instant) -> Option<Script> {
        let (script, since) = self.head?;
        let reached = if now >= since + BUSY_AFTER {
            Stage::Busy
        } else if now >= since + HOLD_AFTER {
            Stage::Holding
        } else {
            Stage::Running
        };
        let turned_busy = reached == Stage::Busy && self.stage != Stage::Busy;
        self.stage = reached;
        turned_busy.then_some(script)
    }

    /// True while nothing more may be written.
    #[inline]
    pub fn holding(&self) -> bool {
        self.stage != Stage::Running
    }

    /// The script that has run long, while it runs.
    pub fn busy(&self) -> Option<Script> {
        self.head
            .filter(|_| self.stage == Stage::Busy)
            .map(|(script, _)| script)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_told_by_their_command_name() {
        let cases: [(&[u8], Option<Script>); 9] = [
            (
                b"*3\r\n$4\r\nEVAL\r\n$1\r\nx\r\n$1\r\n0\r\n",
                Some(Script::Eval),
            ),
            (
                b"*3\r\n$7\r\nevalsha\r\n$1\r\nx\r\n$1\r\n0\r\n",
                Some(Script::Eval),
            ),
            (b"*3\r\n$7\r\nEVAL_RO\r\n", Some(Script::Eval)),
            (b"*3\r\n$10\r\nEVALSHA_RO\r\n", Some(Script::Eval)),
            (
                b"*3\r\n$5\r\nFCall\r\n$1\r\nf\r\n$1\r\n0\r\n",
                Some(Script::Function),
            ),
            (b"*3\r\n$8\r\nFCALL_RO\r\n", Some(Script::Function)),
            (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", None),
            (b"*2\r\n$4\r\nEVAX\r\n", None),
            (b"PING\r\n", None),
        ];
        for (request, want) in cases {
            assert_eq!(
                Script::of(request),
                want,
                "{:?}",
                String::from_utf8_lossy(request)
            );
        }
        assert_eq!(Script::of(b"*12\r\n$4\r\nEVAL\r\n"), Some(Script::Eval));
        assert_eq!(Script::of(b"*1\r\n$4\r\nEVA"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_script_at_the_head_holds_then_turns_busy_once() {
        let mut running = RunningScript::default();
        assert_eq!(running.next_stage_at(), None);
        assert_eq!(running.advance(Instant::now()), None);
        running.head_changed(Some(Script::Function));
        let start = Instant::now();
        assert_eq!(running.next_stage_at(), Some(start + HOLD_AFTER));
        assert_eq!(running.advance(start + HOLD_AFTER / 2), None);
        assert!(!running.holding());
        assert_eq!(running.advance(start + HOLD_AFTER), None);
        assert!(running.holding() && running.busy().is_none());
        assert_eq!(running.next_stage_at(), Some(start + BUSY_AFTER));
        assert_eq!(running.advance(start + BUSY_AFTER), Some(Script::Function));
        assert_eq!(running.busy(), Some(Script::Function));
        assert_eq!(running.next_stage_at(), None);
        assert_eq!(running.advance(start + 2 * BUSY_AFTER), None);
        running.head_changed(None);
        assert!(!running.holding());
        assert_eq!(running.busy(), None);
        assert_eq!(running.next_stage_at(), None);
    }
}
