//! Bob Jenkins' lookup3 `hashlittle` with initial value 13, as twemproxy's
//! `hash_jenkins` (bytes read unsigned, little-endian).

const INITVAL: u32 = 13;

/// lookup3's `mix`: reversibly mixes three words.
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c) ^ c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c) ^ c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// lookup3's `final`: the last avalanche into `c`.
fn finish(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c.wrapping_sub(b.rotate_left(24))
}

/// Up to four bytes as a little-endian word, missing bytes zero.
fn word(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .rev()
        .fold(0, |w, &byte| (w << 8) | u32::from(byte))
}

/// lookup3 `hashlittle(key, len, 13)`. The C code's aligned fast paths give
/// the same value as this byte-wise form on a little-endian machine.
pub fn hash(key: &[u8]) -> u32 {
    // Lengths past u32 wrap, as the C code's `(uint32_t)length` cast does.
    let seed = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(INITVAL);
    let (mut a, mut b, mut c) = (seed, seed, seed);
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return c;
    }
    let part = |from: usize| word(&rest[from.min(rest.len())..(from + 4).min(rest.len())]);
    a = a.wrapping_add(part(0));
    b = b.wrapping_add(part(4));
    c = c.wrapping_add(part(8));
    finish(a, b, c)
}

#[cfg(test)]
mod tests {
    use crate::hash::tests::assert_golden;
    use crate::hash::HashKind;

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn matches_nutcracker() {
        assert_golden(
            HashKind::Jenkins,
            &[
                0x00000000, 0xe0a38690, 0xc1b5695b, 0x8f415600, 0xd512151a, 0x5cff335b, 0x99f84f99,
                0x779604bb, 0x153343fb, 0x06d11b2b, 0x34d405a1, 0x3568cfe1, 0xb16fde48, 0xe1964da8,
                0x074533dd, 0x3015dd51, 0x663e60ec, 0x55ffff00, 0xade1be13, 0x9d4a7ed9, 0xfb8b49e3,
                0xb621e85f, 0x0b7c2bd6, 0x41abac58, 0xe2a2404e, 0xbae5cb60, 0x75e837fa, 0x92bafee2,
                0x9702be96, 0x1ea0712b, 0x0dd7b2a3, 0x9fa75d46, 0x722588c8, 0x69eece94, 0xeadaa5a1,
                0x75bb7bd0, 0x5827e94c,
            ],
        );
    }
}
