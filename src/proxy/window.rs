//! How much a client session may have in flight: the window that keeps
//! the replies a session owes, and the requests it has dispatched, within
//! `client_output_limit` bytes.

use crate::proxy::router::ShardName;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Most requests a session has dispatched and not answered yet.
pub const MAX_PENDING: usize = 1024;
/// Most requests a session dispatches from idle before any of them is
/// answered (see [`Window`]).
const RAMP_START: usize = 16;

/// How many requests a session may have in flight so that the replies it
/// owes, with those not yet written to its socket, stay within
/// `client_output_limit` bytes: what is left of the limit divided by a
/// running estimate of the reply size. The estimate jumps up to a large
/// reply at once and decays by an eighth per smaller one, so a client that
/// pipelines GETs of 2 MB values has a handful in flight, one that
/// pipelines small commands up to [`MAX_PENDING`]. It starts pessimistic
/// (four in flight) and opens up within a few dozen small replies.
///
/// The requests in flight are held to the same limit in bytes: a client
/// that pipelines large writes to a stalled backend keeps about the limit
/// in the proxy, and TCP holds back the rest.
///
/// The estimate comes from replies already answered, and the next burst
/// may want much larger ones (a client that wrote small values now
/// pipelines MGETs of megabytes; or replies of one shard wait behind a
/// stalled one's and are never counted). So, like TCP's slow start, a
/// burst from idle may have [`RAMP_START`] requests in flight at first,
/// one more for each reply answered: a deep pipeline of small commands
/// opens up within a few round trips, while a burst of large replies holds
/// at most `RAMP_START` of them before the estimate has seen one.
pub struct Window {
    limit: usize,
    estimate: usize,
    size: usize,
    /// Slow start: most requests in flight until more are answered.
    ramp: usize,
    /// Bytes of the requests dispatched and not answered yet.
    requests_in_flight: usize,
}

impl Window {
    pub fn new(limit: usize) -> Window {
        let mut window = Window {
            limit,
            estimate: limit / 4,
            size: 0,
            ramp: RAMP_START,
            requests_in_flight: 0,
        };
        window.resize();
        window
    }

    /// More may be dispatched: few enough in flight, and the bytes of
    /// those requests and of the replies not yet written to the client
    /// under the limit. One request is always admitted when none is in
    /// flight, however large.
    #[inline]
    pub fn admits(&self, in_flight: usize, unwritten: usize) -> bool {
        // The replies owed, as estimated, and those written out but not
        // yet taken by the socket share one limit: each alone under it
        // let a client that does not read hold twice the limit.
        in_flight < self.size.min(self.ramp)
            && unwritten + in_flight * self.estimate < self.limit
            && self.requests_in_flight < self.limit
    }

    /// A request was dispatched; `in_flight` were already (none: a new
    /// burst, which starts its ramp again).
    #[inline]
    pub fn dispatched(&mut self, request_len: usize, in_flight: usize) {
        if in_flight == 0 {
            self.ramp = RAMP_START;
        }
        self.requests_in_flight += request_len;
    }

    #[inline]
    pub fn answered(&mut self, request_len: usize) {
        self.requests_in_flight -= request_len;
    }

    /// A reply of `reply_len` bytes was answered.
    #[inline]
    pub fn observe(&mut self, reply_len: usize) {
        if self.ramp < MAX_PENDING {
            self.ramp += 1;
        }
        let decayed = self.estimate - self.estimate / 8;
        let estimate = reply_len.max(decayed).max(16);
        if estimate != self.estimate {
            self.estimate = estimate;
            self.resize();
        }
    }

    /// `client_output_limit`.
    pub fn output_limit(&self) -> usize {
        self.limit
    }

    fn resize(&mut self) {
        self.size = (self.limit / self.estimate.max(1)).clamp(1, MAX_PENDING);
    }
}

