//! twemproxy's `md5` hash: the MD5 digest's first four bytes, little-endian.

use ::md5::{Digest, Md5};

/// The first four digest bytes read as a little-endian `u32`.
pub fn hash(key: &[u8]) -> u32 {
    let digest = digest(key);
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The MD5 digest of `data`. (The RustCrypto implementation: about half
/// the instructions per short key of the `md5` crate, which fed its
/// buffer a byte at a time; this runs once per request with `hash: md5`.)
pub fn digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

#[cfg(test)]
mod tests {
    use crate::hash::tests::assert_golden;
    use crate::hash::HashKind;

    /// Values recovered from nutcracker 0.5.0's placement of `GOLDEN_KEYS`.
    #[test]
    fn matches_nutcracker() {
        assert_golden(
            HashKind::Md5,
            &[
                0x00000000, 0xb975c10c, 0x43f47e18, 0x98500190, 0x4c71fce2, 0xd9b456ab, 0xdb18bdac,
                0x191db537, 0xbb3bb65e, 0x59fcca43, 0x9a1d90e7, 0x3d71b1e9, 0x7edd398d, 0xd44f5900,
                0x0157b2f3, 0x0a7685b3, 0x7a7a8a4e, 0x6d0f9b6d, 0x0904e311, 0x5551403f, 0x06d6c99f,
                0xd1bdae22, 0xcf840e0c, 0x0fa7fd71, 0xd0e26000, 0x7e43466b, 0x3af5f9d1, 0xf9452ca8,
                0xf574eab2, 0x005f71a3, 0x54570f49, 0xe53134f9, 0x1702833e, 0xa8802536, 0x37d0559a,
                0x7270d12f, 0x11dcbd6a,
            ],
        );
    }
}
