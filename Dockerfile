# VORA API gateway image: gunicorn with gevent workers on port 18085, Prometheus metrics on 9102,
# and the telephony side's server API on 18086 once a server API key is configured.
#
#   docker build -t vora:0.2.0 .
#   docker run --rm -p 18085:18085 -e VORA_REDIS_URL=redis://redis:6379/0 \
#     -e VORA_OAUTH_JWKS=https://idp.example.com/.well-known/jwks.json vora:0.2.0
#
# With the server API (keys in a file, one a line; `vora server-key server-api/keys` makes one):
#   docker run ... -p 127.0.0.1:18086:18086 -v "$PWD/server-api:/etc/vora/server-api:ro" \
#     -e VORA_SERVER_API_KEYS_FILE=/etc/vora/server-api/keys vora:0.2.0
#
# The web console's copy of the TypeScript SDK (docs/console.md): built as `make sdk` builds it, from the SDK's
# lock file (npm ci) and bundled into one browser file with its pinned esbuild. Only that file reaches the image.
FROM node:20-slim AS console-sdk
WORKDIR /sdk
COPY clients/typescript/package.json clients/typescript/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY clients/typescript/tsconfig.json ./
COPY clients/typescript/src/ ./src/
RUN npm run build \
    && node_modules/.bin/esbuild dist/index.js --bundle --format=esm --platform=browser --target=es2022 \
        --sourcemap --legal-comments=none --log-level=warning --outfile=/console/vora-client.js

# The AsyncAPI page's renderer: @asyncapi/react-component's prebuilt standalone bundle and stylesheet, from the
# spec tools' lock file, copied as `make install` copies them (scripts/vendor-asyncapi-page.sh). Only they reach
# the image, at VORA_ASYNCAPI_PAGE.
FROM node:20-slim AS asyncapi-page
WORKDIR /tools
COPY tools/package.json tools/package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts \
    && mkdir /asyncapi-page \
    && cp node_modules/@asyncapi/react-component/browser/standalone/index.js /asyncapi-page/asyncapi-standalone.js \
    && cp node_modules/@asyncapi/react-component/browser/standalone/index.js.LICENSE.txt \
        /asyncapi-page/asyncapi-standalone.js.LICENSE.txt \
    && cp node_modules/@asyncapi/react-component/styles/default.min.css /asyncapi-page/asyncapi.css

# Every dependency has a binary wheel for CPython 3.11 on amd64 and arm64, so the slim image needs no compiler.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VORA_SPEC_DIR=/app/spec \
    VORA_CONSOLE_SDK=/app/console/vora-client.js \
    VORA_ASYNCAPI_PAGE=/app/asyncapi-page \
    VORA_METRICS_HOST=0.0.0.0 \
    VORA_METRICS_PORT=9102 \
    VORA_SERVER_API_HOST=0.0.0.0 \
    VORA_SERVER_API_PORT=18086

# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot without a runAsUser of its own.
RUN groupadd --system --gid 10001 vora \
    && useradd --system --uid 10001 --gid vora --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin vora

WORKDIR /build

# Dependencies first, from pyproject.toml and an empty stub package: this layer is rebuilt only when
# pyproject.toml changes, not on every code change. The stub itself is uninstalled again.
COPY pyproject.toml ./
RUN mkdir vora \
    && touch vora/__init__.py \
    && python -m pip install . \
    && python -m pip uninstall --yes vora \
    && rm -rf build vora vora.egg-info

# Then the code, installed (not editable) without touching the dependencies installed above.
COPY vora/ ./vora/
RUN python -m pip install --no-deps . \
    && rm -rf /build

# The OpenAPI document is read at run time from VORA_SPEC_DIR; the console's SDK bundle from VORA_CONSOLE_SDK,
# the AsyncAPI page's renderer from VORA_ASYNCAPI_PAGE.
COPY spec/ /app/spec/
COPY --from=console-sdk /console/ /app/console/
COPY --from=asyncapi-page /asyncapi-page/ /app/asyncapi-page/

WORKDIR /app
USER 10001:10001

# 18085: the API and the WebSocket (/vora/ws). 9102: Prometheus /metrics, for operators only.
# 18086: the server API (/vora/server/v1), for the telephony platform only; nothing listens there
# unless VORA_SERVER_API_KEYS_FILE or VORA_SERVER_API_KEYS holds a key.
EXPOSE 18085 9102 18086

# gunicorn drains on SIGTERM: probes turn 503, then workers get VORA_GRACEFUL_TIMEOUT (default 20 s) to finish.
STOPSIGNAL SIGTERM

# slim has no curl: ask the liveness endpoint with the standard library (HTTP errors raise, so exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:18085/vora/health/liveness', timeout=3)"]

# Same as `vora serve --host 0.0.0.0 --port 18085 --workers 2`; the gevent worker class is set in vora.gunicorn_conf.
# Exec form: gunicorn is PID 1 and receives SIGTERM itself. Other commands run with e.g. `docker run IMAGE vora config`.
CMD ["gunicorn", "--config", "python:vora.gunicorn_conf", "--bind", "0.0.0.0:18085", "--workers", "2", "vora.wsgi:app_from_env()"]
