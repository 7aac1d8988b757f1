//! Security (issue 14): client users with read/write rights and key
//! patterns get exactly the replies a Redis with the same ACL users gives;
//! AUTH failures are counted and close the connection after ten; and on the
//! shipped deployment (the proxies' ACL user made by the watchdog) no
//! script sent through the proxy can flush, switch or copy to another
//! database, migrate, reconfigure, shut down or re-replicate a backend, and
//! the data stays intact.

mod common;
#[allow(dead_code)]
#[path = "watchdog/harness.rs"]
mod harness;

use common::proxy::Proxy;
use common::redis::{RawClient, Redis};
use common::wait_until;
use common::zookeeper::ZooKeeper;
use harness::{Watchdog, Zk};
use sha2::{Digest, Sha256};
use shardproxy::command::readonly::READONLY;
use shardproxy::watchdog::proxy_user::ProxyUser;
use std::io::{Read, Write};
use std::time::Duration;

/// The password of the test users alice, bob and carol.
const PW: &str = "pw";
/// The proxies' password on the backends (`redis_auth`), which is also
/// the `default` client user's.
const PROXY_PASS: &str = "proxy-secret";
const PROXY_USER: &str = "shardproxy";
const DEADLINE: Duration = Duration::from_secs(20);

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn proxy_user() -> ProxyUser {
    ProxyUser {
        name: PROXY_USER.into(),
        password_sha256: sha256_hex(PROXY_PASS),
    }
}

/// Defines the proxies' ACL user on `redis` with the line the watchdog
/// sends.
fn make_proxy_user(redis: &Redis) {
    let command = proxy_user().setuser_command();
    let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
    assert_eq!(redis.connect().cmd(&args), b"+OK\r\n");
}

/// Two backends reached as the proxies' ACL user, and a proxy with the
/// users alice (read, `~cache:*`), bob (write) and carol (write, `~app:*`).
struct Setup {
    /// Kept running for the proxy.
    _backends: [Redis; 2],
    proxy: Proxy,
}

fn pool_body(backends: &[Redis; 2]) -> String {
    let pw = sha256_hex(PW);
    format!(
        "  redis: true\n  hash: md5\n  distribution: modula\n  hash_tag: \"{{}}\"\n  redis_user: {PROXY_USER}\n  redis_auth: {PROXY_PASS}\n  users:\n   \
         - {{name: alice, password_sha256: {pw}, mode: read, keys: [\"~cache:*\"]}}\n   \
         - {{name: bob, password_sha256: {pw}, mode: write}}\n   \
         - {{name: dave, password_sha256: {pw}, mode: read}}\n   \
         - {{name: carol, password_sha256: {pw}, mode: write, keys: [\"~app:*\"]}}\n  \
         servers:\n   - {}:1\n   - {}:1\n",
        backends[0].addr(),
        backends[1].addr()
    )
}

fn setup() -> Setup {
    let backends = [Redis::start(), Redis::start()];
    backends.iter().for_each(make_proxy_user);
    let proxy = Proxy::start(&pool_body(&backends));
    Setup {
        _backends: backends,
        proxy,
    }
}

/// A Redis whose ACL users match the proxy's: what the proxy's replies are
/// compared with.
fn oracle() -> Redis {
    let redis = Redis::start();
    let mut admin = redis.connect();
    for rules in [
        "alice on >pw ~cache:* +@read +@connection +@transaction +info",
        "bob on >pw ~* &* +@all",
        "dave on >pw ~* +@read +@connection +@transaction +info",
        "carol on >pw ~app:* &* +@all",
    ] {
        let mut args = vec!["ACL", "SETUSER"];
        args.extend(rules.split(' '));
        assert_eq!(admin.cmd_str(&args), "+OK\r\n", "{rules}");
    }
    redis
}

fn login(port: u16, user: &str, pass: &str) -> RawClient {
    let mut client = RawClient::connect(port);
    assert_eq!(client.cmd_str(&["AUTH", user, pass]), "+OK\r\n", "{user}");
    client
}

#[test]
fn readonly_list_is_redis_flags() {
    let redis = Redis::start();
    let raw = redis.connect().cmd(&[b"COMMAND"]);
    let mut ours: Vec<&str> = READONLY.to_vec();
    ours.sort_unstable();
    assert_eq!(ours, readonly_names(&raw));
}

