//! Client requests: RESP multibulk and inline commands, as Redis 7.0's
//! `processMultibulkBuffer` / `processInlineBuffer` accept them.
//!
//! The parser checks first and splits after: it walks the buffer remembering its
//! progress between calls, so a request that arrives in many reads costs
//! O(received bytes) in total; once the request is complete its bytes are split
//! off with `split_to(..).freeze()` and each argument is a slice of them.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::encode::{encode_array_header, encode_bulk};
use super::{find_cr, parse_int, ProtocolError};

/// Longest inline line or length line Redis accepts (`PROTO_INLINE_MAX_SIZE`).
const INLINE_MAX_SIZE: usize = 64 * 1024;
/// Most arguments in one multibulk request: Redis 7.0's `INT_MAX` (it
/// raised 1,048,576 in 6.0). The argument list grows with the bytes that
/// arrive, never from the count, and `max_request_size` bounds both.
const MAX_MULTIBULK_COUNT: i64 = i32::MAX as i64;
/// Longest argument (Redis's default `proto-max-bulk-len`).
const MAX_BULK_LEN: i64 = 512 * 1024 * 1024;
/// Fewest bytes an argument can take on the wire: `$0\r\n\r\n`.
const MIN_ARG_WIRE_SIZE: usize = 6;
/// Largest argument list kept for reuse by the next request.
const MAX_SPARE_ARGS: usize = 64;
/// Before AUTH, Redis (6.2 on) takes at most this many arguments...
const UNAUTHENTICATED_MAX_ARGS: i64 = 10;
/// ...of at most this many bytes each, so a stranger cannot make it buffer much.
const UNAUTHENTICATED_MAX_BULK: i64 = 16 * 1024;

/// A complete client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request as RESP multibulk bytes, ready to forward untouched to a backend
    /// (an inline command is re-encoded as multibulk).
    pub raw: Bytes,
    /// The arguments, each a zero-copy slice of `raw` (never empty: requests
    /// without arguments are skipped, as Redis does).
    pub args: Args,
}

/// A request's arguments: up to three (GET, SET) held inline, so that
/// parsing the common commands allocates nothing.
pub type Args = smallvec::SmallVec<[Bytes; 3]>;

impl Request {
    /// Builds a request from its `raw` bytes and the byte ranges of its arguments.
    fn from_ranges(raw: Bytes, ranges: &[Range<usize>]) -> Request {
        let args = ranges.iter().map(|r| raw.slice(r.clone())).collect();
        Request { raw, args }
    }
}

/// Incremental request parser for one client connection.
///
/// Between calls the caller may only append to the buffer (as a socket read does);
/// offsets remembered from the previous call refer to its start.
#[derive(Debug)]
pub struct RequestParser {
    max_request_size: usize,
    /// The client has not authenticated: Redis's small limits apply.
    unauthenticated: bool,
    state: State,
    /// The emptied argument list of the last multibulk request, reused by the
    /// next one, so that parsing a request allocates only the request itself.
    spare_args: Vec<Range<usize>>,
}

/// How far the parser got into the request at the front of the buffer.
#[derive(Debug)]
enum State {
    /// The request's first line is not complete; `scanned` bytes of it hold no line end.
    Start { scanned: usize },
    /// The `*<count>` line was read; arguments are being read.
    Multibulk(Multibulk),
}

#[derive(Debug)]
struct Multibulk {
    /// First byte not yet parsed.
    pos: usize,
    /// Arguments still to read.
    remaining: usize,
    /// Where the arguments read so far lie; grows with the bytes received, never
    /// from the declared count.
    args: Vec<Range<usize>>,
    /// Declared length of the argument whose `$<len>` line was read.
    bulk_len: Option<usize>,
    /// Bytes from `pos` on already searched for the end of the `$<len>` line.
    scanned: usize,
}

impl RequestParser {
    /// A parser that rejects requests larger than `max_request_size` bytes (as
    /// multibulk on the wire).
    pub fn new(max_request_size: usize) -> RequestParser {
        RequestParser {
            max_request_size,
            unauthenticated: false,
            state: State::Start { scanned: 0 },
            spare_args: Vec::new(),
        }
    }

