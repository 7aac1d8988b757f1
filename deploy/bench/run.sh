#!/usr/bin/env bash
# Side-by-side benchmark: direct Redis, nutcracker (twemproxy) and shardproxy
# over the same two redis-server backends, with equivalent pools (md5 +
# modula: weights 2048/2048 for nutcracker, ranges 0-2047/2048-4095 for
# shardproxy). Runs redis-benchmark for every case against every target,
# alternating the order of the targets from round to round, then measures
# the memory of idle client connections on fresh proxy processes, and
# prints a table of medians (with each proxy's CPU per request and its
# kernel part), each round's ratios against nutcracker, and the CPU budget
# of a request: the client's, both Redis servers' and the proxy's CPU per
# request. Takes about seven minutes with TLS=0.
#
# Usage: deploy/bench/run.sh   (from anywhere; builds the release binary)
#
# Loopback only; every process it starts is stopped by PID on exit.
# Knobs (environment): ROUNDS (3), SP_THREADS ("default 2": one shardproxy
# per entry, "default" = without --threads), N_PLAIN, N_PIPE, N_BIG,
# N_HUGE, N_MSET (requests per run), IDLE ("1000 10000"; empty: no idle
# rows), SHARDPROXY (the binary to measure; default: the release build),
# TLS (1: also the TLS rows, 0: not), BASELINE (the absolute path of
# another shardproxy binary, e.g. an older build, with SP_THREADS including
# "default"): measured in the same rounds as the row shardproxy-base, so a
# change is judged against the noise of one run rather than across runs.
# ONLY (an extended regex): runs just the cases whose names match, e.g.
# ONLY='P16' for an A/B of many short rounds.
#
# The TLS rows (openssl makes a throwaway CA and certificate): direct-tls is
# the first backend's own TLS port (Redis's TLS against its plain port,
# above), shardproxy-tls a shardproxy whose listener speaks TLS
# (tls_cert/tls_key) over the same plain backends: its cost against the
# shardproxy row is what TLS to clients costs the proxy.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BENCH=$ROOT/deploy/bench
ROUNDS=${ROUNDS:-3}
SP_THREADS=${SP_THREADS:-"default 2"}
N_PLAIN=${N_PLAIN:-200000}
N_PIPE=${N_PIPE:-1000000}
N_BIG=${N_BIG:-100000}
N_MSET=${N_MSET:-100000}
N_HUGE=${N_HUGE:-20000}
IDLE=${IDLE-"1000 10000"}
TLS=${TLS:-1}
BASELINE=${BASELINE:-}
if [ -n "$BASELINE" ] && [ ! -x "$BASELINE" ]; then
    echo "run.sh: BASELINE=$BASELINE is not an executable (give an absolute path)" >&2
    exit 1
fi
KEYS=100000
BIG_KEYS=10000
HUGE_KEYS=1000

for tool in redis-server redis-benchmark redis-cli /usr/sbin/nutcracker python3; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing" >&2; exit 1; }
done
cargo build --release --bins
SHARDPROXY=${SHARDPROXY:-$ROOT/target/release/shardproxy}
NUTCRACKER=/usr/sbin/nutcracker
# 10,000 idle clients need as many descriptors, in the proxies and the client.
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/shardproxy-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_port PORT [redis-cli options, e.g. the TLS ones]
wait_port() {
    local port=$1
    shift
    for _ in $(seq 1 100); do
        if redis-cli -p "$port" "$@" PING 2>/dev/null | grep -q PONG; then return 0; fi
        sleep 0.1
    done
    echo "run.sh: nothing answers PING on port $port" >&2
    exit 1
}

# stop PID: stops one process started here and forgets it (so the exit
# trap can never signal a recycled PID).
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local kept=() pid
    for pid in "${PIDS[@]}"; do
        [ "$pid" = "$1" ] || kept+=("$pid")
    done
    PIDS=("${kept[@]}")
}

