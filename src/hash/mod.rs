//! The twemproxy 0.5.0 key hash functions, bit-exact, quirks included:
//! `md5` is the digest's first four bytes little-endian; `crc32` is
//! libmemcached's 15-bit value; `crc16` is the XMODEM table step in an
//! untruncated 32-bit accumulator; `fnv1a_64` runs in 32-bit arithmetic;
//! bytes >= 0x80 are sign-extended where twemproxy reads them as `char`; an
//! empty key hashes to 0. Each function's tests pin values recovered from
//! the real nutcracker. Beside them, Redis's CRC-64 (`crc64`), which ends
//! every DUMP payload: no key hash, but the same kind of table.

/// The lookup table of a reflected CRC over the unsigned type `$t`, whose
/// polynomial `$poly` is given reflected, built at compile time.
macro_rules! reflected_crc_table {
    ($t:ty, $poly:expr) => {{
        let mut table = [0 as $t; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as $t;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ $poly
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    }};
}

mod crc16;
mod crc32;
pub mod crc64;
mod fnv;
mod hsieh;
mod jenkins;
pub(crate) mod md5;
mod murmur;
mod one_at_a_time;

/// A key hash function, named as in twemproxy's `hash:` setting.
// Variant names follow twemproxy's names (`fnv1a_64`), which read better than `Fnv1a64`.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    OneAtATime,
    Md5,
    Crc16,
    Crc32,
    Crc32a,
    Fnv1_64,
    Fnv1a_64,
    Fnv1_32,
    Fnv1a_32,
    Hsieh,
    Murmur,
    Jenkins,
}

impl HashKind {
    /// Every hash function, in twemproxy's order.
    pub const ALL: [HashKind; 12] = [
        HashKind::OneAtATime,
        HashKind::Md5,
        HashKind::Crc16,
        HashKind::Crc32,
        HashKind::Crc32a,
        HashKind::Fnv1_64,
        HashKind::Fnv1a_64,
        HashKind::Fnv1_32,
        HashKind::Fnv1a_32,
        HashKind::Hsieh,
        HashKind::Murmur,
        HashKind::Jenkins,
    ];

    /// The hash called `name` in a pool file, if any.
    pub fn from_name(name: &str) -> Option<HashKind> {
        HashKind::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The name of this hash in a pool file.
    pub fn name(self) -> &'static str {
        match self {
            HashKind::OneAtATime => "one_at_a_time",
            HashKind::Md5 => "md5",
            HashKind::Crc16 => "crc16",
            HashKind::Crc32 => "crc32",
            HashKind::Crc32a => "crc32a",
            HashKind::Fnv1_64 => "fnv1_64",
            HashKind::Fnv1a_64 => "fnv1a_64",
            HashKind::Fnv1_32 => "fnv1_32",
            HashKind::Fnv1a_32 => "fnv1a_32",
            HashKind::Hsieh => "hsieh",
            HashKind::Murmur => "murmur",
            HashKind::Jenkins => "jenkins",
        }
    }

    /// The value twemproxy routes `key` by. An empty key hashes to 0 under
    /// every function: twemproxy's `server_pool_hash` skips the function
    /// for a zero-length key.
    pub fn hash(self, key: &[u8]) -> u32 {
        if key.is_empty() {
            return 0;
        }
        match self {
            HashKind::OneAtATime => one_at_a_time::hash(key),
            HashKind::Md5 => md5::hash(key),
            HashKind::Crc16 => crc16::hash(key),
            HashKind::Crc32 => crc32::crc32(key),
            HashKind::Crc32a => crc32::crc32a(key),
            HashKind::Fnv1_64 => fnv::fnv1_64(key),
            HashKind::Fnv1a_64 => fnv::fnv1a_64(key),
            HashKind::Fnv1_32 => fnv::fnv1_32(key),
            HashKind::Fnv1a_32 => fnv::fnv1a_32(key),
            HashKind::Hsieh => hsieh::hash(key),
            HashKind::Murmur => murmur::hash(key),
            HashKind::Jenkins => jenkins::hash(key),
        }
    }
}

/// A key byte as twemproxy reads it through a `char *`: signed, so bytes
/// >= 0x80 are sign-extended to 32 bits (0x80 becomes 0xffff_ff80).
fn signed(byte: u8) -> u32 {
    i32::from(byte as i8) as u32
}

#[cfg(test)]
pub(crate) mod tests {
    use super::HashKind;

    /// Keys whose hash values were recovered from the real nutcracker 0.5.0:
    /// modula placement over fake backends gave each value mod 2^20 and
    /// mod 3^8 (digit by digit), which fix all 32 bits. They cover every
    /// tail length of the block hashes, bytes >= 0x80 in each position
    /// (sign extension), NUL, CR and LF, and the empty key.
    pub(crate) const GOLDEN_KEYS: [&[u8]; 37] = [
        b"",
        b"a",
        b"ab",
        b"abc",
        b"abcd",
        b"abcde",
        b"foo",
        b"bar",
        b"hello world",
        b"key:1234567",
        b"user:1000:profile",
        b"0123456789abcdefghijklmnopqrstuvwxyz",
        b"\x80",
        b"\xff",
        b"\xff\xfe",
        b"\x80\x81\x82",
        b"a\xe9b\xc3\xa9",
        b"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x82\xad\xe3\x83\xbc",
        b"x\0y\r\nz",
        b"\x7f\x80\x7f\x80\x7f",
        b"abcdefghijkl",
        b"abcdefghijklm",
        b"abcdefghijklmnopqrstuvwx",
        b"\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0",
        b"A\xa5",
        b"AH\xa5",
        b"AHO\xa5",
        b"AHOV\xa5",
        b"AHOV]\xa5",
        b"AHOV]d\xa5",
        b"AHOV]dk\xa5",
        b"AHOV]dkr\xa5",
        b"AHOV]dkry\xa5",
        b"AHOV]dkry\x80\xa5",
        b"AHOV]dkry\x80\x87\xa5",
        b"AHOV]dkry\x80\x87\x8e\xa5",
        b"AHOV]dkry\x80\x87\x8e\x95\xa5",
    ];

    /// Asserts `kind` gives `expected[i]` for `GOLDEN_KEYS[i]`.
    pub(crate) fn assert_golden(kind: HashKind, expected: &[u32; 37]) {
        for (key, &want) in GOLDEN_KEYS.iter().zip(expected) {
            let got = kind.hash(key);
            assert_eq!(
                got,
                want,
                "{} of {:?}: {got:#010x}, nutcracker {want:#010x}",
                kind.name(),
                key
            );
        }
    }

    #[test]
    fn empty_key_hashes_to_zero_under_every_function() {
        for kind in HashKind::ALL {
            assert_eq!(kind.hash(b""), 0, "{}", kind.name());
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in HashKind::ALL {
            assert_eq!(HashKind::from_name(kind.name()), Some(kind));
        }
    }

    #[test]
    fn unknown_name_is_none() {
        assert_eq!(HashKind::from_name("sha1"), None);
        assert_eq!(HashKind::from_name("MD5"), None);
    }

    #[test]
    fn bytes_from_0x80_are_sign_extended() {
        assert_eq!(super::signed(0x7f), 0x7f);
        assert_eq!(super::signed(0x80), 0xffff_ff80);
        assert_eq!(super::signed(0xff), 0xffff_ffff);
    }
}
