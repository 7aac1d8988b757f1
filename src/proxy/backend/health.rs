//! Failure accounting for one backend, with twemproxy's ejection rules:
//! `server_failure_limit` consecutive failures make a backend failing; with
//! `auto_eject_hosts` the pool then routes around it for
//! `server_retry_timeout`, after which it is tried again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Consecutive failures and the ejection deadline of one backend.
#[derive(Debug)]
pub struct Health {
    failure_limit: u32,
    retry_timeout: Duration,
    consecutive_failures: AtomicU32,
    // A short sync lock: read and written without awaiting.
    ejected_until: Mutex<Option<Instant>>,
}

impl Health {
    pub fn new(failure_limit: u32, retry_timeout: Duration) -> Health {
        Health {
            failure_limit: failure_limit.max(1),
            retry_timeout,
            consecutive_failures: AtomicU32::new(0),
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
            return true;
        }
        false
    }

    /// When the ejection ends, if the backend is ejected now.
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
    async fn success_resets_the_streak() {
        let h = Health::new(2, Duration::from_millis(500));
        assert!(!h.record_failure());
        h.record_success();
        assert!(!h.record_failure());
        assert!(h.ejected_until().is_none());
    }
}
