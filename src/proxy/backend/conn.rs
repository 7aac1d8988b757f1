//! One backend connection's task. While disconnected, it connects on demand
//! (or at once with `preconnect`), initialises the connection (`AUTH`,
//! `HELLO 3`, `SELECT`, in that order), and after a failed connect answers
//! requests at once with an error until a short backoff has passed. Once
//! connected, [`super::connected`] serves the socket until it ends; a
//! request that was written is never replayed: if the connection dies, its
//! client gets an error.
//!
//! Deadlines hold while connecting too: a request queued behind a connect
//! that hangs is answered with a timeout at its deadline.
//!
//! When the routing moves a shard's master away from this backend (a
//! failover), the backend is demoted: the requests not yet written go to
//! the new master. Opening and preparing the socket is
//! [`super::connect`]'s.

use super::backoff::Backoff;
use super::connected::{Connection, Outcome};
use super::queue::Queue;
use super::target::{
    demotion_changed, expire_queue, fail, hand_over, queue_deadline, refuse_unplaced, Target,
};
use super::Job;
use crate::proxy::stream::BackendStream;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

/// Runs until every sender is gone (the backend left all routing tables)
/// and the replies owed are delivered.
pub(super) async fn run(target: Target, mut jobs: mpsc::UnboundedReceiver<Job>, preconnect: bool) {
    let mut backoff = Backoff::new();
    let connections = match target.private {
        Some(_) => 1,
        None => target.settings.connections.max(1) * crate::proxy::workers::count(),
    };
    let mut queue = Queue::new(connections);
    let mut demoted = target.demotion.subscribe();
    let mut senders_gone = false;
    let mut connect_now = preconnect;
    loop {
        if queue.is_empty() && !connect_now {
            if senders_gone {
                return;
            }
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => queue.push_back(job),
                    None => senders_gone = true,
                },
                () = demotion_changed(&mut demoted) => {}
            }
        }
        while let Ok(job) = jobs.try_recv() {
            queue.push_back(job);
        }
        if *demoted.borrow_and_update() {
            // Not a master any more: nothing is written here.
            if target.private.is_some() {
                target.close_private(&mut queue, &mut jobs);
                hand_over(&target, &mut queue);
                return;
            }
            hand_over(&target, &mut queue);
            connect_now = false;
            continue;
        }
        if queue.is_empty() && !connect_now {
            continue;
        }
        connect_now = false;
        if let Some(reason) = &target.unplaced {
            target.retire();
            let private = target.private.is_some();
            if private {
                target.close_private(&mut queue, &mut jobs);
            }
            for job in queue.take_all() {
                refuse_unplaced(&target, job, reason);
            }
            if private {
                return;
            }
            continue;
        }
        if backoff.waiting() {
            // Still backing off: fail fast, never queue behind a dead server.
            for job in queue.take_all() {
                // Each failed request counts, as in twemproxy: with
                // `auto_eject_hosts` a dead server is ejected after
                // `server_failure_limit` of them, not after as many
                // connects spaced by the growing backoff.
                target.health.record_failure();
                fail(&target, job, &backoff.reason);
            }
            continue;
        }
        let mut outage_mark = target.health.outage_mark();
        let connected = connect_keeping_deadlines(
            &target,
            &mut queue,
            &mut jobs,
            &mut senders_gone,
            &mut demoted,
        )
        .await;
        match connected {
            Some(Ok(stream)) => {
                outage_mark = target.health.outage_mark();
                target.stats.connections.fetch_add(1, Ordering::Relaxed);
                let outcome = Connection::new(&target)
                    .serve(
                        stream,
                        &mut jobs,
                        &mut queue,
                        &mut senders_gone,
                        &mut demoted,
                    )
                    .await;
                target.stats.connections.fetch_sub(1, Ordering::Relaxed);
                if target.private.is_some() {
                    // A private connection's state died with it.
                    if let Outcome::Broken(reason)
                    | Outcome::Refused(reason)
                    | Outcome::Idle(reason) = &outcome
                    {
                        tracing::debug!(backend = %target.addr, reason = %reason, "dedicated connection closed");
                    }
                    target.close_private(&mut queue, &mut jobs);
                    for job in queue.take_all() {
                        fail(&target, job, "the dedicated connection was closed");
                    }
                    return;
                }
                let refused = matches!(outcome, Outcome::Refused(_));
                match outcome {
                    Outcome::AllSendersGone => return,
                    Outcome::Demoted => backoff.worked(),
                    // Not a failure: counted, with server_failure_limit 1
                    // a healthy server closing one idle connection (a
                    // worker's, with --threads) was ejected, and its keys'
                    // requests went to another shard until the retry
                    // (review: 887 GETs of an existing key answered nil).
                    Outcome::Idle(reason) => {
                        tracing::info!(backend = %target.addr, reason = %reason, "backend closed an idle connection (no failure of the server)");
                        backoff.worked();
                    }
                    Outcome::Broken(reason) | Outcome::Refused(reason) => {
                        tracing::warn!(backend = %target.addr, reason = %reason, "backend connection lost");
                        target.health.record_connection_failure(outage_mark);
                        if refused {
                            // Backed off as a failed connect is, not
                            // reopened at once for the next request,
                            // thousands of times a second.
                            backoff.failed(reason);
                        } else {
                            backoff.worked();
                        }
                    }
                }
            }
            // Demoted while connecting.
            None => {}
            Some(Err(reason)) => {
                tracing::warn!(backend = %target.addr, reason = %reason, "cannot connect to backend");
                target.health.record_connection_failure(outage_mark);
                backoff.failed(reason);
                if target.private.is_some() {
                    target.close_private(&mut queue, &mut jobs);
                }
                for job in queue.take_all() {
                    fail(&target, job, &backoff.reason);
                }
                if target.private.is_some() {
                    return;
                }
            }
        }
    }
}

/// Connects while the queue's deadlines keep running and new requests keep
/// arriving; `None` when the backend was demoted meanwhile.
async fn connect_keeping_deadlines(
    target: &Target,
    queue: &mut Queue,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    senders_gone: &mut bool,
    demoted: &mut watch::Receiver<bool>,
) -> Option<Result<BackendStream, String>> {
    let connecting = connect(target);
    tokio::pin!(connecting);
    loop {
        let deadline = queue_deadline(queue);
        tokio::select! {
            result = &mut connecting => return Some(result),
            job = jobs.recv(), if !*senders_gone => match job {
                Some(job) => queue.push_back(job),
                None => *senders_gone = true,
            },
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                expire_queue(target, queue, Instant::now());
            }
            () = demotion_changed(demoted) => {
                if *demoted.borrow() {
                    return None;
                }
            }
        }
    }
}

/// Connects and runs the handshake; the error text says what failed.
async fn connect(target: &Target) -> Result<BackendStream, String> {
    let expected = target.demotion.expected_run_id();
    super::connect::connect_to(
        &target.addr,
        &target.settings,
        target.proto,
        expected.as_deref(),
    )
    .await
}
