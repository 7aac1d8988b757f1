//! Backend replies: find where a RESP2/RESP3 frame ends (`ReplyFramer`,
//! `reply_frame_len`), and parse a frame into a `Value` when the proxy must look
//! inside it.
//!
//! Framing keeps no stack: it counts the values still owed, so nesting depth
//! costs nothing and a hostile count cannot make it allocate. Streamed RESP3
//! aggregates (`$?`, `*?`) are rejected: Redis never sends them.

use bytes::Bytes;

use super::{find_cr, parse_int, ProtocolError};

/// Deepest nesting `parse_reply` follows; bounds its recursion on hostile input.
const MAX_DEPTH: usize = 512;
/// Fewest bytes a value can take on the wire (`_\r\n`); bounds preallocation.
const MIN_VALUE_WIRE_SIZE: usize = 3;

/// A parsed RESP2/RESP3 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+text`
    Simple(Bytes),
    /// `-text`, or a RESP3 blob error `!len`.
    Error(Bytes),
    /// `:n`
    Integer(i64),
    /// `$len` bulk string.
    Bulk(Bytes),
    /// RESP3 `_`, and RESP2's null bulk `$-1`.
    Null,
    /// RESP2's null array `*-1`, kept apart from `Null` so that a RESP2 client gets
    /// it back as `*-1` (RESP3 encodes it as `_`).
    NullArray,
    /// `*n`
    Array(Vec<Value>),
    /// `%n`
    Map(Vec<(Value, Value)>),
    /// `~n`
    Set(Vec<Value>),
    /// `,double`
    Double(f64),
    /// `#t` / `#f`
    Boolean(bool),
    /// `=len` verbatim string: a three-byte format and the text.
    Verbatim {
        /// The format, e.g. `txt` or `mkd`.
        format: [u8; 3],
        /// The text after `fmt:`.
        text: Bytes,
    },
    /// `(digits`
    BigNumber(Bytes),
    /// `>n` out-of-band push.
    Push(Vec<Value>),
}

/// Finds reply frames in a backend's read buffer, resuming after the last complete
/// item of the frame, so a large aggregate arriving in many reads is not walked
/// again from its start on every read (only a partly received line or bulk is
/// looked at again, and a bulk only through its length).
///
/// Between calls the caller may only append to the buffer until a length is
/// returned; the framer then starts afresh for the next frame.
#[derive(Debug, Default)]
pub struct ReplyFramer {
    /// End of the last complete header or scalar of the current frame.
    pos: usize,
    /// Values still owed before the frame is complete; 0 when between frames.
    pending: u64,
}

impl ReplyFramer {
    /// A framer at the start of a frame.
    pub fn new() -> ReplyFramer {
        ReplyFramer::default()
    }

    /// Length of the first complete reply frame in `buf` (an attribute `|`
    /// together with the value it annotates), `Ok(None)` if incomplete.
    ///
    /// # Errors
    /// The bytes are not RESP2/RESP3; the backend connection is unusable.
    pub fn frame_len(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        if self.pending == 0 {
            self.pos = 0;
            self.pending = 1;
        }
        while self.pending > 0 {
            let Some((end, children)) = scan_item(buf, self.pos)? else {
                return Ok(None);
            };
            self.pos = end;
            self.pending = (self.pending - 1)
                .checked_add(children)
                .ok_or(ProtocolError::InvalidReply("aggregate too large"))?;
        }
        Ok(Some(self.pos))
    }
}

/// The whole length of the bulk string reply at the start of `buf`, once
/// its header (`$<n>\r\n`) has arrived, before the rest: how much room
/// it needs. `None` for other replies and while the header is incomplete.
pub fn bulk_reply_len(buf: &[u8]) -> Option<usize> {
    let rest = buf.strip_prefix(b"$")?;
    let end = rest.iter().take(21).position(|&b| b == b'\r')?;
    let n: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some(1 + end + 2 + n + 2)
}

/// True for an error reply (`-` line or RESP3 `!` blob).
pub fn is_error_reply(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

/// Length of the first complete reply frame in `buf` (RESP2 and RESP3 types),
/// `Ok(None)` if incomplete. An attribute `|` counts together with the value that
/// follows it. Rescans from the start on each call; use `ReplyFramer` on a
/// buffer that may hold a large partial reply.
///
/// # Errors
/// The bytes are not RESP2/RESP3.
pub fn reply_frame_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    ReplyFramer::new().frame_len(buf)
}

