//! RESP, the Redis protocol: client request parsing (multibulk and inline, in
//! `request`), backend reply framing and parsing (RESP2 and RESP3, in `reply`),
//! and encoding of the replies and requests the proxy builds (in `encode`).
//!
//! Everything follows "check, then parse": a frame's end is found by walking the
//! buffer without allocating, "incomplete" is `Ok(None)`, and only then are the
//! bytes split off and sliced without copying.

mod encode;
mod reply;
mod request;

pub use encode::{
    encode, encode_array_header, encode_bulk, encode_error, encode_integer, encode_request,
    encode_simple,
};
pub use reply::{
    bulk_reply_len, is_error_reply, parse_reply, parse_reply_bytes, reply_frame_len, ReplyFramer,
    Value,
};
pub use request::{Request, RequestParser};

/// Why a byte stream is not valid RESP. Display is the text Redis 7.0 puts after
/// `ERR Protocol error: ` (the request variants), or a description of a bad reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A multibulk count that is not a number or is over 1024*1024.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// A bulk length that is not a number, negative, or over 512 MB.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// A multibulk element that does not start with `$`.
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    /// An inline command with an unterminated quote, or a closing quote not followed by a space.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// An inline line longer than 64 KB.
    #[error("too big inline request")]
    InlineTooBig,
    /// A `*<count>` line longer than 64 KB.
    #[error("too big mbulk count string")]
    MultibulkCountTooBig,
    /// A `$<len>` line longer than 64 KB.
    #[error("too big bulk count string")]
    BulkCountTooBig,
    /// Before AUTH: more than 10 arguments (Redis 6.2's limit).
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// Before AUTH: an argument over 16 KB (Redis 6.2's limit).
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// The declared sizes prove the request exceeds the configured limit.
    #[error("request exceeds the max request size of {0} bytes")]
    RequestTooBig(usize),
    /// A reply starts with a byte that is no RESP2/RESP3 type.
    #[error("invalid reply type byte 0x{0:02x}")]
    InvalidReplyType(u8),
    /// A reply whose lines, lengths or contents do not follow RESP.
    #[error("invalid reply: {0}")]
    InvalidReply(&'static str),
}

/// The protocol a client speaks, chosen with `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// RESP2, the default for a new connection.
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// Parses a decimal integer exactly as Redis's `string2ll` does: an optional `-`,
/// no `+`, no spaces, no leading zeros, no `-0`, and it must fit an `i64`.
/// Being as strict as Redis means a request we accept is one the backend accepts.
pub(crate) fn parse_int(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(b - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Position of the first `\r` in `buf` at or after `from`.
fn find_cr(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .iter()
        .position(|&b| b == b'\r')
        .map(|i| from + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_int_follows_string2ll() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"42"), Some(42));
        assert_eq!(parse_int(b"-1"), Some(-1));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1x",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_int(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn error_text_matches_redis() {
        assert_eq!(
            ProtocolError::ExpectedBulk(b'x').to_string(),
            "expected '$', got 'x'"
        );
        assert_eq!(
            ProtocolError::InvalidReplyType(0x07).to_string(),
            "invalid reply type byte 0x07"
        );
        assert_eq!(
            ProtocolError::RequestTooBig(100).to_string(),
            "request exceeds the max request size of 100 bytes"
        );
    }
}
