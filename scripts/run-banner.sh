#!/usr/bin/env bash
# Print how to call the API that `make run` is about to serve.
host="$1"; port="$2"; user="$3"; identity="$4"; server_api_port="$5"
base="http://localhost:${port}/vora"
server_api="http://127.0.0.1:${server_api_port}/vora/server/v1"
cat <<TXT

VORA is starting on ${base}  (Swagger UI: ${base}/ui/)
In another terminal, from this directory:

  export VORA_DEV_KEY=.vora/dev-key.pem
  TOKEN=\$(.venv/bin/vora token --sub ${user})
  curl -s -H "Authorization: Bearer \$TOKEN" ${base}/identity
  curl -s -X POST -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
       -d '{"connectionType":"WebSocket","identity":"${identity}"}' ${base}/identity/setup
  curl -s -i -X POST -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
       -d '{"subscribeAll":false,"events":["callRinging","presence"]}' ${base}/identity/${identity}/eventSubscription
  curl -s -i -X POST -H "Authorization: Bearer \$TOKEN" ${base}/logout/${identity}

The telephony side's server API is on ${server_api}  (Swagger UI: ${server_api}/ui/):

  SERVER_KEY=\$(grep -v '^#' .vora/server-api.key | head -1)
  curl -s -X POST -H "Authorization: Bearer \$SERVER_KEY" -H 'Content-Type: application/json' \\
       -d '{"type":"presence","data":{"status":"busy"}}' ${server_api}/identities/${identity}/events

TXT
