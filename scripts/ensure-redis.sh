#!/usr/bin/env bash
# Start a local redis-server on the URL's port unless something already answers there.
set -euo pipefail
url="${1:-redis://127.0.0.1:6379/0}"
hostport="${url#*://}"; hostport="${hostport%%/*}"; hostport="${hostport##*@}"
host="${hostport%%:*}"; port="${hostport##*:}"
[ "$port" = "$hostport" ] && port=6379
case "$url" in redis://*) ;; *) echo "not starting Redis for $url: only redis:// URLs are started locally"; exit 0;; esac
if redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; then
  echo "Redis answers at $host:$port"
  exit 0
fi
case "$host" in 127.0.0.1|localhost|::1) ;; *) echo "Redis at $host:$port does not answer; start it first"; exit 1;; esac
mkdir -p .vora
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --dir "$PWD/.vora" --logfile "$PWD/.vora/redis.log" --pidfile "$PWD/.vora/redis.pid"
for _ in $(seq 50); do
  redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1 && { echo "started redis-server on $host:$port (log: .vora/redis.log)"; exit 0; }
  sleep 0.1
done
echo "redis-server did not start; see .vora/redis.log"; exit 1
