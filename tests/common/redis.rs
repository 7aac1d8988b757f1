//! A real `redis-server` on a free loopback port, and a tiny blocking RESP
//! client for tests that want raw bytes on the wire.

use super::{free_port, port_open, temp_dir, wait_until, ProcessGuard};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Redis {
    pub port: u16,
    pub guard: ProcessGuard,
}

impl Redis {
    /// Starts redis-server with no persistence; `extra` are more
    /// `--option value` arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        let port = free_port();
        let dir = temp_dir("redis");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (deploy/install-deps.sh)");
        let guard = ProcessGuard::new(format!("redis:{port}"), child);
        wait_until("redis-server to listen", Duration::from_secs(10), || {
            port_open(port)
        });
        Redis { port, guard }
    }

    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A raw connection to this server.
    pub fn connect(&self) -> RawClient {
        RawClient::connect(self.port)
    }
}

/// A minimal blocking client: sends commands as multibulk and reads one reply
/// back as raw RESP text, so tests can assert the exact bytes a client sees.
pub struct RawClient {
    pub reader: BufReader<TcpStream>,
}

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            reader: BufReader::new(stream),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Shuts the sending side, as `nc -N` does at the end of its input.
    pub fn half_close(&mut self) {
        self.reader
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
    }

    /// Everything the server sends until it closes.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut self.reader, &mut rest).unwrap();
        rest
    }

    /// Sends one command and returns its reply as raw RESP.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send_raw(&encode_command(args));
        self.read_reply()
    }

    /// `cmd` for string arguments, reply as (lossy) text.
    pub fn cmd_str(&mut self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        String::from_utf8_lossy(&self.cmd(&args)).into_owned()
    }

    /// Reads one complete RESP2/RESP3 reply and returns its raw bytes.
    pub fn read_reply(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.read_into(&mut out);
        out
    }

    fn read_into(&mut self, out: &mut Vec<u8>) {
        read_reply_into(&mut self.reader, out);
    }

    /// The number `field` of the server's `INFO section`, if it has one.
    pub fn info_number(&mut self, section: &str, field: &str) -> Option<u64> {
        let info = self.cmd_str(&["INFO", section]);
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|n| n.trim().parse().ok())
    }

    /// True when the peer closed the connection (reads EOF within 5 s).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0))
    }
}

/// Reads one complete RESP2/RESP3 reply from `reader` into `out`, raw:
/// for connections other than [`RawClient`]'s TCP (a unix socket).
pub fn read_reply_into(reader: &mut impl BufRead, out: &mut Vec<u8>) {
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .expect("read reply line");
    assert!(
        line.ends_with(b"\r\n"),
        "connection closed or bad line: {line:?}"
    );
    out.extend_from_slice(&line);
    let body = &line[1..line.len() - 2];
    let num = || std::str::from_utf8(body).unwrap().parse::<i64>().unwrap();
    let items = match line[0] {
        b'$' | b'=' | b'!' => {
            let n = num();
            if n >= 0 {
                let mut data = vec![0; n as usize + 2];
                reader.read_exact(&mut data).unwrap();
                out.extend_from_slice(&data);
            }
            0
        }
        b'*' | b'~' | b'>' => num().max(0),
        b'%' | b'|' => num() * 2,
        _ => 0,
    };
    for _ in 0..items {
        read_reply_into(reader, out);
    }
}

/// Encodes `args` as a RESP multibulk command.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The first reply line `client` gets within `wait`, if any.
pub fn reply_line_within(client: &mut RawClient, wait: Duration) -> Option<String> {
    client
        .reader
        .get_ref()
        .set_read_timeout(Some(wait))
        .unwrap();
    let mut line = Vec::new();
    match client.reader.read_until(b'\n', &mut line) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&line).into_owned()),
        _ => None,
    }
}
