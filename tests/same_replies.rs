//! A client library (redis-rs, default options) gets the same replies
//! through shardproxy as from Redis directly, in RESP2 and in RESP3.
//!
//! The same command script runs against a fresh redis-server and against a
//! proxy over two fresh redis-servers (range form, keys on both shards), and
//! every reply is compared.

mod common;

use common::proxy::Proxy;
use common::redis::Redis;

/// The script: single-key commands of every type, multi-key commands that
/// are split, hash-tagged multi-key commands, errors Redis itself gives.
fn script() -> Vec<Vec<&'static str>> {
    let lines = [
        "PING",
        "PING hello",
        "PING hello again",
        "ECHO hi",
        "SET k1 v1",
        "GET k1",
        "GET missing",
        "SET n 10",
        "INCR n",
        "INCRBY n 5",
        "DECR n",
        "INCRBYFLOAT n 1.5",
        "APPEND k1 more",
        "STRLEN k1",
        "GETRANGE k1 0 3",
        "SETRANGE k1 2 XY",
        "GETSET k1 new",
        "GETDEL k1",
        "SETNX k2 a",
        "SETNX k2 b",
        "SETEX k3 100 v",
        "TTL k3",
        "PERSIST k3",
        "TTL k3",
        "EXPIRE k3 50",
        "TYPE k3",
        "MSET a 1 b 2 c 3 d 4 e 5 f 6",
        "MGET a b c d e f missing a",
        "EXISTS a b missing c a",
        "TOUCH a b c",
        "DEL a b missing",
        "UNLINK c d",
        "MGET a b c d e f",
        "HSET h f1 v1 f2 v2",
        "HGET h f1",
        "HGETALL h",
        "HMGET h f1 nope f2",
        "HINCRBY h cnt 3",
        "HINCRBYFLOAT h fl 2.5",
        "HKEYS h",
        "HLEN h",
        "HEXISTS h f1",
        "HDEL h f1",
        "LPUSH l a b c",
        "RPUSH l d e",
        "LRANGE l 0 -1",
        "LPOP l",
        "RPOP l 2",
        "LLEN l",
        "LINDEX l 0",
        "LPOS l a",
        "SADD s 3 1 2",
        "SMEMBERS s",
        "SISMEMBER s 1",
        "SMISMEMBER s 1 9",
        "SCARD s",
        "SADD {t}x 1 2 3",
        "SADD {t}y 2 3 4",
        "SINTER {t}x {t}y",
        "SINTERSTORE {t}z {t}x {t}y",
        "SUNION {t}x {t}y",
        "SMOVE {t}x {t}y 1",
        "ZADD z 1 a 2.5 b 3 c",
        "ZRANGE z 0 -1 WITHSCORES",
        "ZSCORE z b",
        "ZMSCORE z a nope",
        "ZINCRBY z 2 a",
        "ZRANK z c",
        "ZCARD z",
        "ZPOPMIN z",
        "ZRANGEBYSCORE z -inf +inf WITHSCORES",
        "ZUNIONSTORE {t}zu 2 {t}x {t}y",
        "PFADD hll a b c",
        "PFCOUNT hll",
        "SET {u}a 1",
        "RENAME {u}a {u}b",
        "GET {u}b",
        "OBJECT ENCODING s",
        "EVAL \"return redis.call('get', KEYS[1])\" 1 n",
        "SETBIT bits 7 1",
        "GETBIT bits 7",
        "BITCOUNT bits",
        "GET h",
        "LPUSH k2 x",
        "INCR k2",
        "HSET",
        "GET a b",
        // Keys on both shards: Redis's syntax error, not CROSSSLOT.
        "BITOP x a b c d e f",
        "BITOP nOt a b c d e f",
        "NOSUCHCOMMAND x y",
        "SELECT 0",
        "SELECT 00",
        "SELECT -0",
        "SELECT +0",
        "HELLO 03",
        "HELLO +3",
        "CLIENT SETNAME app",
        "CLIENT GETNAME",
        "CLIENT NOSUCHSUB",
        "DBSIZE",
        "SCRIPT LOAD \"return redis.call('get', KEYS[1])\"",
        "EVALSHA 4e6d8fc8bb01276962cce5371fa795a7763657ae 1 n",
        "EVALSHA abc x",
        "EVALSHA_RO abc -1",
        "SCRIPT EXISTS 4e6d8fc8bb01276962cce5371fa795a7763657ae 0000000000000000000000000000000000000000",
        "EVAL \"return 7\" 0",
        "FUNCTION DELETE nosuchlib",
        "FUNCTION LOAD \"#!lua name=lib\nredis.register_function('f', function(keys) return redis.call('get', keys[1]) end)\"",
        "FCALL f 1 n",
        "FCALL f x",
        "FCALL f -1",
        "FCALL_RO f 2 n",
        "FCALL nosuch x",
        "FCALL nosuch -1",
        "FCALL nosuch 0",
        "FCALL_RO nosuch 5 n",
        "FUNCTION LIST",
        "FUNCTION DELETE lib",
        "KEYS nosuchkey*",
        "SCAN 0 MATCH nosuchkey* COUNT 1000",
        "SCRIPT FLUSH",
        "SCRIPT EXISTS 4e6d8fc8bb01276962cce5371fa795a7763657ae",
    ];
    lines.iter().map(|l| split_words(l)).collect()
}

