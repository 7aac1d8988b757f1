//! The watchdog's settings: command-line flags, the `key = value` file ops
//! already use for their current watchdog (`-f zoo-watchdog.conf`), and the
//! checks that turn both into [`Settings`]. Flags override the file.

use super::proxy_user::{is_sha256_hex, ProxyUser};
use super::switchover::control_path;
use crate::zk::layout::is_server_addr;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::level_filters::LevelFilter;

/// The flags of `shardproxy-watchdog`.
#[derive(Parser, Debug)]
#[command(
    name = "shardproxy-watchdog",
    version,
    about = "Watches one Redis instance: health checks, shard membership in ZooKeeper, failover",
    after_help = "The old redis-zoo-watchdog command line works unchanged:\n  \
        shardproxy-watchdog -f zoo-watchdog.conf -dc 172.17.32.105:6379 /redis/cluster/icd/redis-0000\n\
        (-d: run in the background, -c: the Redis, then the shard znode), the same as\n  \
        shardproxy-watchdog -f zoo-watchdog.conf -d --redis 172.17.32.105:6379 --shard /redis/cluster/icd/redis-0000"
)]
pub struct Args {
    /// ZooKeeper connect string, `host:port,host:port,...` (default: the
    /// file's `zkServersList`).
    #[arg(long = "zk", value_name = "HOSTS")]
    pub zk: Option<String>,
    /// The Redis instance to watch, `host:port`, as proxies and replicas
    /// reach it (it names the member znode). `-c` is the old watchdog's name.
    #[arg(short = 'c', long = "redis", value_name = "HOST:PORT")]
    pub redis: Option<String>,
    /// The shard znode, e.g. `/redis/cluster/icd/redis-0000`.
    #[arg(long = "shard", value_name = "ZK_SHARD_PATH")]
    pub shard: Option<String>,
    /// The shard znode as the old watchdog takes it: the last argument.
    #[arg(value_name = "ZK_SHARD_PATH")]
    pub shard_path: Option<String>,
    /// Run in the background (as the old watchdog's `-d`).
    #[arg(short = 'd', long = "daemonize")]
    pub daemonize: bool,
    /// Health check interval.
    #[arg(long = "interval-ms", default_value_t = 1000)]
    pub interval_ms: u64,
    /// Failed health checks in a row after which the Redis is down, when it
    /// refuses connections or drops them (gone, crashed, killed).
    #[arg(long = "down-after", default_value_t = 3)]
    pub down_after: u32,
    /// How long a Redis that accepts connections but does not answer, or
    /// answers -BUSY / -LOADING, may stay so before it is taken for down
    /// (Redis Sentinel's down-after-milliseconds default).
    #[arg(long = "busy-down-after-ms", default_value_t = 30_000)]
    pub busy_down_after_ms: u64,
    /// Stop a script that keeps the Redis -BUSY this long with SCRIPT KILL
    /// (and FUNCTION KILL); off unless given.
    #[arg(long = "script-kill-after-ms", value_name = "MS")]
    pub script_kill_after_ms: Option<u64>,
    /// ZooKeeper session timeout asked for (the server may clamp it).
    #[arg(long = "session-timeout-ms", default_value_t = 6000)]
    pub session_timeout_ms: u64,
    /// Password of the Redis instances (`requirepass`); also set as their
    /// `masterauth` so replicas can sync.
    #[arg(long = "redis-auth", value_name = "PASS")]
    pub redis_auth: Option<String>,
    /// Create (or update) the proxies' ACL user of this name on the Redis,
    /// with the rights README's "Security" section gives; the pool file's
    /// `redis_user`. Needs --proxy-user-sha256.
    #[arg(
        long = "proxy-user",
        value_name = "NAME",
        requires = "proxy_user_sha256"
    )]
    pub proxy_user: Option<String>,
    /// SHA-256 (hex) of the proxies' password, the pool file's
    /// `redis_auth`: `printf %s "$PASS" | sha256sum`.
    #[arg(
        long = "proxy-user-sha256",
        value_name = "HEX",
        requires = "proxy_user"
    )]
    pub proxy_user_sha256: Option<String>,
    /// ZooKeeper digest identity, `user:password` (default: the file's
    /// `zkAuth`): sessions authenticate with it and our member znodes are
    /// writable only by it.
    #[arg(long = "zk-auth", value_name = "USER:PASSWORD")]
    pub zk_auth: Option<String>,
    /// Settings file (`zkServersList`, `zkAuth`, `logLevel`, `logFile`).
    #[arg(short = 'f', long = "conf-file", value_name = "FILE")]
    pub conf_file: Option<PathBuf>,
    /// Log file (default: the file's `logFile`, else stderr).
    #[arg(short = 'o', long = "output", value_name = "LOGFILE")]
    pub output: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace, or nutcracker's 0..11
    /// (default: the file's `logLevel`, else info).
    #[arg(short = 'v', long = "verbose", value_name = "LEVEL")]
    pub verbose: Option<String>,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

