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
use crate::hash::crc64::crc64;
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
        "function|load" => args.last().map_or(Ok(()), |code| check_library(code)),
        "function|delete" => refuse_if_reserved(&args[2]),
        "function|flush" if migrating() => Err(FLUSH_REFUSAL.into()),
        "function|restore" => restore(&args[1..], migrating),
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
    // (no argument starts with the prefix) lists no keys. A shard channel
    // named so is a channel (review).
    if !args[1..].iter().any(|a| a.starts_with(RESERVED_PREFIX)) {
        return Ok(());
    }
    let keys = cmd.data_key_indexes(args);
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

/// Refuses a library's code (FUNCTION LOAD, or one of a RESTORE's) that
/// would be the mover's library, or could register one of its functions:
/// its name, read as Redis reads it, starts with [`FUNCTION_PREFIX`], or
/// its code names `shardproxy_` anywhere, in any case (review: a library
/// of another name that registered `shardproxy_fenced` first made the
/// mover's load fail, and its token function answered for the mover's).
/// A function name the code builds at run time still passes; it can stop
/// a move (the mover's load fails on the name taken) but not run code as
/// the mover's, since Redis never replaces a function across libraries.
fn check_library(code: &[u8]) -> Result<(), String> {
    let mentions = code
        .windows(FUNCTION_PREFIX.len())
        .any(|w| w.eq_ignore_ascii_case(FUNCTION_PREFIX));
    if mentions {
        return Err(FUNCTION_REFUSAL.into());
    }
    match library_name(code) {
        Shebang::Name(name) => refuse_if_reserved(&name),
        Shebang::Nameless => Ok(()),
        // Redis refuses such code too, in these words.
        Shebang::Unreadable(why) => Err(format!("ERR {why}")),
    }
}

/// What a library's first line (`#!lua name=mylib`) names.
#[derive(Debug, PartialEq, Eq)]
enum Shebang {
    Name(Vec<u8>),
    /// No `#!` line, or no `name=` in it: Redis refuses such code itself.
    Nameless,
    /// Quotes that do not close, or `name=` twice: refused (as Redis
    /// refuses them, with its text), since a reading that differs from
    /// Redis's could let a name through.
    Unreadable(&'static str),
}

/// The library name on the code's first line, read as Redis 7 reads it
/// (`functionExtractLibMetaData`): the line split as `sdssplitargs`
/// splits it (quotes, `\xHH` escapes), then the word that starts with
/// `name=` in any case (review: `NAME=`, quotes and escapes let
/// `shardproxy_mover` past a split on blanks).
fn library_name(code: &[u8]) -> Shebang {
    if !code.starts_with(b"#!") {
        return Shebang::Nameless;
    }
    let Some(end) = code.iter().position(|&b| b == b'\n') else {
        return Shebang::Nameless;
    };
    let Some(words) = split_args(&code[..end]) else {
        return Shebang::Unreadable("Invalid library metadata");
    };
    let mut names = words
        .iter()
        .skip(1)
        .filter(|word| word.len() >= 5 && word[..5].eq_ignore_ascii_case(b"name="))
        .map(|word| word[5..].to_vec());
    match (names.next(), names.next()) {
        (Some(name), None) => Shebang::Name(name),
        (None, _) => Shebang::Nameless,
        (Some(_), Some(_)) => {
            Shebang::Unreadable("Invalid metadata value, name argument was given multiple times")
        }
    }
}

/// Redis's `sdssplitargs`: words separated by blanks; in double quotes
/// `\n \r \t \b \a \xHH` and `\c` escapes, in single quotes `\'`; a quote
/// opens anywhere in a word, and a closing one must end it. `None` where
/// Redis fails (a quote left open, a closing one followed by more).
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    fn blank(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
    }
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    // Past the end reads as C's terminating NUL.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && blank(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Some(words);
        }
        // The quote the word is inside, if any.
        let (mut word, mut quote) = (Vec::new(), None);
        loop {
            let (c, next) = (at(i), at(i + 1));
            let Some(open) = quote else {
                if i >= line.len() || matches!(c, b' ' | b'\n' | b'\r' | b'\t' | 0) {
                    break;
                }
                if matches!(c, b'"' | b'\'') {
                    quote = Some(c);
                } else {
                    word.push(c);
                }
                i += 1;
                continue;
            };
            let double = open == b'"';
            if double
                && c == b'\\'
                && next == b'x'
                && hex(at(i + 2)).is_some()
                && hex(at(i + 3)).is_some()
            {
                word.push(hex(at(i + 2))? * 16 + hex(at(i + 3))?);
                i += 3;
            } else if double && c == b'\\' && i + 1 < line.len() {
                i += 1;
                word.push(match next {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
            } else if !double && c == b'\\' && next == b'\'' {
                i += 1;
                word.push(b'\'');
            } else if c == open {
                if i + 1 < line.len() && !blank(next) {
                    return None;
                }
                i += 1;
                break;
            } else if i >= line.len() {
                // A quote left open.
                return None;
            } else {
                word.push(c);
            }
            i += 1;
        }
        words.push(word);
    }
}

