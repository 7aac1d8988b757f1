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
#[path = "request_tests.rs"]
mod tests;
