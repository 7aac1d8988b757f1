//! The command table against a real redis-server 7.0: every command Redis
//! lists is in the table with the same arity and key positions, the keys the
//! table finds are the keys `COMMAND GETKEYS` finds, and the error texts the
//! proxy builds are byte for byte the server's.

mod common;

use bytes::Bytes;
use common::redis::{RawClient, Redis};
use shardproxy::command::{self, KeySpec};
use std::collections::BTreeSet;

/// A parsed RESP2 reply, just enough for `COMMAND` and `COMMAND GETKEYS`.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Text(String),
    Int(i64),
    Error(String),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    fn array(&self) -> &[Reply] {
        match self {
            Reply::Array(items) => items,
            other => panic!("expected an array, got {other:?}"),
        }
    }

    fn text(&self) -> &str {
        match self {
            Reply::Text(s) => s,
            other => panic!("expected text, got {other:?}"),
        }
    }

    fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            other => panic!("expected an integer, got {other:?}"),
        }
    }
}

fn parse(raw: &[u8]) -> Reply {
    let (reply, rest) = parse_one(raw);
    assert!(rest.is_empty(), "trailing bytes after reply");
    reply
}

fn parse_one(raw: &[u8]) -> (Reply, &[u8]) {
    let end = raw.windows(2).position(|w| w == b"\r\n").expect("CRLF");
    let line = std::str::from_utf8(&raw[1..end]).unwrap();
    let rest = &raw[end + 2..];
    match raw[0] {
        b'+' => (Reply::Text(line.to_string()), rest),
        b'-' => (Reply::Error(line.to_string()), rest),
        b':' => (Reply::Int(line.parse().unwrap()), rest),
        b'$' if line == "-1" => (Reply::Nil, rest),
        b'$' => {
            let n: usize = line.parse().unwrap();
            let text = String::from_utf8_lossy(&rest[..n]).into_owned();
            (Reply::Text(text), &rest[n + 2..])
        }
        b'*' => {
            let n: usize = line.parse().unwrap();
            let mut items = Vec::new();
            let mut rest = rest;
            for _ in 0..n {
                let (item, more) = parse_one(rest);
                items.push(item);
                rest = more;
            }
            (Reply::Array(items), rest)
        }
        other => panic!("unexpected reply type {}", other as char),
    }
}

