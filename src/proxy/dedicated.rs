//! Dedicated backend connections: one client's own connection to a shard's
//! master, for what cannot share a pipelined connection. A blocking command
//! (BLPOP, XREAD BLOCK, WAIT, ...) would hold up every other client queued
//! behind it; WATCH and MULTI leave state on the connection that runs them.
//!
//! A session holds at most one, and only while it needs it: once its
//! blocking command is answered and no transaction lives on it, the
//! session parks it with the pool, so clients that ran a BLPOP once and
//! then sit idle hold no backend connection. The next blocking command of
//! any client for the same server and protocol takes a parked one instead
//! of connecting again. Dropping a held connection closes it at once, which
//! also frees a command still blocked on it.
//!
//! The pool caps how many exist at once (`max_dedicated_connections`),
//! held and parked together; a parked one is closed to make room for a
//! client that needs a connection elsewhere, and after [`PARKED_FOR`].

use crate::command::Command;
use crate::protocol::{encode_request, Proto};
use crate::proxy::backend::{Backend, PrivateConn, ReplyReceiver};
use crate::proxy::conn_cap::{CapSlot, ConnCap};
use crate::proxy::router::ShardName;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a parked connection waits for a client before it is closed.
const PARKED_FOR: Duration = Duration::from_secs(30);

/// How many dedicated connections a pool's clients hold, the cap, and
/// the connections parked for reuse.
pub struct DedicatedLimit {
    cap: ConnCap,
    /// A short lock, taken only by blocking commands and transactions
    /// opening or parking a connection, and by the reaper.
    parking: Arc<Mutex<Parking>>,
}

/// The parked connections, oldest first.
#[derive(Default)]
struct Parking {
    conns: VecDeque<Parked>,
    /// A task closes those parked for [`PARKED_FOR`] while any are.
    reaper: bool,
}

/// A working connection no client holds, ready for the next.
struct Parked {
    link: Link,
    since: Instant,
}

/// The connection itself, to one backend.
struct Link {
    backend: Arc<Backend>,
    conn: PrivateConn,
}

impl Link {
    fn serves(&self, backend: &Arc<Backend>, proto: Proto) -> bool {
        self.backend.same_server(backend) && self.conn.proto == proto && !self.conn.is_broken()
    }
}

impl DedicatedLimit {
    pub fn new(max: u32) -> DedicatedLimit {
        DedicatedLimit {
            cap: ConnCap::new(max),
            parking: Arc::default(),
        }
    }

    /// The connections clients hold now (what the cap is about).
    pub fn in_use(&self) -> u32 {
        self.cap.in_use()
    }

    /// The connections parked for reuse.
    pub fn parked(&self) -> u32 {
        let parking = self.parking.lock().expect("parked connections lock");
        let working = parking.conns.iter().filter(|p| !p.link.conn.is_broken());
        working.count() as u32
    }

    /// A dedicated connection to `backend`: a parked one if one serves,
    /// else a new one, if the cap allows.
    ///
    /// # Errors
    /// The error reply text (without '-') when every allowed connection is
    /// held by other clients.
    pub fn open(
        &self,
        shard: ShardName,
        backend: &Arc<Backend>,
        proto: Proto,
    ) -> Result<Dedicated, String> {
        let Some(slot) = self.cap.take(1).and_then(|mut one| one.pop()) else {
            if self.cap.max() == 0 {
                return Err(
                    "ERR shardproxy: blocking commands and transactions are turned off \
                     on this proxy (max_dedicated_connections is 0)"
                        .to_string(),
                );
            }
            return Err(format!(
                "ERR shardproxy: all {} dedicated backend connections (max_dedicated_connections) \
                 are held by blocking commands and transactions; try again later",
                self.cap.max()
            ));
        };
        let mut parking = self.parking.lock().expect("parked connections lock");
        let parked = &mut parking.conns;
        parked.retain(|p| !p.link.conn.is_broken());
        // The newest that serves: the most likely to still be open.
        let link = match parked.iter().rposition(|p| p.link.serves(backend, proto)) {
            Some(at) => parked.remove(at).expect("found").link,
            None => {
                // Room for the new one: held and parked stay within the cap.
                let room = self.cap.max().saturating_sub(self.in_use()) as usize;
                while parked.len() > room {
                    parked.pop_front();
                }
                drop(parking);
                Link {
                    backend: backend.clone(),
                    conn: backend.open_private(proto),
                }
            }
        };
        Ok(Dedicated { shard, link, slot })
    }