    /// Applies (or lifts) the limits for a client that has not
    /// authenticated, from the next request on.
    pub fn set_unauthenticated(&mut self, unauthenticated: bool) {
        self.unauthenticated = unauthenticated;
    }

    /// Takes the next complete request off the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed; nothing was consumed except requests Redis
    /// skips without a reply (`*0`, `*-1`, empty or blank inline lines).
    /// `Ok(Some(req))`: the request's bytes were split off `buf`.
    ///
    /// # Errors
    /// The bytes are not a valid request, or the request would exceed the size
    /// limits; the connection must be answered `-ERR Protocol error: {err}` and closed.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            let step = match &mut self.state {
                State::Start { scanned } => match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => start_multibulk(
                        buf,
                        scanned,
                        self.max_request_size,
                        self.unauthenticated,
                        &mut self.spare_args,
                    )?,
                    Some(_) => parse_inline(buf, scanned, self.max_request_size)?,
                },
                State::Multibulk(mb) => {
                    mb.advance(buf, self.max_request_size, self.unauthenticated)?
                }
            };
            match step {
                Step::Incomplete => return Ok(None),
                Step::Skipped => self.state = State::Start { scanned: 0 },
                Step::Started(mb) => self.state = State::Multibulk(mb),
                Step::Done(request) => {
                    let done = std::mem::replace(&mut self.state, State::Start { scanned: 0 });
                    if let State::Multibulk(Multibulk { mut args, .. }) = done {
                        if args.capacity() <= MAX_SPARE_ARGS {
                            args.clear();
                            self.spare_args = args;
                        }
                    }
                    return Ok(Some(request));
                }
            }
        }
    }
}

/// What one parsing step achieved.
enum Step {
    Incomplete,
    /// A request Redis ignores was consumed.
    Skipped,
    /// A multibulk header was read; its arguments follow.
    Started(Multibulk),
    Done(Request),
}

/// Finds the end of a `*<count>` or `$<len>` line that starts at `start`:
/// `Ok(Some(cr))` with `buf[cr] == b'\r'` once the byte after it has arrived too.
/// Like Redis, the byte after `\r` is skipped unchecked.
fn find_length_line(
    buf: &[u8],
    start: usize,
    scanned: &mut usize,
    too_big: ProtocolError,
) -> Result<Option<usize>, ProtocolError> {
    match find_cr(buf, start + *scanned) {
        // Checked whether or not the line end has arrived, so the outcome does not
        // depend on how the bytes were split into reads.
        Some(cr) if cr - start > INLINE_MAX_SIZE => Err(too_big),
        Some(cr) if cr + 1 < buf.len() => Ok(Some(cr)),
        Some(cr) => {
            *scanned = cr - start;
            Ok(None)
        }
        None if buf.len() - start > INLINE_MAX_SIZE => Err(too_big),
        None => {
            *scanned = buf.len() - start;
            Ok(None)
        }
    }
}