/// Why the flags and the file do not make usable settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    File {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("no ZooKeeper servers: give --zk or zkServersList in the -f file")]
    NoZooKeeper,
    #[error("bad --redis {0:?}: want host:port")]
    BadRedis(String),
    #[error("no Redis to watch: give --redis HOST:PORT (or -c HOST:PORT)")]
    NoRedis,
    #[error("no shard: give --shard ZK_SHARD_PATH (or the path as the last argument)")]
    NoShard,
    #[error("two shards given: --shard {0:?} and {1:?}")]
    TwoShards(String, String),
    #[error("bad --shard {0:?}: want <cluster root>/<shard>, e.g. /redis/cluster/icd/redis-0000")]
    BadShard(String),
    #[error("bad --zk-auth / zkAuth: {0}")]
    BadZkAuth(String),
    #[error("bad log level {0:?}: want error, warn, info, debug, trace or 0..11")]
    BadLevel(String),
    #[error("{0}")]
    BadValue(&'static str),
}

/// What a `-f` file sets; every key is optional.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileSettings {
    /// `zkServersList`
    pub zk_servers: Option<String>,
    /// `logLevel`
    pub log_level: Option<String>,
    /// `logFile`
    pub log_file: Option<PathBuf>,
    /// `zkAuth`
    pub zk_auth: Option<String>,
}

/// Reads a settings file.
///
/// # Errors
/// [`ConfigError::Read`] if it cannot be read, [`ConfigError::File`] naming
/// the line of anything [`parse_file`] rejects.
pub fn load_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_file(&text).map_err(|(line, reason)| ConfigError::File {
        path: path.display().to_string(),
        line,
        reason,
    })
}

/// Parses `key = value` lines; `#` starts a comment line, blank lines are
/// skipped, a value may be in double quotes.
///
/// # Errors
/// The line number and the reason, for a line without `=`, an unknown key
/// (a typo would otherwise be ignored silently) or an empty value.
pub fn parse_file(text: &str) -> Result<FileSettings, (usize, String)> {
    let mut settings = FileSettings::default();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| (line_no, format!("want key = value, got {line:?}")))?;
        let (key, value) = (key.trim(), value.trim());
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if value.is_empty() {
            return Err((line_no, format!("{key} has no value")));
        }
        match key {
            "zkServersList" => settings.zk_servers = Some(value.to_string()),
            "logLevel" => settings.log_level = Some(value.to_string()),
            "logFile" => settings.log_file = Some(PathBuf::from(value)),
            "zkAuth" => settings.zk_auth = Some(value.to_string()),
            _ => {
                return Err((
                    line_no,
                    format!(
                        "unknown key {key:?} (known: zkServersList, zkAuth, logLevel, logFile)"
                    ),
                ))
            }
        }
    }
    Ok(settings)
}

/// Parses a log level: a name (any case; `warning` too) or nutcracker's
/// numeric scale (0..3 error, 4 warn, 5..6 info, 7..8 debug, 9..11 trace).
pub fn parse_level(text: &str) -> Option<LevelFilter> {
    if let Ok(n) = text.parse::<u8>() {
        return crate::logging::nutcracker_level(n);
    }
    match text.to_ascii_lowercase().as_str() {
        "error" => Some(LevelFilter::ERROR),
        "warn" | "warning" => Some(LevelFilter::WARN),
        "info" => Some(LevelFilter::INFO),
        "debug" => Some(LevelFilter::DEBUG),
        "trace" => Some(LevelFilter::TRACE),
        _ => None,
    }
}

