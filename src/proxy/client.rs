//! One client session: read requests, route each one, and write the replies
//! back in request order.
//!
//! The session reads what the client has sent, parses every complete
//! request and hands each to its backend at once (so a pipeline reaches the
//! backends as a pipeline), as far as its window of replies owed allows;
//! each reply is written back as soon as it and every one before it are
//! ready. Requests are dispatched in order, so a `HELLO 3` or `AUTH` in the
//! middle of a pipeline takes effect exactly from the next request on, and
//! a request sent under another protocol or routing table waits until the
//! ones before it are answered, so it cannot overtake them.

use crate::command::Command;
use crate::protocol::{encode_error, ProtocolError, Request, RequestParser};
use crate::proxy::descriptors;
use crate::proxy::input_memory::{GrownInput, ReadAhead};
use crate::proxy::outbuf::OutBuf;
use crate::proxy::pending::Pending;
use crate::proxy::pipeline_loan::{self, PipelineLoan, Refusal};
use crate::proxy::pool::Pool;
use crate::proxy::pubsub::{self, Flow};
use crate::proxy::router::ShardName;
use crate::proxy::session::Session;
use crate::proxy::split::PartHandle;
use crate::proxy::stats::PoolStats;
use crate::proxy::stream::{poll_read_buf, Io};
use crate::proxy::window::Window;
use bytes::{BufMut, BytesMut};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{futures::Notified, watch};
use tokio::time::Instant;

/// The read buffer of a session that sends one request or a short pipeline
/// at a time, as most do. It is small enough to keep while idle, and it is
/// reused in place from batch to batch, without allocating.
const SMALL_READ: usize = 1024;
/// The read buffer of a session that sends more at a time (large values,
/// deep pipelines); released once the session sends little again.
const READ_CHUNK: usize = 16 * 1024;
/// A read buffer that held this much was grown for a large request, and
/// is let go once that request has been split off; a smaller one is kept
/// and reused in place by a client that keeps sending large values.
const GROWN_INPUT: usize = 16 * READ_CHUNK;
/// How long a blocking command whose client closed may take to be
/// answered before the session drops it (it did not block).
const CLOSE_GRACE: Duration = Duration::from_millis(20);
/// How long a session still reads its client once the proxy is stopping:
/// requests on their way when the signal came are answered, not cut off.
const STOP_GRACE: Duration = Duration::from_millis(200);
/// How long a stopping session, its last reply written, waits for its
/// client to close before closing itself: closing on unread requests
/// resets the connection, and a reset can cost the client replies it has
/// not read yet.
const STOP_LINGER: Duration = Duration::from_secs(2);
/// A reply owed, with what the stats need when it is written.
struct Owed {
    reply: Pending,
    /// The request's size, counted by the [`Window`] until it is answered.
    request_len: usize,
    cmd: Option<&'static Command>,
    arrived: Instant,
}

/// Requests of a client that closed weigh on a stalled backend's bound
/// (`backend::queue`).
fn abandon(owed: &VecDeque<Owed>) {
    for owed in owed {
        abandon_reply(&owed.reply);
    }
}

fn abandon_reply(reply: &Pending) {
    match reply {
        Pending::Forward { reply, .. } => reply.abandon(),
        Pending::Split { parts, .. } => parts.iter().for_each(PartHandle::abandon),
        _ => {}
    }
}

/// How often a session that reads nothing (its window is shut on a full
/// input) asks whether its client closed behind what it sent.
const CLOSE_CHECK: Duration = Duration::from_millis(200);

/// The proxy out of descriptors lets go of a session whose client closed
/// once its oldest reply has been owed this long: it waits on a stalled
/// backend, not on one that is merely slow.
const LET_GO_AFTER: Duration = Duration::from_secs(1);

/// The shards that still owe the oldest reply (its one shard, or the
/// shards of a split command's parts that have not answered), with how
/// many replies each one's backend has read (see [`HeadWait`]). A shard
/// that has answered is not waited on: with nothing more sent to it, its
/// count would stand still and look stalled.
fn head_of_line(session: &Session, owed: &VecDeque<Owed>) -> SmallVec<[(ShardName, u64); 2]> {
    let names: SmallVec<[ShardName; 2]> = match owed.front().map(|owed| &owed.reply) {
        Some(Pending::Forward { shard, reply }) if reply.is_waiting() => {
            SmallVec::from_elem(*shard, 1)
        }
        Some(Pending::Split { parts, .. }) => parts
            .iter()
            .filter(|part| part.is_waiting())
            .map(|part| part.shard)
            .collect(),
        _ => return SmallVec::new(),
    };
    let table = session.pool.router.load();
    names
        .into_iter()
        .filter_map(|name| {
            let shard = table.shards.iter().find(|shard| shard.name == name)?;
            Some((name, shard.backend.stats.responses.load(Ordering::Relaxed)))
        })
        .collect()
}