fn to_args(list: &[&str]) -> Vec<Bytes> {
    list.iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

/// One `COMMAND` entry: name, arity, flags, and the legacy first/last/step.
struct Info {
    name: String,
    arity: i32,
    movable: bool,
    positions: (i64, i64, i64),
    subcommands: Vec<Info>,
}

fn info(entry: &Reply) -> Info {
    let e = entry.array();
    let flags = e[2]
        .array()
        .iter()
        .map(|f| f.text().to_string())
        .collect::<Vec<_>>();
    Info {
        name: e[0].text().to_string(),
        arity: e[1].int() as i32,
        movable: flags.iter().any(|f| f == "movablekeys"),
        positions: (e[3].int(), e[4].int(), e[5].int()),
        subcommands: e[9].array().iter().map(info).collect(),
    }
}

fn server_commands(redis: &Redis) -> Vec<Info> {
    let reply = parse(&redis.connect().cmd(&[b"COMMAND"]));
    reply.array().iter().map(info).collect()
}

/// The legacy (first, last, step) Redis reports for a key spec.
fn legacy_positions(keys: KeySpec) -> (i64, i64, i64) {
    match keys {
        KeySpec::None | KeySpec::Streams => (0, 0, 0),
        KeySpec::Range { first, last, step } => (first as i64, last as i64, step as i64),
        KeySpec::Numkeys { dest: false, .. } => (0, 0, 0),
        KeySpec::Numkeys { dest: true, .. } | KeySpec::Sort | KeySpec::GeoRadius { .. } => {
            (1, 1, 1)
        }
        KeySpec::Migrate => (3, 3, 1),
    }
}

fn is_movable(keys: KeySpec) -> bool {
    !matches!(keys, KeySpec::None | KeySpec::Range { .. })
}

fn check_entry(entry: &command::Command, server: &Info) {
    assert_eq!(entry.name, server.name);
    assert_eq!(entry.arity, server.arity, "arity of {}", server.name);
    assert_eq!(
        legacy_positions(entry.keys),
        server.positions,
        "keys of {}",
        server.name
    );
    // SORT_RO's movable keys are its BY/GET patterns, which Redis does not
    // report as keys either.
    if server.name != "sort_ro" {
        assert_eq!(
            is_movable(entry.keys),
            server.movable,
            "movable keys of {}",
            server.name
        );
    }
}

#[test]
fn every_redis_command_is_in_the_table_with_its_arity_and_keys() {
    let redis = Redis::start();
    let commands = server_commands(&redis);
    assert!(
        commands.len() >= 240,
        "COMMAND listed only {}",
        commands.len()
    );
    let mut checked = 0;
    for server in &commands {
        let entry = command::lookup(server.name.as_bytes())
            .unwrap_or_else(|| panic!("{} missing from the table", server.name));
        check_entry(entry, server);
        checked += 1;
        for sub in &server.subcommands {
            let word = sub.name.split('|').nth(1).unwrap();
            let entry = command::lookup_args(&to_args(&[&server.name, word]))
                .unwrap_or_else(|| panic!("{} missing from the table", sub.name));
            check_entry(entry, sub);
            checked += 1;
        }
        assert_eq!(
            entry.is_container(),
            !server.subcommands.is_empty(),
            "{}",
            server.name
        );
    }
    assert!(checked > 350, "checked only {checked} commands");
}

#[test]
fn the_table_has_nothing_redis_lacks_but_client_setinfo() {
    let redis = Redis::start();
    let mut server_names = BTreeSet::new();
    for server in server_commands(&redis) {
        server_names.extend(server.subcommands.iter().map(|s| s.name.clone()));
        server_names.insert(server.name);
    }
    let table = command::commands()
        .iter()
        .flat_map(|c| std::iter::once(c).chain(c.subcommands));
    let extra: Vec<&str> = table
        .map(|c| c.name)
        .filter(|name| !server_names.contains(*name))
        .collect();
    assert_eq!(extra, ["client|setinfo"]);
}

/// Asks the server which arguments of `args` are keys; None when it refuses
/// (no key arguments, or arguments it cannot parse).
fn server_key_indexes(client: &mut RawClient, args: &[String]) -> Option<Vec<usize>> {
    let mut request: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
    request.extend(args.iter().map(|a| a.as_bytes()));
    match parse(&client.cmd(&request)) {
        Reply::Array(keys) => Some(
            keys.iter()
                .map(|k| {
                    args.iter()
                        .position(|a| a == k.text())
                        .expect("key is an argument")
                })
                .collect(),
        ),
        Reply::Error(_) => None,
        other => panic!("unexpected GETKEYS reply {other:?}"),
    }
}

#[test]
fn fixed_key_positions_agree_with_command_getkeys() {
    let redis = Redis::start();
    let mut client = redis.connect();
    let mut compared = 0;
    for server in server_commands(&redis) {
        let mut entries = vec![(server.name.clone(), server.arity)];
        entries.extend(server.subcommands.iter().map(|s| (s.name.clone(), s.arity)));
        for (name, arity) in entries {
            let words: Vec<&str> = name.split('|').collect();
            let base = command::lookup_args(&to_args(&words)).unwrap();
            if !matches!(base.keys, KeySpec::Range { .. }) {
                continue;
            }
            let min = arity.unsigned_abs() as usize;
            let max = if arity < 0 { min + 3 } else { min };
            for argc in min.max(words.len())..=max {
                // Distinct arguments, so that each key maps back to one index.
                let args: Vec<String> = (0..argc)
                    .map(|i| words.get(i).map_or(format!("a{i}"), |w| w.to_string()))
                    .collect();
                let ours = base.key_indexes(&to_args(
                    &args.iter().map(String::as_str).collect::<Vec<_>>(),
                ));
                match (ours, server_key_indexes(&mut client, &args)) {
                    (Ok(ours), Some(theirs)) => {
                        assert_eq!(ours, theirs, "{args:?}");
                        compared += 1;
                    }
                    // MSET a 1 b: Redis's key spec still finds a and b, the
                    // command itself (and the proxy) answer an arity error.
                    (Err(_), Some(_)) => assert!(
                        ["mset", "msetnx"].contains(&base.name) && argc % 2 == 0,
                        "{args:?}"
                    ),
                    // Channels (SSUBSCRIBE, SPUBLISH) are not keys for
                    // GETKEYS; and it refuses PFMERGE with a destination but
                    // no source, which PFMERGE itself accepts.
                    (Ok(_), None) => assert!(
                        ["ssubscribe", "sunsubscribe", "spublish"].contains(&base.name)
                            || (base.name == "pfmerge" && argc == 2),
                        "{args:?}"
                    ),
                    (Err(e), None) => panic!("{args:?}: {e}"),
                }
            }
        }
    }
    assert!(compared > 400, "compared only {compared} argument lists");
}

#[test]
fn movable_keys_agree_with_command_getkeys() {
    let samples: &[&[&str]] = &[
        &["EVAL", "return 1", "2", "k1", "k2", "x"],
        &["EVAL_RO", "return 1", "0", "x"],
        &[
            "EVALSHA",
            "0123456789012345678901234567890123456789",
            "1",
            "k1",
        ],
        &[
            "EVALSHA_RO",
            "0123456789012345678901234567890123456789",
            "1",
            "k1",
            "x",
        ],
        &["FCALL", "f", "2", "k1", "k2"],
        &["FCALL_RO", "f", "1", "k1", "x"],
        &["ZUNIONSTORE", "d", "2", "k1", "k2", "WEIGHTS", "1", "2"],
        &["ZINTERSTORE", "d", "1", "k1"],
        &["ZDIFFSTORE", "d", "2", "k1", "k2"],
        &["ZUNION", "2", "k1", "k2", "WITHSCORES"],
        &["ZINTER", "1", "k1"],
        &["ZDIFF", "2", "k1", "k2"],
        &["ZINTERCARD", "2", "k1", "k2", "LIMIT", "1"],
        &["SINTERCARD", "2", "k1", "k2"],
        &["LMPOP", "2", "k1", "k2", "LEFT", "COUNT", "2"],
        &["ZMPOP", "1", "k1", "MIN"],
        &["BLMPOP", "0", "2", "k1", "k2", "RIGHT"],
        &["BZMPOP", "0", "1", "k1", "MAX"],
        &[
            "SORT", "k1", "BY", "w_*", "LIMIT", "0", "5", "GET", "store", "STORE", "d",
        ],
        &["SORT", "k1", "ALPHA"],
        &["SORT_RO", "k1", "GET", "#"],
        &[
            "GEORADIUS",
            "k1",
            "0",
            "0",
            "5",
            "km",
            "COUNT",
            "3",
            "STORE",
            "d",
        ],
        &["GEORADIUS", "k1", "0", "0", "5", "km", "WITHDIST"],
        &["GEORADIUSBYMEMBER", "k1", "m", "5", "km", "STOREDIST", "d"],
        &["MIGRATE", "h", "6379", "k1", "0", "100", "COPY"],
        &[
            "MIGRATE", "h", "6379", "", "0", "100", "AUTH2", "u", "keys", "KEYS", "k1", "k2",
        ],
        &["XREAD", "COUNT", "5", "STREAMS", "k1", "k2", "0", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "NOACK",
            "STREAMS",
            "k1",
            ">",
        ],
    ];
    let redis = Redis::start();
    let mut client = redis.connect();
    let mut covered = BTreeSet::new();
    for sample in samples {
        let args: Vec<String> = sample.iter().map(|a| a.to_string()).collect();
        let entry = command::resolve(&to_args(sample)).unwrap();
        let ours = entry.key_indexes(&to_args(sample)).unwrap();
        let theirs = server_key_indexes(&mut client, &args).unwrap_or_default();
        assert_eq!(ours, theirs, "{sample:?}");
        covered.insert(entry.name);
    }
    for server in server_commands(&redis) {
        if server.movable {
            assert!(
                covered.contains(server.name.as_str()),
                "no sample for {}",
                server.name
            );
        }
    }
}

#[test]
fn error_texts_are_the_servers() {
    let redis = Redis::start();
    let mut client = redis.connect();
    client.cmd_str(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=t\nredis.register_function('f', function() return 1 end)",
    ]);
    let sha = client.cmd_str(&["SCRIPT", "LOAD", "return 1"]);
    let sha = sha.lines().nth(1).unwrap().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["foo"],
        vec!["foo", "a", "b"],
        vec!["Foo", "a\r\nb", "c"],
        vec!["foo", "a\0b", "c"],
        vec!["object|encoding", "k"],
        vec!["OBJECT", "foo"],
        vec!["client", "maint_notifications", "on"],
        vec!["CLIENT", "foo\r\nbar"],
        vec!["GET"],
        vec!["get", "a", "b"],
        vec!["OBJECT"],
        vec!["object", "encoding"],
        vec!["XINFO", "stream"],
        vec!["MSET", "a", "1", "b"],
        vec!["EVAL", "return 1", "x"],
        vec!["EVAL", "return 1", "01", "a"],
        vec!["EVAL", "return 1", "-1"],
        vec!["EVAL", "return 1", "2", "a"],
        vec!["EVALSHA", &sha, "x"],
        vec!["EVALSHA_RO", &sha, "2", "a"],
        vec!["ZUNIONSTORE", "d", "x", "a"],
        vec!["ZUNIONSTORE", "d", "0", "a"],
        vec!["ZDIFF", "3", "a"],
        vec!["ZINTERCARD", "-1", "a"],
        vec!["SINTERCARD", "x", "a"],
        vec!["SINTERCARD", "3", "a"],
        vec!["LMPOP", "0", "a", "LEFT"],
        vec!["LMPOP", "2", "a", "LEFT"],
        vec!["ZMPOP", "3", "a", "MIN"],
        vec!["XREAD", "a", "b", "c"],
        vec!["XREAD", "STREAMS", "a", "b", "c"],
        vec!["XREAD", "GROUP", "g", "c", "STREAMS", "a", "0"],
        vec!["XREAD", "NOACK", "STREAMS", "a", "0"],
        vec!["XREAD", "COUNT", "1", "STREAMS"],
        vec!["XREADGROUP", "COUNT", "1", "NOACK", "STREAMS", "a", ">"],
        vec!["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", "b", "c"],
    ];
    let long_name = "x".repeat(200);
    let (long_a, long_b) = ("a".repeat(100), "b".repeat(100));
    let mut cases = cases;
    cases.push(vec![&long_name, &long_a, &long_b, "c"]);
    for case in &cases {
        let args = to_args(case);
        let ours = command::resolve(&args).and_then(|c| c.key_indexes(&args).map(|_| ()));
        let ours = ours.expect_err("the proxy must reject this");
        let raw: Vec<&[u8]> = case.iter().map(|a| a.as_bytes()).collect();
        let theirs = String::from_utf8(client.cmd(&raw)).unwrap();
        assert_eq!(format!("-{ours}\r\n"), theirs, "{case:?}");
    }
}

#[test]
fn docs_name_every_command() {
    let docs = include_str!("../docs/commands.md");
    let words: BTreeSet<&str> = docs
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_' || c == '-'))
        .collect();
    let missing: Vec<&str> = command::commands()
        .iter()
        .map(|c| c.name)
        .filter(|name| !words.contains(name.to_ascii_uppercase().as_str()))
        .collect();
    assert!(missing.is_empty(), "docs/commands.md lacks {missing:?}");
}
