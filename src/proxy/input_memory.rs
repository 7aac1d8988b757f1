//! What client input buffers hold beyond a read's worth, counted for the
//! whole process: read-ahead shares (granted from a fixed budget) and
//! buffers grown for a large request or a read ahead. INFO and the metrics
//! report both, so that a large RSS can be told apart from what sessions
//! still hold: after a burst, glibc keeps freed memory for reuse.

use std::sync::atomic::{AtomicUsize, Ordering};

/// What a session whose window waits on a stalled shard may hold in its
/// input: it reads this far ahead instead of stopping at one read, so the
/// requests a client pipelined behind the stalled one are timed from when
/// they arrived, not from when a later read took them (100,000 pipelined
/// GETs to a stopped backend, 500 ms timeout: the last error after 12 s,
/// one socket's worth per timeout).
const READ_AHEAD: usize = 1024 * 1024;
/// All sessions' read-ahead at once: a fleet of deep pipelines behind a
/// stopped backend holds at most this much more (64 sessions' worth).
const READ_AHEAD_BUDGET: usize = 64 * 1024 * 1024;
static READ_AHEAD_HELD: AtomicUsize = AtomicUsize::new(0);

/// A session's share of [`READ_AHEAD_BUDGET`]: at most [`READ_AHEAD`],
/// cut down to what its input holds once it is blocked (a blocked session
/// reads nothing more, and would otherwise keep a whole share: 64 such
/// sessions left none for the next client behind a stall), given back
/// when dropped.
pub struct ReadAhead {
    held: usize,
    budget: &'static AtomicUsize,
}

impl ReadAhead {
    /// A whole share, if the budget has one left.
    pub fn grant() -> Option<ReadAhead> {
        ReadAhead::grant_from(&READ_AHEAD_HELD)
    }

    fn grant_from(budget: &'static AtomicUsize) -> Option<ReadAhead> {
        // Built only once taken: a share dropped gives its bytes back.
        take(budget, READ_AHEAD, READ_AHEAD_BUDGET).then(|| ReadAhead {
            held: READ_AHEAD,
            budget,
        })
    }

    /// How far the input may grow.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Reading ahead again: back to a whole share, if the budget has it.
    pub fn regrow(&mut self) {
        if self.held < READ_AHEAD && take(self.budget, READ_AHEAD - self.held, READ_AHEAD_BUDGET) {
            self.held = READ_AHEAD;
        }
    }

    /// Keeps only `bytes` of the share: what the input holds, in a buffer
    /// of its own size.
    pub fn fit(&mut self, bytes: usize) {
        if bytes < self.held {
            self.budget.fetch_sub(self.held - bytes, Ordering::AcqRel);
            self.held = bytes;
        }
    }
}

/// Takes `bytes` of a budget of `cap` bytes whose `held` part is taken,
/// if it has them.
pub(crate) fn take(held: &AtomicUsize, bytes: usize, cap: usize) -> bool {
    held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
        (taken + bytes <= cap).then_some(taken + bytes)
    })
    .is_ok()
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// Bytes of the read-ahead budget sessions hold now.
pub fn read_ahead_held() -> usize {
    READ_AHEAD_HELD.load(Ordering::Relaxed)
}

static GROWN_INPUTS: AtomicUsize = AtomicUsize::new(0);

/// Whether a session's input buffer is one grown past its usual size (for
/// a large request, or read ahead), counted in [`grown_inputs`] while it
/// is. Set on every read, it touches the shared count only on a change.
/// It also keeps the largest room the buffer was seen with while grown:
/// once requests are cut off its front, the buffer's own capacity counts
/// only what lies past them, not the allocation they keep alive.
#[derive(Default)]
pub struct GrownInput {
    grown: bool,
    allocation: usize,
}

impl GrownInput {
    pub fn get(&self) -> bool {
        self.grown
    }

    #[inline]
    pub fn set(&mut self, grown: bool) {
        if grown != self.grown {
            self.grown = grown;
            if grown {
                GROWN_INPUTS.fetch_add(1, Ordering::Relaxed);
            } else {
                self.allocation = 0;
                GROWN_INPUTS.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Marks the buffer grown, with `capacity` bytes of room from its
    /// start as it is now.
    #[inline]
    pub fn grew_to(&mut self, capacity: usize) {
        self.set(true);
        self.allocation = self.allocation.max(capacity);
    }

    /// True when `held` bytes are a small part of the grown allocation:
    /// what is left once a large request was cut off, worth moving out so
    /// that the allocation can go. A request still growing fills at least
    /// half of its buffer (the buffer doubles), so it is never moved, and
    /// nothing is moved twice: the move ends the grown state.
    pub fn mostly_spent(&self, held: usize) -> bool {
        self.grown && held <= self.allocation / 4
    }
}

impl Drop for GrownInput {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Sessions holding a grown input buffer now.
pub fn grown_inputs() -> usize {
    GROWN_INPUTS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_shares_end_at_the_budget_and_come_back() {
        static BUDGET: AtomicUsize = AtomicUsize::new(0);
        let grant = || ReadAhead::grant_from(&BUDGET);
        let shares: Vec<ReadAhead> = std::iter::from_fn(grant).take(100).collect();
        assert_eq!(shares.len(), READ_AHEAD_BUDGET / READ_AHEAD);
        assert!(grant().is_none());
        drop(shares);
        let mut share = grant().expect("given back");
        // Cut down, the rest goes back to the budget, and comes back.
        share.fit(1000);
        assert_eq!(share.held(), 1000);
        let others: Vec<ReadAhead> = std::iter::from_fn(grant).take(100).collect();
        assert_eq!(others.len(), READ_AHEAD_BUDGET / READ_AHEAD - 1);
        share.regrow();
        assert_eq!(share.held(), READ_AHEAD);
        assert!(grant().is_none());
        drop(others);
        drop(share);
        assert_eq!(BUDGET.load(Ordering::Relaxed), 0);
    }
}
