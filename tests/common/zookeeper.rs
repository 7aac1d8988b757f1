//! A real ZooKeeper server (the Debian `zookeeper` package's jars) on a free
//! loopback port, which a test can stop and start again on the same port and
//! data directory, e.g. to expire sessions.
//!
//! The server runs standalone with tickTime 200 ms and sessions capped at
//! 2 s, so session expiry takes about 3 s instead of the usual 30 s. Its log
//! is `<dir>/zookeeper.log`; panics on a failed start include its tail.

use super::{free_port, port_open, temp_dir, ProcessGuard};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `zookeeper.jar`'s manifest names its dependencies (jute, netty, jackson,
/// ...) in /usr/share/java; slf4j-simple makes it log to stderr.
const CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

/// How long a start may take on a busy machine (usually well under 1 s).
const START_DEADLINE: Duration = Duration::from_secs(30);

pub struct ZooKeeper {
    pub port: u16,
    /// Holds `zoo.cfg`, `data/` and `zookeeper.log`.
    pub dir: PathBuf,
    guard: Option<ProcessGuard>,
}

/// Options for a persistent znode anyone may change, as ops create them.
pub fn persistent() -> zookeeper_client::CreateOptions<'static> {
    zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all())
}

impl ZooKeeper {
    /// A client for the test's own changes (ops, watchdogs), with a 2 s
    /// session.
    pub async fn client(&self) -> zookeeper_client::Client {
        self.client_with_session(Duration::from_secs(2)).await
    }

    /// A client whose session survives `timeout` without the server (a
    /// restart on a loaded machine can take a few seconds).
    pub async fn client_with_session(&self, timeout: Duration) -> zookeeper_client::Client {
        zookeeper_client::Client::connector()
            .with_session_timeout(timeout)
            .connect(&self.hosts())
            .await
            .expect("connect to ZooKeeper")
    }

    /// Starts a standalone server and waits until it serves requests.
    pub fn start() -> ZooKeeper {
        ZooKeeper::start_with_sessions_up_to(2000)
    }

    /// [`ZooKeeper::start`], granting sessions up to `max_ms` (2 s there,
    /// so that expiries come fast).
    pub fn start_with_sessions_up_to(max_ms: u64) -> ZooKeeper {
        let port = free_port();
        let dir = temp_dir("zookeeper");
        let config = format!(
            "tickTime=200\n\
             minSessionTimeout=400\n\
             maxSessionTimeout={max_ms}\n\
             dataDir={data}\n\
             clientPort={port}\n\
             clientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=*\n\
             forceSync=no\n\
             preAllocSize=1024\n",
            data = dir.join("data").display(),
        );
        std::fs::write(dir.join("zoo.cfg"), config).unwrap();
        let mut zookeeper = ZooKeeper {
            port,
            dir,
            guard: None,
        };
        zookeeper.start_again();
        zookeeper
    }

    /// The connect string, `127.0.0.1:PORT`.
    pub fn hosts(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends the server a signal ("STOP" freezes it like a long pause,
    /// "CONT" wakes it).
    #[allow(dead_code)]
    pub fn signal(&self, sig: &str) {
        if let Some(guard) = &self.guard {
            guard.signal(sig);
        }
    }

    /// Kills the server (SIGKILL, like a crash) and waits until the port is
    /// closed. Its data stays for `start_again`.
    pub fn stop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.kill();
        }
        let end = Instant::now() + Duration::from_secs(10);
        while port_open(self.port) {
            assert!(
                Instant::now() < end,
                "ZooKeeper port {} still open after stop",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server (again) on the same port and data directory and
    /// waits until it serves requests. Sessions it knew come back and
    /// expire after their timeout unless their clients reconnect.
    pub fn start_again(&mut self) {
        assert!(self.guard.is_none(), "ZooKeeper is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("zookeeper.log"))
            .unwrap();
        let child = Command::new("java")
            .args([
                "-Xmx128m",
                "-Xms16m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
            ])
            .args(["-XX:-UsePerfData", "-Djava.awt.headless=true"])
            .args([
                "-cp",
                CLASSPATH,
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(self.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("java must be installed (deploy/install-deps.sh)");
        let mut guard = ProcessGuard::new(format!("zookeeper:{}", self.port), child);
        let end = Instant::now() + START_DEADLINE;
        while !self.is_serving() {
            let exited = guard
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= end {
                guard.kill();
                panic!(
                    "ZooKeeper on port {} did not start ({exited:?}); log tail:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.guard = Some(guard);
    }

    /// True when the server answers `srvr` as a serving standalone server.
    pub fn is_serving(&self) -> bool {
        self.four_letter("srvr").contains("Mode: standalone")
    }

    /// Sends a four-letter command (`srvr`, `cons`, `dump`, ...) and
    /// returns the answer, or "" if the server does not answer.
    pub fn four_letter(&self, command: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = String::new();
        if stream.write_all(command.as_bytes()).is_ok() {
            let _ = stream.read_to_string(&mut answer);
        }
        answer
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("zookeeper.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}
