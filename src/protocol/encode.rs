//! Encoding of the values and requests the proxy builds, in the client's
//! protocol. RESP2 clients get RESP3 types downgraded the way Redis 7 does it.

use bytes::{BufMut, BytesMut};

use super::{Proto, Value};

/// Appends `value` to `out` in the client's protocol.
///
/// For RESP2, RESP3 types are downgraded as Redis 7 does for RESP2 clients:
/// `Null` -> `$-1`, `Map` -> flat array of keys and values, `Set` and `Push` ->
/// array, `Double` -> bulk string, `Boolean` -> `:1`/`:0`, `Verbatim` -> bulk of
/// the text, `BigNumber` -> bulk. `NullArray` is `*-1` in RESP2 and `_` in RESP3.
/// CR and LF in simple strings and errors become spaces so the line stays one line.
pub fn encode(value: &Value, proto: Proto, out: &mut BytesMut) {
    let resp3 = proto == Proto::Resp3;
    match value {
        Value::Simple(text) => put_line(out, b'+', text),
        Value::Error(text) => put_line(out, b'-', text),
        Value::Integer(n) => encode_integer(*n, out),
        Value::Bulk(data) => encode_bulk(data, out),
        Value::Null if resp3 => out.put_slice(b"_\r\n"),
        Value::Null => out.put_slice(b"$-1\r\n"),
        Value::NullArray if resp3 => out.put_slice(b"_\r\n"),
        Value::NullArray => out.put_slice(b"*-1\r\n"),
        Value::Array(items) => put_aggregate(out, b'*', items, proto),
        Value::Set(items) => put_aggregate(out, if resp3 { b'~' } else { b'*' }, items, proto),
        Value::Push(items) => put_aggregate(out, if resp3 { b'>' } else { b'*' }, items, proto),
        Value::Map(pairs) => {
            if resp3 {
                put_length(out, b'%', pairs.len());
            } else {
                encode_array_header(pairs.len() * 2, out);
            }
            for (key, value) in pairs {
                encode(key, proto, out);
                encode(value, proto, out);
            }
        }
        Value::Double(d) if resp3 => put_line(out, b',', format_double(*d).as_bytes()),
        Value::Double(d) => encode_bulk(format_double(*d).as_bytes(), out),
        Value::Boolean(b) if resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Value::Boolean(b) => encode_integer(i64::from(*b), out),
        Value::Verbatim { format, text } if resp3 => {
            put_length(out, b'=', text.len() + 4);
            out.put_slice(format);
            out.put_u8(b':');
            out.put_slice(text);
            out.put_slice(b"\r\n");
        }
        Value::Verbatim { text, .. } => encode_bulk(text, out),
        Value::BigNumber(digits) if resp3 => put_line(out, b'(', digits),
        Value::BigNumber(digits) => encode_bulk(digits, out),
    }
}

/// Appends the error line `-{msg}\r\n` (same in RESP2 and RESP3); CR and LF in
/// `msg` become spaces. `msg` starts with the error code, e.g. `ERR unknown command`.
pub fn encode_error(msg: &str, out: &mut BytesMut) {
    put_line(out, b'-', msg.as_bytes());
}

/// Appends the simple string `+{msg}\r\n`; CR and LF in `msg` become spaces.
pub fn encode_simple(msg: &str, out: &mut BytesMut) {
    put_line(out, b'+', msg.as_bytes());
}

/// Appends the integer `:{n}\r\n`.
pub fn encode_integer(n: i64, out: &mut BytesMut) {
    put_decimal(out, b':', n < 0, n.unsigned_abs());
}

