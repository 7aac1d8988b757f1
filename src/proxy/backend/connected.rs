//! A connected backend socket, shared by many clients (or a client's own):
//! writes their requests in batches and hands each reply frame to the
//! request at the head of the in-flight queue (Redis answers in order, so
//! FIFO matching is exact).
//!
//! Deadlines hold whatever the backend does. A request's deadline runs from
//! the moment the proxy accepted it, and the connection never blocks in a
//! write: it waits for readiness with its timer armed, so a request queued
//! behind a stalled backend, or one stuck half-written in a full socket, is
//! answered with a timeout at its deadline. A late reply to a request that
//! timed out is read and dropped; but when a request times out before the
//! socket took all of it (a stopped or vanished backend), the connection is
//! closed and a new one opened.
//!
//! When the backend is demoted (a failover), the replies it still owes are
//! answered with an error at once (a write's outcome is then unknown, and
//! never acknowledged from a master about to be discarded). A client's
//! private connection blocked on a key of a range that starts moving to
//! another shard ends that command with `-TRYAGAIN` and closes (see
//! `Backend::ranges_moving`).

use super::busy::{is_script, RunningScript};
use super::queue::Queue;
use super::replies_in::ReplyBuffer;
use super::target::{
    answer_timeout, demotion_changed, expire_queue, fail, hand_over, queue_deadline, time_out,
    Target,
};
use super::{BackendError, Job, MovingAway, Reply, ReplySender, NOT_BLOCKED, PING};
use crate::proxy::outbuf::OutBuf;
use crate::proxy::stream::{poll_read_or_writable, BackendStream, Io};
use bytes::Bytes;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

/// Requests are moved from the queue to the socket's output while less
/// than this is unwritten, so one busy client cannot starve reads and a
/// stalled backend holds little in its output.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The request [`Connection::ask_version`] sends.
const INFO_SERVER: &[u8] = b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n";

/// Asks the backend, on a connection of its own, whether it is busy with a
/// script ([`super::connect::busy_reply`]); the question is dropped with
/// the receiver.
fn ask_if_busy(target: &Target) -> oneshot::Receiver<Option<Bytes>> {
    let (mut answer, rx) = oneshot::channel();
    let (addr, settings) = (target.addr.clone(), target.settings.clone());
    tokio::spawn(async move {
        tokio::select! {
            reply = super::connect::busy_reply(&addr, &settings) => {
                let _ = answer.send(reply);
            }
            () = answer.closed() => {}
        }
    });
    rx
}

/// Why a connected session ended.
pub(super) enum Outcome {
    AllSendersGone,
    /// The backend is no longer a master; the connection was closed.
    Demoted,
    /// The connection failed, the server closed it, or the proxy did (a
    /// request timed out before it was written).
    Broken(String),
    /// Likewise, right after its first reply, an error: the server refused
    /// the connection (`maxclients`, protected mode).
    Refused(String),
    /// Lost with nothing owed: an idle connection the server closed
    /// (Redis's `timeout`). No failure of the server: a server that is
    /// down fails the connect that follows, and that counts.
    Idle(String),
}

/// The errors Redis writes to a connection it refuses, before it reads
/// anything from it and closes it: at `maxclients`, and in protected mode.
/// Only these stand for every request in flight when the close follows: a
/// first reply that answers a request (a client's WRONGTYPE on a
/// connection of its own, a BUSY to the proxy's INFO) does not (review: a
/// dedicated connection killed after a WRONGTYPE answered the next
/// client's BLPOP, and a transaction's EXEC, with that WRONGTYPE).
fn refuses_the_connection(frame: &[u8]) -> bool {
    frame.starts_with(b"-ERR max number of clients reached") || frame.starts_with(b"-DENIED ")
}

/// A request handed to the socket whose reply has not been matched yet.
struct InFlight {
    /// `None` once the request timed out and its client was answered; the
    /// late reply is then read and dropped.
    reply: Option<ReplySender>,
    deadline: Option<Instant>,
    /// Where the request ends in the connection's output stream.
    end: u64,
    /// It runs a script, on a shared connection ([`super::busy`]): the
    /// affinity of the client that sent it.
    script_of: Option<usize>,
    /// The proxy's own request ([`Connection::ask_version`]): no client's,
    /// so not counted in the backend's stats (twemproxy's fields).
    own: bool,
}

