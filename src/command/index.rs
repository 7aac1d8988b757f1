//! A hash index over the top-level command table, looked up once per
//! request: the name is lowercased into a stack buffer, hashed, and found
//! with one or two probes, where a binary search over the 240 names
//! compared through a lowercasing iterator eight times (about 500
//! instructions per request, measured with callgrind).

use super::Command;
use std::sync::OnceLock;

/// Slots of the open-addressing table: a power of two, over twice the
/// number of commands, so probes stay short.
const SLOTS: usize = 1024;
/// No command name is longer (the longest, `georadiusbymember_ro`, has 20).
const MAX_NAME: usize = 32;
const EMPTY: u16 = u16::MAX;

pub(super) struct Index {
    table: &'static [Command],
    slots: Box<[u16; SLOTS]>,
}

impl Index {
    fn build(table: &'static [Command]) -> Index {
        assert!(table.len() < SLOTS / 2, "the index needs free slots");
        let mut slots = Box::new([EMPTY; SLOTS]);
        for (i, command) in table.iter().enumerate() {
            let name = command.name.as_bytes();
            assert!(name.len() <= MAX_NAME, "command name too long to index");
            let mut slot = hash(name) & (SLOTS - 1);
            while slots[slot] != EMPTY {
                slot = (slot + 1) & (SLOTS - 1);
            }
            slots[slot] = u16::try_from(i).expect("fewer than 65535 commands");
        }
        Index { table, slots }
    }

    /// The entry named `name`, in any letter case.
    pub(super) fn find(&self, name: &[u8]) -> Option<&'static Command> {
        if name.len() > MAX_NAME {
            return None;
        }
        let mut lower = [0u8; MAX_NAME];
        let lower = &mut lower[..name.len()];
        for (to, from) in lower.iter_mut().zip(name) {
            *to = from.to_ascii_lowercase();
        }
        let mut slot = hash(lower) & (SLOTS - 1);
        loop {
            let entry = self.slots[slot];
            if entry == EMPTY {
                return None;
            }
            let command = &self.table[usize::from(entry)];
            if command.name.as_bytes() == &lower[..] {
                return Some(command);
            }
            slot = (slot + 1) & (SLOTS - 1);
        }
    }
}

/// FNV-1a: short names, few instructions, spread enough for 240 keys.
fn hash(name: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &b in name {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h as usize
}

/// The index of the top-level table, built on first use.
pub(super) fn top_level() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| Index::build(super::table::COMMANDS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_found_in_any_case_and_nothing_else() {
        let index = top_level();
        for command in super::super::table::COMMANDS {
            let name = command.name;
            assert!(std::ptr::eq(index.find(name.as_bytes()).unwrap(), command));
            let upper = name.to_ascii_uppercase();
            assert!(std::ptr::eq(index.find(upper.as_bytes()).unwrap(), command));
        }
        assert!(index.find(b"nosuchcommand").is_none());
        assert!(index.find(b"").is_none());
        assert!(index.find(b"ge").is_none());
        assert!(index.find(&[b'a'; 40]).is_none());
    }
}
