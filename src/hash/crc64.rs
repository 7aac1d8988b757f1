//! Redis's CRC-64 (Jones polynomial, reflected, initial value 0), which
//! ends every DUMP payload: what Redis checks a FUNCTION RESTORE or RESTORE
//! payload by before anything else.

/// 0xad93d23594c935a9, reflected.
const POLY: u64 = 0x95ac_9329_ac4b_c9b5;

const TABLE: [u64; 256] = reflected_crc_table!(u64, POLY);

/// The CRC-64 of `data`, as Redis's `crc64(0, data, len)`.
pub fn crc64(data: &[u8]) -> u64 {
    data.iter().fold(0, |crc, &byte| {
        TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::crc64;

    #[test]
    fn redis_check_value() {
        // Redis's own (src/crc64.c).
        assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        assert_eq!(crc64(b""), 0);
    }
}
