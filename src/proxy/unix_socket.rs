//! A pool's unix socket (`listen: /path/to/socket 0666`, nutcracker's
//! form). Bound as nutcracker binds it, a socket file left by a process
//! that died is replaced and the mode applied, but without its hazard:
//! nutcracker unlinks whatever is at the path, so a typo could delete a
//! data file, or take the socket of a proxy still serving. Here a path
//! that is not a socket, or a socket something still answers on, is left
//! alone and the start fails in words.

use crate::config::UnixListen;
use socket2::{Domain, SockAddr, Socket, Type};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;

/// The socket file this proxy bound: removed when the pool stops
/// listening, unless another process has bound the path since.
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the file `bind` made.
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // The inode alone could be the next proxy's: a file system may
        // give an unlinked file's number to the next file made. So it
        // must also be that nothing answers on it.
        let _serialized = lock_directory(&self.path);
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.id);
        if ours && matches!(probe(&self.path), Ok(Probe::Nobody)) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Whether a process listens on a socket file.
enum Probe {
    Listening,
    Nobody,
}

/// Connects without blocking: a live listener whose backlog is full
/// answers `EAGAIN` instead of holding the caller up.
fn probe(path: &Path) -> io::Result<Probe> {
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Ok(Probe::Listening),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Probe::Listening),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Probe::Nobody),
        Err(e) => Err(e),
    }
}

/// Binds and listens on `unix`, with `backlog` pending connections.
///
/// # Errors
/// The path is not a socket, another process listens on it, or the
/// socket cannot be made, bound or given its mode.
pub fn bind(unix: &UnixListen, backlog: u32) -> io::Result<(UnixListener, SocketFile)> {
    let path = &unix.path;
    let _serialized = lock_directory(path);
    clear_leftover(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let meta = fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: path.clone(),
        id: (meta.dev(), meta.ino()),
    };
    // Before `listen`: until then a connect is refused, so no client gets
    // in under the umask's mode.
    if let Some(mode) = unix.mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    let listener = UnixListener::from_std(socket.into())?;
    Ok((listener, file))
}

/// Holds the socket's directory locked (`flock`) while this process
/// clears, binds and starts listening on a path, or removes its file, so
/// that no other proxy does the same in between: two started at once on a
/// leftover socket could each clear it and bind, the second removing the
/// first's file (review), and a socket bound but not yet listening looks
/// like a leftover. The lock is released when the returned file closes
/// (or the process dies), and leaves nothing on disk. Without one (the
/// directory cannot be opened) it goes on as before, unserialized.
///
/// Waited for [`LOCK_WAIT`] at most: another program holding a lock on the
/// directory (not a proxy binding) must not hold the start or the stop up
/// (review: 10 s, and a SIGTERM unheard meanwhile). Past it, a warning, and
/// on as before.
fn lock_directory(path: &Path) -> Option<fs::File> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file = fs::File::open(dir).ok()?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Some(file),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(LOCK_RETRY);
            }
            Err(e) => {
                tracing::warn!(directory = %dir.display(), error = %e,
                    "cannot lock the socket's directory; going on without the lock");
                return None;
            }
        }
    }
}

/// How long [`lock_directory`] waits: a proxy binding holds it for
/// milliseconds.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

/// Removes a socket file nothing listens on any more (left by a process
/// that was killed); refuses anything else at the path.
fn clear_leftover(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; it was left alone",
        ));
    }
    match probe(path) {
        Ok(Probe::Nobody) => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Ok(Probe::Listening) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is listening on this socket",
        )),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot tell whether the socket there is in use: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sp-unix-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_leftover_socket_is_replaced_and_a_live_one_is_not() {
        let dir = scratch("leftover");
        let unix = UnixListen {
            path: dir.join("p.sock"),
            mode: Some(0o600),
        };
        // A socket file whose listener is gone, as kill -9 leaves it.
        drop(std::os::unix::net::UnixListener::bind(&unix.path).unwrap());
        let (listener, file) = bind(&unix, 16).unwrap();
        let mode = fs::metadata(&unix.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = bind(&unix, 16).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        drop(listener);
        drop(file);
        assert!(!unix.path.exists());
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = scratch("file");
        let unix = UnixListen {
            path: dir.join("data"),
            mode: None,
        };
        fs::write(&unix.path, b"keep me").unwrap();
        let e = bind(&unix, 16).err().unwrap();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(fs::read(&unix.path).unwrap(), b"keep me");
    }

    /// Two proxies started at once on a path with a leftover socket: one
    /// binds it, the other is refused, and the path answers (review: both
    /// could clear the leftover and bind, the second removing the first's
    /// file, which then served no one; 2 in about 200 tries).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_proxies_started_at_once_on_a_leftover_do_not_both_bind() {
        let dir = scratch("race");
        let unix = UnixListen {
            path: dir.join("p.sock"),
            mode: Some(0o600),
        };
        let mut left = 0;
        for round in 0..300 {
            drop(std::os::unix::net::UnixListener::bind(&unix.path).unwrap());
            let start = std::sync::Arc::new(std::sync::Barrier::new(2));
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let (unix, start) = (unix.clone(), start.clone());
                    let runtime = tokio::runtime::Handle::current();
                    std::thread::spawn(move || {
                        let _entered = runtime.enter();
                        start.wait();
                        bind(&unix, 16)
                    })
                })
                .collect();
            let bound: Vec<_> = racers
                .into_iter()
                .filter_map(|racer| racer.join().unwrap().ok())
                .collect();
            assert_eq!(bound.len(), 1, "round {round}: both bound");
            assert!(
                matches!(probe(&unix.path), Ok(Probe::Listening)),
                "round {round}: the winner's file was removed"
            );
            drop(bound);
            // Its file is removed as it stops (`a_leftover_socket_...`
            // tests that alone). Here, under a loaded CI, one round in
            // thousands left it (not reproduced in 15,000 rounds on an idle
            // machine): harmless, as a socket nothing listens on is the
            // leftover the next start replaces, but counted, and never one
            // that still answers.
            if unix.path.exists() {
                assert!(
                    matches!(probe(&unix.path), Ok(Probe::Nobody)),
                    "round {round}: the file left still answers"
                );
                left += 1;
            }
        }
        assert!(left <= 3, "{left} of 300 rounds left the file");
    }

    #[tokio::test]
    async fn the_file_of_a_later_proxy_is_not_removed() {
        let dir = scratch("later");
        let unix = UnixListen {
            path: dir.join("p.sock"),
            mode: None,
        };
        let (listener, file) = bind(&unix, 16).unwrap();
        // This proxy stops accepting; the next one binds the same path
        // while this one still drains.
        drop(listener);
        let (_next, _next_file) = bind(&unix, 16).unwrap();
        drop(file);
        assert!(unix.path.exists());
    }
}