/// The first line of an item: its type byte, its text, and where the item's
/// payload starts.
struct Line<'a> {
    kind: u8,
    text: &'a [u8],
    next: usize,
}

/// Reads the `\r\n`-terminated line of the item at `pos`; `Ok(None)` if incomplete.
fn read_line(buf: &[u8], pos: usize) -> Result<Option<Line<'_>>, ProtocolError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(cr) = find_cr(buf, pos + 1) else {
        return Ok(None);
    };
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(Line {
            kind,
            text: &buf[pos + 1..cr],
            next: cr + 2,
        })),
        Some(_) => Err(ProtocolError::InvalidReply("CR not followed by LF")),
    }
}

/// A length or count: `-1` (null, allowed by the caller) or a non-negative number.
fn read_len(text: &[u8]) -> Result<i64, ProtocolError> {
    parse_int(text)
        .filter(|&n| n >= -1)
        .ok_or(ProtocolError::InvalidReply("invalid length"))
}

/// Scans the item at `pos` without its children: `Ok(Some((end, children)))`,
/// where `children` is the number of values that must follow it.
fn scan_item(buf: &[u8], pos: usize) -> Result<Option<(usize, u64)>, ProtocolError> {
    let Some(line) = read_line(buf, pos)? else {
        return Ok(None);
    };
    match line.kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(Some((line.next, 0))),
        b'$' | b'!' | b'=' => {
            let len = read_len(line.text)?;
            if len == -1 {
                return null_allowed(line.kind, b'$').map(|()| Some((line.next, 0)));
            }
            // A length too big for memory can never complete; say so instead of waiting.
            let end = usize::try_from(len)
                .ok()
                .and_then(|len| line.next.checked_add(len)?.checked_add(2))
                .ok_or(ProtocolError::InvalidReply("invalid length"))?;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(ProtocolError::InvalidReply("bulk not followed by CRLF"));
            }
            Ok(Some((end, 0)))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let count = read_len(line.text)?;
            if count == -1 {
                return null_allowed(line.kind, b'*').map(|()| Some((line.next, 0)));
            }
            // Lossless: 0 <= count <= i64::MAX, so doubling and adding one fits a u64.
            let count = count as u64;
            let children = match line.kind {
                b'%' => 2 * count,
                // The attribute's pairs, then the value it annotates.
                b'|' => 2 * count + 1,
                _ => count,
            };
            Ok(Some((line.next, children)))
        }
        other => Err(ProtocolError::InvalidReplyType(other)),
    }
}

/// Only RESP2's `$-1` and `*-1` may be null by length.
fn null_allowed(kind: u8, allowed: u8) -> Result<(), ProtocolError> {
    if kind == allowed {
        Ok(())
    } else {
        Err(ProtocolError::InvalidReply("invalid length"))
    }
}

/// Parses one complete frame (as delimited by `reply_frame_len`) into a `Value`,
/// copying the frame once. Attributes are dropped: the value they annotate is
/// returned.
///
/// # Errors
/// The bytes are not exactly one valid RESP2/RESP3 frame.
pub fn parse_reply(frame: &[u8]) -> Result<Value, ProtocolError> {
    parse_reply_bytes(&Bytes::copy_from_slice(frame))
}

/// Like `parse_reply`, but the strings in the value are zero-copy slices of `frame`.
///
/// # Errors
/// The bytes are not exactly one valid RESP2/RESP3 frame.
pub fn parse_reply_bytes(frame: &Bytes) -> Result<Value, ProtocolError> {
    let (value, end) = parse_value(frame, 0, 0)?;
    if end != frame.len() {
        return Err(ProtocolError::InvalidReply("bytes after the frame"));
    }
    Ok(value)
}

