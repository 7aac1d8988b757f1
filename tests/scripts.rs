//! Scripts and functions through a proxy over three redis-servers: SCRIPT
//! and FUNCTION reach every shard, so EVALSHA and FCALL work wherever their
//! keys live; keyless scripts run on the first shard of the pool file.

mod common;

use common::proxy::Proxy;
use common::redis::{RawClient, Redis};
use common::wait_until;
use std::time::Duration;

const SET_SCRIPT: &str = "return redis.call('set', KEYS[1], ARGV[1])";
const LIBRARY: &str = "#!lua name=mylib\nredis.register_function('myset', function(keys, args) return redis.call('set', keys[1], args[1]) end)\nredis.register_function{function_name='myget', callback=function(keys) return redis.call('get', keys[1]) end, flags={'no-writes'}}";

struct Setup {
    shards: Vec<Redis>,
    proxy: Proxy,
}

fn setup_with(redis_args: &[&str]) -> Setup {
    let shards: Vec<Redis> = (0..3).map(|_| Redis::start_with(redis_args)).collect();
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  distribution: modula\n  servers:\n   - {}:0-1364\n   - {}:1365-2729\n   - {}:2730-4095\n",
        shards[0].addr(),
        shards[1].addr(),
        shards[2].addr()
    ));
    Setup { shards, proxy }
}

fn setup() -> Setup {
    setup_with(&[])
}

/// The text of a bulk reply `$n\r\ntext\r\n`.
fn bulk_text(reply: &str) -> String {
    assert!(reply.starts_with('$'), "not a bulk: {reply:?}");
    reply.lines().nth(1).unwrap().to_string()
}

/// Keys `k:0`... whose values were written through the proxy, enough that
/// every shard holds some; checked on each Redis directly.
fn keys_on_every_shard(s: &Setup) -> Vec<String> {
    let keys: Vec<String> = (0..30).map(|i| format!("k:{i}")).collect();
    for shard in &s.shards {
        let mut direct = shard.connect();
        let held = keys
            .iter()
            .filter(|k| direct.cmd_str(&["EXISTS", k]) == ":1\r\n")
            .count();
        assert!(held > 0, "shard {} holds none of the keys", shard.addr());
    }
    keys
}

#[test]
fn script_load_then_evalsha_works_on_every_shard() {
    let s = setup();
    let mut c = RawClient::connect(s.proxy.port);
    let sha = bulk_text(&c.cmd_str(&["SCRIPT", "LOAD", SET_SCRIPT]));
    let theirs = bulk_text(
        &s.shards[0]
            .connect()
            .cmd_str(&["SCRIPT", "LOAD", SET_SCRIPT]),
    );
    assert_eq!(sha, theirs);
    for i in 0..30 {
        let key = format!("k:{i}");
        assert_eq!(
            c.cmd_str(&["EVALSHA", &sha, "1", &key, &i.to_string()]),
            "+OK\r\n"
        );
    }
    for (i, key) in keys_on_every_shard(&s).iter().enumerate() {
        assert_eq!(
            c.cmd_str(&["GET", key]),
            format!("${}\r\n{i}\r\n", i.to_string().len())
        );
    }
    // A script that does not compile: Redis's error, once.
    let want = s.shards[0]
        .connect()
        .cmd_str(&["SCRIPT", "LOAD", "return +"]);
    assert!(want.starts_with("-ERR"), "{want}");
    assert_eq!(c.cmd_str(&["SCRIPT", "LOAD", "return +"]), want);
}