read -r B1 B2 NC NC_STATS B1_TLS <<< "$(python3 "$BENCH/bench.py" ports 5)"
TLS_ARGS=()
if [ "$TLS" = 1 ]; then
    command -v openssl >/dev/null || { echo "run.sh: openssl is missing (or TLS=0)" >&2; exit 1; }
    (
        cd "$WORK"
        ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        openssl req -x509 -new "${ec[@]}" -days 1 -subj "/CN=bench CA" -keyout ca.key \
            -out ca.pem -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
        printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n' > server.ext
        openssl req -new "${ec[@]}" -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
            -extfile server.ext -out server.pem 2>/dev/null
    )
    TLS_ARGS=(--tls --cacert "$WORK/ca.pem")
fi
for port in "$B1" "$B2"; do
    tls_port=()
    if [ "$TLS" = 1 ] && [ "$port" = "$B1" ]; then
        tls_port=(--tls-port "$B1_TLS" --tls-cert-file "$WORK/server.pem"
            --tls-key-file "$WORK/server.key" --tls-auth-clients no)
    fi
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis-$port.log" "${tls_port[@]}" &
    PIDS+=($!)
done
BACKENDS=("${PIDS[@]}")

cat > "$WORK/nutcracker.yml" <<YAML
bench:
  listen: 127.0.0.1:$NC
  hash: md5
  distribution: modula
  redis: true
  timeout: 1000
  servers:
   - 127.0.0.1:$B1:2048 a
   - 127.0.0.1:$B2:2048 b
YAML

# start_nutcracker PORT STATS_PORT: starts it and sets STARTED to its PID.
start_nutcracker() {
    sed "s/listen: .*/listen: 127.0.0.1:$1/" "$WORK/nutcracker.yml" > "$WORK/nc-$1.yml"
    "$NUTCRACKER" -c "$WORK/nc-$1.yml" -s "$2" -a 127.0.0.1 -o "$WORK/nc-$1.log" &
    STARTED=$!
    PIDS+=("$STARTED")
    wait_port "$1"
}

# start_shardproxy PORT STATS_PORT THREADS [tls]: sets STARTED to its PID;
# with "tls" its listener speaks TLS.
start_shardproxy() {
    local tls_keys="" wait_args=()
    if [ "${4:-}" = tls ]; then
        tls_keys="  tls_cert: $WORK/server.pem
  tls_key: $WORK/server.key"
        wait_args=("${TLS_ARGS[@]}")
    fi
    cat > "$WORK/sp-$1.yml" <<YAML
bench:
  listen: 127.0.0.1:$1
  hash: md5
  distribution: modula
  redis: true
  timeout: 1000
$tls_keys
  servers:
   - 127.0.0.1:$B1:0-2047 a
   - 127.0.0.1:$B2:2048-4095 b
YAML
    local threads=()
    if [ "$3" != default ]; then threads=(--threads "$3"); fi
    "${SP_BINARY:-$SHARDPROXY}" -c "$WORK/sp-$1.yml" -s "$2" -a 127.0.0.1 "${threads[@]}" \
        -o "$WORK/sp-$1.log" &
    STARTED=$!
    PIDS+=("$STARTED")
    wait_port "$1" "${wait_args[@]}"
}

sp_name() {
    if [ "$1" = default ]; then echo shardproxy; else echo "shardproxy-t$1"; fi
}

wait_port "$B1"
wait_port "$B2"
declare -A PORT=([direct]=$B1 [nutcracker]=$NC)
# The process whose CPU time a run is charged to (none for direct Redis).
declare -A PROC=()
TARGETS=(direct nutcracker)
start_nutcracker "$NC" "$NC_STATS"
PROC[nutcracker]=$STARTED
for threads in $SP_THREADS; do
    read -r port stats <<< "$(python3 "$BENCH/bench.py" ports 2)"
    start_shardproxy "$port" "$stats" "$threads"
    name=$(sp_name "$threads")
    PORT[$name]=$port
    PROC[$name]=$STARTED
    TARGETS+=("$name")