/// FUNCTION RESTORE `payload [FLUSH|APPEND|REPLACE]` (`args` from the
/// subcommand on): every library the payload holds is named by its code,
/// which the dump may have compressed. The arguments are checked first,
/// in Redis's order and words (TCL suite review).
fn restore(args: &[Bytes], migrating: impl FnOnce() -> bool) -> Result<(), String> {
    let (subcommand, args) = args.split_first().ok_or("ERR wrong number of arguments")?;
    if args.len() > 2 {
        return Err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
            String::from_utf8_lossy(subcommand)
        ));
    }
    let policies: [&[u8]; 3] = [b"append", b"replace", b"flush"];
    if args
        .get(1)
        .is_some_and(|policy| !policies.iter().any(|p| policy.eq_ignore_ascii_case(p)))
    {
        return Err(
            "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE."
                .into(),
        );
    }
    let flushes = args
        .get(1)
        .is_some_and(|policy| policy.eq_ignore_ascii_case(b"flush"));
    if flushes && migrating() {
        return Err(FLUSH_REFUSAL.into());
    }
    let payload = args.first().map_or(&[][..], |p| &p[..]);
    if !checksum_matches(payload) {
        // Redis's words for it, before the proxy looks inside (TCL suite
        // review: junk got the proxy's own "cannot read").
        return Err("ERR DUMP payload version or checksum are wrong".into());
    }
    let codes = payload_codes(payload);
    match codes {
        Ok(codes) => codes.iter().try_for_each(|code| check_library(code)),
        // Redis's words, as it reads the same byte (review revQ).
        Err(Unreadable::NotAFunction) => Err("ERR given type is not a function".into()),
        Err(Unreadable::Format) => Err(
            "ERR shardproxy cannot read the library names in this FUNCTION RESTORE payload".into(),
        ),
        Err(Unreadable::TooLarge(limit)) => Err(format!(
            "ERR shardproxy cannot read the library names in this FUNCTION RESTORE payload: \
             its code unpacks to more than {limit} bytes (at most {UNPACKED_PER_BYTE} times the \
             payload's size, and {MAX_UNPACKED} bytes)"
        )),
    }
}

/// RDB's opcode before each library's code in a FUNCTION DUMP payload
/// (`RDB_OPCODE_FUNCTION2`, Redis 7.0 and later).
const OPCODE_FUNCTION: u8 = 245;
/// What follows the libraries: the RDB version (2 bytes) and a CRC64 (8).
const TRAILER: usize = 10;

/// Whether a payload's CRC64 (its last 8 bytes, little-endian) is that of
/// the rest, as Redis checks it first. The RDB version before it is left
/// to the servers, whose version the proxy does not pin.
fn checksum_matches(payload: &[u8]) -> bool {
    let Some(checked) = payload.len().checked_sub(TRAILER).map(|n| n + 2) else {
        return false;
    };
    let (data, crc) = payload.split_at(checked);
    crc64(data).to_le_bytes() == crc
}

/// How much compressed code a payload may unpack to, per byte of payload
/// and at most: the lengths are the client's word, and unpacking is done
/// here, before Redis checks anything (review: a 31-byte payload claiming
/// a terabyte aborted the process on the allocation, and an 11 MB one
/// of back-references made it take 1.1 GB). Code compresses a few times
/// over; LZF cannot pass about 88.
const UNPACKED_PER_BYTE: usize = 32;
const MAX_UNPACKED: usize = 64 * 1024 * 1024;