#[test]
fn script_exists_only_where_every_shard_has_it() {
    let s = setup();
    let mut c = RawClient::connect(s.proxy.port);
    let everywhere = bulk_text(&c.cmd_str(&["SCRIPT", "LOAD", "return 1"]));
    // Loaded behind the proxy's back, on one shard only.
    let partial = bulk_text(
        &s.shards[1]
            .connect()
            .cmd_str(&["SCRIPT", "LOAD", "return 2"]),
    );
    let nowhere = "0123456789012345678901234567890123456789";
    assert_eq!(
        c.cmd_str(&["SCRIPT", "EXISTS", &everywhere, &partial, nowhere]),
        "*3\r\n:1\r\n:0\r\n:0\r\n"
    );
    let mut c3 = RawClient::connect(s.proxy.port);
    c3.cmd_str(&["HELLO", "3"]);
    let theirs = {
        let mut d = s.shards[0].connect();
        d.cmd_str(&["HELLO", "3"]);
        d.cmd_str(&["SCRIPT", "EXISTS", &everywhere, nowhere])
    };
    assert_eq!(
        c3.cmd_str(&["SCRIPT", "EXISTS", &everywhere, nowhere]),
        theirs
    );

    assert_eq!(c.cmd_str(&["SCRIPT", "FLUSH", "SYNC"]), "+OK\r\n");
    assert_eq!(
        c.cmd_str(&["SCRIPT", "EXISTS", &everywhere, &partial]),
        "*2\r\n:0\r\n:0\r\n"
    );
    for shard in &s.shards {
        assert_eq!(
            shard
                .connect()
                .cmd_str(&["SCRIPT", "EXISTS", &everywhere, &partial]),
            "*2\r\n:0\r\n:0\r\n"
        );
    }
    assert_eq!(c.cmd_str(&["SCRIPT", "FLUSH"]), "+OK\r\n");
}

#[test]
fn functions_are_loaded_listed_dumped_and_restored_on_every_shard() {
    let s = setup();
    let mut c = RawClient::connect(s.proxy.port);
    assert_eq!(c.cmd_str(&["FUNCTION", "LOAD", LIBRARY]), "$5\r\nmylib\r\n");
    for i in 0..30 {
        let key = format!("k:{i}");
        assert_eq!(c.cmd_str(&["FCALL", "myset", "1", &key, "v"]), "+OK\r\n");
        assert_eq!(c.cmd_str(&["FCALL_RO", "myget", "1", &key]), "$1\r\nv\r\n");
    }
    keys_on_every_shard(&s);
    let list = c.cmd_str(&["FUNCTION", "LIST"]);
    assert!(list.contains("mylib") && list.contains("myset"), "{list}");
    assert_eq!(list, s.shards[0].connect().cmd_str(&["FUNCTION", "LIST"]));
    let dump = c.cmd(&[b"FUNCTION", b"DUMP"]);
    // The payload of `$n\r\n<payload>\r\n`.
    let start = dump.iter().position(|&b| b == b'\n').unwrap() + 1;
    let payload = dump[start..dump.len() - 2].to_vec();

    // Loading it again is refused by every shard alike: Redis's error.
    let want = s.shards[0]
        .connect()
        .cmd_str(&["FUNCTION", "LOAD", LIBRARY]);
    assert_eq!(c.cmd_str(&["FUNCTION", "LOAD", LIBRARY]), want);
    assert_eq!(
        c.cmd_str(&["FUNCTION", "LOAD", "REPLACE", LIBRARY]),
        "$5\r\nmylib\r\n"
    );

    assert_eq!(c.cmd_str(&["FUNCTION", "DELETE", "mylib"]), "+OK\r\n");
    for shard in &s.shards {
        assert_eq!(shard.connect().cmd_str(&["FUNCTION", "LIST"]), "*0\r\n");
    }
    let want = s.shards[0]
        .connect()
        .cmd_str(&["FUNCTION", "DELETE", "mylib"]);
    assert_eq!(c.cmd_str(&["FUNCTION", "DELETE", "mylib"]), want);

    assert_eq!(c.cmd(&[b"FUNCTION", b"RESTORE", &payload]), b"+OK\r\n");
    for shard in &s.shards {
        let list = shard.connect().cmd_str(&["FUNCTION", "LIST"]);
        assert!(list.contains("mylib"), "shard {}: {list}", shard.addr());
    }
    assert_eq!(c.cmd_str(&["FCALL", "myget", "1", "k:0"]), "$1\r\nv\r\n");
    // Nothing runs: the first shard's statistics, as Redis gives them, in
    // RESP2 and RESP3.
    let direct = s.shards[0].connect().cmd_str(&["FUNCTION", "STATS"]);
    assert!(direct.contains("running_script"), "{direct}");
    assert_eq!(c.cmd_str(&["FUNCTION", "STATS"]), direct);
    let mut c3 = RawClient::connect(s.proxy.port);
    let mut direct3 = s.shards[0].connect();
    for client in [&mut c3, &mut direct3] {
        assert!(client.cmd_str(&["HELLO", "3"]).starts_with('%'));
    }
    let direct = direct3.cmd_str(&["FUNCTION", "STATS"]);
    assert!(direct.starts_with("%2\r\n"), "{direct}");
    assert_eq!(c3.cmd_str(&["FUNCTION", "STATS"]), direct);

    // Loaded on one shard only: the others refuse, and are named.
    assert_eq!(c.cmd_str(&["FUNCTION", "FLUSH"]), "+OK\r\n");
    for shard in &s.shards {
        assert_eq!(shard.connect().cmd_str(&["FUNCTION", "LIST"]), "*0\r\n");
    }
    s.shards[2]
        .connect()
        .cmd_str(&["FUNCTION", "LOAD", LIBRARY]);
    let reply = c.cmd_str(&["FUNCTION", "LOAD", LIBRARY]);
    assert!(
        reply.starts_with("-ERR Library 'mylib' already exists") && reply.contains("(shard '"),
        "{reply}"
    );
}

