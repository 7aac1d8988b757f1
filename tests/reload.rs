//! SIGHUP re-reads the pool file: routing changes for new requests while
//! clients stay connected; an invalid edit is rejected, logged, and changes
//! nothing.

mod common;

use common::proxy::Proxy;
use common::redis::{RawClient, Redis};
use common::{free_port, wait_until};
use shardproxy::hash::HashKind;
use std::time::Duration;

fn pool_file(port: u16, a: &Redis, b: &Redis, split: u32) -> String {
    format!(
        "p:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: md5\n  servers:\n   - {}:0-{}\n   - {}:{split}-4095\n",
        a.addr(),
        split - 1,
        b.addr()
    )
}

fn slot(key: &str) -> u32 {
    HashKind::Md5.hash(key.as_bytes()) % 4096
}

fn holds(redis: &Redis, key: &str) -> bool {
    redis.connect().cmd_str(&["EXISTS", key]) == ":1\r\n"
}

#[test]
fn sighup_moves_routing_under_a_connected_client() {
    let (a, b) = (Redis::start(), Redis::start());
    let port = free_port();
    let proxy = Proxy::start_yaml(port, &pool_file(port, &a, &b, 2048));
    let mut client = RawClient::connect(port);
    let key = (0..)
        .map(|i| format!("r{i}"))
        .find(|k| (1024..2048).contains(&slot(k)))
        .unwrap();
    assert_eq!(client.cmd_str(&["SET", &key, "1"]), "+OK\r\n");
    assert!(holds(&a, &key));

    // An invalid edit (a gap) is rejected and logged; routing stays.
    std::fs::write(
        &proxy.conf,
        pool_file(port, &a, &b, 2048).replace(":2048-4095", ":3000-4095"),
    )
    .unwrap();
    proxy.guard.signal("HUP");
    wait_until("the rejection in the log", Duration::from_secs(10), || {
        proxy.log_text().contains("pool file rejected")
    });
    assert!(
        proxy.log_text().contains("slots 2048-2999 are not covered"),
        "{}",
        proxy.log_text()
    );
    assert_eq!(client.cmd_str(&["SET", &key, "2"]), "+OK\r\n");
    assert_eq!(a.connect().cmd_str(&["GET", &key]), "$1\r\n2\r\n");

    // Slots 1024-2047 move to b; the same connection sees it.
    std::fs::write(&proxy.conf, pool_file(port, &a, &b, 1024)).unwrap();
    proxy.guard.signal("HUP");
    wait_until("the new routing", Duration::from_secs(10), || {
        client.cmd_str(&["SET", &key, "3"]) == "+OK\r\n" && holds(&b, &key)
    });
    assert_eq!(b.connect().cmd_str(&["GET", &key]), "$1\r\n3\r\n");
    let low = (0..)
        .map(|i| format!("s{i}"))
        .find(|k| slot(k) < 1024)
        .unwrap();
    assert_eq!(client.cmd_str(&["SET", &low, "x"]), "+OK\r\n");
    assert!(holds(&a, &low), "slots below 1024 stay on a");

    // A listen change needs a restart: reported, the old listener stays.
    let text = pool_file(port, &a, &b, 1024)
        .replace(&format!(":{port}\n"), &format!(":{}\n", free_port()));
    std::fs::write(&proxy.conf, text).unwrap();
    proxy.guard.signal("HUP");
    wait_until("the restart notice", Duration::from_secs(10), || {
        proxy
            .log_text()
            .contains("'listen' changed: needs a restart")
    });
    assert_eq!(client.cmd_str(&["PING"]), "+PONG\r\n");
}