done
if [ -n "$BASELINE" ]; then
    read -r port stats <<< "$(python3 "$BENCH/bench.py" ports 2)"
    SP_BINARY=$BASELINE start_shardproxy "$port" "$stats" default
    PORT[shardproxy-base]=$port
    PROC[shardproxy-base]=$STARTED
    TARGETS+=(shardproxy-base)
fi
# The TLS rows come after the others (the MSET check below uses the third).
declare -A EXTRA=()
if [ "$TLS" = 1 ]; then
    wait_port "$B1_TLS" "${TLS_ARGS[@]}"
    PORT[direct-tls]=$B1_TLS
    EXTRA[direct-tls]=1
    read -r port stats <<< "$(python3 "$BENCH/bench.py" ports 2)"
    start_shardproxy "$port" "$stats" default tls
    PORT[shardproxy-tls]=$port
    PROC[shardproxy-tls]=$STARTED
    EXTRA[shardproxy-tls]=1
    TARGETS+=(direct-tls shardproxy-tls)
fi

MSET=(MSET)
for i in $(seq 0 9); do MSET+=("m$i:__rand_int__" v); done

# The MSET case must really span both backends, and both proxies must place
# its keys alike.
check_mset_spread() {
    local via=$1 fixed=(MSET) i
    for i in $(seq 0 9); do fixed+=("spread$i" v); done
    redis-cli -p "$B1" FLUSHALL >/dev/null
    redis-cli -p "$B2" FLUSHALL >/dev/null
    redis-cli -p "${PORT[$via]}" "${fixed[@]}" | grep -qx OK
    echo "$(redis-cli -p "$B1" --scan --pattern 'spread*' | sort | tr '\n' ' ')|$(redis-cli -p "$B2" --scan --pattern 'spread*' | sort | tr '\n' ' ')"
}
spread_nc=$(check_mset_spread nutcracker)
spread_sp=$(check_mset_spread "${TARGETS[2]}")
case "$spread_sp" in
    "|"*|*"|") echo "run.sh: MSET keys all landed on one backend: $spread_sp" >&2; exit 1 ;;
esac
if [ "$spread_nc" != "$spread_sp" ]; then
    echo "run.sh: placement differs: nutcracker $spread_nc, shardproxy $spread_sp" >&2
    exit 1
fi
# Both backends hold every key the GET cases ask for, so a GET hits a value
# whichever backend the key is placed on (and direct Redis hits too).
for port in "$B1" "$B2"; do
    python3 "$BENCH/bench.py" preload "$port" key: "$KEYS" 3
    python3 "$BENCH/bench.py" preload "$port" big: "$BIG_KEYS" 4096
    python3 "$BENCH/bench.py" preload "$port" huge: "$HUGE_KEYS" 65536
done

# Values of the large SETs, written to the keys the large GETs read (the
# small cases' keys keep their small values).
VALUE_4K=$(head -c 4096 /dev/zero | tr '\0' x)
VALUE_64K=$(head -c 65536 /dev/zero | tr '\0' x)