/// Moves what `input` holds to a buffer of its own size: the allocation
/// it was cut from (read ahead, or grown for a large request) can go. The
/// parser's offsets hold, the bytes being the same from the start.
fn own_buffer(input: &mut BytesMut, grown_input: &mut GrownInput) {
    *input = BytesMut::from(&input[..]);
    grown_input.set(false);
}

/// How long the shard a shut window waits on must have answered nothing
/// before the client is read ahead of it.
const STALLED_FOR: Duration = Duration::from_millis(100);

/// True when the pool's requests time out: only then does reading ahead
/// of a shut window change when a request is answered.
fn timed(session: &Session) -> bool {
    let table = session.pool.router.load();
    table
        .shards
        .first()
        .is_some_and(|shard| shard.backend.timeout().is_some())
}

/// Serves one client until it quits, breaks the protocol, disconnects, or
/// the proxy shuts down (after the replies it owes are written).
///
/// Requests are dispatched as they arrive, up to the [`Window`]; replies
/// are written back in request order as soon as each is ready, without
/// waiting for the rest of a pipeline. A client that does not read stops
/// being read: its replies wait in bounded memory, and TCP pushes back on
/// its requests.
///
/// Generic over the socket so that plain TCP and TLS each get their own
/// copy of the loop: the plain one calls `TcpStream`'s readiness and
/// non-blocking I/O directly, as it did before TLS existed.
pub async fn serve<S: Io>(pool: Arc<Pool>, mut stream: S, shutdown: watch::Receiver<bool>) {
    let mut session = Session::new(pool);
    let pool = session.pool.clone();
    let stats = &pool.stats;
    let mut parser = RequestParser::new(session.pool.max_request_size);
    parser.set_unauthenticated(!session.authenticated);
    let mut window = Window::new(session.pool.client_output_limit);
    let mut input = BytesMut::new();
    let mut out = OutBuf::for_replies();
    let mut owed: VecDeque<Owed> = VecDeque::new();
    // The protocol and routing table of the requests in `owed`: requests
    // under another protocol or table wait until those are answered, so
    // they cannot overtake them on another connection or backend.
    let mut owed_epoch = (session.proto, 0u64);
    // Registered once with the shutdown signal for the whole session, not
    // once per wait: every session shares that signal's waiter list.
    // Once polled, it stays registered and wakes the session when the
    // signal changes; it is polled again only then (`shutdown_seen` tells),
    // since polling a watch costs more than the rest of a wait.
    let shutdown_seen = shutdown.clone();
    let stop = stop_signal(shutdown);
    tokio::pin!(stop);
    let mut stop_registered = false;
    let mut stopping = false;
    // Stopping: when reading ends (`STOP_GRACE` after the signal). The
    // session then runs what it has read, writes the replies, and closes
    // at that clean point, so a request that got no reply did not run and
    // is safe to send again elsewhere (review: a client that never paused
    // was served until the drain limit cut it mid-request, and writes
    // Redis had applied lost their replies).
    let mut reads_end: Option<Instant> = None;
    // No more input will be read: the client closed, sent QUIT or broke
    // the protocol. The session ends once everything owed is written.
    let mut finishing = false;
    // The client closed its side (or the connection failed): nothing more
    // is read, and the session finishes once what it had read is dispatched.
    let mut closed = false;
    let mut protocol_error: Option<ProtocolError> = None;
    // A request parsed but not dispatched yet: it must wait until every
    // reply owed is answered (see `Session::needs_quiet`). Boxed: it is
    // rare, and inline it would make every idle session 136 bytes larger.
    let mut held: Option<Box<Request>> = None;
    // Once the client closed with replies owed: ends the session if the
    // proxy runs out of descriptors (see `descriptors::descriptors_short`).
    let mut let_go: Option<Pin<Box<Notified<'static>>>> = None;
    // The client closed behind requests it sent that are still unread, its
    // window being shut on a full input: seen by asking the socket every
    // `CLOSE_CHECK` (`close_check`) while no read would see it. Its
    // requests then weigh as a client's that left; what it sent is still
    // read and run as the window opens (unless it is blocked, as Redis
    // drops a blocked client that closes).
    let mut left_unread = false;
    let mut close_check: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // The last read was large or filled the buffer: read in large chunks.
    let mut busy = false;
    // `input` was allocated with `READ_CHUNK`.
    let mut big_input = false;
    // `input` grew past `GROWN_INPUT` for a large request.
    let mut grown_input = GrownInput::default();
    // Held while the window waits on a shard, in a pool with a timeout:
    // the input may then grow to `READ_AHEAD` (see `ReadAhead`).
    let mut read_ahead: Option<ReadAhead> = None;
    let mut pipeline_loan: Option<PipelineLoan> = None;
    loop {
        let reading_over = reads_end.is_some_and(|end| Instant::now() >= end);
        // Dispatch what has arrived, as far as the window allows.
        let mut exhausted = false;
        // The shut window waits on a shard that has answered nothing for
        // `STALLED_FOR`: reading ahead is worth it.
        let mut stalled = false;
        let mut arrived = None;
        while !finishing && may_dispatch(&mut session, &window, &owed, &out, held.is_some()) {
            // Bytes the parse took off the input, skipped ones (`*0`, blank
            // lines) too: counted off what waited once the request went.
            let mut consumed = 0;
            let request = match held.take() {
                Some(request) => *request,
                None => {
                    let before = input.len();
                    let parsed = parser.parse(&mut input);
                    consumed = before.saturating_sub(input.len());
                    match parsed {
                        Ok(Some(request)) => request,
                        Ok(None) => {
                            session.head_wait.consumed(consumed);
                            exhausted = true;
                            if closed {
                                // What is left is part of a request: a
                                // session that waits on a stalled backend
                                // to answer a client that left holds no
                                // buffer.
                                finishing = true;
                                input = BytesMut::new();
                                abandon(&owed);
                            }
                            break;
                        }
                        Err(e) => {
                            protocol_error = Some(e);
                            finishing = true;
                            break;
                        }
                    }
                }
            };
            let resolved = session.resolve(&request.args);
            if let Ok(cmd) = resolved {
                if !owed.is_empty() && session.needs_quiet(cmd, &request.args) {
                    held = Some(Box::new(request));
                    break;
                }
            }
            // The table the request goes by, checked here and not only
            // per pass: a new one (a reload, a failover, a move) can put
            // it on other connections than the replies still owed, and
            // Redis could run it before them (review: with two threads, a
            // reload let a pipelined APPEND overtake nine sent before it).
            let table = pool.router.load();
            if (session.proto, table.version) != owed_epoch {
                if !owed.is_empty() {
                    held = Some(Box::new(request));
                    break;
                }
                owed_epoch = (session.proto, table.version);
            }
            session.pinned = Some(table);
            stats.commands.count_request();
            let arrived = *arrived.get_or_insert_with(Instant::now);
            session.accepted = arrived;
            let request_len = request.raw.len();
            window.dispatched(request_len, owed.len());
            let (cmd, reply) = session.dispatch(request, resolved);
            session.pinned = None;
            session.head_wait.consumed(consumed);
            if left_unread {
                abandon_reply(&reply);
            }
            owed.push_back(Owed {
                reply,
                request_len,
                cmd,
                arrived,
            });
            parser.set_unauthenticated(!session.authenticated);
            finishing = session.closing;
        }
        // Stopping, and everything read is dispatched (a request cut
        // short is dropped: it never ran).
        if reading_over && exhausted && held.is_none() {
            finishing = true;
        }
        // Shut with requests waiting: note whom for (see `HeadWait`).
        if finishing || held.is_some() {
            session.head_wait.clear();
        } else if exhausted && owed.is_empty() {
            session.head_wait.drained(input.len());
        } else if !exhausted && !window.admits(owed.len(), out.len()) {
            session.head_wait.shut(input.len());
            let mut waits = false;
            for (shard, responses) in head_of_line(&session, &owed) {
                session.head_wait.waits_on(shard, responses);
                waits = true;
            }
            // Only behind a shard that has answered nothing for a while:
            // behind a healthy one, the window reopens soon enough, and a
            // client streaming to it would hold a share for nothing.
            stalled = waits && session.head_wait.stalled_for(STALLED_FOR);
            if stalled {
                match read_ahead.as_mut() {
                    Some(share) => share.regrow(),
                    None if timed(&session) => read_ahead = ReadAhead::grant(),
                    None => {}
                }
            }
            if input.len() >= READ_CHUNK {
                // Reads stop here (`want_input`), or further on when
                // reading ahead: either way, what the client sent so far
                // waits from now, read or not.
                session
                    .head_wait
                    .reads_stop(input.len(), || stream.unread());
            }
        }
        // Collect the replies that are ready and write what the socket takes.
        // Replies built by the proxy go out now; a forwarded one is
        // looked at when the session waits (a backend has not answered a
        // request dispatched just now).
        if owed
            .front()
            .is_some_and(|owed| matches!(owed.reply, Pending::Ready(_)))
        {
            let _ = collect(None, &mut owed, &mut out, &mut window, &pool);
        }
        if owed.is_empty() {
            if let Some(e) = protocol_error.take() {
                write_protocol_error(&e, &mut out, stats);
            }
        }
        match stream.write_now(&mut out) {
            Ok(0) => {}
            Ok(written) => stats.commands.count_output(written),
            Err(e) => {
                tracing::debug!(client = session.id, error = %e, "client write failed");
                return;
            }
        }
        // Bytes wait to go out: in `out`, or (TLS) inside the stream.
        let unsent = !out.is_empty() || stream.holds_output();
        if finishing && owed.is_empty() && !unsent {
            let _ = stream.shutdown().await;
            if stopping {
                let _ = tokio::time::timeout(STOP_LINGER, discard_until_closed(&mut stream)).await;
            }
            return;
        }
        // A blocked session whose client closed, or while the proxy stops,
        // gets a moment for its replies to come, then is dropped (which
        // closes its dedicated connection and frees the command on the
        // backend).
        // - Client closed: like Redis, a client that goes away while
        //   blocked is dropped; but a blocking command that does not block
        //   (BLPOP on a list with data) is answered before Redis sees the
        //   close, and so is what was pipelined around it. The moment is
        //   short, so a push meanwhile is unlikely to go to a client that
        //   left.
        // - Stopping: a blocked command may wait for ever; rather than hold
        //   the proxy's exit for the whole drain, the client is let go as
        //   Redis lets go of its clients at SHUTDOWN.
        let grace = if (finishing || closed || left_unread) && session.blocked {
            Some(CLOSE_GRACE)
        } else if stopping && session.blocked && !unsent {
            Some(STOP_GRACE)
        } else {
            None
        };
        if let Some(grace) = grace {
            let answered = tokio::time::timeout(
                grace,
                poll_fn(|cx| collect(Some(cx), &mut owed, &mut out, &mut window, &pool)),
            )
            .await;
            if answered.is_err() {
                return;
            }
            continue;
        }
        let may_go_on =
            !finishing && may_dispatch(&mut session, &window, &owed, &out, held.is_some());
        if may_go_on && !exhausted {
            // Requests are waiting in the buffer and room was made for them.
            continue;
        }
        // A loan shrinks as what it read is dispatched (an idle client
        // left holding part of a request keeps a step at most).
        if let Some(loan) = pipeline_loan.as_mut() {
            loan.fit(input.len().saturating_sub(READ_CHUNK));
            if loan.held() == 0 {
                pipeline_loan = None;
            }
        }
        // A client that goes on sending while its replies fill its
        // window (one that writes a whole pipeline before it reads) would
        // be stuck in its write for good: it may read on, without running
        // what it reads, on a loan ([`PipelineLoan`]). Not before it has
        // logged in: a stranger's pipeline of refused requests took the
        // whole budget (review), and other clients' pipelines waited.
        let reads_on = pipeline_loan
            .as_ref()
            .map_or(READ_CHUNK, |loan| READ_CHUNK + loan.held());
        if !may_go_on
            && session.authenticated
            && !finishing
            && !closed
            && !session.blocked
            && held.is_none()
            && out.len() >= window.output_limit() / 2
            && input.len() >= reads_on
            && stream.unread() > 0
        {
            let loan = pipeline_loan.get_or_insert_with(PipelineLoan::default);
            if let Err(refusal) = loan.grow() {
                if loan.is_news(refusal) {
                    tell_loan_refused(refusal, session.id, loan.held());
                }
            }
        }
        let loan_room = pipeline_loan.as_ref().map_or(0, |loan| {
            (READ_CHUNK + loan.held()).saturating_sub(input.len())
        });
        if let Some(share) = read_ahead.as_mut() {
            if closed || finishing || may_go_on && input.len() < READ_CHUNK {
                read_ahead = None;
            } else if session.blocked && share.held() > input.len() {
                // Blocked, it reads no more: what it read moves to a buffer
                // of its size, and only that stays counted, so the rest of
                // the share can serve another session.
                own_buffer(&mut input, &mut grown_input);
                share.fit(input.len());
            }
        }
        // An idle session keeps at most a small buffer. One grown for a
        // large request goes as soon as it is empty, busy or not, before
        // the session waits: what is left of it is a view that keeps the
        // whole allocation alive (a 64 MB SET followed by a PING kept 64 MB
        // per idle client).
        if input.is_empty()
            && ((big_input && !busy) || grown_input.get() || input.capacity() > 4 * READ_CHUNK)
        {
            input = BytesMut::new();
            big_input = false;
            grown_input.set(false);
        } else if grown_input.get()
            && read_ahead.is_none()
            && (input.len() <= READ_CHUNK
                || owed.is_empty() && grown_input.mostly_spent(input.len()))
        {
            // The start of a request is left of a large buffer (read ahead,
            // or a large request's): moved to a buffer of its own, so that
            // an idle client holding it does not keep the whole allocation
            // alive (60 such clients held 1.1 MB each; 20 KB left after a
            // 2 MB SET kept the 2 MB). A larger start moves only once the
            // requests cut from the buffer are answered: until then they
            // keep it alive, and a copy would only add to it.
            own_buffer(&mut input, &mut grown_input);
        }
        // A client that may not dispatch (blocked, or its window shut) is
        // still read, a little, so that its going away is seen at once;
        // up to `READ_AHEAD` while its window waits on a shard.
        let want_input = !closed
            && !finishing
            && !reading_over
            && (may_go_on
                || input.len() < READ_CHUNK
                || loan_room > 0
                || stalled
                    && read_ahead
                        .as_ref()
                        .is_some_and(|share| input.len() < share.held()));
        let idle = owed.is_empty() && !unsent;
        // Reading has ended for a stop, with replies still to write: what
        // the client goes on sending is read and dropped (it never runs),
        // so that a client blocked writing a long pipeline gets to read its
        // replies (review: both sides waited for the drain limit, and the
        // requests that had run lost their replies).
        let discard_input = reading_over && !closed && !idle;
        // (Not a subscribed client: its wait below does not poll the check.)
        let watch_close = !want_input
            && !closed
            && !finishing
            && !left_unread
            && !idle
            && session.pubsub.is_none();
        if watch_close {
            match close_check.as_mut() {
                None => {
                    close_check = Some(Box::pin(tokio::time::sleep(CLOSE_CHECK)));
                }
                Some(check) if check.is_elapsed() => {
                    check.as_mut().reset(Instant::now() + CLOSE_CHECK);
                }
                Some(_) => {}
            }
        }
        let mut pubsub_event = None;
        let readable = if stopping && idle {
            // Stopping: answer what the client sends until reading ends,
            // and leave once it has been quiet until then.
            let end = reads_end.unwrap_or_else(Instant::now);
            match tokio::time::timeout_at(end, poll_fn(|cx| stream.poll_read_ready(cx))).await {
                Ok(Ok(())) => true,
                _ => return,
            }
        } else if session.pubsub.is_some() && !finishing {
            tokio::select! {
                biased;
                () = poll_fn(|cx| collect(Some(cx), &mut owed, &mut out, &mut window, &pool)), if !owed.is_empty() => false,
                ready = poll_fn(|cx| stream.poll_write_ready(cx)), if unsent => {
                    if ready.is_err() {
                        return;
                    }
                    false
                }
                ready = poll_fn(|cx| stream.poll_read_ready(cx)), if want_input => {
                    if ready.is_err() {
                        return;
                    }
                    true
                }
                () = &mut stop, if !stopping => {
                    stopping = true;
                    reads_end = Some(Instant::now() + STOP_GRACE);
                    false
                }
                // Messages for a subscribed client, between whole replies.
                // Boxed: inline, this wait would be the largest state of
                // the session and make every idle session ~180 bytes larger.
                event = Box::pin(session.pubsub.as_mut().expect("subscribed").next_event()) => {
                    pubsub_event = Some(event);
                    false
                }
            }
        } else {
            // The common case, polled by hand: the socket's own readiness
            // slots instead of a readiness future per wait, and no select.
            let wake = poll_fn(|cx| {
                if !owed.is_empty()
                    && collect(Some(cx), &mut owed, &mut out, &mut window, &pool).is_ready()
                {
                    return Poll::Ready(Wake::Collected);
                }
                if unsent {
                    if let Poll::Ready(ready) = stream.poll_write_ready(cx) {
                        return Poll::Ready(ready.map_or(Wake::Gone, |()| Wake::Writable));
                    }
                }
                if want_input {
                    if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                        return Poll::Ready(ready.map_or(Wake::Gone, |()| Wake::Readable));
                    }
                }
                if discard_input {
                    if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                        return Poll::Ready(ready.map_or(Wake::Gone, |()| Wake::Discard));
                    }
                }
                if let Some(let_go) = let_go.as_mut() {
                    if let_go.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::LetGo);
                    }
                }
                // Finishing, a subscriber gets no more messages; its
                // unsubscriptions are still confirmed as they come.
                if let Some(pubsub) = session.pubsub.as_mut() {
                    let _ = pubsub.poll_discard(cx);
                }
                if let Some(check) = close_check.as_mut().filter(|_| watch_close) {
                    if check.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::CloseCheck);
                    }
                }
                if !stopping && (!stop_registered || shutdown_seen.has_changed().unwrap_or(true)) {
                    stop_registered = true;
                    if stop.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::Stopping);
                    }
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Gone => return,
                Wake::LetGo => {
                    // Only a session waiting on its backends, not one
                    // writing to a client that half-closed and reads.
                    let waiting = owed
                        .front()
                        .is_some_and(|owed| owed.arrived.elapsed() >= LET_GO_AFTER);
                    if waiting && !unsent {
                        tracing::debug!(
                            client = session.id,
                            "out of descriptors or at max clients: letting go of a client that closed"
                        );
                        return;
                    }
                    let_go = Some(Box::pin(descriptors::descriptors_short().notified()));
                    false
                }
                Wake::CloseCheck => {
                    // Not let go out of descriptors: what it sent and the
                    // proxy has not read would be lost, and Redis would
                    // run it.
                    if stream.peer_closed() {
                        left_unread = true;
                        abandon(&owed);
                    }
                    false
                }
                Wake::Stopping => {
                    stopping = true;
                    reads_end = Some(Instant::now() + STOP_GRACE);
                    false
                }
                Wake::Readable => true,
                Wake::Discard => {
                    if let Some(Ok(0) | Err(_)) =
                        read_now(&mut stream, &mut BytesMut::with_capacity(READ_CHUNK)).await
                    {
                        closed = true;
                        abandon(&owed);
                    }
                    false
                }
                Wake::Collected | Wake::Writable => false,
            }
        };
        if let Some(event) = pubsub_event {
            match pubsub::deliver(event, &mut out, session.proto, &pool, session.id) {
                Flow::Go => {}
                Flow::Finish => finishing = true,
                Flow::Close => return,
            }
        }
        if readable {
            let chunk = if read_ahead.is_some() || loan_room > 0 {
                4 * READ_CHUNK
            } else if busy || !input.is_empty() {
                READ_CHUNK
            } else {
                SMALL_READ
            };
            // Reserving on an empty buffer also takes back the room of the
            // requests already split off, once they are gone.
            if input.is_empty() || input.capacity() - input.len() < chunk / 4 {
                input.reserve(chunk);
                big_input |= chunk == READ_CHUNK;
            }
            let room = input.capacity() - input.len();
            // Reading ahead of a shut window, never past the share: the
            // buffer's spare room may be larger (a reserve doubles it). A
            // window that admits, or a request not whole yet, reads on.
            let share = read_ahead
                .as_ref()
                .map_or(0, |share| share.held().saturating_sub(input.len()))
                .max(loan_room);
            let read = if !may_go_on && share > 0 {
                read_now(&mut stream, &mut (&mut input).limit(share)).await
            } else {
                read_now(&mut stream, &mut input).await
            };
            match read {
                Some(Ok(0)) | Some(Err(_)) => {
                    closed = true;
                    abandon(&owed);
                    let_go = Some(Box::pin(descriptors::descriptors_short().notified()));
                }
                Some(Ok(n)) => {
                    stats.commands.count_input(n);
                    busy = n >= SMALL_READ || n == room;
                    session.head_wait.read(input.len());
                }
                None => {}
            }
            if input.len() > GROWN_INPUT || read_ahead.is_some() {
                grown_input.grew_to(input.capacity());
            }
        }
    }
}

