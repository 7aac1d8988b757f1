//! One backend connection: a task that writes the requests of many clients
//! in batches and hands each reply frame to the request at the head of the
//! in-flight queue (Redis answers in order, so FIFO matching is exact).
//!
//! While disconnected, the task connects on demand (or at once with
//! `preconnect`), initialises the connection (`AUTH`, `HELLO 3`, `SELECT`,
//! in that order), and after a failed connect answers requests at once with
//! an error until a short backoff has passed. A request that was written is
//! never replayed: if the connection dies, its client gets an error.

use super::{BackendError, BackendSettings, BackendStats, Health, Reply};
use crate::protocol::{encode_request, reply_frame_len, Proto, ReplyFramer};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};

/// A request waiting to be written, and where its reply goes.
pub(super) struct Job {
    pub request: Bytes,
    pub reply: oneshot::Sender<Reply>,
}

/// What a connection task needs to know about its backend.
pub(super) struct Target {
    pub addr: Arc<str>,
    pub proto: Proto,
    pub settings: Arc<BackendSettings>,
    pub stats: Arc<BackendStats>,
    pub health: Arc<Health>,
}

/// Pause after a failed connect before the next attempt; requests that
/// arrive meanwhile fail at once instead of waiting.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Upper bound of one write batch, so one busy client cannot starve reads.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// The read buffer grows by this much when less than a quarter of it is
/// free, so a round of replies for many clients takes few reads.
const READ_CHUNK: usize = 64 * 1024;

/// Runs until every sender is gone (the backend left all routing tables)
/// and the replies owed are delivered.
pub(super) async fn run(target: Target, mut jobs: mpsc::UnboundedReceiver<Job>, preconnect: bool) {
    let mut backoff = MIN_BACKOFF;
    let mut retry_at: Option<Instant> = None;
    let mut last_error = String::new();
    let mut pending_job: Option<Job> = None;
    let mut connect_now = preconnect;
    loop {
        if !connect_now && pending_job.is_none() {
            match jobs.recv().await {
                Some(job) => pending_job = Some(job),
                None => return,
            }
        }
        connect_now = false;
        if retry_at.is_some_and(|t| Instant::now() < t) {
            // Still backing off: fail fast, never queue behind a dead server.
            if let Some(job) = pending_job.take() {
                fail(&target, job, &last_error);
            }
            while let Ok(job) = jobs.try_recv() {
                fail(&target, job, &last_error);
            }
            continue;
        }
        match connect(&target).await {
            Ok(stream) => {
                backoff = MIN_BACKOFF;
                retry_at = None;
                target.stats.connections.fetch_add(1, Ordering::Relaxed);
                let outcome = Connection::new(&target, stream)
                    .serve(&mut jobs, pending_job.take())
                    .await;
                target.stats.connections.fetch_sub(1, Ordering::Relaxed);
                match outcome {
                    Outcome::AllSendersGone => return,
                    Outcome::Broken(reason) => {
                        tracing::warn!(backend = %target.addr, reason = %reason, "backend connection lost");
                        target.health.record_failure();
                    }
                }
            }
            Err(reason) => {
                tracing::warn!(backend = %target.addr, reason = %reason, "cannot connect to backend");
                target.health.record_failure();
                last_error = reason;
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                if let Some(job) = pending_job.take() {
                    fail(&target, job, &last_error);
                }
            }
        }
    }
}

fn fail(target: &Target, job: Job, reason: &str) {
    target.stats.errors.fetch_add(1, Ordering::Relaxed);
    let _ = job.reply.send(Err(BackendError::Unavailable {
        addr: target.addr.clone(),
        reason: reason.to_string(),
    }));
}

/// Connects and runs the handshake; the error text says what failed.
async fn connect(target: &Target) -> Result<TcpStream, String> {
    let limit = target.settings.connect_timeout();
    let mut stream = match timeout(limit, TcpStream::connect(&*target.addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("connect timed out after {} ms", limit.as_millis())),
    };
    let _ = stream.set_nodelay(true);
    if target.settings.tcpkeepalive {
        if let Err(e) = socket2::SockRef::from(&stream).set_keepalive(true) {
            tracing::debug!(backend = %target.addr, error = %e, "cannot set keepalive");
        }
    }
    let handshake = handshake_commands(&target.settings, target.proto);
    if handshake.is_empty() {
        return Ok(stream);
    }
    match timeout(limit, run_handshake(&mut stream, &handshake)).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "handshake timed out after {} ms",
            limit.as_millis()
        )),
    }
}