#[test]
fn keyless_scripts_run_on_the_first_shard() {
    let s = setup();
    let mut c = RawClient::connect(s.proxy.port);
    assert_eq!(
        c.cmd_str(&["EVAL", "return redis.call('set', 'keyless', 'eval')", "0"]),
        "+OK\r\n"
    );
    let library = "#!lua name=marks\nredis.register_function('mark', function() return redis.call('set', 'fcall', 'mark') end)";
    assert_eq!(c.cmd_str(&["FUNCTION", "LOAD", library]), "$5\r\nmarks\r\n");
    assert_eq!(c.cmd_str(&["FCALL", "mark", "0"]), "+OK\r\n");
    assert_eq!(
        s.shards[0].connect().cmd_str(&["GET", "fcall"]),
        "$4\r\nmark\r\n"
    );
    let sha = bulk_text(&c.cmd_str(&["SCRIPT", "LOAD", "return redis.call('get', 'keyless')"]));
    assert_eq!(c.cmd_str(&["EVALSHA_RO", &sha, "0"]), "$4\r\neval\r\n");
    assert_eq!(
        s.shards[0].connect().cmd_str(&["GET", "keyless"]),
        "$4\r\neval\r\n"
    );
    for shard in &s.shards[1..] {
        assert_eq!(shard.connect().cmd_str(&["DBSIZE"]), ":0\r\n");
    }
}

#[test]
fn script_kill_reaches_the_busy_shard() {
    // Redis answers other clients (and SCRIPT KILL) only once a script has
    // run longer than this.
    let s = setup_with(&["--busy-reply-threshold", "50"]);
    let mut c = RawClient::connect(s.proxy.port);
    assert_eq!(
        c.cmd_str(&["SCRIPT", "KILL"]),
        "-NOTBUSY No scripts in execution right now.\r\n"
    );
    assert_eq!(
        c.cmd_str(&["FUNCTION", "KILL"]),
        s.shards[0].connect().cmd_str(&["FUNCTION", "KILL"])
    );
    let mut busy = RawClient::connect(s.proxy.port);
    busy.send_raw(&common::redis::encode_command(&[
        b"EVAL",
        b"local i = 0 while true do i = i + 1 end",
        b"1",
        b"k:1",
    ]));
    wait_until(
        "SCRIPT KILL to stop the script",
        Duration::from_secs(10),
        || c.cmd_str(&["SCRIPT", "KILL"]) == "+OK\r\n",
    );
    let reply = String::from_utf8_lossy(&busy.read_reply()).into_owned();
    assert!(
        reply.starts_with("-") && reply.contains("killed"),
        "{reply}"
    );
    assert_eq!(busy.cmd_str(&["PING"]), "+PONG\r\n");

    // SCRIPT KILL pipelined behind a request of the same client that waits
    // for the script: it still reaches the shard, and both get answered.
    busy.send_raw(&common::redis::encode_command(&[
        b"EVAL",
        b"local i = 0 while true do i = i + 1 end",
        b"1",
        b"k:1",
    ]));
    wait_until("the script to run", Duration::from_secs(10), || {
        s.shards
            .iter()
            .any(|shard| shard.connect().cmd_str(&["PING"]).starts_with("-BUSY"))
    });
    let mut stuck = RawClient::connect(s.proxy.port);
    stuck.send_raw(
        &[
            common::redis::encode_command(&[b"GET", b"k:1"]),
            common::redis::encode_command(&[b"SCRIPT", b"KILL"]),
        ]
        .concat(),
    );
    let killed = String::from_utf8_lossy(&busy.read_reply()).into_owned();
    assert!(killed.contains("killed"), "{killed}");
    assert_eq!(stuck.read_reply(), b"$-1\r\n");
    assert_eq!(stuck.read_reply(), b"+OK\r\n");
}

