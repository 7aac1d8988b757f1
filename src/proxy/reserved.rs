//! What of the shards belongs to the proxies and the mover, not to
//! clients: keys starting with `__shardproxy_` (a migration's locks,
//! imports and notes, [`RESERVED_PREFIX`]) and the function library the
//! mover fences itself with (`shardproxy_mover`, whose functions all start
//! with [`FUNCTION_PREFIX`]).
//!
//! The library matters most. `shardproxy-admin migrate` calls its
//! functions with the admin's rights (Redis's `default` user); a client
//! that could load a library of that name (FUNCTION LOAD REPLACE, FUNCTION
//! RESTORE ... REPLACE) would have its code run with those rights, past
//! the proxies' least-privilege user (review: a client's code ran SELECT
//! 9 and SET there), and one that could delete or flush it, or call its
//! functions, would stop or confuse the move.

use crate::command::Command;
use bytes::Bytes;

pub use crate::proxy::migration::scripts::RESERVED_PREFIX;

/// What the names of the mover's library and of its functions start with.
pub const FUNCTION_PREFIX: &[u8] = b"shardproxy_";

/// The error a client gets for a key of the proxies' own.
const KEY_REFUSAL: &str =
    "ERR keys starting with '__shardproxy_' are reserved for shardproxy's migrations";

/// The error a client gets for a library or function of the mover's.
const FUNCTION_REFUSAL: &str =
    "ERR libraries and functions named 'shardproxy_...' are reserved for shardproxy's migrations";

/// Refuses a request that reaches what belongs to the proxies: a key of
/// theirs, or the mover's library. `migrating` tells whether a range is
/// moving, so that the mover's library is loaded on its shards (asked
/// only of FUNCTION FLUSH and RESTORE).
///
/// # Errors
/// The refusal's text.
pub fn check(cmd: &Command, args: &[Bytes], migrating: impl Fn() -> bool) -> Result<(), String> {
    refuse_reserved_keys(cmd, args)?;
    match cmd.name {
        "fcall" | "fcall_ro" => refuse_if_reserved(&args[1]),
        "function|load" => match args.last().and_then(|code| library_name(code)) {
            Some(name) => refuse_if_reserved(name),
            // Redis refuses code without a name itself.
            None => Ok(()),
        },
        "function|delete" => refuse_if_reserved(&args[2]),
        "function|flush" if migrating() => Err(FLUSH_REFUSAL.into()),
        "function|restore" => restore(&args[2..], migrating),
        _ => Ok(()),
    }
}

/// FUNCTION FLUSH (or RESTORE ... FLUSH) would delete the mover's library
/// under it.
const FLUSH_REFUSAL: &str = "ERR FUNCTION FLUSH is refused while a range moves between shards: \
     the mover's library is loaded there; delete libraries by name";

/// Refuses a request that names a key of the proxies' own: a migration's
/// locks, imports and notes live on the shards beside the clients' keys,
/// and a client that wrote one (a note without a TTL, a lock) would stop
/// or confuse the moves. Values and other arguments may start with the
/// prefix.
fn refuse_reserved_keys(cmd: &Command, args: &[Bytes]) -> Result<(), String> {
    // Looks at the arguments' first bytes only, so the common request
    // (no argument starts with the prefix) lists no keys.
    if !args[1..].iter().any(|a| a.starts_with(RESERVED_PREFIX)) {
        return Ok(());
    }
    let keys = cmd.key_indexes(args).unwrap_or_default();
    if keys.iter().any(|&k| args[k].starts_with(RESERVED_PREFIX)) {
        return Err(KEY_REFUSAL.into());
    }
    Ok(())
}

/// Function and library names are matched without case, as Redis finds
/// functions.
fn refuse_if_reserved(name: &[u8]) -> Result<(), String> {
    let reserved = name.len() >= FUNCTION_PREFIX.len()
        && name[..FUNCTION_PREFIX.len()].eq_ignore_ascii_case(FUNCTION_PREFIX);
    if reserved {
        Err(FUNCTION_REFUSAL.into())
    } else {
        Ok(())
    }
}

/// The library name a FUNCTION LOAD's code declares on its first line
/// (`#!lua name=mylib`), as Redis reads it.
fn library_name(code: &[u8]) -> Option<&[u8]> {
    let first_line = code.strip_prefix(b"#!")?.split(|&b| b == b'\n').next()?;
    first_line
        .split(|b| b.is_ascii_whitespace())
        .find_map(|word| word.strip_prefix(b"name="))
}

/// FUNCTION RESTORE `payload [FLUSH|APPEND|REPLACE]`: every library the
/// payload holds is named by its code, which the dump may have compressed.
fn restore(args: &[Bytes], migrating: impl FnOnce() -> bool) -> Result<(), String> {
    let flushes = args
        .get(1)
        .is_some_and(|policy| policy.eq_ignore_ascii_case(b"flush"));
    if flushes && migrating() {
        return Err(FLUSH_REFUSAL.into());
    }
    let Some(codes) = args.first().and_then(|payload| payload_codes(payload)) else {
        return Err(
            "ERR shardproxy cannot read the library names in this FUNCTION RESTORE payload".into(),
        );
    };
    for code in &codes {
        if let Some(name) = library_name(code) {
            refuse_if_reserved(name)?;
        }
    }
    Ok(())
}

