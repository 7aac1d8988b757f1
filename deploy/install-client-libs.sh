#!/usr/bin/env bash
# Installs the client libraries of tests/client_libraries.rs,
# tests/client_library_scenarios.rs and the redis-py test of tests/pubsub.rs
# into target/clients: redis-py 8 in a virtualenv, ioredis 5 with npm.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=target/clients
mkdir -p "$DEST"
if [ ! -x "$DEST/venv/bin/python" ] || ! "$DEST/venv/bin/python" -c 'import redis, prometheus_client, sys; sys.exit(int(redis.__version__.split(".")[0]) < 8)' 2>/dev/null; then
    python3 -m venv "$DEST/venv"
    "$DEST/venv/bin/pip" install -q 'redis>=8,<9' 'prometheus_client>=0.20'
fi
if [ ! -d "$DEST/node_modules/ioredis" ]; then
    (cd "$DEST" && npm install --silent --no-audit --no-fund ioredis@5 >/dev/null)
fi
echo "client libraries: redis-py $("$DEST/venv/bin/python" -c 'import redis; print(redis.__version__)'), ioredis $(node -p "require('./$DEST/node_modules/ioredis/package.json').version")"