/// Whom a shut window waits for, and since when: the shard owing the
/// oldest reply, while its backend answers nothing.
///
/// A client's requests waiting in the proxy's input for room in its window
/// were timed only from when they went, so a pipeline to a stopped backend
/// got its timeout errors one window per timeout (200 GETs at 500 ms: the
/// last after 7 s). Timing every waiting request from when the window shut
/// instead made a healthy shard's requests, queued behind a stopped one's,
/// time out, and a client reading slowly got timeouts from a healthy
/// backend. So a request is charged for its wait only when
/// - it is for the very shard the window waited on;
/// - and that shard's backend has read no reply at all since (for any
///   client): a slow reader, whose window is shut by its unread output
///   while the backend answers, is charged no more than one reply's
///   latency, and a stopped backend's own timeouts are no progress;
///
/// and then from when the client had sent it at the latest, if that is
/// after the wait began: the window shutting with it in the input, a read
/// while the window waited, or the proxy finding it in the socket when it
/// stopped reading for a full input ([`HeadWait::reads_stop`]). A request
/// read later than the bytes before it is not charged from their time: it
/// may have been sent after the client had every reply it waited for.
#[derive(Default)]
pub struct HeadWait {
    /// Each shard the shut window waited on: since when, and how many
    /// replies its backend had read then. A few at most (the shards that
    /// were at the head of a pipeline), so a scan beats a map.
    waits: Vec<Wait>,
    /// How far the parser has taken the client's byte stream (an offset).
    consumed_to: u64,
    /// From `consumed_to` on, in order: up to where (an offset), and by
    /// when the client had sent those bytes; the last one tells how far
    /// send times are known. A few entries (they merge,
    /// keeping the later time, past [`MAX_SENT`]).
    sent: VecDeque<(u64, Instant)>,
    /// The socket was asked for its unread bytes since `sent` last ran out
    /// (one system call per wait, not per pass).
    asked: bool,
}

struct Wait {
    shard: ShardName,
    since: Instant,
    responses: u64,
}

/// Shards remembered at most: a pipeline over more keeps the newest.
const MAX_WAITS: usize = 8;
/// Send times remembered at most.
const MAX_SENT: usize = 16;

impl HeadWait {
    /// The window is shut with `input_len` bytes of requests waiting in
    /// the input (the shards owing the oldest reply follow, each through
    /// [`HeadWait::waits_on`]): they were sent by now.
    pub fn shut(&mut self, input_len: usize) {
        self.sent_by_now(input_len);
    }

    /// The shut window waits on `shard` (it owes the oldest reply, or a
    /// part of it), whose backend has read `responses` replies so far.
    /// Keeps the shard's clock while that backend has read none since.
    pub fn waits_on(&mut self, shard: ShardName, responses: u64) {
        // The clock is read only when a wait starts: this runs on every
        // pass of a session whose window is shut.
        match self.waits.iter_mut().find(|wait| wait.shard == shard) {
            Some(wait) if wait.responses == responses => {}
            Some(wait) => {
                wait.since = Instant::now();
                wait.responses = responses;
            }
            None => {
                if self.waits.len() == MAX_WAITS {
                    self.waits.remove(0);
                }
                self.waits.push(Wait {
                    shard,
                    since: Instant::now(),
                    responses,
                });
            }
        }
    }

    /// The shut window has waited on a shard whose backend has read no
    /// reply for at least `quiet`.
    pub fn stalled_for(&self, quiet: Duration) -> bool {
        let now = Instant::now();
        self.waits.iter().any(|wait| now - wait.since >= quiet)
    }

    /// The input (`input_len` bytes) is full, and reads stop or slow
    /// while the window stays shut: `unread` gives what the socket holds
    /// besides, which the client had sent by now too, however much later
    /// it is read. Without it, a pipeline longer than the input got its
    /// timeouts one input's worth per timeout (2,000 GETs to a stopped
    /// backend at 500 ms: the last after 1.5 s).
    pub fn reads_stop(&mut self, input_len: usize, unread: impl FnOnce() -> usize) {
        if !self.asked && !self.waits.is_empty() {
            self.asked = true;
            self.sent_by_now(input_len.saturating_add(unread()));
        }
    }

    /// A read left `input_len` bytes in the input: while a wait is
    /// remembered, what it brought was sent by now.
    #[inline]
    pub fn read(&mut self, input_len: usize) {
        if !self.waits.is_empty() {
            self.sent_by_now(input_len);
        }
    }