/// The commands that prepare a new connection, in the order that works:
/// `AUTH` first (twemproxy sends `SELECT` first and fails on protected
/// servers, its issue #457), then `HELLO 3` for RESP3 connections, then
/// `SELECT`.
fn handshake_commands(settings: &BackendSettings, proto: Proto) -> Vec<Vec<Vec<u8>>> {
    let mut commands = Vec::new();
    if let Some(auth) = &settings.auth {
        commands.push(vec![b"AUTH".to_vec(), auth.as_bytes().to_vec()]);
    }
    if proto == Proto::Resp3 {
        commands.push(vec![b"HELLO".to_vec(), b"3".to_vec()]);
    }
    if settings.db != 0 {
        commands.push(vec![
            b"SELECT".to_vec(),
            settings.db.to_string().into_bytes(),
        ]);
    }
    commands
}

async fn run_handshake(stream: &mut TcpStream, commands: &[Vec<Vec<u8>>]) -> Result<(), String> {
    let mut out = BytesMut::new();
    for command in commands {
        encode_request(command, &mut out);
    }
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(1024);
    for command in commands {
        let frame = loop {
            match reply_frame_len(&buf) {
                Ok(Some(n)) => break buf.split_to(n),
                Ok(None) => {}
                Err(e) => return Err(format!("bad handshake reply: {e}")),
            }
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed during handshake".into());
            }
        };
        if matches!(frame.first(), Some(b'-') | Some(b'!')) {
            let name = String::from_utf8_lossy(&command[0]);
            let text = String::from_utf8_lossy(&frame[1..]);
            return Err(format!("{name} failed: {}", text.trim_end()));
        }
    }
    Ok(())
}

/// Why a connected session ended.
enum Outcome {
    AllSendersGone,
    Broken(String),
}

/// A request written to the backend whose reply has not been matched yet.
struct InFlight {
    /// `None` once the request timed out and its client was answered; the
    /// late reply is then read and dropped.
    reply: Option<oneshot::Sender<Reply>>,
    deadline: Option<Instant>,
}

struct Connection<'a> {
    target: &'a Target,
    stream: TcpStream,
    in_flight: VecDeque<InFlight>,
    /// How many entries at the head of `in_flight` have timed out. Deadlines
    /// grow in write order, so timed-out entries are always a prefix.
    timed_out: usize,
    read_buf: BytesMut,
    /// Where framing of the reply at the head of `read_buf` got to, so a
    /// large reply arriving in many reads is not rescanned from its start.
    framer: ReplyFramer,
    write_buf: BytesMut,
}