/// The full names of the commands flagged `readonly` in a `COMMAND` reply.
fn readonly_names(raw: &[u8]) -> Vec<&'static str> {
    let (reply, _) = parse(raw);
    let mut names = Vec::new();
    let mut stack: Vec<Resp> = reply.items();
    while let Some(entry) = stack.pop() {
        let fields = entry.items();
        if fields[2].items().iter().any(|f| f.text() == "readonly") {
            names.push(&*fields[0].text().to_string().leak());
        }
        stack.extend(fields[9].items());
    }
    names.sort_unstable();
    names
}

/// Just enough RESP2 for `COMMAND`.
#[derive(Debug, Clone)]
enum Resp {
    Text(String),
    Array(Vec<Resp>),
    Other,
}

impl Resp {
    fn items(&self) -> Vec<Resp> {
        match self {
            Resp::Array(items) => items.clone(),
            _ => Vec::new(),
        }
    }
    fn text(&self) -> &str {
        match self {
            Resp::Text(t) => t,
            _ => "",
        }
    }
}

fn parse(raw: &[u8]) -> (Resp, &[u8]) {
    let end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
    let line = std::str::from_utf8(&raw[1..end]).unwrap();
    let rest = &raw[end + 2..];
    match raw[0] {
        b'+' => (Resp::Text(line.into()), rest),
        b'$' => {
            let n: usize = line.parse().unwrap();
            let text = String::from_utf8_lossy(&rest[..n]).into_owned();
            (Resp::Text(text), &rest[n + 2..])
        }
        b'*' => {
            let mut rest = rest;
            let mut items = Vec::new();
            for _ in 0..line.parse::<usize>().unwrap() {
                let (item, more) = parse(rest);
                items.push(item);
                rest = more;
            }
            (Resp::Array(items), rest)
        }
        _ => (Resp::Other, rest),
    }
}

#[test]
fn users_get_the_replies_redis_gives() {
    let s = setup();
    let redis = oracle();
    let mut seed = login(s.proxy.port, "bob", PW);
    let mut seed_oracle = login(redis.port, "bob", PW);
    for client in [&mut seed, &mut seed_oracle] {
        client.cmd_str(&[
            "MSET", "cache:1", "a", "cache:2", "b", "secret", "s", "app:1", "x",
        ]);
    }
    let cases: &[(&str, &[&str])] = &[
        // A read user: reads of its keys, no writes, no other keys.
        ("alice", &["GET", "cache:1"]),
        ("alice", &["MGET", "cache:1", "cache:2"]),
        ("alice", &["SET", "cache:1", "v"]),
        ("alice", &["DEL", "cache:1", "cache:2"]),
        ("alice", &["MSET", "cache:1", "a", "cache:2", "b"]),
        ("alice", &["EVAL", "return 1", "1", "cache:1"]),
        ("alice", &["EXPIRE", "cache:1", "100"]),
        ("alice", &["GET", "secret"]),
        ("alice", &["MGET", "cache:1", "secret"]),
        ("alice", &["EXISTS", "secret", "cache:1"]),
        ("alice", &["OBJECT", "ENCODING", "secret"]),
        ("alice", &["CONFIG", "GET", "maxmemory"]),
        ("alice", &["FLUSHALL"]),
        ("alice", &["PING"]),
        // A read user of every key: read-only scripts are @scripting, not
        // @read (review: they ran, and could hold a shard -BUSY).
        ("dave", &["GET", "secret"]),
        ("dave", &["EVAL_RO", "return 1", "0"]),
        (
            "dave",
            &[
                "EVALSHA_RO",
                "e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
                "0",
            ],
        ),
        ("dave", &["FCALL_RO", "nof", "0"]),
        ("dave", &["SET", "secret", "v"]),
        ("dave", &["WAIT", "0", "0"]),
        // A write user limited to app:*, on split and single commands.
        ("carol", &["SET", "app:2", "y"]),
        ("carol", &["SET", "secret", "y"]),
        ("carol", &["MSET", "app:3", "a", "secret", "b"]),
        ("carol", &["DEL", "app:3", "secret"]),
        ("carol", &["MGET", "app:1", "app:2"]),
        ("carol", &["RENAME", "app:1", "secret"]),
        ("carol", &["GET", "app:1"]),
        // Shard channels are channels, which carol may use all of (`&*`),
        // not keys (review: refused as keys outside app:*).
        ("carol", &["SPUBLISH", "news", "m"]),
        ("carol", &["SSUBSCRIBE", "news"]),
        // A write user with every key.
        ("bob", &["SET", "secret", "t"]),
        ("bob", &["GET", "secret"]),
    ];
    for (user, args) in cases {
        let mut ours = login(s.proxy.port, user, PW);
        let mut theirs = login(redis.port, user, PW);
        assert_eq!(ours.cmd_str(args), theirs.cmd_str(args), "{user} {args:?}");
    }
    // The refused writes changed nothing.
    assert_eq!(seed.cmd_str(&["GET", "cache:1"]), "$1\r\na\r\n");
    assert_eq!(seed.cmd_str(&["GET", "app:3"]), "$-1\r\n");
    assert_eq!(
        seed.cmd_str(&["MGET", "app:1", "app:2"]),
        seed_oracle.cmd_str(&["MGET", "app:1", "app:2"])
    );
}

