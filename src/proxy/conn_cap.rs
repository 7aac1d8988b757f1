//! A cap on the backend connections a pool's clients open for themselves
//! (dedicated connections for blocking commands and transactions, and
//! subscriber connections): past it a client gets an error instead of
//! the proxy opening connections without bound, which would fill the
//! servers' `maxclients` for everyone.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// How many connections are held under a cap, and the cap.
#[derive(Debug)]
pub struct ConnCap {
    max: u32,
    held: Arc<AtomicU32>,
}

impl ConnCap {
    pub fn new(max: u32) -> ConnCap {
        ConnCap {
            max,
            held: Arc::new(AtomicU32::new(0)),
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// The connections held now.
    pub fn in_use(&self) -> u32 {
        self.held.load(Ordering::Relaxed)
    }

    /// Three quarters or more of the places are held: connections kept
    /// only for reuse should go.
    pub fn under_pressure(&self) -> bool {
        u64::from(self.in_use()) * 4 >= u64::from(self.max) * 3
    }

    /// `n` places at once, or none when fewer than `n` are free (a client
    /// needing several connections gets all or nothing).
    pub fn take(&self, n: u32) -> Option<Vec<CapSlot>> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|&after| after <= self.max)
            })
            .ok()?;
        Some((0..n).map(|_| CapSlot(self.held.clone())).collect())
    }

    /// A place past the cap if need be: for a connection that replaces or
    /// follows one the client was already given (a routing change moving
    /// its subscriptions), which it must not lose. Still counted.
    pub fn take_anyway(&self) -> CapSlot {
        self.held.fetch_add(1, Ordering::AcqRel);
        CapSlot(self.held.clone())
    }
}

/// One connection's place under the cap, given back when dropped.
#[derive(Debug)]
pub struct CapSlot(Arc<AtomicU32>);

impl Drop for CapSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_all_or_nothing_and_come_back_when_dropped() {
        let cap = ConnCap::new(3);
        let two = cap.take(2).expect("room for two");
        assert!(cap.take(2).is_none(), "only one is left");
        assert_eq!(cap.in_use(), 2);
        let one = cap.take(1).expect("the last one");
        let extra = cap.take_anyway();
        assert_eq!(cap.in_use(), 4);
        drop((two, one, extra));
        assert_eq!(cap.in_use(), 0);
        assert!(ConnCap::new(0).take(1).is_none());
        assert_eq!(ConnCap::new(0).take(0).map(|s| s.len()), Some(0));
    }
}
