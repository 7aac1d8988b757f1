//! How much a client session may have in flight: the window that keeps
//! the replies a session owes, and the requests it has dispatched, within
//! `client_output_limit` bytes.

use crate::proxy::router::ShardName;
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
/// - it was in the proxy's input when the window shut, or in the socket
///   when the proxy stopped reading for a full input (one read later may
///   have been sent after the client had every reply it waited for);
/// - it is for the very shard the window waited on;
/// - and that shard's backend has read no reply at all since (for any
///   client): a slow reader, whose window is shut by its unread output
///   while the backend answers, is charged no more than one reply's
///   latency, and a stopped backend's own timeouts are no progress.
#[derive(Default)]
pub struct HeadWait {
    /// Each shard the shut window waited on: since when, and how many
    /// replies its backend had read then. A few at most (the shards that
    /// were at the head of a pipeline), so a scan beats a map.
    waits: Vec<Wait>,
    /// Bytes at the front of the input that were there when the window
    /// last shut: the requests that waited.
    waited_bytes: usize,
    /// When the input last grew, while a wait is remembered: what it
    /// brought waited from then at the earliest.
    read_at: Option<Instant>,
    /// Bytes at the front of the input, and after it still in the socket,
    /// that the client had sent by `backlog_at`, when the proxy stopped
    /// reading for a full input: they waited from then at the latest,
    /// however much later they are read. Without it, a pipeline longer than
    /// the input got its timeouts one input's worth per timeout (2,000 GETs
    /// to a stopped backend at 500 ms: the last after 1.5 s).
    backlog: usize,
    backlog_at: Option<Instant>,
}

struct Wait {
    shard: ShardName,
    since: Instant,
    responses: u64,
}

/// Shards remembered at most: a pipeline over more keeps the newest.
const MAX_WAITS: usize = 8;

impl HeadWait {
    /// The window is shut with `input_len` bytes of requests waiting in
    /// the input (the shards owing the oldest reply follow, each through
    /// [`HeadWait::waits_on`]).
    pub fn shut(&mut self, input_len: usize) {
        self.waited_bytes = input_len;
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

    /// The input is full, and no more is read while the window stays shut:
    /// `backlog` gives the bytes sent so far, in the input and in the
    /// socket. Asked once per wait (it costs a system call).
    pub fn reads_stop(&mut self, backlog: impl FnOnce() -> usize) {
        if self.backlog == 0 && !self.waits.is_empty() {
            self.backlog = backlog();
            self.backlog_at = Some(Instant::now());
        }
    }

    /// The input grew by a read.
    #[inline]
    pub fn read(&mut self) {
        if !self.waits.is_empty() {
            self.read_at = Some(Instant::now());
        }
    }

    /// `len` bytes left the front of the input (a request, or bytes the
    /// parser skipped).
    #[inline]
    pub fn consumed(&mut self, len: usize) {
        self.waited_bytes = self.waited_bytes.saturating_sub(len);
        self.backlog = self.backlog.saturating_sub(len);
    }

    /// Nothing is owed and the input holds no whole request: the waits are
    /// over, unless bytes sent while they lasted are still to be read.
    pub fn drained(&mut self) {
        if self.backlog == 0 {
            self.clear();
        }
    }

    /// The session dispatches nothing for now (it finishes, or holds a
    /// request until every reply is in): no wait is worth remembering.
    pub fn clear(&mut self) {
        self.waits.clear();
        self.waited_bytes = 0;
        self.read_at = None;
        self.backlog = 0;
    }

    /// Since when the request at the front of the input, for `shard`, has
    /// waited on it, if it is charged at all (see the type's notes);
    /// `responses` gives the replies the shard's backend has read so far.
    #[inline]
    pub fn since(&self, shard: ShardName, responses: impl FnOnce() -> u64) -> Option<Instant> {
        if self.waited_bytes == 0 && self.backlog == 0 {
            return None;
        }
        let wait = self.waits.iter().find(|wait| wait.shard == shard)?;
        if wait.responses != responses() {
            return None;
        }
        // Sent by `backlog_at`: waited from then, or from when the wait
        // began if later, whenever it was read.
        let sent_by = if self.backlog > 0 {
            self.backlog_at
        } else {
            self.read_at
        };
        Some(sent_by.map_or(wait.since, |sent| sent.max(wait.since)))
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