#[test]
fn a_refused_command_in_multi_aborts_the_transaction_as_in_redis() {
    let s = setup();
    let redis = oracle();
    let script: &[&[&str]] = &[
        &["MULTI"],
        &["GET", "app:1"],
        &["SET", "secret", "1"],
        &["EXEC"],
    ];
    let mut ours = login(s.proxy.port, "carol", PW);
    let mut theirs = login(redis.port, "carol", PW);
    for args in script {
        assert_eq!(ours.cmd_str(args), theirs.cmd_str(args), "{args:?}");
    }
}

/// With `allow_flush`, a user limited to some keys still may not empty
/// every shard, nor change or wipe the code users of every key run (review:
/// carol, limited to `app:*`, ran FLUSHALL on the whole fleet and replaced
/// a library with FUNCTION LOAD REPLACE). A user of every key may.
#[test]
fn a_user_limited_to_some_keys_cannot_flush_the_fleet_or_its_code() {
    // Backends that would run anything (no ACL user): the refusals are the
    // proxy's own.
    let backends = [Redis::start(), Redis::start()];
    let pw = sha256_hex(PW);
    let proxy = Proxy::start(&format!(
        "  redis: true\n  allow_flush: true\n  users:\n   \
         - {{name: bob, password_sha256: {pw}, mode: write}}\n   \
         - {{name: carol, password_sha256: {pw}, mode: write, keys: [\"~app:*\"]}}\n  \
         servers:\n   - {}:1\n   - {}:1\n",
        backends[0].addr(),
        backends[1].addr()
    ));
    let mut bob = login(proxy.port, "bob", PW);
    for i in 0..20 {
        assert_eq!(bob.cmd_str(&["SET", &format!("k{i}"), "v"]), "+OK\r\n");
    }
    let library = "#!lua name=lib\nredis.register_function('f', function() return 1 end)";
    assert_eq!(bob.cmd_str(&["FUNCTION", "LOAD", library]), "$3\r\nlib\r\n");
    let mut carol = login(proxy.port, "carol", PW);
    let replaced = "#!lua name=lib\nredis.register_function('f', function() return 2 end)";
    for (args, name) in [
        (&["FLUSHALL"][..], "flushall"),
        (&["FLUSHDB", "ASYNC"], "flushdb"),
        (&["FUNCTION", "LOAD", "REPLACE", replaced], "function|load"),
        (&["FUNCTION", "FLUSH"], "function|flush"),
        (&["FUNCTION", "DELETE", "lib"], "function|delete"),
        (&["SCRIPT", "FLUSH"], "script|flush"),
        (&["SCRIPT", "KILL"], "script|kill"),
    ] {
        assert_eq!(
            carol.cmd_str(args),
            format!("-NOPERM this user has no permissions to run the '{name}' command\r\n"),
            "{args:?}"
        );
    }
    assert_eq!(bob.cmd_str(&["DBSIZE"]), ":20\r\n");
    assert_eq!(bob.cmd_str(&["FCALL", "f", "0"]), ":1\r\n");
    assert_eq!(carol.cmd_str(&["SET", "app:1", "v"]), "+OK\r\n");
    assert_eq!(bob.cmd_str(&["FLUSHALL"]), "+OK\r\n");
    assert_eq!(bob.cmd_str(&["DBSIZE"]), ":0\r\n");
}

