#!/usr/bin/env bash
# Copy @asyncapi/react-component's standalone bundle and stylesheet (from tools/node_modules) out of the
# package (build/asyncapi-page), where VORA serves them under /vora/asyncapi/ with no CDN: the page works offline.
set -euo pipefail
cd "$(dirname "$0")/.."
component=tools/node_modules/@asyncapi/react-component
vendor=build/asyncapi-page
mkdir -p "$vendor"
cp "$component/browser/standalone/index.js" "$vendor/asyncapi-standalone.js"
cp "$component/browser/standalone/index.js.LICENSE.txt" "$vendor/asyncapi-standalone.js.LICENSE.txt"
cp "$component/styles/default.min.css" "$vendor/asyncapi.css"
