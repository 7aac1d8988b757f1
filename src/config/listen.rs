//! `listen`: a TCP `host:port`, or nutcracker's unix socket form
//! `/path/to/socket [mode]`, the mode in octal as `chmod` takes it.

use super::parse_host_port;
use std::path::PathBuf;

/// A pool listening on a unix socket instead of TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixListen {
    pub path: PathBuf,
    /// Permissions set on the socket file once bound; `None` leaves what
    /// the umask gives (nutcracker does the same).
    pub mode: Option<u32>,
}

/// The longest socket path the kernel takes: `sun_path` is 108 bytes,
/// the last one a NUL.
const LONGEST_SOCKET_PATH: usize = 107;

/// Parses `listen`: the address as the rest of the proxy names it (a
/// bracketed IPv6 host, or the socket's path), and the unix socket if it
/// is one.
pub(super) fn parse_listen(text: &str) -> Result<(String, Option<UnixListen>), String> {
    if text.starts_with('/') {
        let unix = parse_unix(text)?;
        return Ok((unix.path.display().to_string(), Some(unix)));
    }
    let (host, port) = parse_host_port(text).map_err(|e| format!("listen {e}"))?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok((format!("{host}:{port}"), None))
}

/// `/path [mode]`: as nutcracker reads it, the mode is whatever follows
/// the last space.
fn parse_unix(text: &str) -> Result<UnixListen, String> {
    let text = text.trim_end();
    let (path, mode) = match text.rsplit_once(' ') {
        Some((path, mode)) => (path.trim_end(), Some(parse_mode(text, mode)?)),
        None => (text, None),
    };
    if path.len() > LONGEST_SOCKET_PATH {
        return Err(format!(
            "listen '{path}': a unix socket path is at most {LONGEST_SOCKET_PATH} bytes, \
             this one has {}",
            path.len()
        ));
    }
    if path.ends_with('/') {
        return Err(format!(
            "listen '{path}': names a directory, not a socket file"
        ));
    }
    Ok(UnixListen {
        path: PathBuf::from(path),
        mode,
    })
}

fn parse_mode(text: &str, mode: &str) -> Result<u32, String> {
    u32::from_str_radix(mode, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            format!(
                "listen '{text}': '{mode}' is not a file mode; write \"/path/to/socket 0666\" \
                 (octal, at most 0777)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_addresses_are_normalised() {
        assert_eq!(
            parse_listen("127.0.0.1:22121").unwrap(),
            ("127.0.0.1:22121".into(), None)
        );
        assert_eq!(
            parse_listen("::1:22121").unwrap(),
            ("[::1]:22121".into(), None)
        );
    }

    #[test]
    fn a_socket_path_with_and_without_a_mode() {
        let (name, unix) = parse_listen("/tmp/gamma 0666").unwrap();
        assert_eq!(name, "/tmp/gamma");
        assert_eq!(
            unix,
            Some(UnixListen {
                path: "/tmp/gamma".into(),
                mode: Some(0o666)
            })
        );
        let (_, unix) = parse_listen("/run/nc.sock").unwrap();
        assert_eq!(unix.unwrap().mode, None);
    }

    #[test]
    fn bad_socket_listens_are_refused_in_words() {
        let e = parse_listen("/tmp/x.sock 0999").unwrap_err();
        assert!(e.contains("'0999' is not a file mode"), "{e}");
        let e = parse_listen("/tmp/x.sock 01777").unwrap_err();
        assert!(e.contains("at most 0777"), "{e}");
        let long = format!("/{}", "a".repeat(120));
        let e = parse_listen(&long).unwrap_err();
        assert!(e.contains("at most 107 bytes, this one has 121"), "{e}");
        let e = parse_listen("/tmp/ 0666").unwrap_err();
        assert!(e.contains("names a directory"), "{e}");
    }
}
