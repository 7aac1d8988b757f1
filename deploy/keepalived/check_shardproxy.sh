#!/usr/bin/env bash
# keepalived health check for the local shardproxy: sends an inline PING, as
# load balancers do, and succeeds only on a +PONG reply within the timeout.
# Needs nothing but bash and coreutils' timeout (no redis-cli).
#
# Usage: check_shardproxy.sh [HOST] [PORT] [TIMEOUT_SECS] [PASSWORD]
#        (defaults: 127.0.0.1 22121 1, no password)
# Give PASSWORD when the pool sets redis_auth: the proxy answers PING with
# -NOAUTH until the client has sent AUTH (sent inline too, so the password
# must not contain spaces).
# Exit:  0 healthy, 1 anything else (refused, timed out, wrong reply).
set -u
host=${1:-127.0.0.1}
port=${2:-22121}
secs=${3:-1}
password=${4:-}

# The inner bash opens the connection, so `timeout` bounds the connect as
# well as the replies.
reply=$(timeout "$secs" bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    if [ -n "$2" ]; then
        printf "AUTH %s\r\n" "$2" >&3
        IFS= read -r line <&3 || exit 1
        case $line in "+OK"*) ;; *) exit 1 ;; esac
    fi
    printf "PING\r\n" >&3
    IFS= read -r line <&3 || exit 1
    printf "%s" "$line"
' "$host" "$port" "$password" 2>/dev/null) || exit 1

[ "${reply%$'\r'}" = "+PONG" ]