/// Parses the value at `pos`, skipping attributes before it; returns it and its end.
fn parse_value(frame: &Bytes, pos: usize, depth: usize) -> Result<(Value, usize), ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError::InvalidReply("nested too deeply"));
    }
    let line = read_line(frame, pos)?.ok_or(ProtocolError::InvalidReply("incomplete frame"))?;
    let text = || frame.slice(pos + 1..line.next - 2);
    let value = match line.kind {
        b'+' => Value::Simple(text()),
        b'-' => Value::Error(text()),
        b':' => Value::Integer(
            parse_int(line.text).ok_or(ProtocolError::InvalidReply("invalid integer"))?,
        ),
        b'_' if line.text.is_empty() => Value::Null,
        b',' => Value::Double(parse_double(line.text)?),
        b'#' => match line.text {
            b"t" => Value::Boolean(true),
            b"f" => Value::Boolean(false),
            _ => return Err(ProtocolError::InvalidReply("invalid boolean")),
        },
        b'(' => {
            parse_big_number(line.text)?;
            Value::BigNumber(text())
        }
        b'$' | b'!' | b'=' => return parse_blob(frame, &line),
        b'*' | b'~' | b'>' | b'%' => return parse_aggregate(frame, &line, depth),
        b'|' => {
            let (_, end) = parse_aggregate(frame, &line, depth)?;
            return parse_value(frame, end, depth + 1);
        }
        b'_' => return Err(ProtocolError::InvalidReply("null with content")),
        other => return Err(ProtocolError::InvalidReplyType(other)),
    };
    Ok((value, line.next))
}

/// Parses `$`, `!` and `=` whose length line is `line`.
fn parse_blob(frame: &Bytes, line: &Line<'_>) -> Result<(Value, usize), ProtocolError> {
    let len = read_len(line.text)?;
    if len == -1 {
        null_allowed(line.kind, b'$')?;
        return Ok((Value::Null, line.next));
    }
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| line.next.checked_add(len))
        .filter(|&end| end.checked_add(2).is_some_and(|e| e <= frame.len()))
        .ok_or(ProtocolError::InvalidReply("incomplete frame"))?;
    if &frame[end..end + 2] != b"\r\n" {
        return Err(ProtocolError::InvalidReply("bulk not followed by CRLF"));
    }
    let data = frame.slice(line.next..end);
    let value = match line.kind {
        b'$' => Value::Bulk(data),
        b'!' => Value::Error(data),
        _ => match data.get(..4) {
            Some([a, b, c, b':']) => Value::Verbatim {
                format: [*a, *b, *c],
                text: data.slice(4..),
            },
            _ => return Err(ProtocolError::InvalidReply("verbatim without format")),
        },
    };
    Ok((value, end + 2))
}

/// Parses `*`, `~`, `>`, `%` and `|` whose count line is `line`.
fn parse_aggregate(
    frame: &Bytes,
    line: &Line<'_>,
    depth: usize,
) -> Result<(Value, usize), ProtocolError> {
    let count = read_len(line.text)?;
    if count == -1 {
        null_allowed(line.kind, b'*')?;
        return Ok((Value::NullArray, line.next));
    }
    let elements = if matches!(line.kind, b'%' | b'|') {
        count.saturating_mul(2)
    } else {
        count
    };
    // Every element takes at least MIN_VALUE_WIRE_SIZE bytes of the frame.
    let elements = usize::try_from(elements)
        .ok()
        .filter(|&n| n <= (frame.len() - line.next) / MIN_VALUE_WIRE_SIZE)
        .ok_or(ProtocolError::InvalidReply("incomplete frame"))?;
    let mut items = Vec::with_capacity(elements);
    let mut pos = line.next;
    for _ in 0..elements {
        let (item, end) = parse_value(frame, pos, depth + 1)?;
        items.push(item);
        pos = end;
    }
    let value = match line.kind {
        b'~' => Value::Set(items),
        b'>' => Value::Push(items),
        b'%' | b'|' => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            Value::Map(pairs)
        }
        _ => Value::Array(items),
    };
    Ok((value, pos))
}

/// RESP3 doubles: a decimal or exponent number, `inf`, `-inf` or `nan`.
fn parse_double(text: &[u8]) -> Result<f64, ProtocolError> {
    let invalid = || ProtocolError::InvalidReply("invalid double");
    match text {
        b"inf" => Ok(f64::INFINITY),
        b"-inf" => Ok(f64::NEG_INFINITY),
        b"nan" => Ok(f64::NAN),
        // The character check keeps out the spellings Rust accepts and RESP3 does
        // not ("infinity", "NaN"), and makes the text valid UTF-8.
        _ if text
            .iter()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(b)) =>
        {
            std::str::from_utf8(text)
                .map_err(|_| invalid())?
                .parse()
                .map_err(|_| invalid())
        }
        _ => Err(invalid()),
    }
}