/// Appends the bulk string `${len}\r\n{data}\r\n`.
pub fn encode_bulk(data: &[u8], out: &mut BytesMut) {
    out.reserve(data.len() + 24);
    put_length(out, b'$', data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends an array header `*{len}\r\n`; the caller appends the `len` elements,
/// e.g. element frames taken unchanged from backend replies.
pub fn encode_array_header(len: usize, out: &mut BytesMut) {
    put_length(out, b'*', len);
}

/// Appends a request as a RESP multibulk of bulk strings, as backends expect it.
pub fn encode_request<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    encode_array_header(args.len(), out);
    for arg in args {
        encode_bulk(arg.as_ref(), out);
    }
}

/// Appends `{kind}{len}\r\n`.
fn put_length(out: &mut BytesMut, kind: u8, len: usize) {
    put_decimal(out, kind, false, len as u64);
}

/// Appends `{kind}[-]{magnitude}\r\n` with one copy, without the
/// formatting machinery: split requests encode a header per argument.
fn put_decimal(out: &mut BytesMut, kind: u8, negative: bool, mut magnitude: u64) {
    // The kind, a sign, up to 20 digits (u64::MAX) and CRLF, built from
    // the end.
    let mut line = [0u8; 24];
    line[22..].copy_from_slice(b"\r\n");
    let mut start = 22;
    loop {
        start -= 1;
        line[start] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if negative {
        start -= 1;
        line[start] = b'-';
    }
    start -= 1;
    line[start] = kind;
    out.extend_from_slice(&line[start..]);
}

/// Appends `{kind}{text}\r\n` with CR and LF in `text` replaced by spaces.
fn put_line(out: &mut BytesMut, kind: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(kind);
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.put_slice(b"\r\n");
}

fn put_aggregate(out: &mut BytesMut, kind: u8, items: &[Value], proto: Proto) {
    put_length(out, kind, items.len());
    for item in items {
        encode(item, proto, out);
    }
}

/// The text of a double: `inf`, `-inf`, `nan`, else the shortest text that reads
/// back as the same number (what Redis 7.2 sends; 7.0's `%.17g` may add digits).
fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".to_owned()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else if d == 0.0 || (1e-4..1e17).contains(&d.abs()) {
        d.to_string()
    } else {
        // Exponent form keeps 1e300 from printing as 301 digits.
        format!("{d:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_reply;
    use super::*;
    use bytes::Bytes;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn enc(value: &Value, proto: Proto) -> BytesMut {
        let mut out = BytesMut::new();
        encode(value, proto, &mut out);
        out
    }

    /// A value with every RESP3 type, nested.
    fn everything() -> Value {
        Value::Array(vec![
            Value::Simple(b("OK")),
            Value::Error(b("ERR x")),
            Value::Integer(-7),
            Value::Bulk(b("bin\r\n\0")),
            Value::Null,
            Value::NullArray,
            Value::Map(vec![(
                Value::Bulk(b("k")),
                Value::Set(vec![Value::Integer(1)]),
            )]),
            Value::Double(1.5),
            Value::Boolean(true),
            Value::Verbatim {
                format: *b"txt",
                text: b("hi"),
            },
            Value::BigNumber(b("123456789012345678901234567890")),
            Value::Push(vec![Value::Bulk(b("message"))]),
        ])
    }

    #[test]
    fn resp3_round_trips() {
        let Value::Array(mut expected) = everything() else {
            unreachable!()
        };
        // RESP3 has one null: `*-1` becomes `_`.
        expected[5] = Value::Null;
        let wire = enc(&everything(), Proto::Resp3);
        assert_eq!(parse_reply(&wire).unwrap(), Value::Array(expected));
    }

    #[test]
    fn resp2_downgrades_like_redis() {
        let expected = Value::Array(vec![
            Value::Simple(b("OK")),
            Value::Error(b("ERR x")),
            Value::Integer(-7),
            Value::Bulk(b("bin\r\n\0")),
            Value::Null,
            Value::NullArray,
            Value::Array(vec![
                Value::Bulk(b("k")),
                Value::Array(vec![Value::Integer(1)]),
            ]),
            Value::Bulk(b("1.5")),
            Value::Integer(1),
            Value::Bulk(b("hi")),
            Value::Bulk(b("123456789012345678901234567890")),
            Value::Array(vec![Value::Bulk(b("message"))]),
        ]);
        assert_eq!(
            parse_reply(&enc(&everything(), Proto::Resp2)).unwrap(),
            expected
        );
    }

    #[test]
    fn exact_bytes_of_each_downgrade() {
        let cases: [(Value, &[u8], &[u8]); 7] = [
            (Value::Null, b"$-1\r\n", b"_\r\n"),
            (Value::NullArray, b"*-1\r\n", b"_\r\n"),
            (Value::Boolean(false), b":0\r\n", b"#f\r\n"),
            (Value::Double(-0.25), b"$5\r\n-0.25\r\n", b",-0.25\r\n"),
            (Value::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n"),
            (
                Value::Map(vec![(Value::Simple(b("a")), Value::Integer(1))]),
                b"*2\r\n+a\r\n:1\r\n",
                b"%1\r\n+a\r\n:1\r\n",
            ),
            (
                Value::Verbatim {
                    format: *b"mkd",
                    text: b("# x"),
                },
                b"$3\r\n# x\r\n",
                b"=7\r\nmkd:# x\r\n",
            ),
        ];
        for (value, resp2, resp3) in cases {
            assert_eq!(&enc(&value, Proto::Resp2)[..], resp2, "{value:?}");
            assert_eq!(&enc(&value, Proto::Resp3)[..], resp3, "{value:?}");
        }
    }

    #[test]
    fn doubles_read_back_exactly() {
        for d in [
            0.1,
            1.0 / 3.0,
            1e300,
            -2.5e-10,
            123456789.0,
            0.0,
            1e17,
            1e-4,
        ] {
            let text = format_double(d);
            assert_eq!(text.parse::<f64>().unwrap(), d, "{text}");
            assert!(text.len() <= 24, "{text}");
        }
        assert_eq!(format_double(f64::NAN), "nan");
        assert_eq!(format_double(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn builders() {
        let mut out = BytesMut::new();
        encode_error("ERR bad\r\nthing", &mut out);
        encode_simple("OK", &mut out);
        encode_integer(i64::MIN, &mut out);
        encode_bulk(b"", &mut out);
        encode_array_header(2, &mut out);
        assert_eq!(
            &out[..],
            b"-ERR bad  thing\r\n+OK\r\n:-9223372036854775808\r\n$0\r\n\r\n*2\r\n"
        );
    }

    #[test]
    fn integers_and_lengths_in_decimal() {
        let mut out = BytesMut::new();
        for n in [0, 9, 10, -1, -10, 1_234_567_890, i64::MAX] {
            encode_integer(n, &mut out);
        }
        encode_array_header(100, &mut out);
        assert_eq!(
            &out[..],
            b":0\r\n:9\r\n:10\r\n:-1\r\n:-10\r\n:1234567890\r\n:9223372036854775807\r\n*100\r\n"
        );
        let mut out = BytesMut::new();
        put_length(&mut out, b'$', usize::MAX);
        assert_eq!(&out[..], format!("${}\r\n", usize::MAX).as_bytes());
    }

    #[test]
    fn request_encoding() {
        let mut out = BytesMut::new();
        encode_request(&["GET", "key"], &mut out);
        assert_eq!(&out[..], b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
    }
}
