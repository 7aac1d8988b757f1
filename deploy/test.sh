#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the servers the tests start
# (redis-server, nutcracker, ZooKeeper), checks formatting and lints, and
# runs every unit and integration test against real processes.
set -euo pipefail
cd "$(dirname "$0")/.."

# The release profile keeps line tables for profiling (Cargo.toml); the
# tests do not need them, and without them the two release builds below
# (the binaries, then the test binaries) take about a fifth less CPU.
export CARGO_PROFILE_RELEASE_DEBUG=0

deploy/install-deps.sh
deploy/install-client-libs.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo build --release --bins
cargo test --release -- --test-threads=2
deploy/local/check.sh
