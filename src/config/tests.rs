//! One test per rule and per rejection of the pool file.

use super::*;

const ICD: &str = "\
alpha:
  listen: 172.17.32.105:22121
  hash: md5
  distribution: modula
  zookeeper_host: 172.16.10.163:2181,172.16.10.96:2181
  zookeeper_path: /redis/proxy/icd/172.17.32.105:22121
  zookeeper_redis_path: /redis/cluster/icd
  auto_eject_hosts: false
  redis: true
  timeout: 1000
  server_retry_timeout: 2000
  server_failure_limit: 2
  servers:
   - 172.17.32.105:6379:0-2047
   - 172.17.32.106:6379:2048-4095
";

fn pool(body: &str) -> String {
    format!("p:\n  listen: 127.0.0.1:22121\n  redis: true\n{body}")
}

fn rejected(text: &str) -> String {
    Config::parse(text)
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn design_example_parses_as_is() {
    let config = Config::parse(ICD).unwrap();
    let p = &config.pools[0];
    assert_eq!(p.name, "alpha");
    assert_eq!(p.listen, "172.17.32.105:22121");
    assert_eq!(p.hash, HashKind::Md5);
    assert_eq!(p.distribution, DistributionKind::Modula);
    assert_eq!(p.timeout, Some(Duration::from_millis(1000)));
    assert!(p.range_form);
    assert_eq!(p.servers[1].range, Some((2048, 4095)));
    assert_eq!(p.servers[1].weight, 2048);
    let zk = p.zookeeper.as_ref().unwrap();
    assert_eq!(zk.redis_path.as_deref(), Some("/redis/cluster/icd"));
}

#[test]
fn twemproxy_defaults_apply() {
    let config = Config::parse(&pool("  servers:\n   - 127.0.0.1:6379:1\n")).unwrap();
    let p = &config.pools[0];
    assert_eq!(p.hash, HashKind::Fnv1a_64);
    assert_eq!(p.distribution, DistributionKind::Ketama);
    assert_eq!(p.timeout, None);
    assert_eq!(p.backlog, 512);
    assert_eq!(p.server_connections, 1);
    assert_eq!(p.server_retry_timeout, Duration::from_secs(30));
    assert_eq!(p.server_failure_limit, 2);
    assert_eq!(p.max_request_size, DEFAULT_MAX_REQUEST_SIZE);
    assert!(!p.allow_flush);
    assert!(!p.auto_eject_hosts && !p.preconnect && p.zookeeper.is_none());
}

#[test]
fn server_names_and_several_pools() {
    let text = "a:\n  listen: 127.0.0.1:1\n  redis: true\n  servers:\n   - 127.0.0.1:6379:2 one\n\
                b:\n  listen: 127.0.0.1:2\n  redis: true\n  servers:\n   - localhost:6380:1\n";
    let config = Config::parse(text).unwrap();
    assert_eq!(config.pools.len(), 2);
    assert_eq!(config.pools[0].servers[0].name.as_deref(), Some("one"));
    assert_eq!(config.pools[0].servers[0].node_name(), "one");
    assert_eq!(config.pools[1].servers[0].node_name(), "localhost:6380");
}

#[test]
fn node_names_follow_twemproxy() {
    let config = Config::parse(&pool(
        "  servers:\n   - 10.0.0.1:06379:1\n   - 10.0.0.2:11211:1\n   - 10.0.0.3:6379:1 named\n",
    ))
    .unwrap();
    let names: Vec<String> = config.pools[0]
        .servers
        .iter()
        .map(|s| s.node_name())
        .collect();
    assert_eq!(names, ["10.0.0.1:06379", "10.0.0.2", "named"]);
    assert_eq!(config.pools[0].servers[0].addr(), "10.0.0.1:6379");
}

#[test]
fn rejects_unknown_key_with_line() {
    let e = rejected(&pool("  servers:\n   - 127.0.0.1:6379:1\n  hsah: md5\n"));
    assert!(
        e.contains("unknown field `hsah`") && e.contains("line 6"),
        "{e}"
    );
}

#[test]
fn rejects_duplicate_key() {
    let e = rejected(&pool("  servers:\n   - 127.0.0.1:6379:1\n  redis: true\n"));
    assert!(e.contains("duplicate"), "{e}");
}

#[test]
fn rejects_duplicate_pool() {
    let text = format!(
        "{}{}",
        pool("  servers:\n   - 127.0.0.1:6379:1\n"),
        pool("  servers:\n   - 127.0.0.1:6379:1\n")
    );
    assert!(rejected(&text).contains("duplicate pool 'p'"));
}

#[test]
fn rejects_missing_listen() {
    let e = rejected("p:\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert_eq!(e, "pool 'p': missing key 'listen'");
}

#[test]
fn rejects_missing_servers() {
    assert_eq!(rejected(&pool("")), "pool 'p': missing key 'servers'");
}

#[test]
fn rejects_empty_servers() {
    assert_eq!(
        rejected(&pool("  servers: []\n")),
        "pool 'p': 'servers' is empty"
    );
}

#[test]
fn rejects_memcached_pool() {
    let e = rejected("p:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert!(e.contains("'redis: true' is required"), "{e}");
}

#[test]
fn rejects_bad_listen() {
    let e = rejected(
        "p:\n  listen: 127.0.0.1:99999\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n",
    );
    assert!(
        e.contains("invalid port '99999'") && e.contains("line 2"),
        "{e}"
    );
}

#[test]
fn accepts_nutcrackers_unix_listen_but_not_with_tls_or_reuseport() {
    let text = "p:\n  listen: /tmp/x.sock 0666\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n";
    let pool = &Config::parse(text).unwrap().pools[0];
    assert_eq!(pool.listen, "/tmp/x.sock");
    assert_eq!(pool.listen_unix.as_ref().unwrap().mode, Some(0o666));
    let e = rejected(&text.replace("redis: true", "redis: true\n  reuseport: true"));
    assert!(e.contains("'reuseport' is for TCP listeners"), "{e}");
    let e = rejected(&text.replace("redis: true", "redis: true\n  tls_cert: c\n  tls_key: k"));
    assert!(e.contains("TLS is for TCP listeners"), "{e}");
}

#[test]
fn servers_on_unix_sockets_as_nutcracker_writes_them() {
    let text = pool("  servers:\n   - /tmp/a.sock:1\n   - /tmp/b.sock:2 named\n");
    let servers = &Config::parse(&text).unwrap().pools[0].servers;
    assert_eq!(servers[0].addr(), "/tmp/a.sock");
    assert!(servers[0].is_unix());
    // nutcracker's name for an unnamed socket keeps the ':' before the
    // absent port (it places keys by it).
    assert_eq!(servers[0].node_name(), "/tmp/a.sock:");
    assert_eq!(
        (servers[1].weight, servers[1].node_name().as_str()),
        (2, "named")
    );
    let ranged = pool("  servers:\n   - /tmp/a.sock:0-9\n");
    assert_eq!(
        Config::parse(&ranged).unwrap().pools[0].servers[0].range,
        Some((0, 9))
    );
    for bad in ["/tmp/a.sock", "/tmp/a.sock:1 n extra"] {
        let e = rejected(&pool(&format!("  servers:\n   - {bad}\n")));
        assert!(
            e.contains("expected '/path/to/socket:weight [name]'"),
            "{e}"
        );
    }
    for typo in ["/tmp/a.sock::1", "/tmp/co:lon.sock:1"] {
        let e = rejected(&pool(&format!("  servers:\n   - {typo}\n")));
        assert!(e.contains("contains ':'"), "{e}");
    }
    let long = format!("/tmp/{}.sock:1", "x".repeat(110));
    let e = rejected(&pool(&format!("  servers:\n   - {long}\n")));
    assert!(e.contains("at most 107 can be connected to"), "{e}");
    let e = rejected(&text.replace("redis: true", "redis: true\n  server_tls: true"));
    assert!(e.contains("'server_tls' is for TCP servers"), "{e}");
    let e = rejected(&text.replace(
        "redis: true",
        "redis: true\n  zookeeper_host: 127.0.0.1:2181\n  zookeeper_path: /p\n  \
         zookeeper_redis_path: /r",
    ));
    assert!(e.contains("takes host:port servers only"), "{e}");
}

#[test]
fn rejects_bad_server_address() {
    let e = rejected(&pool("  servers:\n   - 127.0.0.1:1\n"));
    assert_eq!(
        e,
        "pool 'p' line 5: server '127.0.0.1:1': '127.0.0.1' is not host:port"
    );
    let e = rejected(&pool("  servers:\n   - nocolons\n"));
    assert!(
        e.contains("server 'nocolons'") && e.contains("line 5"),
        "{e}"
    );
    let e = rejected(&pool("  servers:\n   - 127.0.0.1:0:1\n"));
    assert!(e.contains("invalid port '0'"), "{e}");
}

#[test]
fn rejects_weight_zero() {
    let e = rejected(&pool("  servers:\n   - 127.0.0.1:6379:0\n"));
    assert!(e.contains("weight must be at least 1"), "{e}");
}

#[test]
fn rejects_bad_weight() {
    let e = rejected(&pool("  servers:\n   - 127.0.0.1:6379:x\n"));
    assert!(e.contains("invalid weight 'x'"), "{e}");
}

#[test]
fn rejects_extra_words_in_server() {
    let e = rejected(&pool("  servers:\n   - 127.0.0.1:6379:1 a b\n"));
    assert!(e.contains("expected 'host:port:weight [name]'"), "{e}");
}

#[test]
fn rejects_duplicate_server_name() {
    let e = rejected(&pool(
        "  servers:\n   - 127.0.0.1:6379:1 a\n   - 127.0.0.1:6380:1 a\n",
    ));
    assert_eq!(e, "pool 'p': two servers have the same name 'a'");
    let e = rejected(&pool(
        "  servers:\n   - 127.0.0.1:6379:1\n   - 127.0.0.1:6379:2\n",
    ));
    assert_eq!(
        e,
        "pool 'p': two servers have the same name '127.0.0.1:6379'"
    );
}

#[test]
fn rejects_range_gap() {
    let e = rejected(&pool(
        "  servers:\n   - 127.0.0.1:6379:0-99\n   - 127.0.0.1:6380:101-200\n",
    ));
    assert!(e.contains("slots 100-100 are not covered"), "{e}");
}

#[test]
fn rejects_range_not_starting_at_zero() {
    let e = rejected(&pool("  servers:\n   - 127.0.0.1:6379:1-99\n"));
    assert!(e.contains("slots 0-0 are not covered"), "{e}");
}

#[test]
fn rejects_range_overlap() {
    let e = rejected(&pool(
        "  servers:\n   - 127.0.0.1:6379:0-100\n   - 127.0.0.1:6380:100-200\n",
    ));
    assert!(e.contains("overlaps the previous range at slot 100"), "{e}");
}

#[test]
fn rejects_reversed_range() {
    let e = rejected(&pool("  servers:\n   - 127.0.0.1:6379:10-0\n"));
    assert!(e.contains("range 10-0 is empty"), "{e}");
}

#[test]
fn rejects_mixed_forms() {
    let e = rejected(&pool(
        "  servers:\n   - 127.0.0.1:6379:0-10\n   - 127.0.0.1:6380:1\n",
    ));
    assert!(e.contains("mix"), "{e}");
}

#[test]
fn rejects_bad_hash_tag() {
    let e = rejected(&pool(
        "  hash_tag: \"{\"\n  servers:\n   - 127.0.0.1:6379:1\n",
    ));
    assert!(
        e.contains("hash_tag '{' must be exactly two characters"),
        "{e}"
    );
}

#[test]
fn rejects_unknown_hash() {
    let e = rejected(&pool("  hash: sha1\n  servers:\n   - 127.0.0.1:6379:1\n"));
    assert!(
        e.contains("unknown hash 'sha1'") && e.contains("line 4"),
        "{e}"
    );
}

#[test]
fn rejects_unknown_distribution() {
    let e = rejected(&pool(
        "  distribution: rendezvous\n  servers:\n   - 127.0.0.1:6379:1\n",
    ));
    assert!(e.contains("unknown distribution 'rendezvous'"), "{e}");
}

#[test]
fn allow_flush_is_read() {
    let config = Config::parse(&pool(
        "  allow_flush: true\n  servers:\n   - 127.0.0.1:6379:1\n",
    ))
    .unwrap();
    assert!(config.pools[0].allow_flush);
    let text = pool("  allow_flush: sometimes\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert!(
        rejected(&text).contains("allow_flush"),
        "{}",
        rejected(&text)
    );
}

#[test]
fn rejects_wrong_value_type() {
    let e = rejected(&pool(
        "  timeout: soon\n  servers:\n   - 127.0.0.1:6379:1\n",
    ));
    assert!(e.contains("timeout") && e.contains("line 4"), "{e}");
}

#[test]
fn zero_timeout_is_no_timeout_as_in_twemproxy() {
    let config = Config::parse(&pool("  timeout: 0\n  servers:\n   - 127.0.0.1:6379:1\n")).unwrap();
    assert_eq!(config.pools[0].timeout, None);
}

#[test]
fn server_connections_must_be_from_one_to_the_limit() {
    for count in ["0", "65537", "4294967295"] {
        let e = rejected(&pool(&format!(
            "  server_connections: {count}\n  servers:\n   - 127.0.0.1:6379:1\n"
        )));
        assert!(
            e.contains("'server_connections' must be from 1 to 65536") && e.contains("line 4"),
            "{e}"
        );
    }
}

#[test]
fn zero_failure_limit_ejects_at_the_first_failure_as_in_twemproxy() {
    let config = Config::parse(&pool(
        "  server_failure_limit: 0\n  servers:\n   - 127.0.0.1:6379:1\n",
    ))
    .unwrap();
    assert_eq!(config.pools[0].server_failure_limit, 1);
}

#[test]
fn quoted_numbers_and_flags_read_as_twemproxy_reads_them() {
    let text = pool(
        "  timeout: \"400\"\n  redis_db: '1'\n  server_connections: \"2\"\n  \
         auto_eject_hosts: 'true'\n  preconnect: \"false\"\n  servers:\n   - 127.0.0.1:6379:1\n",
    )
    .replace("redis: true", "redis: \"true\"");
    let p = &Config::parse(&text).unwrap().pools[0];
    assert_eq!(p.timeout, Some(Duration::from_millis(400)));
    assert_eq!((p.redis_db, p.server_connections), (1, 2));
    assert!(p.auto_eject_hosts && !p.preconnect);
    // What twemproxy refuses stays refused, naming the key and its line.
    for (line, bad) in [
        ("  timeout: \"+400\"\n", "string \"+400\""),
        ("  timeout: \" 400\"\n", "string \" 400\""),
        ("  timeout: -5\n", "integer `-5`"),
        ("  timeout: 1.5\n", "floating point `1.5`"),
        ("  backlog: 4294967296\n", "integer `4294967296`"),
        ("  preconnect: 'yes'\n", "string \"yes\""),
        ("  preconnect: 1\n", "integer `1`"),
    ] {
        let e = rejected(&pool(&format!("{line}  servers:\n   - 127.0.0.1:6379:1\n")));
        assert!(e.contains(bad) && e.contains("line 4"), "{line}: {e}");
    }
}

#[test]
fn weights_stay_within_twemproxys_bounds() {
    let e = rejected(&pool("  servers:\n   - 127.0.0.1:6379:2147483648\n"));
    assert!(e.contains("weight must be at most 2147483647"), "{e}");
    // Each weight allowed, their sum past 32 bits: nutcracker's sum wraps.
    let e = rejected(&pool(
        "  servers:\n   - 127.0.0.1:6379:2147483647\n   - 127.0.0.1:6380:2147483647\n   - 127.0.0.1:6381:2\n",
    ));
    assert!(e.contains("weights add up to 4294967296"), "{e}");
    let p = Config::parse(&pool(
        "  servers:\n   - 127.0.0.1:6379:2147483647\n   - 127.0.0.1:6380:2147483647\n   - 127.0.0.1:6381:1\n",
    ));
    assert!(p.is_ok());
}

#[test]
fn redis_db_must_be_one_select_takes() {
    let e = rejected(&pool(
        "  redis_db: 2147483648\n  servers:\n   - 127.0.0.1:6379:1\n",
    ));
    assert!(e.contains("'redis_db' must be at most 2147483647"), "{e}");
}

#[test]
fn zookeeper_host_must_list_host_port_pairs() {
    for hosts in ["127.0.0.1:notaport", "','", "a:2181,", "a:2181,b"] {
        let e = rejected(&pool(&format!(
            "  zookeeper_host: {hosts}\n  servers:\n   - 127.0.0.1:6379:1\n"
        )));
        assert!(e.contains("'zookeeper_host'"), "{hosts}: {e}");
    }
    let ok = pool("  zookeeper_host: a:2181, b:2182\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert!(Config::parse(&ok).is_ok());
}

#[test]
fn rejects_tiny_max_request_size() {
    let e = rejected(&pool(
        "  max_request_size: 10\n  servers:\n   - 127.0.0.1:6379:1\n",
    ));
    assert!(
        e.contains("'max_request_size' must be at least 1024"),
        "{e}"
    );
}

#[test]
fn rejects_zookeeper_path_without_host() {
    let e = rejected(&pool(
        "  zookeeper_redis_path: /redis/cluster/x\n  servers:\n   - 127.0.0.1:6379:1\n",
    ));
    assert!(e.contains("need 'zookeeper_host'"), "{e}");
}

#[test]
fn rejects_relative_zookeeper_path() {
    let e = rejected(&pool("  zookeeper_host: 127.0.0.1:2181\n  zookeeper_path: redis/x\n  servers:\n   - 127.0.0.1:6379:1\n"));
    assert!(e.contains("must be an absolute ZooKeeper path"), "{e}");
}

#[test]
fn rejects_same_listen_twice() {
    let text = "a:\n  listen: 127.0.0.1:1\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n\
                b:\n  listen: 127.0.0.1:1\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n";
    assert!(rejected(text).contains("listen 127.0.0.1:1 is already used by pool 'a'"));
}

#[test]
fn rejects_empty_file() {
    assert_eq!(rejected(""), "the file defines no pool");
}

#[test]
fn parses_users_and_redis_user() {
    let config = Config::parse(&pool(
        "  redis_auth: s3cret\n  redis_user: shardproxy\n  users:\n   - name: alice\n     password_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n     mode: read\n     keys: [\"~cache:*\"]\n  servers:\n   - 127.0.0.1:6379:1\n",
    ))
    .unwrap();
    let pool = &config.pools[0];
    assert_eq!(pool.redis_user.as_deref(), Some("shardproxy"));
    assert_eq!(pool.users.len(), 1);
    assert_eq!(pool.users[0].mode, crate::config::UserMode::Read);
}

#[test]
fn rejects_redis_user_without_password() {
    let e = rejected(&pool(
        "  redis_user: shardproxy\n  servers:\n   - 127.0.0.1:6379:1\n",
    ));
    assert!(e.contains("'redis_user' needs 'redis_auth'"), "{e}");
}

#[test]
fn rejects_a_bad_user_naming_it() {
    let e = rejected(&pool(
        "  users:\n   - name: bob\n     password_sha256: xyz\n     mode: write\n  servers:\n   - 127.0.0.1:6379:1\n",
    ));
    assert!(e.contains("'users': user 'bob'"), "{e}");
}
