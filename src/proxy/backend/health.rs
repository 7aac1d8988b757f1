//! Failure accounting for one backend, with twemproxy's ejection rules:
//! `server_failure_limit` consecutive failures make a backend failing; with
//! `auto_eject_hosts` the pool then routes around it for
//! `server_retry_timeout`, after which it is tried again.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Woken when a backend reaches its failure limit, so that the pools that
/// route around failing servers rebuild their routing at once.
static EJECTION_DUE: Notify = Notify::const_new();

/// Resolves the next time a backend reaches its failure limit.
pub fn ejection_due() -> &'static Notify {
    &EJECTION_DUE
}

/// Consecutive failures and the ejection deadline of one backend.
#[derive(Debug)]
pub struct Health {
    failure_limit: u32,
    retry_timeout: Duration,
    consecutive_failures: AtomicU32,
    /// Moves on each connection-level failure that counted, so that the
    /// other connections that saw the same outage (one per worker thread
    /// and per `server_connections`) do not count it again.
    outages: AtomicU64,
    // A short sync lock: read and written without awaiting.
    ejected_until: Mutex<Option<Instant>>,
}

impl Health {
    pub fn new(failure_limit: u32, retry_timeout: Duration) -> Health {
        Health {
            failure_limit: failure_limit.max(1),
            retry_timeout,
            consecutive_failures: AtomicU32::new(0),
            outages: AtomicU64::new(0),
            ejected_until: Mutex::new(None),
        }
    }

    /// A request got its reply: the failure streak ends.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connect, a connection or a request failed. Returns true when this
    /// failure reached the limit, i.e. the backend just became ejectable.
    pub fn record_failure(&self) -> bool {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.failure_limit {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            let mut until = self.ejected_until.lock().expect("health lock");
            *until = Some(Instant::now() + self.retry_timeout);
            EJECTION_DUE.notify_waiters();
            return true;
        }
        false
    }

    /// The outage mark a connection takes when it connects or starts to:
    /// see [`Self::record_connection_failure`].
    pub fn outage_mark(&self) -> u64 {
        self.outages.load(Ordering::Acquire)
    }

    /// A connection was lost, or could not be opened, since it took `mark`:
    /// one failure, unless another connection already counted this outage
    /// (a restarted Redis breaks every worker's connection at once, which
    /// must not eject it when one connection's loss would not). Returns
    /// what [`Self::record_failure`] returns, false when not counted.
    pub fn record_connection_failure(&self, mark: u64) -> bool {
        let first = self
            .outages
            .compare_exchange(mark, mark + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        first && self.record_failure()
    }

    /// When the ejection ends, if the backend is ejected now. Counted
    /// whatever the pool's `auto_eject_hosts`: what reports "ejected" asks
    /// [`crate::proxy::router::Router::ejected`], which knows it.
    pub fn ejected_until(&self) -> Option<Instant> {
        let mut until = self.ejected_until.lock().expect("health lock");
        match *until {
            Some(t) if t > Instant::now() => Some(t),
            Some(_) => {
                *until = None;
                None
            }
            None => None,
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ejected_after_limit_then_retried() {
        let h = Health::new(2, Duration::from_millis(500));
        assert!(!h.record_failure());
        assert!(h.ejected_until().is_none());
        assert!(h.record_failure());
        assert!(h.ejected_until().is_some());
        tokio::time::advance(Duration::from_millis(501)).await;
        assert!(h.ejected_until().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn one_outage_seen_by_many_connections_counts_once() {
        let h = Health::new(2, Duration::from_millis(500));
        // Three connections, all open before the outage.
        let marks = [h.outage_mark(), h.outage_mark(), h.outage_mark()];
        for mark in marks {
            assert!(!h.record_connection_failure(mark));
        }
        assert_eq!(h.consecutive_failures(), 1);
        assert!(h.ejected_until().is_none());
        // The next attempt of any of them, failing too, is a second failure.
        assert!(h.record_connection_failure(h.outage_mark()));
        assert!(h.ejected_until().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_streak() {
        let h = Health::new(2, Duration::from_millis(500));
        assert!(!h.record_failure());
        h.record_success();
        assert!(!h.record_failure());
        assert!(h.ejected_until().is_none());
    }
}