/// Why a payload's code could not be read.
#[derive(Debug, PartialEq, Eq)]
enum Unreadable {
    /// Not a FUNCTION DUMP payload this proxy can read.
    Format,
    /// What follows a library is not another one (Redis: "given type is
    /// not a function").
    NotAFunction,
    /// Its code unpacks to more than this many bytes.
    TooLarge(usize),
}

/// The code of every library in a FUNCTION DUMP payload (Redis checks the
/// rest: version, CRC).
fn payload_codes(payload: &[u8]) -> Result<Vec<Vec<u8>>, Unreadable> {
    let limit = payload
        .len()
        .saturating_mul(UNPACKED_PER_BYTE)
        .min(MAX_UNPACKED);
    let mut room = limit;
    let body = payload
        .len()
        .checked_sub(TRAILER)
        .and_then(|end| payload.get(..end))
        .ok_or(Unreadable::Format)?;
    let mut rest = body;
    let mut codes = Vec::new();
    while let Some((&opcode, after)) = rest.split_first() {
        if opcode != OPCODE_FUNCTION {
            return Err(Unreadable::NotAFunction);
        }
        let (code, after) = rdb_string(after, &mut room).map_err(|too_large| {
            if too_large {
                Unreadable::TooLarge(limit)
            } else {
                Unreadable::Format
            }
        })?;
        codes.push(code);
        rest = after;
    }
    Ok(codes)
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

/// An RDB string, raw or LZF-compressed (integers are not code), an LZF
/// one unpacked only if it fits in `room`, which it then uses up;
/// `Err(true)` when it does not fit, `Err(false)` when it is no string.
fn rdb_string<'a>(input: &'a [u8], room: &mut usize) -> Result<(Vec<u8>, &'a [u8]), bool> {
    const LZF: u8 = 3;
    let unreadable = || false;
    match rdb_length(input).ok_or_else(unreadable)? {
        (Ok(len), rest) => {
            let (text, rest) = (rest.get(..len), rest.get(len..));
            Ok((
                text.ok_or_else(unreadable)?.to_vec(),
                rest.ok_or_else(unreadable)?,
            ))
        }
        (Err(LZF), rest) => {
            let Some((Ok(compressed), rest)) = rdb_length(rest) else {
                return Err(false);
            };
            let Some((Ok(len), rest)) = rdb_length(rest) else {
                return Err(false);
            };
            *room = room.checked_sub(len).ok_or(true)?;
            let packed = rest.get(..compressed).ok_or_else(unreadable)?;
            let text = lzf_decompress(packed, len).ok_or_else(unreadable)?;
            Ok((text, rest.get(compressed..).ok_or_else(unreadable)?))
        }
        (Err(_), _) => Err(false),
    }
}