/// A script that runs past Redis's busy threshold (5 s by default): other
/// clients' requests to its shard get Redis's own `-BUSY` at once, instead
/// of waiting behind it on the proxy's shared connection (review: no reply
/// in 9 s). A request written before the threshold still runs after the
/// script, other shards serve on, and once killed the shard serves again.
/// The same for a function, whose `-BUSY` names FUNCTION KILL.
#[test]
fn a_script_running_long_gets_other_clients_busy_replies() {
    let s = setup();
    let mut c = RawClient::connect(s.proxy.port);
    for i in 0..30 {
        let key = format!("k:{i}");
        assert_eq!(c.cmd_str(&["SET", &key, &key]), "+OK\r\n");
    }
    let home = s
        .shards
        .iter()
        .position(|shard| shard.connect().cmd_str(&["EXISTS", "k:1"]) == ":1\r\n")
        .unwrap();
    let elsewhere = (0..30)
        .map(|i| format!("k:{i}"))
        .find(|k| s.shards[home].connect().cmd_str(&["EXISTS", k]) == ":0\r\n")
        .unwrap();
    let library = "#!lua name=spin\nredis.register_function('spin', function(keys) local i = 0 while true do i = i + 1 end end)";
    assert_eq!(c.cmd_str(&["FUNCTION", "LOAD", library]), "$4\r\nspin\r\n");
    let spin_eval: [&[u8]; 4] = [
        b"EVAL",
        b"local i = 0 while true do i = i + 1 end",
        b"1",
        b"k:1",
    ];
    let spin_fcall: [&[u8]; 4] = [b"FCALL", b"spin", b"1", b"k:1"];
    for (spin, kill) in [(&spin_eval, "SCRIPT"), (&spin_fcall, "FUNCTION")] {
        let mut busy = RawClient::connect(s.proxy.port);
        busy.send_raw(&common::redis::encode_command(spin));
        // Written behind the script before it ran long: it runs after it.
        let mut early = RawClient::connect(s.proxy.port);
        early.send_raw(&common::redis::encode_command(&[b"GET", b"k:1"]));
        // Redis itself answers others once the script has run 5 s.
        wait_until("the script to run long", Duration::from_secs(20), || {
            s.shards[home]
                .connect()
                .cmd_str(&["PING"])
                .starts_with("-BUSY")
        });
        let asked = std::time::Instant::now();
        let reply = c.cmd_str(&["GET", "k:1"]);
        assert_eq!(
            reply,
            format!(
                "-BUSY Redis is busy running a script. You can only call {kill} KILL or SHUTDOWN NOSAVE.\r\n"
            )
        );
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
        assert_eq!(
            c.cmd_str(&["GET", &elsewhere]),
            format!("${}\r\n{elsewhere}\r\n", elsewhere.len())
        );
        if kill == "FUNCTION" {
            // Redis answers FUNCTION STATS while busy, naming the function.
            let asked = std::time::Instant::now();
            let stats = c.cmd_str(&["FUNCTION", "STATS"]);
            assert!(
                stats.contains("running_script\r\n*6\r\n$4\r\nname\r\n$4\r\nspin\r\n"),
                "{stats}"
            );
            assert!(
                asked.elapsed() < Duration::from_secs(2),
                "{:?}",
                asked.elapsed()
            );
        }
        // The script's own client waits behind it, as with Redis.
        let processed = |c: &mut RawClient| {
            c.info_number("stats", "total_commands_processed")
                .expect("total_commands_processed")
        };
        let before = processed(&mut c);
        busy.send_raw(&common::redis::encode_command(&[b"GET", b"k:1"]));
        // Each INFO counts itself: a count past that is the GET read.
        let mut infos = 0;
        wait_until(
            "the proxy to read the held request",
            Duration::from_secs(5),
            || {
                infos += 1;
                processed(&mut c) > before + infos
            },
        );
        assert_eq!(c.cmd_str(&[kill, "KILL"]), "+OK\r\n");
        let killed = String::from_utf8_lossy(&busy.read_reply()).into_owned();
        assert!(
            killed.starts_with('-') && killed.contains("killed"),
            "{killed}"
        );
        assert_eq!(busy.read_reply(), b"$3\r\nk:1\r\n");
        assert_eq!(early.read_reply(), b"$3\r\nk:1\r\n");
        assert_eq!(c.cmd_str(&["GET", "k:1"]), "$3\r\nk:1\r\n");
    }
}

