//! The requests a backend connection accepted and has not written yet,
//! and the bound on them while the backend reads nothing.
//!
//! A connected client holds at most `client_output_limit` of requests in
//! flight (its window), but a client that leaves does not take its
//! requests with it: they are still written once the backend reads again,
//! as Redis would run what it had received. Without a `timeout`, clients
//! that each sent a large write to a stopped backend and left made the
//! proxy grow without bound (300 clients of 1 MB SETs took it from 6 MB to
//! 313 MB). So once the queue holds [`MAX_STALLED_BACKLOG`] bytes and the
//! socket has taken nothing for [`STALL_GRACE`], a new request is answered
//! with an error at once instead of queued. A backend that is merely busy
//! keeps taking bytes, and is never refused.

use super::Job;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes of unwritten requests past which a backend that reads nothing
/// gets no more.
pub(super) const MAX_STALLED_BACKLOG: usize = 64 * 1024 * 1024;
/// How long the backend must have taken nothing, with the queue that
/// full, before requests are refused: longer than a slow command or a
/// fork, so a healthy server is never refused.
pub(super) const STALL_GRACE: Duration = Duration::from_secs(1);

/// Requests accepted for a connection and not written yet, oldest first.
/// Kept across reconnects.
#[derive(Default)]
pub(super) struct Queue {
    jobs: VecDeque<Job>,
    /// Bytes of the requests in `jobs`.
    bytes: usize,
    /// When the queue was first seen full with the socket taking nothing;
    /// cleared whenever the socket takes bytes.
    stalled_since: Option<Instant>,
    /// A request was refused since the socket last took bytes.
    refusing: bool,
}

impl Queue {
    pub fn push_back(&mut self, job: Job) {
        self.bytes += job.request.len();
        self.jobs.push_back(job);
    }

    pub fn pop_front(&mut self) -> Option<Job> {
        let job = self.jobs.pop_front()?;
        self.bytes -= job.request.len();
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

    /// The backend's socket took bytes: it is reading.
    pub fn progressed(&mut self) {
        self.stalled_since = None;
        self.refusing = false;
    }

    /// True for the first refusal of a stall (the one worth a log line).
    pub fn starts_refusing(&mut self) -> bool {
        !std::mem::replace(&mut self.refusing, true)
    }

    /// Why a new request must not join the queue: it is full and the
    /// backend has taken nothing for [`STALL_GRACE`]. `None` admits it.
    pub fn refusal(&mut self) -> Option<String> {
        if self.bytes < MAX_STALLED_BACKLOG {
            return None;
        }
        let now = Instant::now();
        let stalled = now - *self.stalled_since.get_or_insert(now);
        (stalled >= STALL_GRACE).then(|| {
            format!(
                "it has read no request for at least {:.1} s and {} MiB of requests wait for it; \
                 no more are queued until it reads",
                stalled.as_secs_f64(),
                self.bytes >> 20
            )
        })
    }
}
