#!/usr/bin/env bash
# Render the REST and server API documents with Widdershins, as the seeds were rendered (v4.0.1, no
# front matter, the default code-sample languages), into DIR (default docs/api).
# usage: render-api-docs.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/api}"
mkdir -p "$out"
for document in vora vora-server; do
  tools/node_modules/.bin/widdershins --omitHeader "spec/${document}.yaml" -o "${out}/${document}.md" >/dev/null
done