pub(super) struct Connection<'a> {
    target: &'a Target,
    in_flight: VecDeque<InFlight>,
    /// How many entries at the head of `in_flight` have timed out.
    timed_out: usize,
    /// Bytes handed to the output, and bytes the socket took.
    pushed: u64,
    written: u64,
    /// What the server sent, framed into replies.
    incoming: ReplyBuffer,
    out: OutBuf,
    /// Replies matched to requests, counted up to 2: a connection closed
    /// after exactly one, an error, was refused (see [`Outcome::Refused`]).
    replies: u8,
    /// The first reply, when it was the error Redis sends as it refuses a
    /// connection ([`refuses_the_connection`]).
    first_error: Option<Bytes>,
    /// The script Redis runs for the request at the head of `in_flight`.
    script: RunningScript,
}

impl<'a> Connection<'a> {
    pub(super) fn new(target: &'a Target) -> Connection<'a> {
        Connection {
            target,
            in_flight: VecDeque::new(),
            timed_out: 0,
            pushed: 0,
            written: 0,
            incoming: ReplyBuffer::new(),
            out: OutBuf::for_requests(),
            replies: 0,
            first_error: None,
            script: RunningScript::default(),
        }
    }

    pub(super) async fn serve(
        self,
        stream: BackendStream,
        jobs: &mut mpsc::UnboundedReceiver<Job>,
        queue: &mut Queue,
        senders_gone: &mut bool,
        demoted: &mut watch::Receiver<bool>,
    ) -> Outcome {
        match stream {
            BackendStream::Plain(tcp) => {
                self.serve_io(tcp, jobs, queue, senders_gone, demoted).await
            }
            BackendStream::Tls(tls) => {
                self.serve_io(*tls, jobs, queue, senders_gone, demoted)
                    .await
            }
            BackendStream::Unix(unix) => {
                self.serve_io(unix, jobs, queue, senders_gone, demoted)
                    .await
            }
        }
    }

    /// The connection's loop, compiled once for plain TCP and once for TLS.
    async fn serve_io<S: Io>(
        mut self,
        mut stream: S,
        jobs: &mut mpsc::UnboundedReceiver<Job>,
        queue: &mut Queue,
        senders_gone: &mut bool,
        demoted: &mut watch::Receiver<bool>,
    ) -> Outcome {
        // One timer for the connection, armed at the earliest deadline of
        // the requests queued or in flight. Reset only when that deadline
        // changes: cheaper than a new timer per loop.
        let timer = sleep_until(Instant::now());
        tokio::pin!(timer);
        // Made once per connection, not once per loop: resolves when the
        // backend is demoted.
        let mut watching = demoted.clone();
        let demotion = async move {
            while !*watching.borrow_and_update() {
                demotion_changed(&mut watching).await;
            }
        };
        tokio::pin!(demotion);
        let mut moving = self.target.private.as_ref().map(|p| p.moving.clone());
        let mut armed_at: Option<Instant> = None;
        // Asking Redis whether it is busy with the script at the head.
        let mut probe: Option<oneshot::Receiver<Option<Bytes>>> = None;
        // A new socket has not been seen to stall.
        queue.progressed();
        if self.target.private.is_none() {
            self.ask_version(queue);
        }
        loop {
            if *senders_gone
                && (self.target.private.is_some() || self.in_flight.is_empty() && queue.is_empty())
            {
                // A private connection's client is gone: nobody waits for
                // what it owes, and closing frees a blocked command at once.
                return Outcome::AllSendersGone;
            }
            self.fill_output(queue);
            match stream.write_now(&mut self.out) {
                Ok(0) if !self.out.is_empty() => queue.stalled(),
                Ok(0) => {}
                Ok(n) => {
                    self.written += n as u64;
                    queue.progressed();
                }
                Err(e) => return self.broken(e.to_string()),
            }
            let unsent = !self.out.is_empty() || stream.holds_output();
            let deadline = [
                queue_deadline(queue),
                self.in_flight.get(self.timed_out).and_then(|f| f.deadline),
                self.script.hold_at(),
            ]
            .into_iter()
            .flatten()
            .min();
            if deadline != armed_at {
                if let Some(deadline) = deadline {
                    timer.as_mut().reset(deadline);
                }
                armed_at = deadline;
            }
            self.incoming.make_room();
            tokio::select! {
                // Replies first: they free clients, and each branch does a
                // bounded amount of work, so nothing starves.
                biased;
                // Reads, then room to write, polled together: both need
                // the one stream.
                io = poll_fn(|cx| poll_read_or_writable(&mut stream, cx, self.incoming.buf_mut(), unsent)) => match io {
                    // Writable (or failing: the next write tells).
                    None => {}
                    Some(Ok(0)) => {
                        self.target.stats.eof.fetch_add(1, Ordering::Relaxed);
                        return self.broken("closed by the server".into());
                    }
                    Some(Ok(_)) => {
                        // An answer means the backend reads, even while
                        // the socket is still too full to take more.
                        queue.progressed();
                        if let Err(e) = self.deliver_replies() {
                            return self.garbled(e);
                        }
                        if !self.script.holding() {
                            // The script's reply came: no need to ask.
                            probe = None;
                        }
                    }
                    Some(Err(e)) => return self.broken(e.to_string()),
                },
                () = &mut demotion => return self.demote(queue),
                answer = async { probe.as_mut().expect("asked").await }, if probe.is_some() => {
                    probe = None;
                    if let Ok(Some(reply)) = answer {
                        self.script.confirm_busy(reply);
                    }
                    if let Some(reply) = self.script.busy().cloned() {
                        tracing::warn!(backend = %self.target.addr, "busy running a script: \
                            requests not written yet are answered -BUSY until it ends");
                        let held: Vec<Job> = queue.take_all().collect();
                        for job in held {
                            self.answer_busy(queue, job, reply.clone());
                        }
                    }
                }
                changed = async {
                    match moving.as_mut() {
                        Some(moving) => moving.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                }, if moving.is_some() => {
                    if !changed {
                        moving = None;
                    } else if let Some(outcome) = self.end_blocked_on_moved_range(moving.as_mut()) {
                        return outcome;
                    }
                }
                () = &mut timer, if armed_at.is_some() => {
                    armed_at = None;
                    let now = Instant::now();
                    expire_queue(self.target, queue, now);
                    // A private connection whose request timed out is closed
                    // too: what its client's next request would wait behind
                    // (a late blocking command) is unknown.
                    let stuck = self.expire_in_flight(now);
                    if stuck || (self.target.private.is_some() && self.timed_out > 0) {
                        return self.stuck_mid_write();
                    }
                    if self.script.starts_holding(now) {
                        probe = Some(ask_if_busy(self.target));
                    }
                }
                job = jobs.recv(), if !*senders_gone => match job {
                    Some(job) => {
                        self.enqueue(queue, job);
                        // Let every other ready task run first (the runtime
                        // resumes this one once it has run out of them), so
                        // the requests of all the clients served in this
                        // turn go out in one write, as in twemproxy's event
                        // loop. Measured (deploy/bench, 6 rounds, against
                        // the same build without it): the same CPU per
                        // request, 2-6% more unpipelined throughput (MSET
                        // +6%), as Redis gets fuller batches.
                        tokio::task::yield_now().await;
                        while let Ok(job) = jobs.try_recv() {
                            self.enqueue(queue, job);
                        }
                    }
                    None => *senders_gone = true,
                },
            }
        }
    }

    /// Queues a request to be written, or answers it with an error when
    /// the backend has stopped reading with the queue full of requests of
    /// clients that left (see [`super::queue`]).
    fn enqueue(&self, queue: &mut Queue, job: Job) {
        if let Some(reply) = self.script.busy() {
            let reply = reply.clone();
            return self.answer_busy(queue, job, reply);
        }
        match queue.refusal() {
            None if self.out.len() < MAX_BATCH_BYTES && !self.script.holding() => {
                queue.push_back(job)
            }
            None => queue.push_back_waiting(job),
            Some(reason) => {
                if queue.starts_refusing() {
                    tracing::error!(backend = %self.target.addr, %reason, "backend stalled: refusing its requests");
                }
                self.target.health.record_failure();
                fail(self.target, job, &reason);
            }
        }
    }

    /// Sends `INFO server` first on a new shared connection, for the
    /// server's version (the one the proxy reports, see
    /// [`super::BackendStats::server_version`]). Its reply is read like any
    /// other, so a server that refuses the connection (`maxclients`) or
    /// does not speak RESP is told by the first reply as before.
    fn ask_version(&mut self, queue: &Queue) {
        // Deadlines in flight grow in order: no later than the requests
        // that waited for the connection.
        let deadline = queue_deadline(queue).or_else(|| {
            let timeout = self.target.settings.timeout?;
            Some(Instant::now() + timeout)
        });
        // Nobody waits for its reply: `match_frames` reads the version
        // from it, also when it comes after its deadline.
        let (job, _) = Job::new(Bytes::from_static(INFO_SERVER), 0, deadline);
        self.pushed += job.request.len() as u64;
        self.out.push(job.request);
        self.in_flight.push_back(InFlight {
            reply: Some(job.reply),
            deadline: job.deadline,
            end: self.pushed,
            script_of: None,
            own: true,
        });
    }

    /// Redis's `-BUSY` to a request not written while a script runs long
    /// ([`super::busy`]): an error reply, as Redis gives it to other
    /// clients. Two kinds of request wait instead: those of the client whose
    /// script it is, which Redis runs after the script, and the proxy's own
    /// PINGs, whose reply must mean that what was sent before them has run
    /// (a migration's prepare waits for that).
    fn answer_busy(&self, queue: &mut Queue, job: Job, reply: Bytes) {
        if self.script.sent_by(job.affinity) || job.request[..] == PING[..] {
            return queue.push_back_waiting(job);
        }
        self.target.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.target.stats.errors.fetch_add(1, Ordering::Relaxed);
        job.reply.send(Ok(reply));
    }

    /// Moves queued requests to the output while little is unwritten.
    fn fill_output(&mut self, queue: &mut Queue) {
        if self.script.holding() {
            // Behind a script running long ([`super::busy`]).
            return;
        }
        let (mut requests, mut bytes) = (0u64, 0u64);
        while self.out.len() < MAX_BATCH_BYTES {
            let Some(job) = queue.pop_front() else {
                break;
            };
            requests += 1;
            bytes += job.request.len() as u64;
            self.pushed += job.request.len() as u64;
            // A client's own connection waits behind its script.
            let script_of =
                (self.target.private.is_none() && is_script(&job.request)).then_some(job.affinity);
            self.out.push(job.request);
            self.in_flight.push_back(InFlight {
                reply: Some(job.reply),
                deadline: job.deadline,
                end: self.pushed,
                script_of,
                own: false,
            });
            // The first script in flight is the one Redis runs next, or
            // runs: the replies of what was written before it in the same
            // batch stay in Redis's output buffer until it ends (a new
            // connection's INFO, a pipelined SCRIPT LOAD), so waiting for
            // it to reach the head missed a script that ran for good
            // behind them.
            if script_of.is_some() && !self.script.tracked() {
                self.script.head_changed(script_of);
            }
        }
        if requests > 0 {
            // Counted once per batch: the counters are shared by every
            // connection to the backend.
            let stats = &self.target.stats;
            stats.requests.fetch_add(requests, Ordering::Relaxed);
            stats.request_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Matches every complete frame in the read buffer to its request.
    fn deliver_replies(&mut self) -> Result<(), String> {
        let (mut responses, mut bytes) = (0, 0);
        let result = self.match_frames(&mut responses, &mut bytes);
        if responses > 0 {
            self.script.heard();
        }
        // Counted once per read: the counters are shared by every
        // connection to the backend.
        let stats = &self.target.stats;
        stats.responses.fetch_add(responses, Ordering::Relaxed);
        stats.response_bytes.fetch_add(bytes, Ordering::Relaxed);
        result
    }

    /// Hands each complete reply frame to its request, counting them.
    fn match_frames(&mut self, responses: &mut u64, bytes: &mut u64) -> Result<(), String> {
        loop {
            let frame = match self.incoming.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("protocol error from server: {e}")),
            };
            if frame[0] == b'>' {
                // RESP3 push data belongs to no request.
                *responses += 1;
                *bytes += frame.len() as u64;
                continue;
            }
            let Some(entry) = self.in_flight.pop_front() else {
                return Err("reply without a request".into());
            };
            if entry.own {
                self.target.stats.learn_server_version(&frame);
            } else {
                *responses += 1;
                *bytes += frame.len() as u64;
            }
            if entry.script_of.is_some() {
                // That script ended: the next one in flight, if any, is
                // the one Redis runs now or next.
                let next = self.in_flight.iter().find_map(|f| f.script_of);
                self.script.head_changed(next);
            }
            if self.replies < 2 {
                // An ACL without INFO, or INFO renamed away, refuses the
                // proxy's own first request (`ask_version`), and only it.
                let info_refused = entry.own
                    && (frame.starts_with(b"-NOPERM")
                        || frame.starts_with(b"-ERR unknown command"));
                let refusal = refuses_the_connection(&frame);
                if self.replies == 0 && frame[0] == b'-' && !info_refused {
                    if refusal {
                        self.first_error = Some(frame.clone());
                    }
                    // A client's own error on a connection of its own
                    // (WRONGTYPE) is no news for the log.
                    if refusal || entry.own {
                        tracing::warn!(backend = %self.target.addr,
                            reply = %String::from_utf8_lossy(&frame[1..frame.len() - 2]),
                            "the first request on a new connection failed");
                    }
                }
                self.replies += 1;
            }
            match entry.reply {
                Some(reply) => {
                    self.target.health.record_success();
                    reply.send(Ok(frame));
                }
                None => self.timed_out -= 1,
            }
        }
    }

    /// Answers the requests in flight whose deadline has passed with a
    /// timeout; their late replies will be dropped. True when one of them
    /// has not been written whole: the connection is stuck mid-request.
    fn expire_in_flight(&mut self, now: Instant) -> bool {
        let mut stuck = false;
        while let Some(entry) = self.in_flight.get_mut(self.timed_out) {
            if entry.deadline.is_none_or(|d| d > now) {
                break;
            }
            // The proxy's own request is let go quietly: no client waits.
            if let Some(reply) = entry.reply.take().filter(|_| !entry.own) {
                time_out(self.target, reply);
            }
            stuck |= entry.end > self.written;
            self.timed_out += 1;
        }
        stuck
    }

    /// A request timed out before the socket took all of it (a stopped or
    /// vanished backend): the connection is closed, since the bytes on the
    /// wire could no longer be matched to requests. The others in flight
    /// get their timeout at their own deadline, as they would have.
    fn stuck_mid_write(mut self) -> Outcome {
        let owed: Vec<(ReplySender, Option<Instant>)> = self
            .in_flight
            .drain(..)
            .filter(|entry| !entry.own)
            .filter_map(|entry| entry.reply.map(|reply| (reply, entry.deadline)))
            .collect();
        if !owed.is_empty() {
            let (addr, stats, health, ms) = (
                self.target.addr.clone(),
                self.target.stats.clone(),
                self.target.health.clone(),
                self.target.settings.timeout_ms(),
            );
            tokio::spawn(async move {
                for (reply, deadline) in owed {
                    if let Some(deadline) = deadline {
                        sleep_until(deadline).await;
                    }
                    answer_timeout(&addr, &stats, &health, ms, reply);
                }
            });
        }
        Outcome::Broken("a request timed out before it was written; connection closed".into())
    }

    /// A range of the backend started moving away: the blocking command
    /// in flight, if its key is in it, is answered `-TRYAGAIN` and the
    /// connection closed (which frees the command on the backend).
    fn end_blocked_on_moved_range(
        &mut self,
        moving: Option<&mut watch::Receiver<Option<MovingAway>>>,
    ) -> Option<Outcome> {
        let ranges = match &*moving?.borrow_and_update() {
            Some((_, ranges)) => ranges.clone(),
            None => return None,
        };
        let packed = self
            .target
            .private
            .as_ref()?
            .blocked_on
            .load(Ordering::Acquire);
        if packed == NOT_BLOCKED {
            return None;
        }
        let (first, last) = super::unpack_span(packed);
        if !ranges.iter().any(|&(lo, hi)| first <= hi && lo <= last) {
            return None;
        }
        if !self.in_flight.iter().any(|entry| entry.reply.is_some()) {
            return None;
        }
        self.answer_in_flight(|| {
            Ok(Bytes::from_static(
                b"-TRYAGAIN the key's range started moving to another shard while the command was blocked; retry\r\n",
            ))
        });
        Some(Outcome::Broken(
            "the blocked key's range started moving".into(),
        ))
    }

    /// The backend is no longer a master: what it still owes is answered
    /// with an error now, what is queued goes to the new master.
    fn demote(mut self, queue: &mut Queue) -> Outcome {
        tracing::warn!(backend = %self.target.addr, in_flight = self.in_flight.len(),
            "no longer a master: closing its connection");
        let addr = self.target.addr.clone();
        self.answer_in_flight(|| Err(BackendError::Demoted { addr: addr.clone() }));
        self.out.clear();
        hand_over(self.target, queue);
        Outcome::Demoted
    }

    /// The backend sent what is not a reply to the requests in flight:
    /// the proxy closes the connection, as it can no longer match replies
    /// to requests, and fails what is owed.
    fn garbled(mut self, reason: String) -> Outcome {
        let addr = self.target.addr.clone();
        self.answer_in_flight(|| {
            Err(BackendError::Garbled {
                addr: addr.clone(),
                detail: reason.clone(),
            })
        });
        Outcome::Broken(reason)
    }

    /// Answers every request still owed a reply with `reply` (an error,
    /// or an error reply, counted as one), as the connection ends; none is replayed. A private
    /// connection is marked broken first, so that a client given the
    /// answer finds it so.
    fn answer_in_flight(&mut self, reply: impl Fn() -> Reply) {
        self.target.retire();
        // The proxy's own request has nobody to answer, and is no error.
        let owed = self.in_flight.drain(..).filter(|entry| !entry.own);
        for owed in owed.filter_map(|entry| entry.reply) {
            let answer = reply();
            // A refused connection's requests get Redis's error reply.
            let error = answer
                .as_ref()
                .map_or(true, |frame| frame.starts_with(b"-"));
            if error {
                self.target.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            owed.send(answer);
        }
    }

    /// The connection failed or the backend closed it: fails every
    /// request still owed a reply; none is replayed.
    fn broken(mut self, reason: String) -> Outcome {
        // What a server at `maxclients` (or in protected mode) does: one
        // error, then the close. Its requests get that error, Redis's own
        // words, as a client of its own would; the connection is reopened
        // after a backoff. Anything else is reopened at once.
        if let Some(words) = self.first_error.take().filter(|_| self.replies == 1) {
            self.answer_in_flight(|| Ok(words.clone()));
            // What the requests of the backoff that follows are told: the
            // refusal, not the reset that came after it (review revQ:
            // "Connection reset by peer").
            let refusal = String::from_utf8_lossy(&words[1..]).trim_end().to_string();
            return Outcome::Refused(format!("{refusal} ({reason})"));
        }
        let idle = self.in_flight.is_empty();
        let addr = self.target.addr.clone();
        self.answer_in_flight(|| {
            Err(BackendError::Closed {
                addr: addr.clone(),
                detail: format!(" ({reason})"),
            })
        });
        if idle {
            Outcome::Idle(reason)
        } else {
            Outcome::Broken(reason)
        }
    }
}
