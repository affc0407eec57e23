#!/usr/bin/env bash
# Start a local redis-server on the URL's port unless something already answers there; warn before
# `make run` writes into a Redis that it did not start.
set -euo pipefail
url="${1:-redis://127.0.0.1:6379/0}"
run_dir="${VORA_RUN_DIR:-.vora}"
hostport="${url#*://}"; hostport="${hostport%%/*}"; hostport="${hostport##*@}"
host="${hostport%%:*}"; port="${hostport##*:}"
[ "$port" = "$hostport" ] && port=6379
db="${url#*://*/}"; [ "$db" = "$url" ] && db=0; db="${db%%\?*}"; [ -n "$db" ] || db=0
case "$url" in redis://*) ;; *) echo "not starting Redis for $url: only redis:// URLs are started locally"; exit 0;; esac
if redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; then
  pid=$(cat "$run_dir/redis.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && grep -qs "redis-server" "/proc/$pid/cmdline" \
     && [ "$(redis-cli -h "$host" -p "$port" info server | tr -d '\r' | sed -n 's/^process_id://p')" = "$pid" ]; then
    echo "Redis answers at $host:$port (started by make run)"
    exit 0
  fi
  keys=$(redis-cli -h "$host" -p "$port" -n "$db" dbsize 2>/dev/null || echo "?")
  cat >&2 <<TXT
WARNING: the Redis at $host:$port was not started by make run. make run is about to write the demo
         identities, and then sessions and events, into its database $db (which holds $keys keys now).
         To keep them apart: make run VORA_REDIS_URL=redis://$host:$port/15 (another database),
         or stop that Redis, and make run starts one of its own (which make stop stops).
TXT
  exit 0
fi
case "$host" in 127.0.0.1|localhost|::1) ;; *) echo "Redis at $host:$port does not answer; start it first"; exit 1;; esac
mkdir -p "$run_dir"
dir=$(cd "$run_dir" && pwd)
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid"
for _ in $(seq 50); do
  redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1 && { echo "started redis-server on $host:$port (log: $run_dir/redis.log; make stop stops it)"; exit 0; }
  sleep 0.1
done
echo "redis-server did not start; see $run_dir/redis.log"; exit 1
