#!/usr/bin/env bash
# CI check of the local cluster: up.sh brings it up, a client works through
# both proxies, `shardproxy-admin status` sees both proxies and both shards
# with master and replica, and down.sh leaves no process behind.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=deploy/local/run
export ZK_PORT=32181 REDIS_PORTS="37001 37002 37003 37004" PROXY_PORTS="32121 32122" \
    STATS_PORTS="32222 32223" METRICS_PORTS="39121 39122"
fail() { echo "local cluster check: $*" >&2; deploy/local/down.sh || true; exit 1; }

deploy/local/up.sh > /tmp/shardproxy-up.log 2>&1 || { cat /tmp/shardproxy-up.log; fail "up.sh failed"; }
pids=$(awk '{print $1}' "$RUN/pids")

[ "$(redis-cli -p 32121 set check:a 1)" = OK ] || fail "SET through proxy 1"
[ "$(redis-cli -p 32122 get check:a)" = 1 ] || fail "GET through proxy 2"
status=$(target/release/shardproxy-admin -c "$RUN/proxy-0.yml" status --json) || fail "status reports a problem: $status"
for addr in 127.0.0.1:32121 127.0.0.1:32122 127.0.0.1:37001 127.0.0.1:37002 127.0.0.1:37003 127.0.0.1:37004; do
    grep -q "$addr" <<<"$status" || fail "status does not show $addr: $status"
done
[ "$(redis-cli -p 37002 role | head -1)" = slave ] || fail "37002 is not a replica"
[ "$(redis-cli -p 37004 role | head -1)" = slave ] || fail "37004 is not a replica"

deploy/local/down.sh > /dev/null
for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then fail "process $pid still running after down.sh"; fi
done
[ ! -e "$RUN" ] || fail "$RUN left behind"
echo "local-cluster: 1 passed, 0 failed"