/// Everything the watchdog runs with, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// ZooKeeper connect string.
    pub zk_hosts: String,
    /// The watched Redis, `host:port`; also its member name prefix.
    pub redis: String,
    /// The shard znode.
    pub shard: String,
    /// The shard's control znode, where switchover requests appear.
    pub control: String,
    pub interval: Duration,
    pub down_after: u32,
    /// How long busy (accepting, not answering, -BUSY, -LOADING) counts as
    /// alive.
    pub busy_down_after: Duration,
    pub script_kill_after: Option<Duration>,
    pub session_timeout: Duration,
    pub redis_auth: Option<String>,
    /// The proxies' ACL user to keep on the Redis (`--proxy-user`).
    pub proxy_user: Option<ProxyUser>,
    pub zk_auth: Option<crate::zk::ZkAuth>,
    pub log_level: LevelFilter,
    pub log_file: Option<PathBuf>,
}

impl Settings {
    /// Merges the flags over the `-f` file (read here when given) and
    /// checks the result.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the flag, key or line at fault.
    pub fn from_args(args: Args) -> Result<Settings, ConfigError> {
        let file = match &args.conf_file {
            Some(path) => load_file(path)?,
            None => FileSettings::default(),
        };
        Settings::merge(args, file)
    }

    /// Flags over file settings, then the checks.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the flag or key at fault.
    pub fn merge(args: Args, file: FileSettings) -> Result<Settings, ConfigError> {
        let zk_hosts = args
            .zk
            .or(file.zk_servers)
            .filter(|hosts| !hosts.trim().is_empty())
            .ok_or(ConfigError::NoZooKeeper)?;
        let redis = args.redis.ok_or(ConfigError::NoRedis)?;
        if !is_server_addr(&redis) {
            return Err(ConfigError::BadRedis(redis));
        }
        let shard_arg = match (args.shard, args.shard_path) {
            (Some(flag), Some(path)) if flag != path => {
                return Err(ConfigError::TwoShards(flag, path))
            }
            (Some(shard), _) | (None, Some(shard)) => shard,
            (None, None) => return Err(ConfigError::NoShard),
        };
        let shard = shard_arg.trim_end_matches('/');
        let control = control_path(shard)
            .filter(|_| shard.starts_with('/') && !shard.contains("//"))
            .ok_or_else(|| ConfigError::BadShard(shard_arg.clone()))?;
        let zk_auth = match args.zk_auth.or(file.zk_auth) {
            Some(text) => Some(crate::zk::ZkAuth::parse(&text).map_err(ConfigError::BadZkAuth)?),
            None => None,
        };
        let level_text = args.verbose.or(file.log_level);
        let log_level = match &level_text {
            Some(text) => parse_level(text).ok_or_else(|| ConfigError::BadLevel(text.clone()))?,
            None => LevelFilter::INFO,
        };
        let proxy_user = match (args.proxy_user, args.proxy_user_sha256) {
            (Some(name), Some(hex)) => {
                if name.is_empty() || name.bytes().any(|c| !(b'!'..=b'~').contains(&c)) {
                    return Err(ConfigError::BadValue(
                        "--proxy-user must be a name without spaces or special characters",
                    ));
                }
                if !is_sha256_hex(&hex) {
                    return Err(ConfigError::BadValue(
                        "--proxy-user-sha256 must be 64 hex digits (sha256sum of the password)",
                    ));
                }
                Some(ProxyUser {
                    name,
                    password_sha256: hex.to_ascii_lowercase(),
                })
            }
            _ => None,
        };
        if args.interval_ms == 0 {
            return Err(ConfigError::BadValue("--interval-ms must be at least 1"));
        }
        if args.down_after == 0 {
            return Err(ConfigError::BadValue("--down-after must be at least 1"));
        }
        if args.session_timeout_ms == 0 {
            return Err(ConfigError::BadValue(
                "--session-timeout-ms must be at least 1",
            ));
        }
        Ok(Settings {
            zk_hosts,
            redis,
            shard: shard.to_string(),
            control,
            interval: Duration::from_millis(args.interval_ms),
            down_after: args.down_after,
            busy_down_after: Duration::from_millis(args.busy_down_after_ms),
            script_kill_after: args.script_kill_after_ms.map(Duration::from_millis),
            session_timeout: Duration::from_millis(args.session_timeout_ms),
            redis_auth: args.redis_auth.filter(|pass| !pass.is_empty()),
            proxy_user,
            zk_auth,
            log_level,
            log_file: args.output.or(file.log_file),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPS_FILE: &str = "# zookeeper servers list to connect\n\
        # zkServersList = \"host:port,host:port,...,host:port\"\n\
        \n\
        zkServersList = 172.16.10.96:2181,172.16.10.163:2181\n\
        \n\
        # log level (default to DEBUG)\n\
        logLevel = DEBUG\n\
        \n\
        # log file\n\
        logFile = ./zoo-watchdog.log\n";

    fn args(list: &[&str]) -> Args {
        let mut argv = vec!["shardproxy-watchdog"];
        argv.extend_from_slice(list);
        Args::try_parse_from(argv).unwrap()
    }

    fn base() -> Vec<&'static str> {
        vec![
            "--redis",
            "10.0.0.1:6379",
            "--shard",
            "/redis/cluster/icd/redis-0000",
        ]
    }

    #[test]
    fn the_old_watchdog_command_line_works_unchanged() {
        let old = args(&[
            "-f",
            "zoo-watchdog.conf",
            "-dc",
            "172.17.32.105:6379",
            "/redis/cluster/icd/redis-0000",
        ]);
        assert!(old.daemonize);
        let settings = Settings::merge(old, parse_file(OPS_FILE).unwrap()).unwrap();
        assert_eq!(settings.redis, "172.17.32.105:6379");
        assert_eq!(settings.shard, "/redis/cluster/icd/redis-0000");
        assert_eq!(settings.zk_hosts, "172.16.10.96:2181,172.16.10.163:2181");
    }

    #[test]
    fn a_missing_or_doubled_shard_is_an_error() {
        let none = args(&["--zk", "z:1", "--redis", "10.0.0.1:6379"]);
        assert!(matches!(
            Settings::merge(none, FileSettings::default()),
            Err(ConfigError::NoShard)
        ));
        let two = args(&[
            "--zk",
            "z:1",
            "-c",
            "10.0.0.1:6379",
            "--shard",
            "/r/c/a",
            "/r/c/b",
        ]);
        assert!(matches!(
            Settings::merge(two, FileSettings::default()),
            Err(ConfigError::TwoShards(..))
        ));
        let no_redis = args(&["--zk", "z:1", "/r/c/a"]);
        assert!(matches!(
            Settings::merge(no_redis, FileSettings::default()),
            Err(ConfigError::NoRedis)
        ));
    }

    #[test]
    fn ops_file_parses_as_is() {
        let file = parse_file(OPS_FILE).unwrap();
        assert_eq!(
            file,
            FileSettings {
                zk_servers: Some("172.16.10.96:2181,172.16.10.163:2181".into()),
                log_level: Some("DEBUG".into()),
                log_file: Some(PathBuf::from("./zoo-watchdog.log")),
                zk_auth: None,
            }
        );
    }

    #[test]
    fn file_values_may_be_quoted() {
        let file = parse_file("zkServersList = \"a:1,b:2\"\n").unwrap();
        assert_eq!(file.zk_servers.as_deref(), Some("a:1,b:2"));
    }

    #[test]
    fn file_rejects_unknown_key_naming_the_line() {
        let err = parse_file("logLevel = INFO\nzkServerList = a:1\n").unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("zkServerList"), "{}", err.1);
    }

    #[test]
    fn file_rejects_line_without_equals() {
        assert_eq!(parse_file("# ok\nlogLevel\n").unwrap_err().0, 2);
    }

    #[test]
    fn file_rejects_empty_value() {
        assert_eq!(parse_file("logFile =\n").unwrap_err().0, 1);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let mut list = base();
        list.extend(["--zk", "127.0.0.1:2181"]);
        let settings = Settings::merge(args(&list), FileSettings::default()).unwrap();
        assert_eq!(settings.interval, Duration::from_millis(1000));
        assert_eq!(settings.down_after, 3);
        assert_eq!(settings.session_timeout, Duration::from_millis(6000));
        assert_eq!(settings.log_level, LevelFilter::INFO);
        assert_eq!(settings.log_file, None);
        assert_eq!(settings.redis_auth, None);
        assert_eq!(settings.proxy_user, None);
    }

    #[test]
    fn proxy_user_takes_a_name_and_a_digest() {
        let digest = "AB".repeat(32);
        let mut list = base();
        list.extend([
            "--zk",
            "z:2181",
            "--proxy-user",
            "shardproxy",
            "--proxy-user-sha256",
            &digest,
        ]);
        let settings = Settings::merge(args(&list), FileSettings::default()).unwrap();
        let user = settings.proxy_user.unwrap();
        assert_eq!(user.name, "shardproxy");
        assert_eq!(user.password_sha256, "ab".repeat(32));
        let mut short = base();
        short.extend([
            "--zk",
            "z:2181",
            "--proxy-user",
            "p",
            "--proxy-user-sha256",
            "ab",
        ]);
        assert!(Settings::merge(args(&short), FileSettings::default()).is_err());
        let mut alone = vec!["shardproxy-watchdog", "--proxy-user", "p"];
        alone.extend(base());
        assert!(
            Args::try_parse_from(alone).is_err(),
            "the digest is required"
        );
    }

    #[test]
    fn file_fills_what_flags_leave_out() {
        let file = parse_file(OPS_FILE).unwrap();
        let settings = Settings::merge(args(&base()), file).unwrap();
        assert_eq!(settings.zk_hosts, "172.16.10.96:2181,172.16.10.163:2181");
        assert_eq!(settings.log_level, LevelFilter::DEBUG);
        assert_eq!(
            settings.log_file.as_deref(),
            Some(Path::new("./zoo-watchdog.log"))
        );
    }

    #[test]
    fn flags_override_the_file() {
        let mut list = base();
        list.extend(["--zk", "h:1", "-v", "warn", "-o", "/tmp/w.log"]);
        let settings = Settings::merge(args(&list), parse_file(OPS_FILE).unwrap()).unwrap();
        assert_eq!(settings.zk_hosts, "h:1");
        assert_eq!(settings.log_level, LevelFilter::WARN);
        assert_eq!(settings.log_file.as_deref(), Some(Path::new("/tmp/w.log")));
    }

    #[test]
    fn rejects_missing_zookeeper() {
        let err = Settings::merge(args(&base()), FileSettings::default()).unwrap_err();
        assert!(matches!(err, ConfigError::NoZooKeeper), "{err}");
    }

    #[test]
    fn rejects_bad_redis_address() {
        let list = ["--zk", "h:1", "--redis", "10.0.0.1", "--shard", "/c/s"];
        let err = Settings::merge(args(&list), FileSettings::default()).unwrap_err();
        assert!(matches!(err, ConfigError::BadRedis(_)), "{err}");
    }

    #[test]
    fn rejects_relative_or_rootless_shard() {
        for shard in ["redis-0000", "/", "/a//b", "/redis-0000", "icd/redis-0000"] {
            let list = ["--zk", "h:1", "--redis", "a:1", "--shard", shard];
            let err = Settings::merge(args(&list), FileSettings::default()).unwrap_err();
            assert!(matches!(err, ConfigError::BadShard(_)), "{shard}: {err}");
        }
    }

    #[test]
    fn shard_loses_a_trailing_slash() {
        let list = ["--zk", "h:1", "--redis", "a:1", "--shard", "/c/s/"];
        let settings = Settings::merge(args(&list), FileSettings::default()).unwrap();
        assert_eq!(settings.shard, "/c/s");
    }

    #[test]
    fn control_znode_sits_beside_the_cluster() {
        let mut list = base();
        list.extend(["--zk", "h:1"]);
        let settings = Settings::merge(args(&list), FileSettings::default()).unwrap();
        assert_eq!(settings.control, "/redis/control/icd/redis-0000");
    }

    #[test]
    fn rejects_bad_level() {
        let mut list = base();
        list.extend(["--zk", "h:1", "-v", "loud"]);
        let err = Settings::merge(args(&list), FileSettings::default()).unwrap_err();
        assert!(matches!(err, ConfigError::BadLevel(_)), "{err}");
    }

    #[test]
    fn rejects_zero_interval_and_down_after() {
        for flag in ["--interval-ms", "--down-after", "--session-timeout-ms"] {
            let mut list = base();
            list.extend(["--zk", "h:1", flag, "0"]);
            let err = Settings::merge(args(&list), FileSettings::default()).unwrap_err();
            assert!(matches!(err, ConfigError::BadValue(_)), "{flag}: {err}");
        }
    }

    #[test]
    fn levels_by_name_and_number() {
        assert_eq!(parse_level("DEBUG"), Some(LevelFilter::DEBUG));
        assert_eq!(parse_level("warning"), Some(LevelFilter::WARN));
        assert_eq!(parse_level("5"), Some(LevelFilter::INFO));
        assert_eq!(parse_level("11"), Some(LevelFilter::TRACE));
        assert_eq!(parse_level("12"), None);
    }
}
