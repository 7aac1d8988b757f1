//! The real twemproxy (`/usr/sbin/nutcracker` 0.5.0) on free loopback ports:
//! the oracle for hashing and key placement.

use super::redis::RawClient;
use super::{free_port, port_open, temp_dir, ProcessGuard};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const NUTCRACKER: &str = "/usr/sbin/nutcracker";

pub struct Nutcracker {
    /// The pool's listen port.
    pub port: u16,
    /// The stats port (`-s`).
    pub stats_port: u16,
    /// Holds the config, log and pid files.
    pub dir: PathBuf,
    pub guard: ProcessGuard,
}

impl Nutcracker {
    /// Starts nutcracker with one pool named `pool` whose settings are
    /// `settings`: YAML lines indented by two spaces (hash, distribution,
    /// servers, ...), without `listen`, which the harness adds. Waits until
    /// the pool accepts connections; panics with nutcracker's log if it
    /// exits first (for example on a bad config).
    pub fn start(settings: &str) -> Nutcracker {
        let port = free_port();
        let stats_port = free_port();
        let dir = temp_dir("nutcracker");
        let conf = dir.join("nutcracker.yml");
        let log = dir.join("nutcracker.log");
        let yaml = format!("pool:\n  listen: 127.0.0.1:{port}\n{settings}");
        std::fs::write(&conf, &yaml).unwrap();
        let child = Command::new(NUTCRACKER)
            .arg("-c")
            .arg(&conf)
            .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
            .arg("-o")
            .arg(&log)
            .arg("-p")
            .arg(dir.join("nutcracker.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nutcracker must be installed at /usr/sbin/nutcracker");
        let mut guard = ProcessGuard::new(format!("nutcracker:{port}"), child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_open(port) {
            let exited = guard
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("nutcracker did not listen on {port} ({exited:?})\nconfig:\n{yaml}\nlog:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Nutcracker {
            port,
            stats_port,
            dir,
            guard,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A raw connection to the pool.
    pub fn connect(&self) -> RawClient {
        RawClient::connect(self.port)
    }

    /// nutcracker's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nutcracker.log")).unwrap_or_default()
    }
}
