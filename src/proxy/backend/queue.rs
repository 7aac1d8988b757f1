//! The requests a backend connection accepted and has not written yet,
//! and the bound on those of clients that left, while the backend reads
//! nothing.
//!
//! A connected client holds at most `client_output_limit` of requests in
//! flight (its window), but a client that leaves does not take its
//! requests with it: they are still written once the backend reads again,
//! as Redis would run what it had received. Without a `timeout`, clients
//! that each sent a large write to a stopped backend and left made the
//! proxy grow without bound (300 clients of 1 MB SETs took it from 6 MB to
//! 313 MB). So once the requests of clients that left come to
//! [`MAX_ORPHANED_BACKLOG`] (over all of a backend's connections) and the
//! socket has taken nothing for
//! [`STALL_GRACE`], a new request is answered with an error at once
//! instead of queued. Connected clients' requests never count: a backend
//! busy with a long script while clients wait on it is not refused, as
//! Redis would keep them waiting too.
//!
//! A small request waiting here is a slice of its client's input buffer,
//! and would keep all of it alive after the client left: one queued
//! behind a full output is copied out, so what the queue holds is what it
//! counts.

use super::Job;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes of unwritten requests of clients that left, past which a backend
/// that reads nothing gets no more: shared out between its connections
/// (`server_connections` per worker thread), each holding its part.
const MAX_ORPHANED_BACKLOG: usize = 64 * 1024 * 1024;
/// How long the backend must have taken nothing, with that much waiting,
/// before requests are refused: longer than a fork or a slow command, so
/// one blip does not fail requests.
const STALL_GRACE: Duration = Duration::from_secs(1);
/// Requests up to this size are copied out of their client's buffer when
/// they must wait; larger ones had a buffer about their own size.
const COPY_WHEN_WAITING: usize = 64 * 1024;
/// What a queued request costs besides its bytes (the job and its reply
/// slot), so that many tiny ones count too.
const JOB_OVERHEAD: usize = 128;
/// How often, at most, the queue is walked to weigh the requests of
/// clients that left.
const RECOUNT_EVERY: Duration = Duration::from_millis(100);

/// Requests accepted for a connection and not written yet, oldest first.
/// Kept across reconnects.
pub(super) struct Queue {
    /// This connection's part of [`MAX_ORPHANED_BACKLOG`].
    bound: usize,
    jobs: VecDeque<Job>,
    /// What the requests in `jobs` cost ([`cost`]).
    bytes: usize,
    /// When the socket last refused bytes it was offered, having taken
    /// some before; cleared whenever it takes bytes.
    stalled_since: Option<Instant>,
    /// The cost of the requests of clients that left, as last counted, and
    /// when.
    orphaned: Option<(usize, Instant)>,
    /// A request was refused since the socket last took bytes.
    refusing: bool,
}

/// What a queued request costs in memory.
fn cost(job: &Job) -> usize {
    job.request.len() + JOB_OVERHEAD
}

impl Queue {
    /// The queue of one of `connections` connections to a backend.
    pub fn new(connections: usize) -> Queue {
        Queue {
            bound: MAX_ORPHANED_BACKLOG / connections.max(1),
            jobs: VecDeque::new(),
            bytes: 0,
            stalled_since: None,
            orphaned: None,
            refusing: false,
        }
    }

    pub fn push_back(&mut self, job: Job) {
        self.bytes += cost(&job);
        self.jobs.push_back(job);
    }

    /// Queues a request that will wait behind a full output: a small one
    /// is copied out of its client's buffer first (see the module notes).
    pub fn push_back_waiting(&mut self, mut job: Job) {
        if job.request.len() <= COPY_WHEN_WAITING {
            job.request = Bytes::copy_from_slice(&job.request);
        }
        self.push_back(job);
    }

    pub fn pop_front(&mut self) -> Option<Job> {
        let job = self.jobs.pop_front()?;
        self.bytes -= cost(&job);
        Some(job)
    }

    pub fn front(&self) -> Option<&Job> {
        self.jobs.front()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Takes every queued request, oldest first.
    pub fn take_all(&mut self) -> impl Iterator<Item = Job> + '_ {
        self.bytes = 0;
        self.jobs.drain(..)
    }

    /// The backend's socket took bytes, or the backend answered: it is
    /// reading.
    pub fn progressed(&mut self) {
        self.stalled_since = None;
        self.orphaned = None;
        self.refusing = false;
    }

    /// The socket took none of the bytes offered: the backend may have
    /// stopped reading (from now, if it was reading until now).
    pub fn stalled(&mut self) {
        if self.stalled_since.is_none() {
            self.stalled_since = Some(Instant::now());
        }
    }

    /// True for the first refusal of a stall (the one worth a log line).
    pub fn starts_refusing(&mut self) -> bool {
        !std::mem::replace(&mut self.refusing, true)
    }

    /// Why a new request must not join the queue: the requests of clients
    /// that left fill it, and the backend has taken nothing for
    /// [`STALL_GRACE`]. `None` admits it.
    pub fn refusal(&mut self) -> Option<String> {
        if self.bytes < self.bound {
            return None;
        }
        let now = Instant::now();
        let stalled = now - self.stalled_since?;
        if stalled < STALL_GRACE {
            return None;
        }
        let orphaned = match self.orphaned {
            Some((orphaned, at)) if now - at < RECOUNT_EVERY => orphaned,
            _ => {
                let orphaned = self
                    .jobs
                    .iter()
                    .filter(|job| job.reply.is_orphaned())
                    .map(cost)
                    .sum();
                self.orphaned = Some((orphaned, now));
                orphaned
            }
        };
        (orphaned >= self.bound).then(|| {
            format!(
                "it has read no request for at least {:.1} s and {} MiB of requests of clients \
                 that left wait for it; no more are queued until it reads",
                stalled.as_secs_f64(),
                orphaned >> 20
            )
        })
    }
}