/// LZF decompression (the format of liblzf, which Redis uses), to `len`
/// bytes exactly; `None` for input that is not LZF. The caller bounds
/// `len`.
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

    fn named(name: &str) -> Shebang {
        Shebang::Name(name.as_bytes().to_vec())
    }

    #[test]
    fn library_names_are_read_as_redis_reads_them() {
        assert_eq!(library_name(b"#!lua name=mylib\nreturn 1"), named("mylib"));
        assert_eq!(library_name(b"#!lua   foo=bar  name=x\n"), named("x"));
        assert_eq!(library_name(b"#!lua\nname=x"), Shebang::Nameless);
        assert_eq!(library_name(b"return 1"), Shebang::Nameless);
        assert_eq!(library_name(b"#!lua name=x"), Shebang::Nameless);
        // The review's ways past a split on blanks, each the mover's name.
        for line in [
            &b"#!lua NAME=shardproxy_mover\n"[..],
            b"#!lua Name=shardproxy_mover\n",
            b"#!lua name=\"shardproxy_mover\"\n",
            b"#!lua \"name=shardproxy_mover\"\n",
            b"#!lua name='shardproxy_mover'\n",
            b"#!lua name=\"\\x73hardproxy_mover\"\n",
            b"#!lua name=shard\"proxy_mover\"\n",
            b"#!lua\tname=shardproxy_mover\r\n",
        ] {
            let text = String::from_utf8_lossy(line);
            let Shebang::Name(name) = library_name(line) else {
                panic!("{text}: no name");
            };
            assert_eq!(name.to_ascii_lowercase(), b"shardproxy_mover", "{text}");
        }
        let invalid = Shebang::Unreadable("Invalid library metadata");
        assert_eq!(library_name(b"#!lua name=\"x\n"), invalid);
        assert_eq!(library_name(b"#!lua name=\"x\"y\n"), invalid);
        assert_eq!(
            check_library(b"#!lua name=a name=b\n").unwrap_err(),
            "ERR Invalid metadata value, name argument was given multiple times"
        );
    }

    #[test]
    fn code_naming_the_movers_functions_is_refused() {
        let foreign = b"#!lua name=mine\nredis.register_function('SHARDPROXY_fenced', f)";
        assert!(check_library(foreign).is_err());
        assert!(check_library(b"#!lua name=\"\\x73hardproxy_x\"\nreturn 1").is_err());
        assert!(check_library(b"#!lua name=mine\nredis.register_function('f', f)").is_ok());
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
    fn a_payload_is_checked_by_its_crc64() {
        let mut payload = b"body\x0a\x00".to_vec();
        payload.extend_from_slice(&crc64(&payload).to_le_bytes());
        assert!(checksum_matches(&payload));
        payload[0] ^= 1;
        assert!(!checksum_matches(&payload));
        assert!(!checksum_matches(&[0; 9]));
        // A good checksum around what is no library: Redis's words.
        let mut junk = b"junkjunk\x0a\x00".to_vec();
        junk.extend_from_slice(&crc64(&junk).to_le_bytes());
        let args = [Bytes::from_static(b"restore"), Bytes::from(junk)];
        assert_eq!(
            restore(&args, || false).unwrap_err(),
            "ERR given type is not a function"
        );
    }

    #[test]
    fn a_raw_payload_is_read() {
        let code = b"#!lua name=lib\nreturn 1";
        let mut payload = vec![OPCODE_FUNCTION, code.len() as u8];
        payload.extend_from_slice(code);
        payload.extend_from_slice(&[0; TRAILER]);
        assert_eq!(payload_codes(&payload).unwrap(), vec![code.to_vec()]);
        assert_eq!(payload_codes(&payload[1..]), Err(Unreadable::NotAFunction));
        assert_eq!(payload_codes(&[0; 3]), Err(Unreadable::Format));
    }

    /// The arguments are checked before the payload, as Redis checks them
    /// (TCL suite review: a wrong count got the payload's error).
    #[test]
    fn a_restore_with_wrong_arguments_gets_redis_words() {
        let words = |w: &[&str]| -> Vec<Bytes> {
            w.iter()
                .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                .collect()
        };
        assert_eq!(
            restore(&words(&["RESTORE", "junk", "append", "x"]), || false).unwrap_err(),
            "ERR unknown subcommand or wrong number of arguments for 'RESTORE'. Try FUNCTION HELP."
        );
        assert_eq!(
            restore(&words(&["restore", "junk", "sideways"]), || false).unwrap_err(),
            "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE."
        );
        assert_eq!(
            restore(&words(&["restore", "junk", "REPLACE"]), || false).unwrap_err(),
            "ERR DUMP payload version or checksum are wrong"
        );
    }

    /// The review's payloads: LZF strings that claim a terabyte, or more
    /// than their size allows, are refused before anything is allocated.
    #[test]
    fn a_payload_unpacking_past_its_bound_is_refused() {
        let claims = |len: u64| {
            let mut payload = vec![OPCODE_FUNCTION, 0xC3, 0x01, 0x81];
            payload.extend_from_slice(&len.to_be_bytes());
            payload.push(0);
            payload.extend_from_slice(&[0; 2]);
            let crc = crc64(&payload);
            payload.extend_from_slice(&crc.to_le_bytes());
            payload
        };
        let limit = 23 * UNPACKED_PER_BYTE;
        for len in [1 << 40, u64::MAX, limit as u64 + 1] {
            assert_eq!(
                payload_codes(&claims(len)),
                Err(Unreadable::TooLarge(limit))
            );
        }
        // Within the bound it is read, and found not to be LZF.
        assert_eq!(payload_codes(&claims(3)), Err(Unreadable::Format));
        let args = [Bytes::from_static(b"restore"), Bytes::from(claims(1 << 40))];
        let refusal = restore(&args, || false).unwrap_err();
        assert!(
            refusal.contains("unpacks to more than 736 bytes"),
            "{refusal}"
        );
    }
}
