//! Room to read on for a client that goes on sending while its window is
//! shut by replies it has not read.
//!
//! At `client_output_limit` the proxy stops reading a client until it
//! reads. A client that writes a whole pipeline before it reads a reply
//! (redis-py's pipeline does, and so does a bulk load over one connection)
//! is then stuck in its write for good, while the proxy waits for it to
//! read: Redis, which keeps reading, answers it in seconds. Such a client
//! has requests waiting in the socket the proxy no longer reads. Rather
//! than buffer their replies, the proxy reads the requests on, without
//! running them, in steps of [`STEP`] lent by one budget for the whole
//! process: the client's write completes, it reads its replies, and the
//! requests read run as its window opens again. A client that only reads
//! slowly costs what it already sent; one that never reads and never
//! stops sending takes half the budget (128 MB) at most ([`CLIENT_SHARE`])
//! and then waits as before, as do clients whose pipelines need more than
//! the budget together. The loan shrinks as the requests read are
//! dispatched.

use crate::proxy::input_memory::take;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What one step of a loan lets a session read.
pub const STEP: usize = 1024 * 1024;
/// All loans at once. What they hold in memory can reach twice this for a
/// moment: an input buffer grows by doubling.
const PIPELINE_LOAN_BUDGET: usize = 256 * 1024 * 1024;
static PIPELINE_LOANED: AtomicUsize = AtomicUsize::new(0);
/// One session's loan at most: a client that never reads and never stops
/// sending held the whole budget, and every other client's pipeline
/// written whole before reading waited until it left (review). 128 MB,
/// what one client could borrow before: a share of half the old budget
/// left a pipeline of 4,000,000 GETs (80 MB, nearly all of it on the loan:
/// their replies fill the window at once) stuck in its write (review).
pub const CLIENT_SHARE: usize = PIPELINE_LOAN_BUDGET / 2;

/// A session's loan, given back when dropped.
#[derive(Default)]
pub struct PipelineLoan {
    held: usize,
    /// The last refusal reported (logged) for this loan.
    told: Option<Refusal>,
}

/// Why a loan could not grow: the client then waits in its write until it
/// reads, which a client that writes its whole pipeline first never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The session holds its whole share ([`CLIENT_SHARE`]).
    ShareSpent,
    /// Other sessions hold the rest of the budget.
    BudgetSpent,
}

impl PipelineLoan {
    /// The bytes of input the session may hold beyond a read.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Borrows one step more, if the budget has it and the session's
    /// share allows.
    pub fn grow(&mut self) -> Result<(), Refusal> {
        if self.held + STEP > CLIENT_SHARE {
            return Err(Refusal::ShareSpent);
        }
        if !take(&PIPELINE_LOANED, STEP, PIPELINE_LOAN_BUDGET) {
            return Err(Refusal::BudgetSpent);
        }
        self.held += STEP;
        Ok(())
    }

    /// Whether `refusal` is news for this loan: a session stuck at its
    /// share is logged once, not at every wake-up.
    pub fn is_news(&mut self, refusal: Refusal) -> bool {
        self.told.replace(refusal) != Some(refusal)
    }

    /// Keeps only the steps `bytes` of input beyond a read need: what was
    /// read on is dispatched as the client reads, and an idle client left
    /// holding part of a request must not keep its whole peak loan.
    pub fn fit(&mut self, bytes: usize) {
        let needed = bytes.div_ceil(STEP) * STEP;
        if needed < self.held {
            PIPELINE_LOANED.fetch_sub(self.held - needed, Ordering::AcqRel);
            self.held = needed;
        }
    }
}

impl Drop for PipelineLoan {
    fn drop(&mut self) {
        PIPELINE_LOANED.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// Bytes lent to sessions now.
pub fn loaned() -> usize {
    PIPELINE_LOANED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loans_stay_within_the_budget_and_come_back() {
        let before = loaned();
        let mut loans: Vec<PipelineLoan> = (0..2).map(|_| PipelineLoan::default()).collect();
        for loan in &mut loans {
            while loan.grow().is_ok() {}
            assert_eq!(loan.grow(), Err(Refusal::ShareSpent));
            assert_eq!(loan.held(), CLIENT_SHARE, "one session's share");
        }
        assert!(loaned() <= PIPELINE_LOAN_BUDGET);
        let mut other = PipelineLoan::default();
        assert_eq!(
            other.grow(),
            Err(Refusal::BudgetSpent),
            "the budget is spent"
        );
        assert!(other.is_news(Refusal::BudgetSpent));
        assert!(!other.is_news(Refusal::BudgetSpent));
        assert!(other.is_news(Refusal::ShareSpent));
        loans[0].fit(STEP + 1);
        assert_eq!(loans[0].held(), 2 * STEP);
        assert!(
            other.grow().is_ok(),
            "what a loan gave back serves the next"
        );
        drop(loans);
        assert!(other.grow().is_ok(), "a loan given back serves the next");
        other.fit(0);
        assert_eq!(other.held(), 0);
        drop(other);
        assert_eq!(loaned(), before);
    }
}
