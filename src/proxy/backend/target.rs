//! What a backend connection's task knows of its backend ([`Target`]), and
//! how a request is answered when its backend will not answer it: an error
//! (never written), a timeout (its deadline passed), or a hand-over to the
//! master that took over (the backend was demoted).

use super::queue::Queue;
use super::{
    BackendError, BackendSettings, BackendStats, Demotion, Health, Job, MovingAway, ReplySender,
};
use crate::protocol::Proto;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a connection task needs to know about its backend.
pub(super) struct Target {
    pub addr: Arc<str>,
    pub proto: Proto,
    pub settings: Arc<BackendSettings>,
    pub stats: Arc<BackendStats>,
    pub health: Arc<Health>,
    pub demotion: Arc<Demotion>,
    /// Why nothing connects: the stand-in for slots no known server owns.
    pub unplaced: Option<Arc<str>>,
    /// Set for a client's dedicated connection ([`super::PrivateConn`]).
    /// Such a connection is never reopened (the client's WATCH or MULTI
    /// state was on it), hands nothing to a successor, and closes at once
    /// when its client goes, even with a blocking command still waiting
    /// for its reply.
    pub private: Option<Private>,
}

/// What a private connection shares with its client.
pub(super) struct Private {
    /// Raised when the connection stops serving.
    pub broken: Arc<AtomicBool>,
    /// The slots of the keys of the blocking command in flight, packed
    /// ([`super::pack_span`]; [`super::NOT_BLOCKED`]: none).
    pub blocked_on: Arc<AtomicU64>,
    /// The backend's ranges that start moving away: a blocking command on
    /// one of them is ended.
    pub moving: watch::Receiver<Option<MovingAway>>,
}

impl Target {
    /// A private connection stopped serving: its client must open another.
    ///
    /// Called before a private connection answers anything with an error,
    /// so that a client given that error finds the connection broken and
    /// can neither reuse it nor park it for another client.
    pub(super) fn retire(&self) {
        if let Some(private) = &self.private {
            private.broken.store(true, Ordering::Release);
        }
    }

    /// A private connection is done: it takes no more requests, and
    /// those still in its channel join `queue`, to be answered there.
    pub(super) fn close_private(&self, queue: &mut Queue, jobs: &mut mpsc::UnboundedReceiver<Job>) {
        self.retire();
        jobs.close();
        while let Ok(job) = jobs.try_recv() {
            queue.push_back(job);
        }
    }
}

/// Resolves when the backend is demoted or reinstated; never once the
/// backend is gone.
pub(super) async fn demotion_changed(demoted: &mut watch::Receiver<bool>) {
    if demoted.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Answers a request that was never written with an error. Like every
/// request taken off the queue, it counts as one of the backend's requests
/// (so errors never outnumber requests).
pub(super) fn fail(target: &Target, job: Job, reason: &str) {
    let error = BackendError::Unavailable {
        addr: target.addr.clone(),
        reason: reason.to_string(),
    };
    answer_error(target, job, error);
}

/// Answers a request sent to the stand-in for slots no known server owns
/// with why. Not a server's failure: nothing counts towards an ejection
/// (its slots would then hash onto other shards).
pub(super) fn refuse_unplaced(target: &Target, job: Job, reason: &Arc<str>) {
    answer_error(target, job, BackendError::Unplaced(reason.clone()));
}

/// Answers a request taken off the queue, never written, with `error`.
fn answer_error(target: &Target, job: Job, error: BackendError) {
    target.stats.requests.fetch_add(1, Ordering::Relaxed);
    target.stats.errors.fetch_add(1, Ordering::Relaxed);
    job.reply.send(Err(error));
}

pub(super) fn time_out(target: &Target, reply: ReplySender) {
    // A private connection whose request timed out is closed.
    target.retire();
    let ms = target.settings.timeout_ms();
    answer_timeout(&target.addr, &target.stats, &target.health, ms, reply);
}

/// Answers `reply` with the timeout error, counting it against the backend.
pub(super) fn answer_timeout(
    addr: &Arc<str>,
    stats: &BackendStats,
    health: &Health,
    ms: u128,
    reply: ReplySender,
) {
    stats.timeouts.fetch_add(1, Ordering::Relaxed);
    health.record_failure();
    reply.send(Err(BackendError::Timeout {
        addr: addr.clone(),
        ms,
    }));
}

/// Sends the queued requests to the backend that took over as master, or
/// answers them with an error when there is none.
pub(super) fn hand_over(target: &Target, queue: &mut Queue) {
    if queue.is_empty() {
        return;
    }
    // A private connection's requests belong to its client's WATCH, MULTI
    // or blocking command on this server: they cannot move elsewhere.
    let successor = if target.private.is_some() {
        None
    } else {
        target.demotion.successor()
    };
    for job in queue.take_all() {
        match &successor {
            Some(backend) => backend.send_job(target.proto, job),
            None => {
                target.stats.requests.fetch_add(1, Ordering::Relaxed);
                target.stats.errors.fetch_add(1, Ordering::Relaxed);
                job.reply.send(Err(BackendError::Demoted {
                    addr: target.addr.clone(),
                }));
            }
        }
    }
}

/// The earliest deadline in `queue` (deadlines grow in arrival order).
pub(super) fn queue_deadline(queue: &Queue) -> Option<Instant> {
    queue.front().and_then(|job| job.deadline)
}

/// Answers the queued requests whose deadline has passed.
pub(super) fn expire_queue(target: &Target, queue: &mut Queue, now: Instant) {
    while queue
        .front()
        .is_some_and(|job| job.deadline.is_some_and(|d| d <= now))
    {
        let job = queue.pop_front().expect("front exists");
        target.stats.requests.fetch_add(1, Ordering::Relaxed);
        time_out(target, job.reply);
    }
}
