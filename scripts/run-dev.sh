#!/usr/bin/env bash
# Serve VORA next to the dev authorization server (devauth/, on loopback); Ctrl-C or SIGTERM stops both.
# usage: run-dev.sh HOST PORT WORKERS AUTH_PORT  (DEMO_USER, DEMO_PASSWORD, SERVICE_CLIENT, SERVICE_SECRET from make)
set -euo pipefail
host="$1"; port="$2"; workers="$3"; auth_port="$4"
issuer="http://127.0.0.1:${auth_port}"
jwks_file=.vora/devauth-jwks.json

# Development: an operation without a finished handler answers 501 instead of failing the start (docs/qa.md).
export VORA_DEVELOPMENT="${VORA_DEVELOPMENT:-1}"
export VORA_OAUTH_ISSUER="${VORA_OAUTH_ISSUER:-$issuer}"
export VORA_OAUTH_JWKS="${VORA_OAUTH_JWKS:-$issuer/jwks}"
export VORA_OAUTH_AUTHORIZATION_URL="${VORA_OAUTH_AUTHORIZATION_URL:-$issuer/auth}"
export VORA_OAUTH_TOKEN_URL="${VORA_OAUTH_TOKEN_URL:-$issuer/token}"

[ -f "$jwks_file" ] || node devauth/keys.js "$jwks_file"
redirects=""
for origin in "http://localhost:${port}" "http://127.0.0.1:${port}"; do
  redirects+="${origin}/vora/console/,${origin}/vora/ui/oauth2-redirect.html,"
done

auth_pid=""
vora_pid=""
stop() {
  trap - INT TERM EXIT
  [ -n "$vora_pid" ] && kill -TERM "$vora_pid" 2>/dev/null
  [ -n "$auth_pid" ] && kill -TERM "$auth_pid" 2>/dev/null
  wait
}
trap stop INT TERM EXIT

DEVAUTH_HOST=127.0.0.1 DEVAUTH_PORT="$auth_port" DEVAUTH_JWKS_FILE="$jwks_file" \
  DEVAUTH_AUDIENCE="${VORA_OAUTH_AUDIENCE:-vora}" DEVAUTH_USERS="${DEMO_USER}:${DEMO_PASSWORD}" \
  DEVAUTH_WEB_REDIRECT_URIS="$redirects" DEVAUTH_SERVICE_CLIENTS="${SERVICE_CLIENT}:${SERVICE_SECRET}" \
  node devauth/server.js &
auth_pid=$!
.venv/bin/python - "$issuer" "$auth_pid" <<'PY'
import os, sys, time, urllib.request
issuer, pid = sys.argv[1], int(sys.argv[2])
for _ in range(200):
    try:
        with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=1):
            sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit("the dev authorization server exited; see its output above")
        time.sleep(0.1)
sys.exit(f"the dev authorization server did not answer at {issuer}")
PY

.venv/bin/vora serve --host "$host" --port "$port" --workers "$workers" &
vora_pid=$!
wait -n "$auth_pid" "$vora_pid" || true
