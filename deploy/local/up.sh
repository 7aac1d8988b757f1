#!/usr/bin/env bash
# Brings up a small shardproxy deployment on loopback that you can talk to
# with redis-cli: two Redis shards and one proxy in front of them, using the
# range form of conf/icd.yml. Installs what is missing and builds first.
# Everything it starts is recorded in deploy/local/run/pids; down.sh stops
# exactly those processes.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUN=$ROOT/deploy/local/run
PROXY_PORT=${PROXY_PORT:-22121}
SHARD_PORTS=(${SHARD_PORTS:-7001 7002})

if [ -s "$RUN/pids" ]; then
    echo "up.sh: already running (see $RUN/pids); run deploy/local/down.sh first" >&2
    exit 1
fi
deploy/install-deps.sh
cargo build --release --bins
mkdir -p "$RUN"
: > "$RUN/pids"

wait_port() {
    for _ in $(seq 1 100); do
        if redis-cli -p "$1" PING >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "up.sh: nothing answers on port $1" >&2
    exit 1
}

for port in "${SHARD_PORTS[@]}"; do
    mkdir -p "$RUN/redis-$port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$RUN/redis-$port" --logfile "$RUN/redis-$port.log" &
    echo "$! redis-server:$port" >> "$RUN/pids"
    wait_port "$port"
done

cat > "$RUN/pool.yml" <<YAML
local:
  listen: 127.0.0.1:$PROXY_PORT
  hash: md5
  hash_tag: "{}"
  distribution: modula
  redis: true
  timeout: 1000
  servers:
   - 127.0.0.1:${SHARD_PORTS[0]}:0-2047
   - 127.0.0.1:${SHARD_PORTS[1]}:2048-4095
YAML
target/release/shardproxy -c "$RUN/pool.yml" -o "$RUN/shardproxy.log" -p "$RUN/shardproxy.pid" \
    -a 127.0.0.1 -s "${STATS_PORT:-22222}" --metrics "127.0.0.1:${METRICS_PORT:-9121}" &
echo "$! shardproxy:$PROXY_PORT" >> "$RUN/pids"
wait_port "$PROXY_PORT"

echo
echo "shardproxy is up on 127.0.0.1:$PROXY_PORT over Redis shards ${SHARD_PORTS[*]}."
echo "Try:   redis-cli -p $PROXY_PORT set hello world"
echo "       redis-cli -p $PROXY_PORT info"
echo "Stop:  deploy/local/down.sh"
