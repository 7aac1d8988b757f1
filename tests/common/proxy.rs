//! A real `shardproxy` process (the binary cargo built for these tests) on a
//! free loopback port, with its pool file written to a temp dir.

use super::{free_port, port_open, temp_dir, wait_until, ProcessGuard};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    /// twemproxy-style stats port (`-s`).
    pub stats_port: u16,
    /// Prometheus endpoint (`--metrics`).
    pub metrics_port: u16,
    pub guard: ProcessGuard,
    pub conf: PathBuf,
    pub log: PathBuf,
}

/// The path of the `shardproxy` binary built with the tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shardproxy"))
}

impl Proxy {
    /// Starts shardproxy with one pool named `pool` whose body (everything
    /// but `listen`) is `body`, e.g. "  redis: true\n  servers:\n   - ...".
    pub fn start(body: &str) -> Proxy {
        let port = free_port();
        let yaml = format!("pool:\n  listen: 127.0.0.1:{port}\n{body}");
        Proxy::start_yaml(port, &yaml)
    }

    /// Starts shardproxy with a whole pool file whose (first) pool listens
    /// on `port`.
    pub fn start_yaml(port: u16, yaml: &str) -> Proxy {
        Proxy::start_wrapped(port, yaml, &[])
    }

    /// Like [`Proxy::start_yaml`], run through `wrapper` (a command that
    /// execs its arguments, e.g. `prlimit --nofile=64 --`).
    pub fn start_wrapped(port: u16, yaml: &str, wrapper: &[&str]) -> Proxy {
        Proxy::start_process(port, yaml, wrapper, &[])
    }

    /// Like [`Proxy::start_yaml`], with more command-line arguments
    /// (e.g. `--threads 3`).
    pub fn start_yaml_args(port: u16, yaml: &str, args: &[&str]) -> Proxy {
        Proxy::start_process(port, yaml, &[], args)
    }

    /// Both: run through `wrapper`, with more arguments.
    pub fn start_wrapped_args(port: u16, yaml: &str, wrapper: &[&str], args: &[&str]) -> Proxy {
        Proxy::start_process(port, yaml, wrapper, args)
    }

    fn start_process(port: u16, yaml: &str, wrapper: &[&str], args: &[&str]) -> Proxy {
        let dir = temp_dir("proxy");
        let conf = dir.join("pool.yml");
        std::fs::write(&conf, yaml).unwrap();
        let log = dir.join("proxy.log");
        let (stats_port, metrics_port) = (free_port(), free_port());
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        let child = command
            .arg("-c")
            .arg(&conf)
            .arg("-o")
            .arg(&log)
            .args(["-v", "7", "-a", "127.0.0.1", "-s", &stats_port.to_string()])
            .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shardproxy");
        let guard = ProcessGuard::new(format!("shardproxy:{port}"), child);
        wait_until("shardproxy to listen", Duration::from_secs(10), || {
            port_open(port)
        });
        Proxy {
            port,
            stats_port,
            metrics_port,
            guard,
            conf,
            log,
        }
    }

    /// The log so far, for assertions and failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The stats port's JSON document.
    pub fn stats(&self) -> serde_json::Value {
        stats_json(self.stats_port)
    }

    /// Requests written to (or queued for writing on) a backend
    /// connection, over every server of `pool`: the stats count a request
    /// once it is in flight on its connection.
    pub fn backend_requests(&self, pool: &str) -> u64 {
        let stats = self.stats();
        stats[pool]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|server| server["requests"].as_u64())
            .sum()
    }

    /// Waits until `more` requests beyond `before` are in flight on backend
    /// connections of `pool`.
    pub fn wait_for_backend_requests(&self, pool: &str, before: u64, more: u64) {
        wait_until(
            &format!("{more} more requests in flight"),
            Duration::from_secs(10),
            || self.backend_requests(pool) >= before + more,
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// The JSON document a twemproxy-style stats port (shardproxy's or
/// nutcracker's) sends on connect.
pub fn stats_json(port: u16) -> serde_json::Value {
    use std::io::Read;
    let mut text = String::new();
    std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).expect("the stats port sends JSON")
}

/// A proxy over two redis-servers started with options `redis_args`,
/// range form (0-2047 and 2048-4095, `hash: md5`), with `extra` pool keys.
#[allow(dead_code)] // not every test file that includes the harness uses it
pub fn two_shards_with(extra: &str, redis_args: &[&str]) -> (Proxy, Vec<super::redis::Redis>) {
    use super::redis::Redis;
    let shards = vec![Redis::start_with(redis_args), Redis::start_with(redis_args)];
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n{extra}  servers:\n   - {}:0-2047\n   - {}:2048-4095\n",
        shards[0].addr(),
        shards[1].addr()
    ));
    (proxy, shards)
}
