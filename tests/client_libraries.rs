//! Smoke test with the client libraries people use, default options:
//! redis-py 8 (RESP3 handshake with HELLO 3, CLIENT SETINFO, CLIENT
//! MAINT_NOTIFICATIONS) and ioredis 5 (CLIENT SETINFO, INFO). The scripts in
//! tests/clients/ run the same steps against Redis directly and through the
//! proxy and compare. `deploy/install-client-libs.sh` installs the
//! libraries (deploy/test.sh runs it).

mod common;

use common::proxy::Proxy;
use common::redis::Redis;
use std::path::Path;
use std::process::Command;

fn setup() -> (Redis, Vec<Redis>, Proxy) {
    let direct = Redis::start();
    let shards = vec![Redis::start(), Redis::start()];
    let proxy = Proxy::start(&format!(
        "  redis: true\n  hash: md5\n  hash_tag: \"{{}}\"\n  servers:\n   - {}:0-2047\n   - {}:2048-4095\n",
        shards[0].addr(),
        shards[1].addr()
    ));
    (direct, shards, proxy)
}

fn clients_dir() -> &'static Path {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/clients");
    assert!(
        dir.join("venv/bin/python").exists() && dir.join("node_modules/ioredis").exists(),
        "client libraries missing: run deploy/install-client-libs.sh (deploy/test.sh does)"
    );
    Box::leak(dir.into_boxed_path())
}

/// Runs a client script against Redis directly and through the proxy; it
/// prints ", 0 mismatches" and exits 0 when every reply matched.
fn run(command: &mut Command, script: &str) {
    let (direct, _shards, proxy) = setup();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = command
        .arg(&script)
        .arg(direct.port.to_string())
        .arg(proxy.port.to_string())
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}",
        script.display()
    );
    assert!(stdout.contains(", 0 mismatches"), "{stdout}");
}

#[test]
fn redis_py_8_with_defaults() {
    run(
        &mut Command::new(clients_dir().join("venv/bin/python")),
        "smoke.py",
    );
}

#[test]
fn ioredis_5_with_defaults() {
    // Node resolves `require` from the script's folder upwards; point it at
    // the installed modules.
    let mut node = Command::new("node");
    node.env("NODE_PATH", clients_dir().join("node_modules"));
    run(&mut node, "smoke.js");
}