/// A script at the head of the shared connection while its Redis is
/// stopped (SIGSTOP, no script running): Redis is not busy, so requests
/// behind it time out with the pool's `timeout` as any stalled request
/// does (review: after 5 s every request got `-BUSY`, none timed out, and
/// the server was never ejected again). Once Redis runs again they flow.
#[test]
fn a_script_behind_a_stopped_server_is_no_busy_script() {
    let redis = Redis::start();
    let proxy = Proxy::start(&format!(
        "  redis: true\n  timeout: 1000\n  servers:\n   - {}:1\n",
        redis.addr()
    ));
    let mut c = RawClient::connect(proxy.port);
    assert_eq!(c.cmd_str(&["SET", "k", "v"]), "+OK\r\n");
    redis.guard.signal("STOP");
    let mut script = RawClient::connect(proxy.port);
    script.send_raw(&common::redis::encode_command(&[
        b"EVAL",
        b"return 1",
        b"0",
    ]));
    let started = std::time::Instant::now();
    // Past the hold (0.5 s) and past Redis's 5 s threshold.
    while started.elapsed() < Duration::from_secs(7) {
        let reply = c.cmd_str(&["GET", "k"]);
        assert!(
            reply.starts_with("-ERR") && reply.contains("timed out after 1000 ms"),
            "{reply}"
        );
    }
    redis.guard.signal("CONT");
    assert!(
        script.read_reply().starts_with(b"-ERR"),
        "the script timed out"
    );
    wait_until("the server to serve again", Duration::from_secs(10), || {
        c.cmd_str(&["GET", "k"]) == "$1\r\nv\r\n"
    });
}

#[test]
fn script_kill_authenticates_like_the_pool() {
    let shards: Vec<Redis> = (0..2)
        .map(|_| Redis::start_with(&["--requirepass", "sesame"]))
        .collect();
    let proxy = Proxy::start(&format!(
        "  redis: true\n  redis_auth: sesame\n  servers:\n   - {}:1\n   - {}:1\n",
        shards[0].addr(),
        shards[1].addr()
    ));
    let mut c = RawClient::connect(proxy.port);
    assert_eq!(c.cmd_str(&["AUTH", "sesame"]), "+OK\r\n");
    assert_eq!(
        c.cmd_str(&["SCRIPT", "KILL"]),
        "-NOTBUSY No scripts in execution right now.\r\n"
    );
    assert_eq!(c.cmd_str(&["SCRIPT", "FLUSH"]), "+OK\r\n");
}