/// Says, once per loan, that a client writing a whole pipeline before it
/// reads is no longer read: it waits in its write until it reads, which
/// such a client never does (Redis would buffer its replies). Without this
/// line a hung bulk load left nothing to find in the log (review: a
/// 200 MB redis-py pipeline).
fn tell_loan_refused(refusal: Refusal, client: u64, held: usize) {
    let (why, until) = match refusal {
        Refusal::ShareSpent => ("its share of the pipeline loan is spent", "it reads"),
        Refusal::BudgetSpent => (
            "other clients hold the rest of the pipeline loan budget",
            "it reads or they give some back",
        ),
    };
    tracing::warn!(
        client,
        held_bytes = held,
        "a client sends requests without reading its replies, and {why}: it is not read until {until} (a pipeline written whole before reading must stay under {} MB)",
        pipeline_loan::CLIENT_SHARE >> 20
    );
}

/// Reads and drops what the client sends until it closes.
async fn discard_until_closed<S: Io>(stream: &mut S) {
    let mut scrap = BytesMut::with_capacity(SMALL_READ);
    loop {
        scrap.clear();
        match poll_fn(|cx| poll_read_buf(stream, cx, &mut scrap)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Why a session waiting for work woke up.
enum Wake {
    /// Replies at the head of the queue were moved to the output.
    Collected,
    Writable,
    Readable,
    /// The proxy is stopping.
    Stopping,
    /// Input to drop: reading has ended for a stop.
    Discard,
    /// The socket failed.
    Gone,
    /// The client closed its connection, replies are owed, and the proxy
    /// is out of file descriptors: the session ends.
    LetGo,
    /// Time to ask whether a client that is not read closed.
    CloseCheck,
}

/// True when the next request may be dispatched now: the window has room,
/// and it would not run beside a blocked command or ahead of the replies a
/// held request waits for. Whether it would overtake requests sent under
/// another protocol or routing table is checked per request, against the
/// table it goes by (`owed_epoch` in [`serve`]).
fn may_dispatch(
    session: &mut Session,
    window: &Window,
    owed: &VecDeque<Owed>,
    out: &OutBuf,
    held: bool,
) -> bool {
    if owed.is_empty() {
        session.set_blocked(false);
        session.settling = false;
        session.park_dedicated();
    } else if session.blocked || held {
        return false;
    }
    window.admits(owed.len(), out.len())
}

/// Moves the replies at the head of `owed` that are complete to `out`, in
/// order; ready when at least one moved.
fn collect(
    mut cx: Option<&mut Context<'_>>,
    owed: &mut VecDeque<Owed>,
    out: &mut OutBuf,
    window: &mut Window,
    pool: &Pool,
) -> Poll<()> {
    let mut moved = false;
    let mut now = None;
    while let Some(front) = owed.front_mut() {
        let Poll::Ready(len) = front.reply.poll_into(cx.as_deref_mut(), out, pool) else {
            break;
        };
        window.observe(len);
        window.answered(front.request_len);
        if let Some(cmd) = front.cmd {
            let now = *now.get_or_insert_with(Instant::now);
            pool.stats.commands.record(cmd, now - front.arrived);
        }
        owed.pop_front();
        moved = true;
    }
    if moved {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

/// Completes once the proxy is stopping; never, if the signal's sender is
/// gone without saying so.
async fn stop_signal(mut shutdown: watch::Receiver<bool>) {
    if shutdown.wait_for(|&stop| stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Reads what has arrived, without waiting: `None` when nothing has (the
/// readiness was stale). Unlike `try_read_buf`, the `AsyncRead` path takes a
/// short read as proof that the socket is drained, which saves the read
/// that would only return `WouldBlock` before the next wait.
async fn read_now<S: Io, B: BufMut>(
    stream: &mut S,
    input: &mut B,
) -> Option<std::io::Result<usize>> {
    poll_fn(|cx| match poll_read_buf(stream, cx, input) {
        Poll::Ready(read) => Poll::Ready(Some(read)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

fn write_protocol_error(e: &ProtocolError, out: &mut OutBuf, stats: &PoolStats) {
    PoolStats::bump(&stats.protocol_errors);
    out.encode_with(|buf| encode_error(&format!("ERR Protocol error: {e}"), buf));
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