/// Splits on spaces, keeping "double quoted" words whole.
fn split_words(line: &'static str) -> Vec<&'static str> {
    let mut words = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(stripped) = rest.strip_prefix('"') {
            let end = stripped.find('"').unwrap();
            words.push(&stripped[..end]);
            rest = stripped[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            words.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
    }
    words
}

fn run_script(url: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut con = client
        .get_connection()
        .expect("connect with default options");
    script()
        .iter()
        .map(|words| {
            let mut cmd = redis::cmd(words[0]);
            for w in &words[1..] {
                cmd.arg(*w);
            }
            match cmd.query::<redis::Value>(&mut con) {
                Ok(v) => format!("{v:?}"),
                Err(e) => format!("error: {e}"),
            }
        })
        .collect()
}

fn compare(protocol: &str) {
    let direct = Redis::start();
    let shard0 = Redis::start();
    let shard1 = Redis::start();
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  distribution: modula\n  hash_tag: \"{{}}\"\n  servers:\n   - {}:0-2047\n   - {}:2048-4095\n",
        shard0.addr(),
        shard1.addr()
    ));
    let expected = run_script(&format!("redis://{}/?protocol={protocol}", direct.addr()));
    let got = run_script(&format!(
        "redis://127.0.0.1:{}/?protocol={protocol}",
        proxy.port
    ));
    let mut mismatches = Vec::new();
    for ((words, want), have) in script().iter().zip(&expected).zip(&got) {
        if want != have {
            mismatches.push(format!(
                "{}\n   redis: {want}\n   proxy: {have}",
                words.join(" ")
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches ({protocol}):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // The keys really are spread over both shards.
    for shard in [&shard0, &shard1] {
        let mut con = redis::Client::open(format!("redis://{}/", shard.addr()))
            .unwrap()
            .get_connection()
            .unwrap();
        let n: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert!(n > 3, "shard {} holds only {n} keys", shard.addr());
    }
}

#[test]
fn same_replies_as_redis_resp2() {
    compare("resp2");
}

#[test]
fn same_replies_as_redis_resp3() {
    compare("resp3");
}

/// SORT's BY and GET patterns form keys Redis reads on the sorted key's
/// server. Patterns whose keys carry the sorted key's hash tag before the
/// `*` give Redis's own replies; those whose keys may be on another shard
/// are refused, as Redis Cluster refuses them (before, the proxy sorted by
/// weights it could not see: every weight 0, every GET nil). With one
/// shard, any pattern runs.
#[test]
fn sort_patterns_run_on_the_sorted_key_shard_or_are_refused() {
    use common::redis::RawClient;
    use common::zk_cluster::keys_in;
    let direct = Redis::start();
    let shards = [Redis::start(), Redis::start()];
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  hash_tag: \"{{}}\"\n  servers:\n   - {}:0-2047\n   - {}:2048-4095\n",
        shards[0].addr(),
        shards[1].addr()
    ));
    let lone = Redis::start();
    let single = Proxy::start(&format!(
        "  redis: true\n  servers:\n   - {}:1\n",
        lone.addr()
    ));
    let (here, there) = (
        &keys_in(0, 2047, 1, "t")[0],
        &keys_in(2048, 4095, 1, "u")[0],
    );
    let list = format!("{{{here}}}l");
    let setup = |client: &mut RawClient| {
        client.cmd_str(&["DEL", &list, "l"]);
        for (element, weight) in [("1", "30"), ("2", "10"), ("3", "20")] {
            client.cmd_str(&["RPUSH", &list, element]);
            client.cmd_str(&["RPUSH", "l", element]);
            client.cmd_str(&["SET", &format!("{{{here}}}w_{element}"), weight]);
            client.cmd_str(&[
                "SET",
                &format!("{{{here}}}o_{element}"),
                &format!("obj{element}"),
            ]);
            client.cmd_str(&["SET", &format!("w_{element}"), weight]);
        }
    };
    let (by, get) = (format!("{{{here}}}w_*"), format!("{{{here}}}o_*"));
    let stored = format!("{{{here}}}d");
    let same: Vec<Vec<&str>> = vec![
        vec!["SORT", &list, "BY", &by],
        vec!["SORT", &list, "BY", &by, "GET", &get, "GET", "#"],
        vec!["SORT", &list, "BY", "nosort", "GET", "#", "LIMIT", "0", "2"],
        vec!["SORT", &list, "GET", "constant", "DESC"],
        vec!["SORT_RO", &list, "BY", &by, "GET", &get],
        vec!["SORT", &list, "BY", &by, "STORE", &stored],
        vec!["LRANGE", &stored, "0", "-1"],
    ];
    let mut redis = direct.connect();
    let mut through = RawClient::connect(proxy.port);
    setup(&mut redis);
    setup(&mut through);
    for args in &same {
        let want = redis.cmd_str(args);
        assert!(!want.starts_with('-'), "{args:?}: {want}");
        assert_eq!(through.cmd_str(args), want, "{args:?}");
    }
    let elsewhere = format!("{{{there}}}w_*");
    let refused: Vec<(Vec<&str>, &str)> = vec![
        (vec!["SORT", &list, "BY", "w_*"], "BY"),
        (vec!["SORT", &list, "BY", &elsewhere], "BY"),
        (vec!["SORT", &list, "GET", "#", "GET", "o_*"], "GET"),
        (vec!["SORT_RO", &list, "GET", "o_*{x}"], "GET"),
        (vec!["SORT", &list, "BY", "{}w_*"], "BY"),
    ];
    for (args, option) in &refused {
        assert_eq!(
            through.cmd_str(args),
            format!(
                "-ERR {option} option of SORT denied through shardproxy: the keys its pattern \
                 forms may be on another shard; put the sorted key's hash tag before the '*' \
                 (e.g. weight_{{tag}}_*)\r\n"
            ),
            "{args:?}"
        );
    }
    // One shard: nothing can be elsewhere.
    let mut alone = RawClient::connect(single.port);
    setup(&mut alone);
    let args = ["SORT", "l", "BY", "w_*", "GET", "#"];
    assert_eq!(alone.cmd_str(&args), redis.cmd_str(&args));
    assert_eq!(
        alone.cmd_str(&args),
        "*3\r\n$1\r\n2\r\n$1\r\n3\r\n$1\r\n1\r\n"
    );
}
