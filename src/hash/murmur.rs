//! MurmurHash2 (32-bit, little-endian reads), as twemproxy's `hash_murmur`.

const M: u32 = 0x5bd1_e995;
const R: u32 = 24;

/// MurmurHash2 seeded with `0xdeadbeef * len`, as libmemcached does.
pub fn hash(key: &[u8]) -> u32 {
    // Lengths past u32 wrap, as the C code's `(uint32_t)length` casts do.
    let len = key.len() as u32;
    let mut h = 0xdead_beef_u32.wrapping_mul(len) ^ len;
    let mut blocks = key.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    use crate::hash::tests::assert_golden;
    use crate::hash::HashKind;

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn matches_nutcracker() {
        assert_golden(
            HashKind::Murmur,
            &[
                0x00000000, 0x4b41757c, 0xe3b54dfb, 0x7b0cc428, 0xef6a86af, 0x9a263eda, 0xc4e0338f,
                0x1ecb8583, 0x5e19153b, 0x4e57a911, 0x04ae7988, 0x75339e3a, 0x90556245, 0xdb530a9c,
                0x0693f8a9, 0x5822874f, 0x2a3f3dff, 0xd916e601, 0xadd6324f, 0x71425a38, 0xb805134a,
                0x2987d8bb, 0x28118552, 0xcd640864, 0x77c75591, 0x1e3c1db4, 0x37041cdc, 0xec06061f,
                0x409f9999, 0x915777ad, 0x5bf2f470, 0xd46988ad, 0x5f6954ac, 0xff8014e6, 0x78f73809,
                0x52d3743f, 0x19c9f68c,
            ],
        );
    }
}