impl<'a> Connection<'a> {
    fn new(target: &'a Target, stream: TcpStream) -> Connection<'a> {
        Connection {
            target,
            stream,
            in_flight: VecDeque::new(),
            timed_out: 0,
            read_buf: BytesMut::new(),
            framer: ReplyFramer::new(),
            write_buf: BytesMut::new(),
        }
    }

    async fn serve(
        mut self,
        jobs: &mut mpsc::UnboundedReceiver<Job>,
        first: Option<Job>,
    ) -> Outcome {
        let mut senders_gone = false;
        if let Some(job) = first {
            if let Err(e) = self.write_batch(job, jobs).await {
                return self.broken(e);
            }
        }
        // One timer for the connection, armed at most at the deadline of the
        // oldest request still waiting (deadlines grow in write order). When
        // that request is answered first, the timer fires early, expires
        // nothing and is armed again: cheaper than a new timer per loop.
        let timer = sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut timer_armed = false;
        loop {
            if senders_gone && self.in_flight.is_empty() {
                return Outcome::AllSendersGone;
            }
            if !timer_armed {
                if let Some(deadline) = self.in_flight.get(self.timed_out).and_then(|f| f.deadline)
                {
                    timer.as_mut().reset(deadline);
                    timer_armed = true;
                }
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
                self.read_buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                // Replies first: they free clients, and each branch does a
                // bounded amount of work, so nothing starves.
                biased;
                read = self.stream.read_buf(&mut self.read_buf) => match read {
                    Ok(0) => {
                        self.target.stats.eof.fetch_add(1, Ordering::Relaxed);
                        return self.broken("closed by the server".into());
                    }
                    Ok(_) => {
                        if let Err(e) = self.deliver_replies() {
                            return self.broken(e);
                        }
                    }
                    Err(e) => return self.broken(e.to_string()),
                },
                job = jobs.recv(), if !senders_gone => match job {
                    Some(job) => {
                        if let Err(e) = self.write_batch(job, jobs).await {
                            return self.broken(e);
                        }
                    }
                    None => senders_gone = true,
                },
                () = &mut timer, if timer_armed => {
                    timer_armed = false;
                    self.expire_timed_out();
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued, in one write.
    async fn write_batch(
        &mut self,
        first: Job,
        jobs: &mut mpsc::UnboundedReceiver<Job>,
    ) -> Result<(), String> {
        let deadline = self.target.settings.timeout.map(|t| Instant::now() + t);
        // Let every other task that is ready run first (the runtime resumes
        // this one only once it has run out of ready tasks), so the requests
        // of all clients that were readable in this round go out in one
        // write, as in twemproxy's event loop. Without this, each request
        // tends to wake this task at once and leave in a write of its own.
        tokio::task::yield_now().await;
        let mut next = Some(first);
        while let Some(job) = next {
            self.write_buf.extend_from_slice(&job.request);
            self.in_flight.push_back(InFlight {
                reply: Some(job.reply),
                deadline,
            });
            next = if self.write_buf.len() < MAX_BATCH_BYTES {
                jobs.try_recv().ok()
            } else {
                None
            };
        }
        // Counted once per batch: the counters are shared by every
        // connection to the backend.
        let bytes = self.write_buf.len() as u64;
        self.target
            .stats
            .request_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        let result = self.stream.write_all(&self.write_buf).await;
        self.write_buf.clear();
        result.map_err(|e| e.to_string())
    }

    /// Matches every complete frame in the read buffer to its request.
    fn deliver_replies(&mut self) -> Result<(), String> {
        let (mut responses, mut bytes) = (0, 0);
        let result = self.match_frames(&mut responses, &mut bytes);
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
            let len = match self.framer.frame_len(&self.read_buf) {
                Ok(Some(len)) => len,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("protocol error from server: {e}")),
            };
            let frame = self.read_buf.split_to(len).freeze();
            *responses += 1;
            *bytes += len as u64;
            if frame[0] == b'>' {
                // RESP3 push data belongs to no request.
                continue;
            }
            let Some(entry) = self.in_flight.pop_front() else {
                return Err("reply without a request".into());
            };
            match entry.reply {
                Some(reply) => {
                    self.target.health.record_success();
                    let _ = reply.send(Ok(frame));
                }
                None => self.timed_out -= 1,
            }
        }
    }

    /// Answers every request whose deadline has passed with a timeout error.
    fn expire_timed_out(&mut self) {
        let now = Instant::now();
        let ms = self.target.settings.timeout.map_or(0, |t| t.as_millis());
        while let Some(entry) = self.in_flight.get_mut(self.timed_out) {
            if entry.deadline.is_none_or(|d| d > now) {
                break;
            }
            if let Some(reply) = entry.reply.take() {
                self.target.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                self.target.health.record_failure();
                let _ = reply.send(Err(BackendError::Timeout {
                    addr: self.target.addr.clone(),
                    ms,
                }));
            }
            self.timed_out += 1;
        }
    }

    /// Fails every request still owed a reply; none is replayed.
    fn broken(mut self, reason: String) -> Outcome {
        for entry in self.in_flight.drain(..) {
            if let Some(reply) = entry.reply {
                self.target.stats.errors.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Err(BackendError::Closed {
                    addr: self.target.addr.clone(),
                    detail: format!(" ({reason})"),
                }));
            }
        }
        Outcome::Broken(reason)
    }
}
