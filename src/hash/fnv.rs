//! The four Fowler–Noll–Vo hashes as twemproxy computes them. All read key
//! bytes as signed `char`, so bytes >= 0x80 are sign-extended before the
//! xor.

const FNV_64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_32_INIT: u32 = 2_166_136_261;
const FNV_32_PRIME: u32 = 16_777_619;

/// `fnv1_64`: 64-bit FNV-1, truncated to its low 32 bits.
pub fn fnv1_64(key: &[u8]) -> u32 {
    let hash = key.iter().fold(FNV_64_INIT, |hash, &byte| {
        hash.wrapping_mul(FNV_64_PRIME) ^ i64::from(byte as i8) as u64
    });
    hash as u32
}

/// `fnv1a_64`: FNV-1a with the 64-bit constants truncated to 32 bits and
/// computed in 32-bit arithmetic (twemproxy's quirk; not real FNV-1a 64).
pub fn fnv1a_64(key: &[u8]) -> u32 {
    key.iter().fold(FNV_64_INIT as u32, |hash, &byte| {
        (hash ^ super::signed(byte)).wrapping_mul(FNV_64_PRIME as u32)
    })
}

/// `fnv1_32`: 32-bit FNV-1.
pub fn fnv1_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV_32_INIT, |hash, &byte| {
        hash.wrapping_mul(FNV_32_PRIME) ^ super::signed(byte)
    })
}

/// `fnv1a_32`: 32-bit FNV-1a.
pub fn fnv1a_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV_32_INIT, |hash, &byte| {
        (hash ^ super::signed(byte)).wrapping_mul(FNV_32_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use crate::hash::tests::assert_golden;
    use crate::hash::HashKind;

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn fnv1_64_matches_nutcracker() {
        assert_golden(
            HashKind::Fnv1_64,
            &[
                0x00000000, 0x8601b7be, 0xb4eb37b8, 0x6bafadcb, 0xfb844f95, 0x61d33a4a, 0x6ba13533,
                0x6bad3880, 0xb1910e6f, 0x4da802d4, 0x3dd2185c, 0x0fc07f75, 0x79fe485f, 0x79fe4820,
                0xb4eb719e, 0x94a33c86, 0x37eb445f, 0xc22e242d, 0xe2bba15f, 0xb33d88c8, 0xda7a6075,
                0x3df1e6a2, 0x26323415, 0xcfab096f, 0x4b14fedf, 0x94acf853, 0xa1e9e0fe, 0x20693cb2,
                0x12d2291b, 0xfb1bebcb, 0xb071fbda, 0xd1af1db2, 0x4c8f3f4f, 0xe8973ebb, 0xc700a25e,
                0xd9ebf36a, 0xb4117e4b,
            ],
        );
    }

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn fnv1a_64_matches_nutcracker() {
        assert_golden(
            HashKind::Fnv1a_64,
            &[
                0x00000000, 0x8601ec8c, 0xb545986a, 0x0541574b, 0xee0724dd, 0x762364a8, 0xfed9d577,
                0x1339461a, 0x023cd2e7, 0x32e1c3ce, 0x550c719a, 0xbca7efc1, 0x79fdec5f, 0x79fe466e,
                0xb4ee4fb0, 0x8a50dfa8, 0x6e1f61ff, 0xdc2f058d, 0xb999ea9b, 0xbbf22ac6, 0xe05a5cb5,
                0x398bc308, 0x610faddd, 0x66c673ef, 0x4a5f030b, 0x5fa8884b, 0x8b990d94, 0x34f206a8,
                0xf758a79f, 0x4b8a574b, 0x5c9c5180, 0x5e155350, 0xddebf753, 0xe85dfa2b, 0x28a6237c,
                0xed350cf8, 0xef098337,
            ],
        );
    }

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn fnv1_32_matches_nutcracker() {
        assert_golden(
            HashKind::Fnv1_32,
            &[
                0x00000000, 0x050c5d7e, 0x70772d38, 0x439c2f4b, 0xb9de7375, 0x0e2fc14a, 0x408f5e13,
                0x1e99b620, 0x548da96f, 0x05fce9f4, 0x864fbf1c, 0x0304fe35, 0xfaf3a29f, 0xfaf3a2e0,
                0x1276995e, 0xcfab51a6, 0xc7f0545f, 0x45bcaf2d, 0xfef2cb1f, 0xe79ae3c8, 0x65adc2d5,
                0xe589b522, 0x9dff4435, 0x9018ee2f, 0xaf89055f, 0xa2b35993, 0xa755efde, 0x3f488972,
                0x1530649b, 0x012e710b, 0x171c3fba, 0xf4781432, 0xeb07980f, 0xd90b75bb, 0xb9f5e07e,
                0xecefda6a, 0xa86b440b,
            ],
        );
    }

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn fnv1a_32_matches_nutcracker() {
        assert_golden(
            HashKind::Fnv1a_32,
            &[
                0x00000000, 0xe40c292c, 0x4d2505ca, 0x1a47e90b, 0xce3479bd, 0x749bcf08, 0xa9f37ed7,
                0x76b77d1a, 0xd58b3fa7, 0x0bd8d7ce, 0x03f6e9fa, 0x7d3e7141, 0x04f3b29f, 0xf9f3a14e,
                0x35790f10, 0x0ef7fca8, 0x7f21387f, 0xe8025ecd, 0xd5c2261b, 0x66df8466, 0xe8fb3e15,
                0x3b8356e8, 0x374069fd, 0x1d6f26af, 0xca2ad04b, 0x93954f4b, 0x6c3d1f94, 0x2b1d2fc8,
                0x7c057bdf, 0xfb29d68b, 0x32b48700, 0x2d968c70, 0xb1588553, 0x814fb56b, 0x3d31933c,
                0x418afc58, 0x8ebe2137,
            ],
        );
    }
}
