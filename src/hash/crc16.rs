//! twemproxy 0.5.0's `crc16`: the CRC-16/XMODEM table step (polynomial
//! 0x1021, initial value 0, as Redis Cluster uses), but run in a 32-bit
//! accumulator that is never truncated to 16 bits. The bits shifted out
//! above bit 15 stay, so the value is not a CRC-16 once the key is longer
//! than two bytes (`"ab"` hashes to 0x007c74ff, not 0x74ff).

/// x^16 + x^12 + x^5 + 1, not reflected.
const POLY: u16 = 0x1021;

/// The lookup table, built at compile time from the polynomial.
const TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ POLY
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The twemproxy `crc16` value of `key`. The table index keeps only the low
/// byte, so it makes no difference that twemproxy reads bytes as signed.
pub fn hash(key: &[u8]) -> u32 {
    key.iter().fold(0u32, |crc, &byte| {
        let index = usize::from(((crc >> 8) as u8) ^ byte);
        (crc << 8) ^ u32::from(TABLE[index])
    })
}

#[cfg(test)]
mod tests {
    use crate::hash::tests::assert_golden;
    use crate::hash::HashKind;

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn matches_nutcracker() {
        assert_golden(
            HashKind::Crc16,
            &[
                0x00000000, 0x00007c87, 0x007c74ff, 0x7c749dd6, 0x749da836, 0x9da83ee1, 0x0c3caf96,
                0x4c1193c5, 0xf2063be4, 0x6b5c85cd, 0xa072a2d6, 0xe663d518, 0x00009188, 0x00001ef0,
                0x001e0d2e, 0x919aa239, 0x4a9556df, 0x890dfdfa, 0xa48e8b9b, 0x6024c59e, 0xa372b7ff,
                0x72b79537, 0x2c431938, 0x1166892c, 0x0058dbb2, 0x58f74bb7, 0xf7175499, 0x178b20ac,
                0x8b4ef745, 0x4e3e1ad2, 0x3e22b16f, 0x220ab105, 0x0abb07ff, 0xbb7393bb, 0x73978d11,
                0x97186e76, 0x18581bb2,
            ],
        );
    }
}
