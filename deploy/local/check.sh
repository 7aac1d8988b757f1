#!/usr/bin/env bash
# CI check of the local cluster: up.sh brings it up, a client works through
# both proxies, `shardproxy-admin status` sees both proxies and both shards
# with master and replica, a script cannot flush through the proxies'
# ACL user, add-shard.sh and two migrations grow it to three shards with
# every key kept, and down.sh leaves no process behind.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=deploy/local/run
# Ports below the ephemeral range (32768+), so no client socket holds them.
export ZK_PORT=26181 REDIS_PORTS="26001 26002 26003 26004" PROXY_PORTS="26121 26122" \
    STATS_PORTS="26222 26223" METRICS_PORTS="26321 26322"
fail() { echo "local cluster check: $*" >&2; deploy/local/down.sh || true; exit 1; }

deploy/local/up.sh > /tmp/shardproxy-up.log 2>&1 || { cat /tmp/shardproxy-up.log; fail "up.sh failed"; }
pids=$(awk '{print $1}' "$RUN/pids")

export REDISCLI_AUTH
REDISCLI_AUTH=$(cat "$RUN/proxy-password")
[ "$(redis-cli -p 26121 set check:a 1)" = OK ] || fail "SET through proxy 1"
[ "$(redis-cli -p 26122 get check:a)" = 1 ] || fail "GET through proxy 2"
# Least privilege: a script cannot flush through the proxy's ACL user.
reply=$(redis-cli -p 26121 eval "return redis.call('flushall')" 1 check:a)
grep -q "can't run this command" <<<"$reply" || fail "a script flushed through the proxy: $reply"
[ "$(redis-cli -p 26122 get check:a)" = 1 ] || fail "data lost after the flush attempt"
unset REDISCLI_AUTH
status=$(target/release/shardproxy-admin -c "$RUN/proxy-0.yml" status --json) || fail "status reports a problem: $status"
for addr in 127.0.0.1:26121 127.0.0.1:26122 127.0.0.1:26001 127.0.0.1:26002 127.0.0.1:26003 127.0.0.1:26004; do
    grep -q "$addr" <<<"$status" || fail "status does not show $addr: $status"
done
[ "$(redis-cli -p 26002 role | head -1)" = slave ] || fail "26002 is not a replica"
[ "$(redis-cli -p 26004 role | head -1)" = slave ] || fail "26004 is not a replica"

# Growing: a third shard takes two ranges, with their keys, while the
# proxies serve.
NEW_REDIS_PORTS="26005 26006" deploy/local/add-shard.sh > /tmp/shardproxy-add-shard.log 2>&1 \
    || { cat /tmp/shardproxy-add-shard.log; fail "add-shard.sh failed"; }
export REDISCLI_AUTH
REDISCLI_AUTH=$(cat "$RUN/proxy-password")
for i in $(seq 1 300); do echo "SET check:grow:$i $i"; done | redis-cli -p 26121 > /dev/null
for range in 1366-2047 2048-2730; do
    out=$(target/release/shardproxy-admin -c "$RUN/proxy-0.yml" migrate "$range" --to redis-0002 2>&1) \
        || fail "migrate $range: $out"
done
for i in $(seq 1 300); do echo "GET check:grow:$i"; done | redis-cli -p 26122 > /tmp/shardproxy-grow.txt
[ "$(seq 1 300)" = "$(cat /tmp/shardproxy-grow.txt)" ] || fail "keys lost or changed by the migration"
unset REDISCLI_AUTH
moved=$(redis-cli -p 26005 dbsize)
[ "$moved" -gt 0 ] || fail "the new shard holds no key after the migration"
# Exit 1 is expected: redis-0002 is not in the pool file (a warning).
status=$(target/release/shardproxy-admin -c "$RUN/proxy-0.yml" status --json) || [ $? -eq 1 ] || fail "status after growing: $status"
grep -q '"range": "1366-2730"' <<<"$status" || fail "redis-0002 does not own 1366-2730: $status"
pids=$(awk '{print $1}' "$RUN/pids")

deploy/local/down.sh > /dev/null
for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then fail "process $pid still running after down.sh"; fi
done
[ ! -e "$RUN" ] || fail "$RUN left behind"
echo "local-cluster: 1 passed, 0 failed"