/// RESP3 big numbers: an optional `-` and at least one digit.
fn parse_big_number(text: &[u8]) -> Result<(), ProtocolError> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        Ok(())
    } else {
        Err(ProtocolError::InvalidReply("invalid big number"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bulk_reply_is_sized_from_its_header() {
        assert_eq!(bulk_reply_len(b"$1048576\r\nabc"), Some(1048576 + 12));
        assert_eq!(bulk_reply_len(b"$0\r\n"), Some(6));
        assert_eq!(bulk_reply_len(b"$104857"), None);
        assert_eq!(bulk_reply_len(b"$-1\r\n"), None);
        assert_eq!(bulk_reply_len(b"*2\r\n$1\r\n"), None);
    }

    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// The frame must be complete exactly at its end, incomplete at every shorter
    /// prefix, and unaffected by bytes after it; then it parses to `expected`.
    fn check_frame(frame: &[u8], expected: &Value) {
        for cut in 0..frame.len() {
            assert_eq!(
                reply_frame_len(&frame[..cut]),
                Ok(None),
                "cut at {cut} of {frame:?}"
            );
        }
        assert_eq!(reply_frame_len(frame), Ok(Some(frame.len())));
        let mut more = frame.to_vec();
        more.extend_from_slice(b"+OK\r\n");
        assert_eq!(reply_frame_len(&more), Ok(Some(frame.len())));
        assert_eq!(&parse_reply(frame).unwrap(), expected);
    }

    #[test]
    fn resp2_types() {
        check_frame(b"+OK\r\n", &Value::Simple(b("OK")));
        check_frame(b"-ERR no\r\n", &Value::Error(b("ERR no")));
        check_frame(b":-42\r\n", &Value::Integer(-42));
        check_frame(b"$5\r\nhe\r\no\r\n", &Value::Bulk(b("he\r\no")));
        check_frame(b"$0\r\n\r\n", &Value::Bulk(b("")));
        check_frame(b"$-1\r\n", &Value::Null);
        check_frame(b"*-1\r\n", &Value::NullArray);
        check_frame(b"*0\r\n", &Value::Array(vec![]));
        check_frame(
            b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:1\r\n",
            &Value::Array(vec![
                Value::Bulk(b("a")),
                Value::Null,
                Value::Array(vec![Value::Integer(1)]),
            ]),
        );
    }

    #[test]
    fn resp3_scalars() {
        check_frame(b"_\r\n", &Value::Null);
        check_frame(b",3.25\r\n", &Value::Double(3.25));
        check_frame(b",-1e10\r\n", &Value::Double(-1e10));
        check_frame(b",inf\r\n", &Value::Double(f64::INFINITY));
        check_frame(b",-inf\r\n", &Value::Double(f64::NEG_INFINITY));
        assert!(matches!(parse_reply(b",nan\r\n"), Ok(Value::Double(d)) if d.is_nan()));
        check_frame(b"#t\r\n", &Value::Boolean(true));
        check_frame(b"#f\r\n", &Value::Boolean(false));
        check_frame(
            b"(-3492890328409238509324850943850943825024385\r\n",
            &Value::BigNumber(b("-3492890328409238509324850943850943825024385")),
        );
        check_frame(b"!8\r\nSYNTAX x\r\n", &Value::Error(b("SYNTAX x")));
        check_frame(
            b"=15\r\ntxt:Some string\r\n",
            &Value::Verbatim {
                format: *b"txt",
                text: b("Some string"),
            },
        );
    }

    #[test]
    fn resp3_nested_aggregates() {
        let frame = b"%2\r\n+first\r\n:1\r\n+second\r\n~2\r\n%1\r\n$1\r\nk\r\n_\r\n#t\r\n";
        let expected = Value::Map(vec![
            (Value::Simple(b("first")), Value::Integer(1)),
            (
                Value::Simple(b("second")),
                Value::Set(vec![
                    Value::Map(vec![(Value::Bulk(b("k")), Value::Null)]),
                    Value::Boolean(true),
                ]),
            ),
        ]);
        check_frame(frame, &expected);
        check_frame(
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            &Value::Push(vec![
                Value::Bulk(b("message")),
                Value::Bulk(b("ch")),
                Value::Bulk(b("hi")),
            ]),
        );
        check_frame(b"%0\r\n", &Value::Map(vec![]));
    }

    #[test]
    fn attributes_count_with_the_value_they_annotate() {
        let frame =
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039123\r\n:9543892\r\n";
        check_frame(
            frame,
            &Value::Array(vec![Value::Integer(2039123), Value::Integer(9543892)]),
        );
        // Inside an aggregate, an attribute does not count as an element.
        check_frame(
            b"*2\r\n|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n:7\r\n",
            &Value::Array(vec![Value::Bulk(b("v")), Value::Integer(7)]),
        );
    }

    #[test]
    fn deep_nesting_frames_without_recursion() {
        let depth = 100_000;
        let mut frame = b"*1\r\n".repeat(depth);
        frame.extend_from_slice(b":1\r\n");
        assert_eq!(reply_frame_len(&frame), Ok(Some(frame.len())));
        assert_eq!(
            parse_reply(&frame),
            Err(ProtocolError::InvalidReply("nested too deeply"))
        );
    }

    #[test]
    fn framer_resumes_where_it_stopped() {
        let frame = b"*3\r\n$3\r\nabc\r\n:1\r\n*1\r\n+x\r\n";
        let mut framer = ReplyFramer::new();
        for cut in 0..frame.len() {
            assert_eq!(framer.frame_len(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(framer.frame_len(frame), Ok(Some(frame.len())));
        // Afterwards it starts afresh on the next frame.
        assert_eq!(framer.frame_len(b":5\r\n"), Ok(Some(4)));
    }

    #[test]
    fn bad_type_byte() {
        assert_eq!(
            reply_frame_len(b"?x\r\n"),
            Err(ProtocolError::InvalidReplyType(b'?'))
        );
        assert_eq!(
            reply_frame_len(b"*1\r\n\x07\r\n"),
            Err(ProtocolError::InvalidReplyType(0x07))
        );
        assert_eq!(
            parse_reply(b"@\r\n"),
            Err(ProtocolError::InvalidReplyType(b'@'))
        );
    }

    #[test]
    fn invalid_lengths_and_lines() {
        let invalid_length = Err(ProtocolError::InvalidReply("invalid length"));
        for frame in [
            &b"$-2\r\n"[..],
            b"*-2\r\n",
            b"$x\r\n",
            b"*?\r\n",
            b"$?\r\n",
            b"%-1\r\n",
            b"=-1\r\n",
            b"$99999999999999999999\r\n",
        ] {
            assert_eq!(reply_frame_len(frame), invalid_length, "{frame:?}");
        }
        assert_eq!(
            reply_frame_len(b"$3\r\nabcd\r\n"),
            Err(ProtocolError::InvalidReply("bulk not followed by CRLF"))
        );
        assert_eq!(
            reply_frame_len(b"+OK\rX"),
            Err(ProtocolError::InvalidReply("CR not followed by LF"))
        );
    }

    #[test]
    fn invalid_contents_are_rejected_by_parse() {
        for (frame, why) in [
            (&b":1.5\r\n"[..], "invalid integer"),
            (b",abc\r\n", "invalid double"),
            (b",infinity\r\n", "invalid double"),
            (b"#x\r\n", "invalid boolean"),
            (b"(12a\r\n", "invalid big number"),
            (b"=3\r\ntxt\r\n", "verbatim without format"),
            (b"_x\r\n", "null with content"),
            (b"*2\r\n:1\r\n", "incomplete frame"),
            (b"*99\r\n:1\r\n", "incomplete frame"),
            (b":1\r\n:2\r\n", "bytes after the frame"),
        ] {
            assert_eq!(
                parse_reply(frame),
                Err(ProtocolError::InvalidReply(why)),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn huge_declared_count_does_not_allocate() {
        // Parsing must bound its preallocation by the frame, not the count.
        assert_eq!(
            parse_reply(b"*9223372036854775807\r\n"),
            Err(ProtocolError::InvalidReply("incomplete frame"))
        );
        assert_eq!(reply_frame_len(b"*9223372036854775807\r\n:1\r\n"), Ok(None));
    }

    #[test]
    fn parse_reply_bytes_is_zero_copy() {
        let frame = Bytes::from_static(b"*1\r\n$5\r\nhello\r\n");
        let Ok(Value::Array(items)) = parse_reply_bytes(&frame) else {
            panic!("not an array");
        };
        let Value::Bulk(data) = &items[0] else {
            panic!("not a bulk");
        };
        assert_eq!(data.as_ptr(), frame[8..].as_ptr());
    }
}
