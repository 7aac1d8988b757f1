# Helpers of deploy/local/up.sh and add-shard.sh (sourced; expects RUN
# and BIN to be set).

started() { echo "$1 $2" >> "$RUN/pids"; }

# True when 127.0.0.1:PORT is in its shard's line as LINE (master|replica),
# as `shardproxy-admin status --json` reports it.
in_line() {
    local report
    # status exits non-zero while the cluster is incomplete; only its report matters here.
    report=$("$BIN/shardproxy-admin" -c "$RUN/proxy-0.yml" status --json || true)
    python3 -c '
import json, sys
addr, line = "127.0.0.1:" + sys.argv[1], sys.argv[2]
members = [m for s in json.load(sys.stdin)["shards"] for m in s["members"]]
sys.exit(0 if any(m["addr"] == addr and m["line"] == line for m in members) else 1)' "$1" "$2" <<<"$report"
}

# stderr, kept for messages from checks whose output wait_for hides.
exec 9>&2

# PING answered PONG. redis-cli exits 0 on an error reply (-NOAUTH, -ERR),
# so its text is checked; an error reply is reported at once, not waited out.
answers_pong() { # port [password]
    local reply
    reply=$(env ${2:+REDISCLI_AUTH="$2"} redis-cli -p "$1" PING 2>&1) || return 1
    case "$reply" in
        PONG) return 0 ;;
        "" | *"Could not connect"* | *"Connection refused"*) return 1 ;;
        *)
            echo "up.sh: 127.0.0.1:$1 answered PING with an error: $reply" >&9
            exit 1
            ;;
    esac
}

wait_for() { # what, command... (up to 60 s: a busy machine is slow)
    local what=$1; shift
    for _ in $(seq 1 600); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "up.sh: $what did not come up; see $RUN" >&2
    exit 1
}


# A redis-server on 127.0.0.1:PORT with its dir and log under $RUN, its PID
# recorded for down.sh; returns once it answers PING.
start_redis() { # port
    mkdir -p "$RUN/redis-$1"
    redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$RUN/redis-$1" --logfile "$RUN/redis-$1/redis.log" &
    started $! "redis-server:$1"
    wait_for "redis-server on $1" answers_pong "$1"
}