    /// The first `len` bytes from the front of the input on were sent by
    /// now, unless an earlier time is known for them.
    fn sent_by_now(&mut self, len: usize) {
        let to = self.consumed_to + len as u64;
        if to <= self.covered_to() {
            return;
        }
        let now = Instant::now();
        if self.sent.len() >= MAX_SENT {
            // The last entry's bytes are charged from now too: later, so
            // never sooner than they should be.
            self.sent.pop_back();
        }
        self.sent.push_back((to, now));
    }

    /// How far into the stream send times are known.
    fn covered_to(&self) -> u64 {
        self.sent.back().map_or(self.consumed_to, |&(to, _)| to)
    }

    /// `len` bytes left the front of the input (a request, or bytes the
    /// parser skipped).
    #[inline]
    pub fn consumed(&mut self, len: usize) {
        self.consumed_to += len as u64;
        while self
            .sent
            .front()
            .is_some_and(|&(to, _)| to <= self.consumed_to)
        {
            self.sent.pop_front();
        }
        if self.sent.is_empty() {
            self.asked = false;
        }
    }

    /// Nothing is owed and the input (`input_len` bytes) holds no whole
    /// request: the waits are over, unless bytes sent while they lasted are
    /// still in the socket.
    pub fn drained(&mut self, input_len: usize) {
        if self.covered_to() <= self.consumed_to + input_len as u64 {
            self.clear();
        }
    }

    /// The session dispatches nothing for now (it finishes, or holds a
    /// request until every reply is in): no wait is worth remembering.
    pub fn clear(&mut self) {
        self.waits.clear();
        self.sent.clear();
        self.asked = false;
    }

    /// Since when the request at the front of the input, for `shard`, has
    /// waited on it, if it is charged at all (see the type's notes);
    /// `responses` gives the replies the shard's backend has read so far.
    #[inline]
    pub fn since(&self, shard: ShardName, responses: impl FnOnce() -> u64) -> Option<Instant> {
        let &(_, sent) = self.sent.front()?;
        let wait = self.waits.iter().find(|wait| wait.shard == shard)?;
        if wait.responses != responses() {
            return None;
        }
        Some(sent.max(wait.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dispatches while the window admits; how many went.
    fn burst(window: &mut Window, in_flight: &mut usize, wanted: usize) -> usize {
        let mut sent = 0;
        while sent < wanted && window.admits(*in_flight, 0) {
            window.dispatched(100, *in_flight);
            *in_flight += 1;
            sent += 1;
        }
        sent
    }

    #[test]
    fn a_burst_after_small_replies_ramps_up_instead_of_trusting_them() {
        let mut window = Window::new(8 << 20);
        let mut in_flight = 0;
        // Small replies, one at a time: the estimate alone would allow 1,024.
        for _ in 0..100 {
            assert_eq!(burst(&mut window, &mut in_flight, 1), 1);
            window.observe(5);
            window.answered(100);
            in_flight -= 1;
        }
        // 300 pipelined requests of 2 MB replies: 16 go before any answer.
        assert_eq!(burst(&mut window, &mut in_flight, 300), RAMP_START);
        // The first large reply shrinks the window to the limit's worth.
        window.observe(2 << 20);
        window.answered(100);
        in_flight -= 1;
        assert!(!window.admits(in_flight, 0));
        while in_flight > 4 {
            window.observe(2 << 20);
            window.answered(100);
            in_flight -= 1;
        }
        assert_eq!(burst(&mut window, &mut in_flight, 300), 0);
        in_flight -= 1;
        window.observe(2 << 20);
        window.answered(100);
        assert_eq!(burst(&mut window, &mut in_flight, 300), 1);
    }

    #[test]
    fn a_deep_pipeline_of_small_replies_opens_up_to_the_cap() {
        let mut window = Window::new(8 << 20);
        let mut in_flight = 0;
        for _ in 0..50 {
            window.observe(5);
        }
        let mut most = 0;
        for _ in 0..20 {
            burst(&mut window, &mut in_flight, usize::MAX);
            most = most.max(in_flight);
            // Half of them answered each round trip.
            for _ in 0..in_flight / 2 {
                window.observe(5);
                window.answered(100);
                in_flight -= 1;
            }
        }
        assert_eq!(most, MAX_PENDING);
    }
}