    /// Takes back a connection its client no longer needs: nothing may be
    /// in flight on it and no state left on it. A broken one is closed.
    pub fn park(&self, conn: Dedicated) {
        let Dedicated { link, slot, .. } = conn;
        drop(slot);
        if link.conn.is_broken() {
            return;
        }
        let mut parking = self.parking.lock().expect("parked connections lock");
        parking.conns.push_back(Parked {
            link,
            since: Instant::now(),
        });
        if !parking.reaper {
            parking.reaper = true;
            tokio::spawn(reap(self.parking.clone()));
        }
    }
}

/// Closes parked connections once they have waited [`PARKED_FOR`] (and
/// those that broke meanwhile), until none is left.
async fn reap(parking: Arc<Mutex<Parking>>) {
    loop {
        let oldest = {
            let mut parking = parking.lock().expect("parked connections lock");
            let now = Instant::now();
            parking
                .conns
                .retain(|p| !p.link.conn.is_broken() && now.duration_since(p.since) < PARKED_FOR);
            match parking.conns.front() {
                Some(p) => p.since,
                None => {
                    parking.reaper = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(oldest + PARKED_FOR).await;
    }
}

/// One client's connection to one backend.
pub struct Dedicated {
    /// The shard the connection was opened for, named in errors.
    pub shard: ShardName,
    link: Link,
    slot: CapSlot,
}

impl Dedicated {
    /// True when this connection can serve a request for `backend` in
    /// `proto`: same server, same protocol, still working.
    pub fn serves(&self, backend: &Arc<Backend>, proto: Proto) -> bool {
        self.link.serves(backend, proto)
    }

    /// True when this connection reaches `backend`'s server the way its
    /// connections do now (database, login, TLS; see
    /// [`Backend::same_server`]).
    pub fn reaches(&self, backend: &Backend) -> bool {
        self.link.backend.same_server(backend)
    }

    pub fn is_broken(&self) -> bool {
        self.link.conn.is_broken()
    }

    /// The pool's per-request timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.link.backend.timeout()
    }

    pub fn send(&self, request: Bytes, deadline: Option<Instant>) -> ReplyReceiver {
        self.link.conn.send(request, deadline)
    }

    /// Sends a blocking command on keys in the slots `span` (see
    /// [`PrivateConn::send_blocking`]).
    pub fn send_blocking(
        &self,
        request: Bytes,
        deadline: Option<Instant>,
        span: Option<(u32, u32)>,
    ) -> ReplyReceiver {
        self.link.conn.send_blocking(request, deadline, span)
    }

    /// The client switched protocol (HELLO) while a transaction lives on
    /// this connection: the connection switches too, so the transaction's
    /// replies come in the client's new protocol. HELLO's own reply is the
    /// proxy's, already given; the backend's is dropped.
    pub fn switch_proto(&mut self, proto: Proto) {
        if self.link.conn.proto == proto {
            return;
        }
        let mut hello = BytesMut::new();
        let version: &[u8] = match proto {
            Proto::Resp2 => b"2",
            Proto::Resp3 => b"3",
        };
        encode_request(&[&b"HELLO"[..], version], &mut hello);
        let deadline = self.timeout().map(|t| Instant::now() + t);
        drop(self.send(hello.freeze(), deadline));
        self.link.conn.proto = proto;
    }
}

/// How long a blocking command may wait by its own arguments: `None` for
/// "forever" (a timeout of 0) and for arguments Redis will reject anyway.
/// BLPOP & co. take seconds (a decimal) last, BLMPOP and BZMPOP first;
/// XREAD and XREADGROUP take milliseconds after BLOCK, WAIT last.
pub fn block_timeout(cmd: &Command, args: &[Bytes]) -> Option<Duration> {
    let seconds = |arg: Option<&Bytes>| -> Option<f64> {
        std::str::from_utf8(arg?).ok()?.trim().parse::<f64>().ok()
    };
    let millis = |arg: Option<&Bytes>| -> Option<f64> { Some(seconds(arg)? / 1000.0) };
    let secs = match cmd.name {
        "blmpop" | "bzmpop" => seconds(args.get(1)),
        "wait" => millis(args.last()),
        "xread" | "xreadgroup" => millis(cmd.stream_block_arg(args)),
        _ => seconds(args.last()),
    }?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    /// A fake Redis that answers `+PONG` to each request it reads; the
    /// returned receiver fires when the proxy's connection closes.
    async fn pong_server() -> (String, tokio::sync::oneshot::Receiver<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (closed, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {
                socket.write_all(b"+PONG\r\n").await.unwrap();
            }
            let _ = closed.send(());
        });
        (addr, closed_rx)
    }

    fn ping() -> Bytes {
        let mut out = BytesMut::new();
        encode_request(&[&b"PING"[..]], &mut out);
        out.freeze()
    }

    /// The reaper closes a parked connection once it waited `PARKED_FOR`,
    /// not before, and starts again for connections parked later.
    #[tokio::test(start_paused = true)]
    async fn parked_connections_close_after_waiting_their_time() {
        let registry =
            crate::proxy::backend::BackendRegistry::new(crate::proxy::backend::BackendSettings {
                timeout: Some(Duration::from_secs(1)),
                auth: None,
                user: None,
                db: 0,
                connections: 1,
                preconnect: false,
                tcpkeepalive: false,
                failure_limit: 3,
                retry_timeout: Duration::from_secs(1),
                tls: None,
            });
        let limit = DedicatedLimit::new(2);
        for round in 0..2 {
            let (addr, mut closed) = pong_server().await;
            let backend = registry.get(&addr);
            let conn = limit.open("s", &backend, Proto::Resp2).unwrap();
            let reply = conn.send(ping(), None).await.unwrap().unwrap();
            assert_eq!(&reply[..], b"+PONG\r\n");
            limit.park(conn);
            assert_eq!((limit.parked(), limit.in_use()), (1, 0), "round {round}");

            tokio::time::sleep(PARKED_FOR - Duration::from_secs(1)).await;
            assert_eq!(limit.parked(), 1, "round {round}: closed early");
            assert!(closed.try_recv().is_err(), "round {round}: closed early");

            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(limit.parked(), 0, "round {round}: still parked");
            // The backend sees the connection close.
            tokio::time::timeout(Duration::from_secs(5), &mut closed)
                .await
                .expect("the backend connection closes")
                .unwrap();
        }
    }

    #[test]
    fn block_timeouts_by_command() {
        let t = |name: &str, words: &[&str]| {
            let cmd = crate::command::lookup(name.as_bytes()).expect("a command");
            block_timeout(cmd, &args(words))
        };
        assert_eq!(
            t("blpop", &["BLPOP", "a", "b", "1.5"]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(t("blpop", &["BLPOP", "a", "0"]), None);
        assert_eq!(
            t("blmpop", &["BLMPOP", "2", "1", "a", "LEFT"]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            t("xread", &["XREAD", "BLOCK", "250", "STREAMS", "s", "$"]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            t("wait", &["WAIT", "1", "100"]),
            Some(Duration::from_millis(100))
        );
        // A group and a consumer named "block" are not the option.
        assert_eq!(
            t(
                "xreadgroup",
                &[
                    "XREADGROUP",
                    "GROUP",
                    "block",
                    "5",
                    "BLOCK",
                    "4000",
                    "STREAMS",
                    "s",
                    ">"
                ]
            ),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            t(
                "xreadgroup",
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "block",
                    "BLOCK",
                    "250",
                    "STREAMS",
                    "s",
                    ">"
                ]
            ),
            Some(Duration::from_millis(250))
        );
        assert_eq!(t("blpop", &["BLPOP", "a", "soon"]), None);
        assert_eq!(t("blpop", &["BLPOP", "a", "-1"]), None);
    }
}
