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
