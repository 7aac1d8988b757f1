#!/usr/bin/env bash
# Stops exactly the processes deploy/local/up.sh started (by PID), and
# waits until they are gone.
set -uo pipefail
RUN="$(cd "$(dirname "$0")" && pwd)/run"
[ -f "$RUN/pids" ] || { echo "down.sh: nothing to stop"; exit 0; }
# Stop in reverse order: proxies first, then the servers behind them.
tac "$RUN/pids" | while read -r pid name; do
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        echo "stopped $name (pid $pid)"
    fi
done
rm -rf "$RUN"
