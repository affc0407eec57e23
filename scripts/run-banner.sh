#!/usr/bin/env bash
# Print how to log in and call the API that `make run` is about to serve.
host="$1"; port="$2"; user="$3"; identity="$4"; auth_port="$5"; password="$6"; client="$7"; secret="$8"; server_api_port="$9"
base="http://localhost:${port}/vora"
server_api="http://127.0.0.1:${server_api_port}/vora/server/v1"
issuer="http://127.0.0.1:${auth_port}"
scopes="scope.vora.identities scope.vora.calls scope.vora.presence scope.vora.recording"
cat <<TXT

VORA is starting on ${base}, its dev authorization server on ${issuer}
  Web console:  ${base}/console/   (log in as ${user} / ${password})
  Swagger UI:   ${base}/ui/        (Authorize: client vora-web, same login)

In another terminal, from this directory, a service token (client credentials; sub = ${client}):

  TOKEN=\$(curl -s -u ${client}:${secret} -d grant_type=client_credentials -d 'scope=${scopes}' \\
       ${issuer}/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -H "Authorization: Bearer \$TOKEN" ${base}/identity

or a development token for user ${user} (signed with the dev key, for scripts):

  export VORA_DEV_KEY=.vora/dev-key.pem VORA_OAUTH_ISSUER=${issuer}
  TOKEN=\$(.venv/bin/vora token --sub ${user})
  curl -s -X POST -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
       -d '{"connectionType":"WebSocket","identity":"${identity}"}' ${base}/identity/setup

The telephony side's server API is on ${server_api}  (Swagger UI: ${server_api}/ui/):

  SERVER_KEY=\$(grep -v '^#' .vora/server-api.key | head -1)
  curl -s -X POST -H "Authorization: Bearer \$SERVER_KEY" -H 'Content-Type: application/json' \\
       -d '{"type":"presence","data":{"status":"busy"}}' ${server_api}/identities/${identity}/events

TXT