# case name | redis-benchmark arguments. PING is answered by each proxy
# itself, so its CPU per request is what serving the clients' sockets costs
# a proxy with no backend work at all: the floor under every unpipelined
# case, to set beside direct Redis's own CPU per PING (the budget table).
CASES=(
    "PING c50|-c 50 -n $N_PLAIN -t ping_mbulk"
    "SET c50|-c 50 -n $N_PLAIN -r $KEYS -t set"
    "GET c50|-c 50 -n $N_PLAIN -r $KEYS -t get"
    "SET c50 P16|-c 50 -P 16 -n $N_PIPE -r $KEYS -t set"
    "GET c50 P16|-c 50 -P 16 -n $N_PIPE -r $KEYS -t get"
    "SET 4KB c50|-c 50 -n $N_BIG -r $BIG_KEYS SET big:__rand_int__ $VALUE_4K"
    "GET 4KB c50|-c 50 -n $N_BIG -r $BIG_KEYS GET big:__rand_int__"
    "SET 64KB c50|-c 50 -n $N_HUGE -r $HUGE_KEYS SET huge:__rand_int__ $VALUE_64K"
    "GET 64KB c50|-c 50 -n $N_HUGE -r $HUGE_KEYS GET huge:__rand_int__"
    "MSET 10 keys c50|-c 50 -n $N_MSET -r $KEYS ${MSET[*]}"
)