/// RDB's opcode before each library's code in a FUNCTION DUMP payload
/// (`RDB_OPCODE_FUNCTION2`, Redis 7.0 and later).
const OPCODE_FUNCTION: u8 = 245;
/// What follows the libraries: the RDB version (2 bytes) and a CRC64 (8).
const TRAILER: usize = 10;

/// The code of every library in a FUNCTION DUMP payload; `None` when it is
/// not one this proxy can read (Redis checks the rest: version, CRC).
fn payload_codes(payload: &[u8]) -> Option<Vec<Vec<u8>>> {
    let body = payload.get(..payload.len().checked_sub(TRAILER)?)?;
    let mut rest = body;
    let mut codes = Vec::new();
    while let Some((&opcode, after)) = rest.split_first() {
        if opcode != OPCODE_FUNCTION {
            return None;
        }
        let (code, after) = rdb_string(after)?;
        codes.push(code);
        rest = after;
    }
    Some(codes)
}

/// An RDB length: 6 bits, 14 bits, or 32 or 64 bits big-endian; `Err`
/// with the encoding's 6 bits for an encoded string.
fn rdb_length(input: &[u8]) -> Option<(Result<usize, u8>, &[u8])> {
    let (&first, rest) = input.split_first()?;
    match first >> 6 {
        0 => Some((Ok(usize::from(first & 0x3f)), rest)),
        1 => {
            let (&low, rest) = rest.split_first()?;
            Some((Ok(usize::from(first & 0x3f) << 8 | usize::from(low)), rest))
        }
        2 => {
            let width = match first {
                0x80 => 4,
                0x81 => 8,
                _ => return None,
            };
            let (bytes, rest) = (rest.get(..width)?, rest.get(width..)?);
            let value = bytes.iter().fold(0u64, |n, &b| n << 8 | u64::from(b));
            Some((Ok(usize::try_from(value).ok()?), rest))
        }
        _ => Some((Err(first & 0x3f), rest)),
    }
}

/// An RDB string, raw or LZF-compressed (integers are not code).
fn rdb_string(input: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    const LZF: u8 = 3;
    match rdb_length(input)? {
        (Ok(len), rest) => Some((rest.get(..len)?.to_vec(), rest.get(len..)?)),
        (Err(LZF), rest) => {
            let (Ok(compressed), rest) = rdb_length(rest)? else {
                return None;
            };
            let (Ok(len), rest) = rdb_length(rest)? else {
                return None;
            };
            let text = lzf_decompress(rest.get(..compressed)?, len)?;
            Some((text, rest.get(compressed..)?))
        }
        (Err(_), _) => None,
    }
}

/// LZF decompression (the format of liblzf, which Redis uses), to `len`
/// bytes exactly; `None` for input that is not LZF.
fn lzf_decompress(mut input: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    while let Some((&ctrl, rest)) = input.split_first() {
        input = rest;
        if ctrl < 32 {
            // A literal run of ctrl + 1 bytes.
            let run = usize::from(ctrl) + 1;
            out.extend_from_slice(input.get(..run)?);
            input = &input[run..];
            continue;
        }
        // A back reference: length in the top 3 bits (7: one more byte),
        // offset in the low 5 and the next byte.
        let mut run = usize::from(ctrl >> 5);
        if run == 7 {
            let (&more, rest) = input.split_first()?;
            run += usize::from(more);
            input = rest;
        }
        let (&low, rest) = input.split_first()?;
        input = rest;
        let back = (usize::from(ctrl & 0x1f) << 8 | usize::from(low)) + 1;
        let start = out.len().checked_sub(back)?;
        // Byte by byte: the copy may overlap what it writes.
        for i in 0..run + 2 {
            let byte = out[start + i];
            out.push(byte);
        }
        if out.len() > len {
            return None;
        }
    }
    (out.len() == len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_movers_library_is_reserved() {
        let library = crate::admin::migrate::fence::LIBRARY.as_bytes();
        assert!(refuse_if_reserved(library).is_err());
        assert!(refuse_if_reserved(b"SHARDPROXY_mover").is_err());
        assert!(refuse_if_reserved(b"mylib").is_ok());
        assert!(refuse_if_reserved(b"shard").is_ok());
    }

    #[test]
    fn library_names_come_from_the_first_line() {
        assert_eq!(
            library_name(b"#!lua name=mylib\nreturn 1"),
            Some(&b"mylib"[..])
        );
        assert_eq!(library_name(b"#!lua   foo=bar  name=x\n"), Some(&b"x"[..]));
        assert_eq!(library_name(b"#!lua\nname=x"), None);
        assert_eq!(library_name(b"return 1"), None);
    }

    #[test]
    fn lzf_runs_and_back_references() {
        // "abcabcabc": a literal "abc", then 6 bytes from 3 back.
        let compressed = [2, b'a', b'b', b'c', (4 << 5), 2];
        assert_eq!(lzf_decompress(&compressed, 9).unwrap(), b"abcabcabc");
        assert_eq!(lzf_decompress(&compressed, 8), None);
        assert_eq!(lzf_decompress(&[(1 << 5), 5], 3), None);
    }

    #[test]
    fn a_raw_payload_is_read() {
        let code = b"#!lua name=lib\nreturn 1";
        let mut payload = vec![OPCODE_FUNCTION, code.len() as u8];
        payload.extend_from_slice(code);
        payload.extend_from_slice(&[0; TRAILER]);
        assert_eq!(payload_codes(&payload).unwrap(), vec![code.to_vec()]);
        assert_eq!(payload_codes(&payload[1..]), None);
        assert_eq!(payload_codes(&[0; 3]), None);
    }
}
