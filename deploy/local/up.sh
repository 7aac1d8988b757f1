#!/usr/bin/env bash
# Brings up a whole shardproxy cluster on loopback, to try it or demo it:
#   ZooKeeper, 2 shards x (master + replica) redis-server, one watchdog per
#   Redis, 2 proxies with conf/icd.yml-style ranges; runs `shardproxy-admin
#   init`, then prints `status` and how to connect.
# Installs what is missing (Debian packages) and builds release binaries
# first. Every process it starts is recorded in deploy/local/run/pids, and
# deploy/local/down.sh stops exactly those.
#
# Least privilege (README, "Security"): the proxies reach Redis as the ACL
# user `shardproxy`, which every watchdog creates on its Redis, so a script
# run through a proxy cannot flush, select, migrate, copy to another
# database or reconfigure. Its password, PROXY_PASS (random unless given,
# kept in run/proxy-password), is also what clients AUTH with.
#
# Ports (override with the environment): ZK_PORT 2181+10000, REDIS_PORTS
# 17001..17004, PROXY_PORTS 22121 22122, STATS_PORTS 22222 22223.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUN=$ROOT/deploy/local/run
ZK_PORT=${ZK_PORT:-12181}
REDIS_PORTS=(${REDIS_PORTS:-17001 17002 17003 17004})
PROXY_PORTS=(${PROXY_PORTS:-22121 22122})
STATS_PORTS=(${STATS_PORTS:-22222 22223})
METRICS_PORTS=(${METRICS_PORTS:-9121 9122})
CLUSTER=local
ZK=127.0.0.1:$ZK_PORT
PROXY_USER=shardproxy

if [ -s "$RUN/pids" ]; then
    echo "up.sh: already running (see $RUN/pids); run deploy/local/down.sh first" >&2
    exit 1
fi
deploy/install-deps.sh
cargo build --release --bins
BIN=$ROOT/target/release
mkdir -p "$RUN"
: > "$RUN/pids"
PROXY_PASS=${PROXY_PASS:-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}
(umask 077 && printf '%s\n' "$PROXY_PASS" > "$RUN/proxy-password")
PROXY_PASS_SHA256=$(printf '%s' "$PROXY_PASS" | sha256sum | cut -d' ' -f1)

# started, in_line, answers_pong, wait_for: shared with add-shard.sh.
. deploy/local/lib.sh

# ZooKeeper, standalone, data in run/.
mkdir -p "$RUN/zookeeper"
cat > "$RUN/zookeeper/zoo.cfg" <<CFG
tickTime=500
dataDir=$RUN/zookeeper/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
CFG
java -Xmx128m -XX:+UseSerialGC -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
    org.apache.zookeeper.server.ZooKeeperServerMain "$RUN/zookeeper/zoo.cfg" \
    > "$RUN/zookeeper/zookeeper.log" 2>&1 &
started $! "zookeeper:$ZK_PORT"
# `ruok` answers imok before the server takes sessions; `srvr` names the
# mode only once it serves.
# A server still starting may accept and never answer: each try is bounded.
zk_ok() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf srvr >&3 && grep -q "Mode: standalone" <&3' _ "$ZK_PORT"
}
wait_for "ZooKeeper" zk_ok

# Redis: shard 0 = ports 1 (master) and 2, shard 1 = ports 3 (master) and 4.
for port in "${REDIS_PORTS[@]}"; do
    start_redis "$port"
done

# The pool file, range form plus ZooKeeper keys, one per proxy.
for i in 0 1; do
    cat > "$RUN/proxy-$i.yml" <<YAML
$CLUSTER:
  listen: 127.0.0.1:${PROXY_PORTS[$i]}
  hash: md5
  hash_tag: "{}"
  distribution: modula
  zookeeper_host: $ZK
  zookeeper_path: /redis/proxy/$CLUSTER/127.0.0.1:${PROXY_PORTS[$i]}
  zookeeper_redis_path: /redis/cluster/$CLUSTER
  redis: true
  redis_user: $PROXY_USER
  redis_auth: "$PROXY_PASS"
  timeout: 1000
  servers:
   - 127.0.0.1:${REDIS_PORTS[0]}:0-2047
   - 127.0.0.1:${REDIS_PORTS[2]}:2048-4095
YAML
done

"$BIN/shardproxy-admin" -c "$RUN/proxy-0.yml" init

# Watchdogs: masters first, so each shard's first member is its master.
for j in 0 2 1 3; do
    port=${REDIS_PORTS[$j]}
    shard=/redis/cluster/$CLUSTER/redis-000$((j / 2))
    "$BIN/shardproxy-watchdog" --zk "$ZK" --redis "127.0.0.1:$port" --shard "$shard" \
        --proxy-user "$PROXY_USER" --proxy-user-sha256 "$PROXY_PASS_SHA256" \
        -o "$RUN/watchdog-$port.log" &
    started $! "shardproxy-watchdog:$port"
    if [ $((j % 2)) -eq 0 ]; then
        wait_for "the master of $shard" in_line "$port" master
    fi
done

for i in 0 1; do
    "$BIN/shardproxy" -c "$RUN/proxy-$i.yml" -o "$RUN/proxy-$i.log" -p "$RUN/proxy-$i.pid" \
        -a 127.0.0.1 -s "${STATS_PORTS[$i]}" --metrics "127.0.0.1:${METRICS_PORTS[$i]}" &
    started $! "shardproxy:${PROXY_PORTS[$i]}"
    wait_for "shardproxy on ${PROXY_PORTS[$i]}" answers_pong "${PROXY_PORTS[$i]}" "$PROXY_PASS"
done

# Wait until the replicas have joined and both proxies are registered.
for j in 1 3; do
    # The first sync waits for Redis's repl-diskless-sync-delay (5 s).
    wait_for "the replica 127.0.0.1:${REDIS_PORTS[$j]} to join" in_line "${REDIS_PORTS[$j]}" replica
done
wait_for "the cluster to be healthy" "$BIN/shardproxy-admin" -c "$RUN/proxy-0.yml" status
"$BIN/shardproxy-admin" -c "$RUN/proxy-0.yml" status

cat <<EOF

The cluster is up.
  REDISCLI_AUTH=\$(cat $RUN/proxy-password) redis-cli -p ${PROXY_PORTS[0]} set hello world      (or -p ${PROXY_PORTS[1]})
  $BIN/shardproxy-admin -c $RUN/proxy-0.yml status
  curl -s 127.0.0.1:${METRICS_PORTS[0]}/metrics | head
  kill the master of a shard (redis-cli -p ${REDIS_PORTS[0]} shutdown nosave) and watch it fail over.
Stop it all with deploy/local/down.sh
EOF
