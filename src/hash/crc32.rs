//! twemproxy's `crc32` and `crc32a`, both over the standard reflected CRC-32
//! (polynomial 0xEDB88320).

/// Reflected form of the IEEE 802.3 polynomial.
const POLY: u32 = 0xedb8_8320;

/// The lookup table, built at compile time from the polynomial.
const TABLE: [u32; 256] = reflected_crc_table!(u32, POLY);

/// The standard CRC-32 of `key`.
fn standard(key: &[u8]) -> u32 {
    !key.iter().fold(u32::MAX, |crc, &byte| {
        (crc >> 8) ^ TABLE[usize::from((crc as u8) ^ byte)]
    })
}

/// `crc32`: libmemcached's variant, which keeps only bits 16..30 of the
/// CRC-32, so the value is below 32768.
pub fn crc32(key: &[u8]) -> u32 {
    (standard(key) >> 16) & 0x7fff
}

/// `crc32a`: the full standard CRC-32.
pub fn crc32a(key: &[u8]) -> u32 {
    standard(key)
}

#[cfg(test)]
mod tests {
    use crate::hash::tests::assert_golden;
    use crate::hash::HashKind;

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn crc32_matches_nutcracker() {
        assert_golden(
            HashKind::Crc32,
            &[
                0x00000000, 0x000068b7, 0x00001e83, 0x00003524, 0x00006d82, 0x00000587, 0x00000c73,
                0x000076ff, 0x00000d4a, 0x00002ade, 0x000001d7, 0x00007db5, 0x00003fba, 0x00007f00,
                0x000008f8, 0x00003f5a, 0x00004d89, 0x000028d8, 0x00000263, 0x0000746d, 0x00007678,
                0x00005df4, 0x00002183, 0x00005adc, 0x00000e07, 0x00001005, 0x00002d38, 0x00004c8a,
                0x00001faa, 0x00006b97, 0x000068a0, 0x000036fc, 0x000078b1, 0x00005be2, 0x000027e6,
                0x00004e00, 0x00002f08,
            ],
        );
    }

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn crc32a_matches_nutcracker() {
        assert_golden(
            HashKind::Crc32a,
            &[
                0x00000000, 0xe8b7be43, 0x9e83486d, 0x352441c2, 0xed82cd11, 0x8587d865, 0x8c736521,
                0x76ff8caa, 0x0d4a1185, 0xaadee37e, 0x01d79a79, 0xfdb5537d, 0x3fba6cad, 0xff000000,
                0x88f83096, 0x3f5a8994, 0xcd8927dd, 0x28d82d30, 0x026322e2, 0xf46dedb3, 0xf6781b24,
                0xddf46ea2, 0x21836df4, 0xdadc48dc, 0x0e073bdc, 0x1005ac8f, 0xad383891, 0xcc8a917e,
                0x1faa05f5, 0x6b97f273, 0xe8a0f55e, 0x36fc3734, 0x78b13a7b, 0x5be27183, 0xa7e6ce21,
                0x4e00b313, 0x2f08cf74,
            ],
        );
    }
}
