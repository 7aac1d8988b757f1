//! Dedicated backend connections: one client's own connection to a shard's
//! master, for what cannot share a pipelined connection. A blocking command
//! (BLPOP, XREAD BLOCK, WAIT, ...) would hold up every other client queued
//! behind it; WATCH and MULTI leave state on the connection that runs them.
//!
//! A session holds at most one, reuses it while it goes to the same server
//! in the same protocol, and drops it (closing it at once, which also frees
//! a command still blocked on it) when it needs another server or ends. The
//! pool caps how many exist at once (`max_dedicated_connections`).

use crate::protocol::Proto;
use crate::proxy::backend::{Backend, PrivateConn, ReplyReceiver};
use crate::proxy::router::ShardName;
use bytes::Bytes;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How many dedicated connections a pool's clients hold, and the cap.
pub struct DedicatedLimit {
    max: u32,
    in_use: Arc<AtomicU32>,
}

impl DedicatedLimit {
    pub fn new(max: u32) -> DedicatedLimit {
        DedicatedLimit {
            max,
            in_use: Arc::new(AtomicU32::new(0)),
        }
    }

    pub fn in_use(&self) -> u32 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Opens a dedicated connection to `backend`, if the cap allows.
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
        let taken = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(format!(
                "ERR shardproxy: all {} dedicated backend connections (max_dedicated_connections) \
                 are held by blocking commands and transactions; try again later",
                self.max
            ));
        }
        Ok(Dedicated {
            shard,
            backend: backend.clone(),
            conn: backend.open_private(proto),
            in_use: self.in_use.clone(),
        })
    }
}

/// One client's connection to one backend; gives its slot back when dropped.
pub struct Dedicated {
    /// The shard the connection was opened for, named in errors.
    pub shard: ShardName,
    backend: Arc<Backend>,
    conn: PrivateConn,
    in_use: Arc<AtomicU32>,
}

impl Dedicated {
    /// True when this connection can serve a request for `backend` in
    /// `proto`: same server, same protocol, still working.
    pub fn serves(&self, backend: &Arc<Backend>, proto: Proto) -> bool {
        Arc::ptr_eq(&self.backend, backend) && self.conn.proto == proto && !self.is_broken()
    }

    pub fn is_broken(&self) -> bool {
        self.conn.is_broken()
    }

    /// The pool's per-request timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.backend.timeout()
    }

    pub fn send(&self, request: Bytes, deadline: Option<Instant>) -> ReplyReceiver {
        self.conn.send(request, deadline)
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a blocking command may wait by its own arguments: `None` for
/// "forever" (a timeout of 0) and for arguments Redis will reject anyway.
/// BLPOP & co. take seconds (a decimal) last, BLMPOP and BZMPOP first;
/// XREAD and XREADGROUP take milliseconds after BLOCK, WAIT last.
pub fn block_timeout(name: &str, args: &[Bytes]) -> Option<Duration> {
    let seconds = |arg: Option<&Bytes>| -> Option<f64> {
        std::str::from_utf8(arg?).ok()?.trim().parse::<f64>().ok()
    };
    let millis = |arg: Option<&Bytes>| -> Option<f64> { Some(seconds(arg)? / 1000.0) };
    let secs = match name {
        "blmpop" | "bzmpop" => seconds(args.get(1)),
        "wait" => millis(args.last()),
        "xread" | "xreadgroup" => {
            let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"block"))?;
            millis(args.get(at + 1))
        }
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

    #[test]
    fn block_timeouts_by_command() {
        let t = |name: &str, words: &[&str]| block_timeout(name, &args(words));
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
        assert_eq!(t("blpop", &["BLPOP", "a", "soon"]), None);
        assert_eq!(t("blpop", &["BLPOP", "a", "-1"]), None);
    }
}
