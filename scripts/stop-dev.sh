#!/usr/bin/env bash
# Stop what `make run` started: the running `make run` (through its pid file), any VORA or dev authorization
# server an earlier one left listening on the ports, and the redis-server that `make run` started.
# usage: stop-dev.sh PORT...   (VORA_RUN_DIR as for run-dev.sh)
set -uo pipefail
run_dir="${VORA_RUN_DIR:-.vora}"

pid=$(cat "$run_dir/run.pid" 2>/dev/null)
if [ -n "$pid" ] && grep -qs "run-dev.sh" "/proc/$pid/cmdline"; then
  echo "make stop: stopping make run (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 350); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
rm -f "$run_dir/run.pid"
.venv/bin/python scripts/devports.py stop "$@"

redis_pid=$(cat "$run_dir/redis.pid" 2>/dev/null)
if [ -n "$redis_pid" ] && grep -qs "redis-server" "/proc/$redis_pid/cmdline"; then
  echo "make stop: stopping the redis-server make run started (pid $redis_pid)"
  kill -TERM "$redis_pid"
  for _ in $(seq 100); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
fi
rm -f "$run_dir/redis.pid"
echo "make stop: nothing of make run is left running"