fn start_multibulk(
    buf: &mut BytesMut,
    scanned: &mut usize,
    max_request_size: usize,
    unauthenticated: bool,
    spare_args: &mut Vec<Range<usize>>,
) -> Result<Step, ProtocolError> {
    let Some(cr) = find_length_line(buf, 0, scanned, ProtocolError::MultibulkCountTooBig)? else {
        return Ok(Step::Incomplete);
    };
    let count = parse_int(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
    // Redis 7.0 names a count up to INT_MAX from an unauthenticated client
    // for what it is, before any limit of its own.
    if unauthenticated && count > UNAUTHENTICATED_MAX_ARGS && count <= i64::from(i32::MAX) {
        return Err(ProtocolError::UnauthenticatedMultibulkLength);
    }
    if count > MAX_MULTIBULK_COUNT {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    let header_len = cr + 2;
    let Ok(count) = usize::try_from(count) else {
        buf.advance(header_len);
        return Ok(Step::Skipped);
    };
    if count == 0 {
        buf.advance(header_len);
        return Ok(Step::Skipped);
    }
    if header_len + count * MIN_ARG_WIRE_SIZE > max_request_size {
        return Err(ProtocolError::RequestTooBig(max_request_size));
    }
    Ok(Step::Started(Multibulk {
        pos: header_len,
        remaining: count,
        args: std::mem::take(spare_args),
        bulk_len: None,
        scanned: 0,
    }))
}

impl Multibulk {
    /// Reads as many arguments as have fully arrived.
    fn advance(
        &mut self,
        buf: &mut BytesMut,
        max_request_size: usize,
        unauthenticated: bool,
    ) -> Result<Step, ProtocolError> {
        while self.remaining > 0 {
            let len = match self.bulk_len {
                Some(len) => len,
                None => {
                    let Some(len) =
                        self.read_bulk_header(buf, max_request_size, unauthenticated)?
                    else {
                        return Ok(Step::Incomplete);
                    };
                    len
                }
            };
            // Only the length prefix is consulted: a large argument arriving in many
            // reads is never rescanned.
            if buf.len() < self.pos + len + 2 {
                return Ok(Step::Incomplete);
            }
            // Like Redis, the two bytes after the data are skipped unchecked.
            self.args.push(self.pos..self.pos + len);
            self.pos += len + 2;
            self.remaining -= 1;
            self.bulk_len = None;
            self.scanned = 0;
        }
        let raw = buf.split_to(self.pos).freeze();
        Ok(Step::Done(Request::from_ranges(raw, &self.args)))
    }

    /// Reads a `$<len>` line at `pos`, checking the length against the limits.
    fn read_bulk_header(
        &mut self,
        buf: &[u8],
        max_request_size: usize,
        unauthenticated: bool,
    ) -> Result<Option<usize>, ProtocolError> {
        let Some(cr) = find_length_line(
            buf,
            self.pos,
            &mut self.scanned,
            ProtocolError::BulkCountTooBig,
        )?
        else {
            return Ok(None);
        };
        if buf[self.pos] != b'$' {
            return Err(ProtocolError::ExpectedBulk(buf[self.pos]));
        }
        let len = parse_int(&buf[self.pos + 1..cr])
            .filter(|len| (0..=MAX_BULK_LEN).contains(len))
            .ok_or(ProtocolError::InvalidBulkLength)?;
        if unauthenticated && len > UNAUTHENTICATED_MAX_BULK {
            return Err(ProtocolError::UnauthenticatedBulkLength);
        }
        // Lossless: 0 <= len <= 512 MB.
        let len = len as usize;
        self.pos = cr + 2;
        // Reject before the data arrives: this argument and the smallest possible
        // remaining ones already exceed the limit.
        let least_total = self.pos + len + 2 + (self.remaining - 1) * MIN_ARG_WIRE_SIZE;
        if least_total > max_request_size {
            return Err(ProtocolError::RequestTooBig(max_request_size));
        }
        self.bulk_len = Some(len);
        Ok(Some(len))
    }
}

/// Reads one inline command line (ended by `\n`, a trailing `\r` stripped) and
/// re-encodes it as multibulk.
fn parse_inline(
    buf: &mut BytesMut,
    scanned: &mut usize,
    max_request_size: usize,
) -> Result<Step, ProtocolError> {
    let Some(newline) = buf[*scanned..].iter().position(|&b| b == b'\n') else {
        // A trailing `\r` may be the start of the line end, so it does not count.
        let pending = buf.len() - usize::from(buf.ends_with(b"\r"));
        if pending > INLINE_MAX_SIZE {
            return Err(ProtocolError::InlineTooBig);
        }
        *scanned = buf.len();
        return Ok(Step::Incomplete);
    };
    let newline = *scanned + newline;
    let line = buf[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..newline]);
    if line.len() > INLINE_MAX_SIZE {
        return Err(ProtocolError::InlineTooBig);
    }
    let words = split_args(line)?;
    buf.advance(newline + 1);
    if words.is_empty() {
        return Ok(Step::Skipped);
    }
    let mut raw = BytesMut::new();
    encode_array_header(words.len(), &mut raw);
    let mut ranges = Vec::with_capacity(words.len());
    for word in &words {
        encode_bulk(word, &mut raw);
        let end = raw.len() - 2;
        ranges.push(end - word.len()..end);
    }
    if raw.len() > max_request_size {
        return Err(ProtocolError::RequestTooBig(max_request_size));
    }
    Ok(Step::Done(Request::from_ranges(raw.freeze(), &ranges)))
}

/// Splits an inline line into words with Redis's `sdssplitargs` rules: words are
/// separated by whitespace; `"..."` takes the escapes `\n \r \t \b \a \xHH` and
/// `\<any>` for that character; `'...'` takes only `\'`; a closing quote must be
/// followed by whitespace or the end of the line. A NUL byte is an ordinary byte
/// here; Redis, reading the line as a C string, never finds the end of such a
/// line and stalls the connection, which is not worth imitating.
fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let at = |i: usize| line.get(i).copied();
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_c_space) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(words);
        }
        let mut word = Vec::new();
        let mut quote: Option<u8> = None;
        loop {
            let c = at(i);
            match (quote, c) {
                (Some(_), None) => return Err(ProtocolError::UnbalancedQuotes),
                (Some(q), Some(c)) if c == q => {
                    if at(i + 1).is_some_and(|n| !is_c_space(n)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                }
                (Some(b'"'), Some(b'\\')) => {
                    if let (Some(b'x'), Some(hi), Some(lo)) = (at(i + 1), at(i + 2), at(i + 3)) {
                        if let (Some(hi), Some(lo)) = (hex_value(hi), hex_value(lo)) {
                            word.push(hi * 16 + lo);
                            i += 4;
                            continue;
                        }
                    }
                    match at(i + 1) {
                        Some(escaped) => {
                            word.push(unescape(escaped));
                            i += 2;
                        }
                        None => return Err(ProtocolError::UnbalancedQuotes),
                    }
                }
                (Some(b'\''), Some(b'\\')) if at(i + 1) == Some(b'\'') => {
                    word.push(b'\'');
                    i += 2;
                }
                (Some(_), Some(c)) => {
                    word.push(c);
                    i += 1;
                }
                (None, None | Some(b' ' | b'\n' | b'\r' | b'\t')) => break,
                (None, Some(q @ (b'"' | b'\''))) => {
                    quote = Some(q);
                    i += 1;
                }
                (None, Some(c)) => {
                    word.push(c);
                    i += 1;
                }
            }
        }
        words.push(word);
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// The character a backslash escape inside double quotes stands for.
fn unescape(c: u8) -> u8 {
    match c {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => b'\x08',
        b'a' => b'\x07',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    const MAX: usize = 1024 * 1024;

    /// Parses everything in `input`, fed at once.
    fn parse_all(input: &[u8]) -> (Vec<Request>, Result<(), ProtocolError>, BytesMut) {
        let mut parser = RequestParser::new(MAX);
        let mut buf = BytesMut::from(input);
        let mut requests = Vec::new();
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(req)) => requests.push(req),
                Ok(None) => return (requests, Ok(()), buf),
                Err(e) => return (requests, Err(e), buf),
            }
        }
    }

    fn one(input: &[u8]) -> Request {
        let (mut requests, result, rest) = parse_all(input);
        assert_eq!(result, Ok(()));
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert!(rest.is_empty(), "left over: {rest:?}");
        requests.remove(0)
    }

    fn err(input: &[u8]) -> ProtocolError {
        parse_all(input).1.unwrap_err()
    }

    fn args(req: &Request) -> Vec<&[u8]> {
        req.args.iter().map(|a| &a[..]).collect()
    }

    #[test]
    fn multibulk_is_forwarded_untouched() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let req = one(input);
        assert_eq!(&req.raw[..], &input[..]);
        assert_eq!(args(&req), [&b"SET"[..], b"k", b"hello"]);
    }

    #[test]
    fn args_are_slices_of_raw_not_copies() {
        let req = one(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
        let raw = req.raw.as_ptr_range();
        for arg in &req.args {
            let arg = arg.as_ptr_range();
            assert!(raw.start <= arg.start && arg.end <= raw.end);
        }
        assert_eq!(req.args[1].as_ptr(), req.raw[17..].as_ptr());
    }

    #[test]
    fn binary_and_empty_args() {
        let req = one(b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\n\r\n\0\xff\r\n");
        assert_eq!(args(&req), [&b"SET"[..], b"", b"\r\n\0\xff"]);
    }

    #[test]
    fn pipelined_requests_in_one_buffer() {
        let (requests, result, rest) =
            parse_all(b"*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nQU");
        assert_eq!(result, Ok(()));
        let names: Vec<_> = requests.iter().map(|r| &r.args[0][..]).collect();
        assert_eq!(names, [&b"PING"[..], b"PING", b"GET"]);
        assert_eq!(&rest[..], b"*1\r\n$4\r\nQU");
    }

    #[test]
    fn empty_multibulk_is_skipped_without_reply() {
        let (requests, result, rest) = parse_all(b"*0\r\n*-1\r\n*-5\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(result, Ok(()));
        assert_eq!(requests.len(), 1);
        assert_eq!(&requests[0].raw[..], b"*1\r\n$4\r\nPING\r\n");
        assert!(rest.is_empty());
    }

    /// Feeds `input` one byte at a time and checks the same requests come out as
    /// when it arrives at once: truncation at every byte boundary is "incomplete".
    fn assert_bytewise_same(input: &[u8]) {
        let (expected, result, _) = parse_all(input);
        assert_eq!(result, Ok(()));
        let mut parser = RequestParser::new(MAX);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in input {
            buf.put_u8(b);
            while let Some(req) = parser.parse(&mut buf).unwrap() {
                got.push(req);
            }
        }
        assert_eq!(got, expected);
        assert!(buf.is_empty());
    }

    #[test]
    fn byte_by_byte_gives_the_same_requests() {
        assert_bytewise_same(b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$10\r\n0123456789\r\n");
        assert_bytewise_same(b"*1\r\n$0\r\n\r\n*0\r\n*2\r\n$4\r\nECHO\r\n$2\r\n\r\n\r\n");
        assert_bytewise_same(b"PING\r\n\r\n  set \"a b\" 'c\\'d'\nget x\r\n");
    }

    #[test]
    fn closing_mid_request_is_just_incomplete() {
        let input = b"*2\r\n$3\r\nGET\r\n$3\r\nke";
        let mut parser = RequestParser::new(MAX);
        let mut buf = BytesMut::from(&input[..]);
        for _ in 0..3 {
            assert_eq!(parser.parse(&mut buf), Ok(None));
        }
        assert_eq!(&buf[..], &input[..]);
    }

    #[test]
    fn large_bulk_in_chunks_is_not_rescanned() {
        // A 4 MB argument arriving in 1 KB reads: each call only compares lengths,
        // so this stays fast even in a debug build.
        let len = 4 * 1024 * 1024;
        let header = format!("*2\r\n$3\r\nSET\r\n${len}\r\n");
        let total = header.len() + len + 2;
        let mut parser = RequestParser::new(8 * 1024 * 1024);
        let mut buf = BytesMut::from(header.as_bytes());
        let chunk = [b'v'; 1024];
        while buf.len() + chunk.len() < total {
            assert_eq!(parser.parse(&mut buf), Ok(None));
            buf.extend_from_slice(&chunk);
        }
        assert_eq!(parser.parse(&mut buf), Ok(None));
        buf.extend_from_slice(&vec![b'v'; total - 2 - buf.len()]);
        buf.extend_from_slice(b"\r\n");
        let req = parser.parse(&mut buf).unwrap().unwrap();
        assert_eq!(req.raw.len(), total);
        assert_eq!(req.args[1].len(), len);
        assert!(buf.is_empty());
    }

    #[test]
    fn long_lines_arriving_byte_by_byte_are_scanned_once() {
        // Quadratic rescanning would make these take minutes in a debug build.
        // `line_start`: where the over-long line begins in the buffer.
        for (prefix, line_start, filler, expected) in [
            (&b""[..], 0, b'a', ProtocolError::InlineTooBig),
            (b"*", 0, b'1', ProtocolError::MultibulkCountTooBig),
            (b"*1\r\n$", 4, b'1', ProtocolError::BulkCountTooBig),
        ] {
            let mut parser = RequestParser::new(MAX);
            let mut buf = BytesMut::from(prefix);
            let outcome = loop {
                buf.put_u8(filler);
                match parser.parse(&mut buf) {
                    Ok(None) => continue,
                    other => break other,
                }
            };
            assert_eq!(outcome, Err(expected));
            // Rejected at the first byte past the 64 KB line limit.
            assert_eq!(buf.len(), line_start + INLINE_MAX_SIZE + 1);
        }
    }

    #[test]
    fn bad_type_byte_in_multibulk() {
        assert_eq!(
            err(b"*2\r\n$3\r\nGET\r\n:3\r\nkey\r\n"),
            ProtocolError::ExpectedBulk(b':')
        );
        assert_eq!(err(b"*1\r\nx\r\n").to_string(), "expected '$', got 'x'");
    }

    #[test]
    fn invalid_multibulk_lengths() {
        for input in [
            &b"*x\r\n"[..],
            b"*\r\n",
            b"*1x\r\n",
            b"*+1\r\n",
            b"*01\r\n",
            b"*99999999999999999999\r\n",
        ] {
            assert_eq!(
                err(input),
                ProtocolError::InvalidMultibulkLength,
                "{input:?}"
            );
        }
    }

    #[test]
    fn an_unauthenticated_count_is_named_as_redis_names_it() {
        let mut parser = RequestParser::new(usize::MAX);
        parser.set_unauthenticated(true);
        for (input, want) in [
            (
                &b"*11\r\n"[..],
                ProtocolError::UnauthenticatedMultibulkLength,
            ),
            (
                b"*2147483647\r\n",
                ProtocolError::UnauthenticatedMultibulkLength,
            ),
            (b"*2147483648\r\n", ProtocolError::InvalidMultibulkLength),
        ] {
            assert_eq!(
                parser.parse(&mut BytesMut::from(input)),
                Err(want),
                "{input:?}"
            );
        }
    }

    #[test]
    fn multibulk_count_over_limit() {
        assert_eq!(
            err(b"*2147483648\r\n"),
            ProtocolError::InvalidMultibulkLength
        );
        // At the limit the count is fine; only the request size limit rejects it.
        let mut parser = RequestParser::new(usize::MAX);
        assert_eq!(
            parser.parse(&mut BytesMut::from(&b"*2147483647\r\n"[..])),
            Ok(None)
        );
        // Redis 6.0 on takes more than 1,048,576 arguments (a bulk RPUSH).
        let mut parser = RequestParser::new(512 << 20);
        let mut many = BytesMut::from(&b"*1100002\r\n$5\r\nRPUSH\r\n$1\r\nk\r\n"[..]);
        for _ in 0..1_100_000 {
            many.extend_from_slice(b"$1\r\nx\r\n");
        }
        let request = parser.parse(&mut many).unwrap().expect("complete");
        assert_eq!(request.args.len(), 1_100_002);
    }

    #[test]
    fn invalid_bulk_lengths() {
        for input in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$-5\r\n",
            b"*1\r\n$x\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$536870913\r\n",
            b"*1\r\n$99999999999999999999\r\n",
        ] {
            assert_eq!(err(input), ProtocolError::InvalidBulkLength, "{input:?}");
        }
    }

    #[test]
    fn bulk_of_512_mb_is_allowed_by_the_bulk_limit() {
        let mut parser = RequestParser::new(usize::MAX);
        let mut buf = BytesMut::from(&b"*1\r\n$536870912\r\n"[..]);
        assert_eq!(parser.parse(&mut buf), Ok(None));
    }

    #[test]
    fn request_size_is_rejected_from_the_headers() {
        let too_big = ProtocolError::RequestTooBig(100);
        // From the count alone: 20 arguments take at least 120 bytes.
        let mut parser = RequestParser::new(100);
        assert_eq!(
            parser.parse(&mut BytesMut::from(&b"*20\r\n"[..])),
            Err(too_big.clone())
        );
        // From a bulk length, before any of the data has arrived.
        let mut parser = RequestParser::new(100);
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$81\r\n"[..]);
        assert_eq!(parser.parse(&mut buf), Err(too_big.clone()));
        // The same request one byte smaller fits exactly.
        let mut parser = RequestParser::new(100);
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$80\r\n"[..]);
        buf.extend_from_slice(&[b'v'; 80]);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(buf.len(), 100);
        assert_eq!(parser.parse(&mut buf).unwrap().unwrap().raw.len(), 100);
        // Inline requests count as their multibulk encoding.
        let mut parser = RequestParser::new(20);
        assert_eq!(
            parser.parse(&mut BytesMut::from(&b"a b c d\r\n"[..])),
            Err(ProtocolError::RequestTooBig(20))
        );
    }

    #[test]
    fn too_big_count_strings() {
        let mut long = b"*".to_vec();
        long.extend(std::iter::repeat_n(b'1', INLINE_MAX_SIZE + 1));
        assert_eq!(err(&long), ProtocolError::MultibulkCountTooBig);
        long.extend_from_slice(b"\r\n");
        assert_eq!(err(&long), ProtocolError::MultibulkCountTooBig);
        let mut long = b"*1\r\n$".to_vec();
        long.extend(std::iter::repeat_n(b'1', INLINE_MAX_SIZE + 1));
        assert_eq!(err(&long), ProtocolError::BulkCountTooBig);
    }

    #[test]
    fn inline_commands_are_reencoded_as_multibulk() {
        let req = one(b"set  key\tvalue\r\n");
        assert_eq!(
            &req.raw[..],
            b"*3\r\n$3\r\nset\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
        );
        assert_eq!(args(&req), [&b"set"[..], b"key", b"value"]);
        let raw = req.raw.as_ptr_range();
        assert!(req.args.iter().all(|a| raw.contains(&a.as_ptr())));
        assert_eq!(args(&one(b"PING\n")), [&b"PING"[..]]);
    }

    #[test]
    fn inline_quoting_follows_sdssplitargs() {
        let req = one(b"set \"a b\\n\\r\\t\\b\\a\\\\\\\"\\x41\\x4g\\q\" 'it\\'s \\n' x\"y z\"\r\n");
        assert_eq!(
            args(&req),
            [
                &b"set"[..],
                b"a b\n\r\t\x08\x07\\\"Ax4gq",
                b"it's \\n",
                b"xy z"
            ]
        );
        assert_eq!(args(&one(b"echo \"\"\n")), [&b"echo"[..], b""]);
        assert_eq!(args(&one(b"get a\0b c\n")), [&b"get"[..], b"a\0b", b"c"]);
        // Vertical tab and form feed separate words only before a word starts.
        assert_eq!(args(&one(b"echo \x0ba\x0bb\n")), [&b"echo"[..], b"a\x0bb"]);
    }

    #[test]
    fn unbalanced_quotes() {
        for input in [
            &b"get \"abc\r\n"[..],
            b"get 'abc\n",
            b"get \"a\"b\n",
            b"get 'a'b\n",
            b"get \"a\\\n",
        ] {
            assert_eq!(err(input), ProtocolError::UnbalancedQuotes, "{input:?}");
        }
    }

    #[test]
    fn empty_inline_lines_are_skipped() {
        let (requests, result, rest) = parse_all(b"\r\n\n   \t \r\nPING\r\n");
        assert_eq!(result, Ok(()));
        assert_eq!(requests.len(), 1);
        assert_eq!(args(&requests[0]), [&b"PING"[..]]);
        assert!(rest.is_empty());
    }

    #[test]
    fn too_big_inline_request() {
        let long = vec![b'a'; INLINE_MAX_SIZE + 1];
        assert_eq!(err(&long), ProtocolError::InlineTooBig);
        let mut line = long.clone();
        line.push(b'\n');
        assert_eq!(err(&line), ProtocolError::InlineTooBig);
        // Exactly 64 KB, even with the `\r` waiting for its `\n`, is fine.
        let mut line = vec![b'a'; INLINE_MAX_SIZE];
        line.push(b'\r');
        assert_eq!(parse_all(&line).1, Ok(()));
        line.push(b'\n');
        assert_eq!(one(&line).args[0].len(), INLINE_MAX_SIZE);
    }

    #[test]
    fn megabyte_of_garbage_fails_fast_or_parses() {
        // xorshift: deterministic pseudo-random bytes.
        let mut x: u32 = 0x9e37_79b9;
        let garbage: Vec<u8> = (0..1024 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let (requests, _, rest) = parse_all(&garbage);
        let consumed: usize = garbage.len() - rest.len();
        assert!(requests.iter().map(|r| r.args.len()).sum::<usize>() <= consumed);
        // Garbage without any line end or with a `*` header fails on length alone.
        assert_eq!(err(&vec![b'x'; 1024 * 1024]), ProtocolError::InlineTooBig);
        let mut star = vec![b'7'; 1024 * 1024];
        star[0] = b'*';
        assert_eq!(err(&star), ProtocolError::MultibulkCountTooBig);
        let mut bulk = b"*1\r\n".to_vec();
        bulk.extend_from_slice(&garbage);
        assert!(parse_all(&bulk).1.is_err());
    }
}
