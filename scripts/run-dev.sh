#!/usr/bin/env bash
# Serve VORA next to the dev authorization server (devauth/, on loopback) until Ctrl-C, SIGTERM, SIGHUP
# (the terminal closed), `make stop`, or the exit of either server: then stop both, and all they started.
# usage: run-dev.sh HOST PORT WORKERS AUTH_PORT  (DEMO_USER, DEMO_PASSWORD, SERVICE_CLIENT, SERVICE_SECRET from make;
#        VORA_RUN_DIR holds the run's files, .vora by default)
set -uo pipefail # not -e: the cleanup must run to its end whatever fails on the way
host="$1"; port="$2"; workers="$3"; auth_port="$4"
run_dir="${VORA_RUN_DIR:-.vora}"
issuer="http://127.0.0.1:${auth_port}"
jwks_file="$run_dir/devauth-jwks.json"
pid_file="$run_dir/run.pid"
py=.venv/bin/python

# Development: an operation without a finished handler answers 501 instead of failing the start (docs/qa.md).
export VORA_DEVELOPMENT="${VORA_DEVELOPMENT:-1}"
# The console's telephony simulator publishes to the logged-in user's own identities (docs/console.md); off in production.
export VORA_CONSOLE_SIMULATOR="${VORA_CONSOLE_SIMULATOR:-1}"
export VORA_LOG_FORMAT="${VORA_LOG_FORMAT:-text}" # readable lines in a terminal; production logs JSON
export VORA_OAUTH_ISSUER="${VORA_OAUTH_ISSUER:-$issuer}"
export VORA_OAUTH_JWKS="${VORA_OAUTH_JWKS:-$issuer/jwks}"
export VORA_OAUTH_AUTHORIZATION_URL="${VORA_OAUTH_AUTHORIZATION_URL:-$issuer/auth}"
export VORA_OAUTH_TOKEN_URL="${VORA_OAUTH_TOKEN_URL:-$issuer/token}"

# Name what holds a port before starting anything, rather than failing halfway with "Connection in use".
ports=("$port" "$auth_port")
[ -n "${VORA_SERVER_API_KEYS_FILE:-}${VORA_SERVER_API_KEYS:-}" ] && ports+=("${VORA_SERVER_API_PORT:-18086}")
ports+=("${VORA_METRICS_PORT:-9102}")
"$py" scripts/devports.py check "${ports[@]}" || exit 1

mkdir -p "$run_dir"
[ -f "$jwks_file" ] || node devauth/keys.js "$jwks_file" || exit 1
redirects=""
for origin in "http://localhost:${port}" "http://127.0.0.1:${port}"; do
  redirects+="${origin}/vora/console/,${origin}/vora/ui/oauth2-redirect.html,"
done

auth_pid=""
vora_pid=""
# Each server runs in a process group of its own (setsid): the terminal's SIGHUP and Ctrl-C reach only
# this script, which stops the whole group, gunicorn's workers included. gunicorn alone would take
# SIGHUP as "reload" and live on.
stop_group() {
  local pid="$1" grace="$2"
  [ -n "$pid" ] || return 0
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq $((grace * 10))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  # Whatever is left of the group goes too: gunicorn's workers outlive a master that was SIGKILLed.
  kill -KILL -- "-$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  # A killed worker holds its listening sockets until it has exited, which takes a moment on a busy machine:
  # the ports are free when this returns (a make run started right after would otherwise find them taken).
  for _ in $(seq 50); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  return 0
}
stop() {
  trap - HUP INT TERM EXIT
  echo "make run: stopping" >&2
  stop_group "$vora_pid" 25 # gunicorn drains its sockets with `maintenance` first (VORA_GRACEFUL_TIMEOUT)
  stop_group "$auth_pid" 5
  rm -f "$pid_file"
  echo "make run: stopped" >&2
}
trap 'stop; exit 129' HUP
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT
echo $$ >"$pid_file"

DEVAUTH_HOST=127.0.0.1 DEVAUTH_PORT="$auth_port" DEVAUTH_JWKS_FILE="$jwks_file" \
  DEVAUTH_AUDIENCE="${VORA_OAUTH_AUDIENCE:-vora}" DEVAUTH_USERS="${DEMO_USER}:${DEMO_PASSWORD}" \
  DEVAUTH_WEB_REDIRECT_URIS="$redirects" DEVAUTH_SERVICE_CLIENTS="${SERVICE_CLIENT}:${SERVICE_SECRET}" \
  setsid node devauth/server.js &
auth_pid=$!
"$py" scripts/await_http.py "the dev authorization server" "$issuer/.well-known/openid-configuration" "$auth_pid" \
  || exit 1

setsid .venv/bin/vora serve --host "$host" --port "$port" --workers "$workers" &
vora_pid=$!
url_host="$host"
case "$host" in 127.0.0.1 | 0.0.0.0 | ::) url_host=localhost ;; *:*) url_host="[$host]" ;; esac
ready_host="$host"
case "$host" in 0.0.0.0) ready_host=127.0.0.1 ;; ::) ready_host="[::1]" ;; *:*) ready_host="[$host]" ;; esac
if "$py" scripts/await_http.py "VORA" "http://${ready_host}:${port}/vora/health/readiness" "$vora_pid"; then
  echo "make run: VORA is ready on http://${url_host}:${port}/vora/ (console: /vora/console/ with its simulator, stop: Ctrl-C or make stop)" >&2
else
  exit 1
fi
wait -n "$auth_pid" "$vora_pid"
echo "make run: a server exited (status $?)" >&2
exit 1