if [ -n "${ONLY:-}" ]; then
    kept=()
    for entry in "${CASES[@]}"; do
        if [[ ${entry%%|*} =~ $ONLY ]]; then kept+=("$entry"); fi
    done
    if [ ${#kept[@]} -eq 0 ]; then
        echo "run.sh: ONLY='$ONLY' matches no case" >&2
        exit 1
    fi
    CASES=("${kept[@]}")
fi

# cpu_ticks PID: user + system CPU time of a process, then its system time
# alone, in clock ticks.
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat")
    stat=${stat##*) }
    read -r -a fields <<< "$stat"
    echo "$(( fields[11] + fields[12] )) ${fields[12]}"
}
TICKS_PER_SEC=$(getconf CLK_TCK)

# backend_ticks: both Redis servers' CPU time, then its system part, in
# clock ticks.
backend_ticks() {
    local total=0 kernel=0 pid cpu sys
    for pid in "${BACKENDS[@]}"; do
        read -r cpu sys <<< "$(cpu_ticks "$pid")"
        total=$((total + cpu))
        kernel=$((kernel + sys))
    done
    echo "$total $kernel"
}

# client_cpu: sets CLIENT_MS to the CPU time (user + system, in ms) of the
# processes this shell has waited for; between two calls, that is one
# redis-benchmark run. No subshells: in one, `times` would count only the
# subshell's own children.
client_cpu() {
    local user sys
    times > "$WORK/times"
    { read -r _; read -r user sys; } < "$WORK/times"
    CLIENT_MS=0
    local part
    for part in "$user" "$sys"; do
        # 1m2.345s
        # (a comma instead of the point in some locales)
        [[ $part =~ ^([0-9]+)m([0-9]+)[.,]([0-9]{3})s$ ]] || {
            echo "run.sh: cannot read the time $part from the shell's times" >&2
            exit 1
        }
        CLIENT_MS=$(( CLIENT_MS + BASH_REMATCH[1] * 60000 + 10#${BASH_REMATCH[2]} * 1000
            + 10#${BASH_REMATCH[3]} ))
    done
}

RESULTS=$WORK/results.tsv
: > "$RESULTS"
started=$(date +%s)
for round in $(seq 1 "$ROUNDS"); do
    order=("${TARGETS[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=()
        for ((i = ${#TARGETS[@]} - 1; i >= 0; i--)); do order+=("${TARGETS[i]}"); done
    fi
    echo "round $round: ${order[*]}" >&2
    for entry in "${CASES[@]}"; do
        name=${entry%%|*}
        read -r -a args <<< "${entry#*|}"
        requests=$(echo "${entry#*|}" | sed -E 's/.*-n ([0-9]+).*/\1/')
        for target in "${order[@]}"; do
            proc=${PROC[$target]:-}
            [ -n "$proc" ] && read -r ticks_before sys_before <<< "$(cpu_ticks "$proc")"
            read -r redis_before redis_sys_before <<< "$(backend_ticks)"
            client_cpu
            client_before=$CLIENT_MS
            tls=()
            [ -n "${EXTRA[$target]:-}" ] && tls=("${TLS_ARGS[@]}")
            if ! out=$(redis-benchmark -h 127.0.0.1 -p "${PORT[$target]}" "${tls[@]}" --csv "${args[@]}" 2>&1); then
                echo "run.sh: $name against $target failed:" >&2
                echo "$out" >&2
                exit 1
            fi
            client_cpu
            client_after=$CLIENT_MS
            read -r redis_after redis_sys_after <<< "$(backend_ticks)"
            # The CSV's last line: "test","rps","avg","min","p50","p95","p99","max".
            line=$(echo "$out" | tail -n 1 | tr -d '"')
            IFS=, read -r _ rps _ _ p50 _ p99 _ <<< "$line"
            # CPU time over the run per request, in microseconds: the
            # proxy's (all of it, and the kernel's part; nan for direct
            # Redis), both Redis servers' (and their kernel part), and
            # redis-benchmark's.
            proxy_ticks="nan, nan"
            if [ -n "$proc" ]; then
                read -r ticks_after sys_after <<< "$(cpu_ticks "$proc")"
                proxy_ticks="$((ticks_after - ticks_before)), $((sys_after - sys_before))"
            fi
            read -r cpu_us sys_us redis_us client_us redis_sys_us <<< "$(python3 -c "
nan = float('nan')
ticks = 1e6 / $TICKS_PER_SEC / $requests
cpu, sys = ($proxy_ticks)
print(cpu * ticks, sys * ticks, ($redis_after - $redis_before) * ticks,
      ($client_after - $client_before) * 1e3 / $requests,
      ($redis_sys_after - $redis_sys_before) * ticks)")"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$target" "$rps" "$p50" "$p99" \
                "$cpu_us" "$sys_us" "$redis_us" "$client_us" "$redis_sys_us" >> "$RESULTS"
            echo "  $name  $target  $rps req/s  p50 $p50  p99 $p99  cpu $cpu_us us/req (kernel $sys_us)" >&2
        done
    done
    # Idle connections, each on a fresh proxy process so memory freed by an
    # earlier measurement cannot be reused and hide the cost.
    for n in $IDLE; do
        for target in "${order[@]}"; do
            [ "$target" = direct ] && continue
            # Idle memory is measured on the plain listeners only.
            [ -n "${EXTRA[$target]:-}" ] && continue
            read -r port stats <<< "$(python3 "$BENCH/bench.py" ports 2)"
            if [ "$target" = nutcracker ]; then
                start_nutcracker "$port" "$stats"
            elif [ "$target" = shardproxy-base ]; then
                SP_BINARY=$BASELINE start_shardproxy "$port" "$stats" default
            else
                threads=${target#shardproxy-t}
                [ "$target" = shardproxy ] && threads=default
                start_shardproxy "$port" "$stats" "$threads"
            fi
            per_conn=$(python3 "$BENCH/bench.py" idle "$STARTED" "$port" "$n")
            stop "$STARTED"
            printf 'idle %s conns\t%s\t%s\n' "$n" "$target" "$per_conn" >> "$RESULTS"
            echo "  idle $n  $target  $per_conn bytes/conn" >&2
        done
    done
done

echo
echo "shardproxy $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, redis $(redis-server --version | cut -d" " -f3 | cut -d= -f2), nutcracker $("$NUTCRACKER" -V 2>&1 | head -n 1 | sed "s/.*-//"), $ROUNDS rounds, medians, $(( $(date +%s) - started )) s"
echo "shardproxy: default worker threads (one per core, 1 on 2 cores or fewer); shardproxy-tN: --threads N."
[ -n "$BASELINE" ] && echo "shardproxy-base: $BASELINE, default worker threads."
echo "spread: half the range of req/s over the rounds, relative to the median."
echo "CPU us/req: the proxy process's user + system time over the run divided by its requests (clock ticks, $TICKS_PER_SEC/s)."
echo
python3 "$BENCH/bench.py" table "$RESULTS"
