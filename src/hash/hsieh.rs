//! Paul Hsieh's SuperFastHash, as twemproxy's `hash_hsieh`.

/// Two bytes as a little-endian 16-bit value, widened.
fn get16(bytes: &[u8]) -> u32 {
    u32::from(u16::from_le_bytes([bytes[0], bytes[1]]))
}

/// SuperFastHash with a zero seed. The third byte of a 3-byte tail is read
/// as a signed `char` in twemproxy, so it is sign-extended; every other byte
/// is read unsigned.
pub fn hash(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let mut hash: u32 = 0;
    let mut blocks = key.chunks_exact(4);
    for block in &mut blocks {
        hash = hash.wrapping_add(get16(block));
        let tmp = (get16(&block[2..]) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        hash = hash.wrapping_add(hash >> 11);
    }
    match *blocks.remainder() {
        [b0, b1, b2] => {
            hash = hash.wrapping_add(get16(&[b0, b1]));
            hash ^= hash << 16;
            hash ^= super::signed(b2) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        [b0, b1] => {
            hash = hash.wrapping_add(get16(&[b0, b1]));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        [b0] => {
            hash = hash.wrapping_add(u32::from(b0));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash.wrapping_add(hash >> 6)
}

#[cfg(test)]
mod tests {
    use crate::hash::tests::assert_golden;
    use crate::hash::HashKind;

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn matches_nutcracker() {
        assert_golden(
            HashKind::Hsieh,
            &[
                0x00000000, 0x93642e87, 0x5b8c0ec3, 0xe5186b3a, 0x3ab452d8, 0x84786722, 0x76d4d427,
                0x82f73143, 0x4f799873, 0xd4c3d407, 0x47c2e8a4, 0x78995459, 0xd6f4cb32, 0x02a6dba8,
                0xcc30d943, 0x6bc37572, 0xaebf8070, 0x730791a3, 0x73b1f96e, 0xee4c04c8, 0x5f624189,
                0x70ce5414, 0x9c31d61c, 0xe8e3e077, 0x552f297b, 0x36d876eb, 0x028f4926, 0x7360b16a,
                0x26537231, 0xb7ae227a, 0x5bcb3a43, 0xff339732, 0x00bd01e8, 0x5ff9e258, 0x437fa8cc,
                0xd4250c64, 0xd5411e29,
            ],
        );
    }
}
