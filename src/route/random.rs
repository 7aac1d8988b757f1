//! twemproxy's `random` distribution: every request goes to a uniformly
//! random node, whatever its key or weight.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    /// Per-thread xorshift state, seeded from std's per-thread random keys
    /// (never zero, which would be a fixed point).
    static STATE: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish() | 1);
}

/// A random index below `n` (`n > 0`), from a thread-local xorshift64*:
/// cheap and lock-free; routing needs spread, not cryptographic quality.
pub fn pick(n: usize) -> usize {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % n
    })
}