#[test]
fn wrong_passwords_get_wrongpass_and_the_default_user_is_redis_auth() {
    let s = setup();
    let redis = oracle();
    for args in [
        &["AUTH", "alice", "nope"][..],
        &["AUTH", "nobody", "pw"],
        &["HELLO", "3", "AUTH", "alice", "nope"],
    ] {
        let ours = RawClient::connect(s.proxy.port).cmd_str(args);
        let theirs = RawClient::connect(redis.port).cmd_str(args);
        assert_eq!(ours, theirs, "{args:?}");
        assert_eq!(
            ours,
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        );
    }
    // Nothing runs before AUTH.
    let mut anonymous = RawClient::connect(s.proxy.port);
    assert_eq!(
        anonymous.cmd_str(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    // redis_auth is the default user's password, with every right.
    let mut default = RawClient::connect(s.proxy.port);
    assert_eq!(default.cmd_str(&["AUTH", PROXY_PASS]), "+OK\r\n");
    assert_eq!(default.cmd_str(&["ACL", "WHOAMI"]), "$7\r\ndefault\r\n");
    assert_eq!(default.cmd_str(&["SET", "k", "v"]), "+OK\r\n");
}

#[test]
fn hello_auth_and_whoami_name_the_user() {
    let s = setup();
    let mut client = RawClient::connect(s.proxy.port);
    let hello = client.cmd_str(&["HELLO", "3", "AUTH", "alice", PW]);
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert_eq!(client.cmd_str(&["ACL", "WHOAMI"]), "$5\r\nalice\r\n");
    // AUTH as another user on the same connection switches rights.
    assert_eq!(client.cmd_str(&["AUTH", "bob", PW]), "+OK\r\n");
    assert_eq!(client.cmd_str(&["ACL", "WHOAMI"]), "$3\r\nbob\r\n");
    assert_eq!(client.cmd_str(&["SET", "x", "1"]), "+OK\r\n");
    // A failed AUTH leaves the connection as it was, as in Redis.
    assert!(client
        .cmd_str(&["AUTH", "alice", "bad"])
        .starts_with("-WRONGPASS"));
    assert_eq!(client.cmd_str(&["ACL", "WHOAMI"]), "$3\r\nbob\r\n");
}

fn metrics_text(proxy: &Proxy) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", proxy.metrics_port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn ten_auth_failures_close_the_connection_and_are_counted() {
    let s = setup();
    let mut client = RawClient::connect(s.proxy.port);
    for i in 1..=9 {
        let args: &[&str] = if i % 2 == 0 {
            &["AUTH", "bob", "guess"]
        } else {
            &["HELLO", "2", "AUTH", "bob", "guess"]
        };
        assert!(client.cmd_str(args).starts_with("-WRONGPASS"), "try {i}");
    }
    assert_eq!(
        client.cmd_str(&["PING"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert!(client
        .cmd_str(&["AUTH", "bob", "guess"])
        .starts_with("-WRONGPASS"));
    assert!(
        client.is_closed(),
        "the tenth failure closes the connection"
    );

    let mut other = login(s.proxy.port, "bob", PW);
    let info = other.cmd_str(&["INFO", "stats"]);
    assert!(info.contains("auth_failures:10\r\n"), "{info}");
    let metrics = metrics_text(&s.proxy);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shardproxy_auth_failures_total") && l.ends_with(" 10")),
        "{metrics}"
    );
}

#[test]
fn the_proxy_still_works_as_its_acl_user() {
    let s = setup();
    let mut bob = login(s.proxy.port, "bob", PW);
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for key in &keys {
        assert_eq!(bob.cmd_str(&["SET", key, key]), "+OK\r\n");
    }
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    assert!(bob.cmd_str(&mget).contains("$3\r\nk19\r\n"));
    assert_eq!(bob.cmd_str(&["DBSIZE"]), ":20\r\n");
    assert!(bob.cmd_str(&["INFO", "keyspace"]).contains("keys="));
    assert_eq!(bob.cmd_str(&["RPUSH", "l", "2", "1"]), ":2\r\n");
    assert_eq!(bob.cmd_str(&["SORT", "l"]), "*2\r\n$1\r\n1\r\n$1\r\n2\r\n");
    assert_eq!(bob.cmd_str(&["BLPOP", "empty", "0.05"]), "*-1\r\n");
    assert_eq!(bob.cmd_str(&["MULTI"]), "+OK\r\n");
    assert_eq!(bob.cmd_str(&["INCR", "n"]), "+QUEUED\r\n");
    assert_eq!(bob.cmd_str(&["EXEC"]), "*1\r\n:1\r\n");
    assert_eq!(
        bob.cmd_str(&["EVAL", "return redis.call('get', KEYS[1])", "1", "k1"]),
        "$2\r\nk1\r\n"
    );
    // Keyspace, scripts and pub/sub, which the proxy fans out or routes.
    assert!(bob.cmd_str(&["KEYS", "k1*"]).starts_with("*11\r\n"));
    assert!(bob
        .cmd_str(&["SCAN", "0", "COUNT", "100"])
        .starts_with("*2\r\n"));
    let sha = bob.cmd_str(&["SCRIPT", "LOAD", "return redis.call('get', KEYS[1])"]);
    let sha = sha.lines().nth(1).expect("a digest").to_string();
    assert_eq!(bob.cmd_str(&["EVALSHA", &sha, "1", "k2"]), "$2\r\nk2\r\n");
    let mut subscriber = login(s.proxy.port, "bob", PW);
    assert!(subscriber
        .cmd_str(&["SUBSCRIBE", "news"])
        .ends_with(":1\r\n"));
    assert_eq!(bob.cmd_str(&["PUBLISH", "news", "hi"]), ":1\r\n");
    let message = String::from_utf8_lossy(&subscriber.read_reply()).into_owned();
    assert!(message.ends_with("$2\r\nhi\r\n"), "{message}");
    // COPY without DB: refused by the backends' ACL user (README: Redis
    // ACL cannot forbid only COPY's DB option).
    assert!(
        bob.cmd_str(&["COPY", "{k}1", "{k}2"])
            .contains("'copy' command"),
        "COPY is not in the proxies' ACL user"
    );
}

/// Every way tried to reach past the proxy from a script (or directly),
/// each sent as bob, who has every right the proxy grants.
fn escape_attempts(migrate_port: u16) -> Vec<Vec<String>> {
    let eval = |script: &str| {
        vec![
            "EVAL".to_string(),
            script.to_string(),
            "1".into(),
            "anykey".into(),
        ]
    };
    let direct = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let port = migrate_port.to_string();
    vec![
        eval("return redis.call('flushall')"),
        eval("return redis.call('flushall', 'async')"),
        eval("return redis.call('flushdb')"),
        eval(&format!(
            "return redis.call('migrate', '127.0.0.1', '{port}', KEYS[1], '0', '1000')"
        )),
        eval(&format!(
            "return redis.call('migrate', '127.0.0.1', '{port}', '', '0', '1000', 'KEYS', 'k1', 'k2')"
        )),
        eval("return redis.call('select', '1')"),
        eval("redis.call('select', '7'); return redis.call('set', 'planted', '1')"),
        eval("return redis.call('copy', 'k1', 'k1', 'db', '7')"),
        eval("return redis.call('move', 'k1', '7')"),
        eval("return redis.call('swapdb', '0', '7')"),
        eval("return redis.call('config', 'set', 'maxmemory', '1')"),
        eval("return redis.call('config', 'get', 'requirepass')"),
        eval("return redis.call('shutdown', 'nosave')"),
        eval("return redis.call('debug', 'sleep', '0')"),
        eval("return redis.call('replicaof', '127.0.0.1', '1')"),
        eval("return redis.call('slaveof', '127.0.0.1', '1')"),
        eval("return redis.call('acl', 'setuser', 'evil', 'on', '>x', '+@all', '~*')"),
        eval("return redis.call('auth', 'default', '')"),
        eval("return redis.call('bgsave')"),
        eval("return redis.call('module', 'list')"),
        eval("return redis.call('restore-asking', 'z', '0', 'x')"),
        direct(&["COPY", "k1", "k1", "DB", "7"]),
        direct(&["COPY", "k1", "k2", "db", "7", "REPLACE"]),
        direct(&["FLUSHALL"]),
        direct(&["FLUSHDB"]),
        direct(&["SELECT", "7"]),
        direct(&["MOVE", "k1", "7"]),
        direct(&["SWAPDB", "0", "7"]),
        direct(&["MIGRATE", "127.0.0.1", &port, "k1", "0", "1000"]),
        direct(&["CONFIG", "SET", "maxmemory", "1"]),
        direct(&["SHUTDOWN", "NOSAVE"]),
        direct(&["DEBUG", "SLEEP", "0"]),
        direct(&["REPLICAOF", "127.0.0.1", "1"]),
    ]
}

/// The shipped deployment: the watchdog beside each Redis makes the
/// proxies' ACL user; every escape fails with an error and every key, the
/// other databases and the backends' settings are as they were.
#[test]
fn script_escapes_fail_on_the_shipped_deployment() {
    let zookeeper = ZooKeeper::start();
    let zk = Zk::connect(&zookeeper);
    let backends = [Redis::start(), Redis::start()];
    let digest = sha256_hex(PROXY_PASS);
    let flags = ["--proxy-user", PROXY_USER, "--proxy-user-sha256", &digest];
    let _watchdogs: Vec<Watchdog> = backends
        .iter()
        .enumerate()
        .map(|(i, redis)| {
            let root = format!("/redis/cluster/sec{i}");
            let shard = zk.create_shard(&root);
            Watchdog::start_with(&zk.hosts, redis, &shard, &flags)
        })
        .collect();
    for redis in &backends {
        let mut admin = redis.connect();
        wait_until("the watchdog to make the proxy user", DEADLINE, || {
            admin
                .cmd_str(&["ACL", "GETUSER", PROXY_USER])
                .starts_with('*')
        });
    }
    let proxy = Proxy::start(&pool_body(&backends));
    let target = Redis::start();
    let mut bob = login(proxy.port, "bob", PW);
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for key in &keys {
        assert_eq!(bob.cmd_str(&["SET", key, &format!("v-{key}")]), "+OK\r\n");
    }
    let sizes: Vec<String> = backends
        .iter()
        .map(|r| r.connect().cmd_str(&["DBSIZE"]))
        .collect();
    assert!(
        sizes.iter().all(|s| s != ":0\r\n"),
        "keys on both shards: {sizes:?}"
    );

    let attempts = escape_attempts(target.port);
    for args in &attempts {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = bob.cmd_str(&args);
        assert!(reply.starts_with('-'), "{args:?} was not refused: {reply}");
        eprintln!("{:?} -> {}", args, reply.trim_end());
    }
    eprintln!("script escape attempts: {}, all refused", attempts.len());

    for key in &keys {
        assert_eq!(
            bob.cmd_str(&["GET", key]),
            format!("${}\r\nv-{key}\r\n", key.len() + 2)
        );
    }
    for (redis, size) in backends.iter().zip(&sizes) {
        let mut admin = redis.connect();
        assert_eq!(&admin.cmd_str(&["DBSIZE"]), size);
        assert_eq!(
            admin.cmd_str(&["CONFIG", "GET", "maxmemory"]),
            "*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"
        );
        assert!(admin.cmd_str(&["ROLE"]).contains("master"));
        assert_eq!(admin.cmd_str(&["ACL", "GETUSER", "evil"]), "$-1\r\n");
        for db in ["1", "7"] {
            assert_eq!(admin.cmd_str(&["SELECT", db]), "+OK\r\n");
            assert_eq!(admin.cmd_str(&["DBSIZE"]), ":0\r\n", "db {db}");
        }
    }
    assert_eq!(target.connect().cmd_str(&["DBSIZE"]), ":0\r\n");
}

/// The key pattern matcher agrees with Redis's own (`KEYS` runs the same
/// `stringmatchlen` as ACL key patterns).
#[test]
fn key_patterns_match_as_redis_matches() {
    use shardproxy::proxy::acl::glob;
    let redis = Redis::start();
    let mut client = redis.connect();
    let keys = [
        "cache:1", "cache:", "cache", "cachex", "a*b", "axb", "a?", "ab", "k]", "ka", "kb", "kz",
        "k-", "k\\", "", "x[y", "hello", "hallo", "hillo", "hxllo", "heeeello",
    ];
    for key in keys {
        assert_eq!(client.cmd_str(&["SET", key, "1"]), "+OK\r\n");
    }
    // `*` alone is left out: KEYS and ACL both take it as every key,
    // without matching (the proxy's ACL too).
    let patterns = [
        "cache:*",
        "cache*",
        "cach?",
        "a\\*b",
        "a\\?",
        "k[ab]",
        "k[^a]",
        "k[a-c]",
        "k[c-a]",
        "k[\\]]",
        "k[ab",
        "h?llo",
        "h*llo",
        "h[ae]llo",
        "h[^e]llo",
        "h[a-b]llo",
        "x\\[y",
        "*o",
        "k\\\\",
        "",
    ];
    for pattern in patterns {
        let reply = client.cmd(&[b"KEYS", pattern.as_bytes()]);
        let (listed, _) = parse(&reply);
        let mut theirs: Vec<String> = listed
            .items()
            .iter()
            .map(|k| k.text().to_string())
            .collect();
        theirs.sort();
        let mut ours: Vec<String> = keys
            .iter()
            .filter(|k| glob::matches(pattern.as_bytes(), k.as_bytes()))
            .map(|k| k.to_string())
            .collect();
        ours.sort();
        assert_eq!(ours, theirs, "pattern {pattern:?}");
    }
}
