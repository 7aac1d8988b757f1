#!/usr/bin/env bash
# Installs what shardproxy's tests and local cluster need, from Debian's
# packages, when missing: redis-server, redis-tools, nutcracker, zookeeper,
# openssl.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v nutcracker >/dev/null 2>&1 || [ -x /usr/sbin/nutcracker ] || need+=(nutcracker)
[ -d /usr/share/zookeeper ] || need+=(zookeeper)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
# The client-library smoke test (deploy/install-client-libs.sh).
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
# The TLS tests make their certificates with it (tests/common/tls.rs).
command -v openssl >/dev/null 2>&1 || need+=(openssl)

if [ ${#need[@]} -eq 0 ]; then
    echo "install-deps: everything is installed"
    exit 0
fi

echo "install-deps: installing ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian packages start system services; the tests start their own
# servers on free ports, so stop these to keep the machine quiet.
for service in redis-server zookeeper; do
    if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop "$service" 2>/dev/null || true; fi
    if command -v service >/dev/null 2>&1; then $SUDO service "$service" stop >/dev/null 2>&1 || true; fi
done
echo "install-deps: done"
