#!/usr/bin/env bash
# Grows the local cluster (deploy/local/up.sh) by one shard: two
# redis-servers (master and replica), a watchdog beside each, and the
# shard's znode with no range yet (`shardproxy-admin add-shard`). Then
# `shardproxy-admin migrate` gives it ranges with their keys (README,
# "Growing online"). down.sh stops what this starts.
#
# Environment: NEW_REDIS_PORTS (17005 17006), SHARD (redis-0002).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUN=$ROOT/deploy/local/run
BIN=$ROOT/target/release
NEW_REDIS_PORTS=(${NEW_REDIS_PORTS:-17005 17006})
SHARD=${SHARD:-redis-0002}
if [ ! -s "$RUN/pids" ]; then
    echo "add-shard.sh: the local cluster is not running; start it with deploy/local/up.sh" >&2
    exit 1
fi
. deploy/local/lib.sh
setting() { sed -n "s/^  $1: //p" "$RUN/proxy-0.yml"; }
ZK=$(setting zookeeper_host)
CLUSTER_ROOT=$(setting zookeeper_redis_path)
PROXY_USER=$(setting redis_user)
PROXY_PASS_SHA256=$(tr -d '\n' < "$RUN/proxy-password" | sha256sum | cut -d' ' -f1)

for port in "${NEW_REDIS_PORTS[@]}"; do
    start_redis "$port"
done

"$BIN/shardproxy-admin" -c "$RUN/proxy-0.yml" add-shard "$SHARD"

# The master's watchdog first, so that its Redis leads the shard.
for j in 0 1; do
    port=${NEW_REDIS_PORTS[$j]}
    "$BIN/shardproxy-watchdog" --zk "$ZK" --redis "127.0.0.1:$port" --shard "$CLUSTER_ROOT/$SHARD" \
        --proxy-user "$PROXY_USER" --proxy-user-sha256 "$PROXY_PASS_SHA256" \
        -o "$RUN/watchdog-$port.log" &
    started $! "shardproxy-watchdog:$port"
    if [ "$j" -eq 0 ]; then
        wait_for "the master of $SHARD" in_line "$port" master
    fi
done
# The first sync waits for Redis's repl-diskless-sync-delay (5 s).
wait_for "the replica 127.0.0.1:${NEW_REDIS_PORTS[1]} to join" in_line "${NEW_REDIS_PORTS[1]}" replica

cat <<TEXT
Shard $SHARD is up with no range. Give it a third of the slots with their keys:
  $BIN/shardproxy-admin -c $RUN/proxy-0.yml rebalance --dry-run
  $BIN/shardproxy-admin -c $RUN/proxy-0.yml rebalance
or move chosen ranges yourself, e.g.:
  $BIN/shardproxy-admin -c $RUN/proxy-0.yml migrate 1366-2047 --to $SHARD --dry-run
  $BIN/shardproxy-admin -c $RUN/proxy-0.yml migrate 1366-2047 --to $SHARD
  $BIN/shardproxy-admin -c $RUN/proxy-0.yml migrate 2048-2730 --to $SHARD
  $BIN/shardproxy-admin -c $RUN/proxy-0.yml export
TEXT
