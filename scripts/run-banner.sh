#!/usr/bin/env bash
# Print how to call the API that `make run` is about to serve.
host="$1"; port="$2"; user="$3"; identity="$4"
base="http://localhost:${port}/vora"
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

TXT