/// A long script that is the first request of a new backend connection:
/// what was written before it in that batch (the connection's own INFO)
/// gets its reply only when the script ends, and the proxy waited for that
/// reply before it counted the script as running (TCL suite review: other
/// clients' requests waited 10 s and more without `-BUSY`).
#[test]
fn a_script_first_on_a_new_connection_gets_other_clients_busy_replies() {
    let s = setup_with(&["--busy-reply-threshold", "1000"]);
    let mut busy = RawClient::connect(s.proxy.port);
    busy.send_raw(&common::redis::encode_command(&[
        b"EVAL",
        b"local i = 0 while true do i = i + 1 end",
        b"1",
        b"k:1",
    ]));
    wait_until("the script to run long", Duration::from_secs(20), || {
        s.shards
            .iter()
            .any(|shard| shard.connect().cmd_str(&["PING"]).starts_with("-BUSY"))
    });
    let mut other = RawClient::connect(s.proxy.port);
    let asked = std::time::Instant::now();
    assert_eq!(
        other.cmd_str(&["GET", "k:1"]),
        "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(other.cmd_str(&["SCRIPT", "KILL"]), "+OK\r\n");
    let killed = String::from_utf8_lossy(&busy.read_reply()).into_owned();
    assert!(
        killed.starts_with('-') && killed.contains("killed"),
        "{killed}"
    );
}

/// EVAL caches its script for a later EVALSHA whatever its keys, as one
/// Redis does (TCL suite review: EVALSHA of a key on another shard got
/// `NOSCRIPT`, and SCRIPT EXISTS said 0); SCRIPT FLUSH forgets it, and the
/// next EVAL shares it again.
#[test]
fn eval_caches_its_script_on_every_shard() {
    let s = setup();
    let mut c = RawClient::connect(s.proxy.port);
    let sha = bulk_text(
        &s.shards[0]
            .connect()
            .cmd_str(&["SCRIPT", "LOAD", SET_SCRIPT]),
    );
    assert_eq!(c.cmd_str(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    for round in 0..2 {
        assert_eq!(
            c.cmd_str(&["EVAL", SET_SCRIPT, "1", "k:0", "first"]),
            "+OK\r\n"
        );
        assert_eq!(c.cmd_str(&["SCRIPT", "EXISTS", &sha]), "*1\r\n:1\r\n");
        for i in 1..30 {
            let key = format!("k:{i}");
            assert_eq!(
                c.cmd_str(&["EVALSHA", &sha, "1", &key, &i.to_string()]),
                "+OK\r\n",
                "round {round}, {key}"
            );
        }
        keys_on_every_shard(&s);
        for shard in &s.shards {
            let exists = shard.connect().cmd_str(&["SCRIPT", "EXISTS", &sha]);
            assert_eq!(exists, "*1\r\n:1\r\n", "{}", shard.addr());
        }
        assert_eq!(c.cmd_str(&["SCRIPT", "FLUSH"]), "+OK\r\n");
        let gone = c.cmd_str(&["EVALSHA", &sha, "1", "k:1", "x"]);
        assert!(gone.starts_with("-NOSCRIPT"), "{gone}");
    }
}

/// The same from inside a transaction, which runs on one shard: EVALSHA
/// after EXEC finds the script on every shard (before: `NOSCRIPT` on the
/// other shard's keys).
#[test]
fn eval_in_a_transaction_caches_its_script_on_every_shard() {
    let s = setup();
    let mut c = RawClient::connect(s.proxy.port);
    assert_eq!(c.cmd_str(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    assert_eq!(c.cmd_str(&["MULTI"]), "+OK\r\n");
    assert_eq!(
        c.cmd_str(&["EVAL", SET_SCRIPT, "1", "k:0", "first"]),
        "+QUEUED\r\n"
    );
    assert_eq!(c.cmd_str(&["EXEC"]), "*1\r\n+OK\r\n");
    // The script's SHA from a Redis of its own: loading it on a shard
    // would do the proxy's work.
    let sha = bulk_text(
        &Redis::start()
            .connect()
            .cmd_str(&["SCRIPT", "LOAD", SET_SCRIPT]),
    );
    for i in 1..30 {
        let key = format!("k:{i}");
        assert_eq!(
            c.cmd_str(&["EVALSHA", &sha, "1", &key, &i.to_string()]),
            "+OK\r\n",
            "{key}"
        );
    }
    keys_on_every_shard(&s);
}

/// The payload of a bulk reply, binary as it is.
fn bulk_bytes(reply: &[u8]) -> Vec<u8> {
    let eol = reply.windows(2).position(|w| w == b"\r\n").unwrap();
    let len: usize = std::str::from_utf8(&reply[1..eol])
        .unwrap()
        .parse()
        .unwrap();
    reply[eol + 2..eol + 2 + len].to_vec()
}

/// A library's FUNCTION DUMP, made on a Redis of its own.
fn dump_of(code: &str) -> Vec<u8> {
    let redis = Redis::start();
    let mut direct = redis.connect();
    let loaded = direct.cmd_str(&["FUNCTION", "LOAD", code]);
    assert!(loaded.starts_with('$'), "{loaded}");
    bulk_bytes(&direct.cmd(&[b"FUNCTION", b"DUMP"]))
}

/// The mover's function library (`shardproxy_mover`) is out of clients'
/// reach: a client that could load one of that name, by FUNCTION LOAD or
/// RESTORE, had its code run with the admin's rights by the next
/// `migrate` (review: past the proxies' least-privilege user), and one
/// that could delete it or call its functions stopped the move. Other
/// libraries load, restore and run as before.
#[test]
fn the_movers_library_is_out_of_clients_reach() {
    let s = setup();
    let mut c = RawClient::connect(s.proxy.port);
    let refusal = "-ERR libraries and functions named 'shardproxy_...' are reserved for shardproxy's migrations\r\n";
    // Long and repetitive: the dump compresses it (LZF).
    let body: String = (0..3)
        .map(|i| format!("redis.register_function('shardproxy_f{i}', function(keys, args) return redis.call(unpack(args)) end)\n"))
        .collect();
    let planted = format!("#!lua name=shardproxy_mover\n{body}");
    assert_eq!(c.cmd_str(&["FUNCTION", "LOAD", &planted]), refusal);
    assert_eq!(
        c.cmd_str(&["FUNCTION", "LOAD", "REPLACE", &planted]),
        refusal
    );
    // Read as Redis reads the first line (review: these passed a split on
    // blanks), and a library of another name that would register the
    // mover's functions (review: it stopped every later migrate).
    let escaped = body.replace("shardproxy_f", "f");
    for first_line in [
        "#!lua name=ShardProxy_mover",
        "#!lua NAME=shardproxy_mover",
        "#!lua \"name=shard\\x70roxy_mover\"",
        "#!lua name=shard\"\\x70roxy_mover\"",
    ] {
        let code = format!("{first_line}\n{escaped}");
        assert_eq!(
            c.cmd_str(&["FUNCTION", "LOAD", &code]),
            refusal,
            "{first_line}"
        );
    }
    let foreign = format!("#!lua name=mine\n{body}");
    assert_eq!(c.cmd_str(&["FUNCTION", "LOAD", &foreign]), refusal);
    for code in [
        planted.clone(),
        format!("#!lua NAME=shardproxy_mover\n{escaped}"),
        foreign.clone(),
    ] {
        let payload = dump_of(&code);
        for policy in [&b"REPLACE"[..], b"APPEND", b"FLUSH"] {
            let restored = c.cmd(&[b"FUNCTION", b"RESTORE", &payload, policy]);
            assert_eq!(String::from_utf8_lossy(&restored), refusal, "{code}");
        }
    }
    assert_eq!(
        c.cmd_str(&["FCALL", "shardproxy_mover_token", "0"]),
        refusal
    );
    assert_eq!(
        c.cmd_str(&["FCALL_RO", "shardproxy_check", "0", "t"]),
        refusal
    );
    assert_eq!(
        c.cmd_str(&["FUNCTION", "DELETE", "shardproxy_mover"]),
        refusal
    );
    // Junk gets Redis's words (TCL suite review: it got the proxy's own).
    let junk = c.cmd(&[b"FUNCTION", b"RESTORE", b"not a payload"]);
    assert_eq!(
        String::from_utf8_lossy(&junk),
        "-ERR DUMP payload version or checksum are wrong\r\n"
    );
    let direct = s.shards[0]
        .connect()
        .cmd(&[b"FUNCTION", b"RESTORE", b"not a payload"]);
    assert_eq!(junk, direct);
    // Junk inside a good checksum: Redis's words too (review).
    let mut wrapped = b"junkjunk\x0a\x00".to_vec();
    wrapped.extend_from_slice(&shardproxy::hash::crc64::crc64(&wrapped).to_le_bytes());
    let junk = c.cmd(&[b"FUNCTION", b"RESTORE", &wrapped]);
    assert_eq!(
        String::from_utf8_lossy(&junk),
        "-ERR given type is not a function\r\n"
    );
    let direct = s.shards[0]
        .connect()
        .cmd(&[b"FUNCTION", b"RESTORE", &wrapped]);
    assert_eq!(junk, direct);
    for shard in &s.shards {
        let listed = shard.connect().cmd_str(&["FUNCTION", "LIST"]);
        assert_eq!(listed, "*0\r\n", "{}", shard.addr());
    }
    // Another library's dump restores on every shard and runs.
    let restored = c.cmd(&[b"FUNCTION", b"RESTORE", &dump_of(LIBRARY)]);
    assert_eq!(restored, b"+OK\r\n");
    assert_eq!(c.cmd_str(&["FCALL", "myset", "1", "k:1", "v"]), "+OK\r\n");
    assert_eq!(c.cmd_str(&["FUNCTION", "DELETE", "mylib"]), "+OK\r\n");
    assert_eq!(c.cmd_str(&["FUNCTION", "FLUSH"]), "+OK\r\n");
    // A shard channel named like the proxies' keys is a channel.
    assert_eq!(c.cmd_str(&["SPUBLISH", "__shardproxy_news", "m"]), ":0\r\n");
}

/// FUNCTION RESTORE of libraries every shard has: each shard refuses, each
/// naming the first library it meets (in an order of its own); the reply
/// is one of them as Redis words it, not a partial refusal naming a shard,
/// since no shard restored anything (review).
#[test]
fn a_restore_every_shard_refuses_is_refused_as_redis_refuses_it() {
    let s = setup();
    let mut c = RawClient::connect(s.proxy.port);
    for i in 0..8 {
        let code = format!(
            "#!lua name=lib{i}\nredis.register_function('f{i}', function() return {i} end)"
        );
        assert_eq!(
            c.cmd_str(&["FUNCTION", "LOAD", &code]),
            format!("$4\r\nlib{i}\r\n")
        );
    }
    let dump = c.cmd(&[b"FUNCTION", b"DUMP"]);
    let payload = bulk_payload(&dump);
    let reply = String::from_utf8_lossy(&c.cmd(&[b"FUNCTION", b"RESTORE", &payload])).into_owned();
    assert!(
        reply.starts_with("-ERR Library lib") && reply.ends_with(" already exists\r\n"),
        "{reply}"
    );
    let direct = s.shards[0]
        .connect()
        .cmd(&[b"FUNCTION", b"RESTORE", &payload]);
    let direct = String::from_utf8_lossy(&direct);
    assert!(direct.starts_with("-ERR Library lib"), "{direct}");
}

/// A FUNCTION RESTORE payload whose compressed code claims a terabyte (31
/// bytes): the proxy unpacks the code to check the library names, and the
/// allocation aborted the whole process (review). It is refused, and the
/// proxy goes on serving; Redis refuses the same payload too.
#[test]
fn a_restore_payload_claiming_a_terabyte_is_refused_and_the_proxy_lives() {
    let s = setup();
    let mut payload = vec![245, 0xC3, 0x01, 0x81];
    payload.extend_from_slice(&(1u64 << 40).to_be_bytes());
    payload.push(0);
    payload.extend_from_slice(&[0; 2]);
    // A good checksum: what the proxy reads past Redis's first check.
    let crc = shardproxy::hash::crc64::crc64(&payload);
    payload.extend_from_slice(&crc.to_le_bytes());
    let mut c = RawClient::connect(s.proxy.port);
    assert_eq!(
        String::from_utf8_lossy(&c.cmd(&[b"FUNCTION", b"RESTORE", &payload])),
        "-ERR shardproxy cannot read the library names in this FUNCTION RESTORE payload: \
         its code unpacks to more than 736 bytes (at most 32 times the payload's size, and \
         67108864 bytes)\r\n"
    );
    let direct = s.shards[0]
        .connect()
        .cmd(&[b"FUNCTION", b"RESTORE", &payload]);
    assert!(
        direct.starts_with(b"-ERR"),
        "{}",
        String::from_utf8_lossy(&direct)
    );
    assert_eq!(
        RawClient::connect(s.proxy.port).cmd_str(&["PING"]),
        "+PONG\r\n"
    );
    assert_eq!(c.cmd_str(&["PING"]), "+PONG\r\n");
}

/// Functions Redis refuses for their arguments or their first line get
/// Redis's own words through the proxy (TCL suite review: the proxy's
/// library-name check answered first, in its own words).
#[test]
fn refused_function_arguments_get_redis_words() {
    let s = setup();
    let mut proxy = RawClient::connect(s.proxy.port);
    let mut direct = s.shards[0].connect();
    for args in [
        &["FUNCTION", "RESTORE", "arg1", "args2", "arg3"][..],
        &["FUNCTION", "RESTORE", "junk", "sideways"],
        &["FUNCTION", "LOAD", "#!lua name=a name=b\nreturn 1"],
        &["FUNCTION", "LOAD", "#!lua name=\"a\nreturn 1"],
    ] {
        let expected = direct.cmd_str(args);
        assert!(expected.starts_with("-ERR"), "{args:?}: {expected}");
        assert_eq!(proxy.cmd_str(args), expected, "{args:?}");
    }
}

/// The payload of a bulk string frame.
fn bulk_payload(frame: &[u8]) -> Vec<u8> {
    let eol = frame.windows(2).position(|w| w == b"\r\n").unwrap();
    frame[eol + 2..frame.len() - 2].to_vec()
}
