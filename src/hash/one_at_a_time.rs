//! Bob Jenkins' one-at-a-time hash, as twemproxy's `hash_one_at_a_time`.

/// twemproxy reads each byte as a signed `char`, so bytes >= 0x80 enter the
/// sum sign-extended (0xff becomes 0xffff_ffff).
pub fn hash(key: &[u8]) -> u32 {
    let mut value: u32 = 0;
    for &byte in key {
        value = value.wrapping_add(super::signed(byte));
        value = value.wrapping_add(value << 10);
        value ^= value >> 6;
    }
    value = value.wrapping_add(value << 3);
    value ^= value >> 11;
    value.wrapping_add(value << 15)
}

#[cfg(test)]
mod tests {
    use crate::hash::tests::assert_golden;
    use crate::hash::HashKind;

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn matches_nutcracker() {
        assert_golden(
            HashKind::OneAtATime,
            &[
                0x00000000, 0xca2e9442, 0x45e61e58, 0xed131f5b, 0xcd8b6206, 0xb98559fc, 0x238678dd,
                0x80409109, 0x3e4a5a57, 0x3334a01e, 0x1f256987, 0xfca1f8b4, 0xc31d4e27, 0xae65a494,
                0xdb2cb862, 0xe8cce13b, 0xa2776784, 0x98ebe695, 0xef1ab3a0, 0x62b5adc6, 0x605b0340,
                0x6d99f6dc, 0x5cee2b38, 0x3dba9d80, 0x06c3c460, 0x0a636b9a, 0x0b1f4b5e, 0x4f69bc47,
                0xfd7ab212, 0x65c464cd, 0x20bcbb74, 0x87bf645b, 0xf881a08a, 0x979077cc, 0xa67747cb,
                0x5ef83536, 0x9990b417,
            ],
        );
    }
}
