//! How much a client session may have in flight: the window that keeps
//! the replies a session owes, and the requests it has dispatched, within
//! `client_output_limit` bytes.

/// Most requests a session has dispatched and not answered yet.
pub const MAX_PENDING: usize = 1024;

/// How many requests a session may have in flight so that the replies it
/// owes stay within `client_output_limit` bytes: the limit divided by a
/// running estimate of the reply size. The estimate jumps up to a large
/// reply at once and decays by an eighth per smaller one, so a client that
/// pipelines GETs of 2 MB values has a handful in flight, one that
/// pipelines small commands up to [`MAX_PENDING`]. It starts pessimistic
/// (four in flight) and opens up within a few dozen small replies.
///
/// The requests in flight are held to the same limit in bytes: a client
/// that pipelines large writes to a stalled backend keeps about the limit
/// in the proxy, and TCP holds back the rest.
pub struct Window {
    limit: usize,
    estimate: usize,
    size: usize,
    /// Bytes of the requests dispatched and not answered yet.
    requests_in_flight: usize,
}

impl Window {
    pub fn new(limit: usize) -> Window {
        let mut window = Window {
            limit,
            estimate: limit / 4,
            size: 0,
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
        in_flight < self.size && unwritten < self.limit && self.requests_in_flight < self.limit
    }

    #[inline]
    pub fn dispatched(&mut self, request_len: usize) {
        self.requests_in_flight += request_len;
    }

    #[inline]
    pub fn answered(&mut self, request_len: usize) {
        self.requests_in_flight -= request_len;
    }

    #[inline]
    pub fn observe(&mut self, reply_len: usize) {
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
