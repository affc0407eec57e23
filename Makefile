# VORA: two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
VORA := $(VENV)/bin/vora
STAMP := $(VENV)/.installed
ASYNCAPI_SPECS := $(VENV)/asyncapi/node_modules/@asyncapi/specs/schemas/2.6.0.json
DEVAUTH_MODULES := devauth/node_modules/.package-lock.json
# Spectral, Widdershins, api-smart-diff and the AsyncAPI page's bundle, as tools/package-lock.json pins them.
TOOLS_MODULES := tools/node_modules/.package-lock.json
# The peers `python -m bench --only peers` measures VORA beside (Socket.IO 4, redis adapters, ws), as bench/peers/package-lock.json pins them.
PEERS_MODULES := bench/peers/node_modules/.package-lock.json
ASYNCAPI_VENDOR := build/asyncapi-page/.copied
SPEC_DOCUMENTS := spec/vora.yaml spec/vora-server.yaml spec/vora-console.yaml spec/vora-webhooks.yaml spec/vora-events.asyncapi.yaml
SDK_DIR := clients/typescript
SDK_BUILT := $(SDK_DIR)/build/.built
SDK_MODULES := $(SDK_DIR)/node_modules/.package-lock.json
# The SDK bundled into one browser ESM file, which the console at /vora/console/ imports (VORA_CONSOLE_SDK).
CONSOLE_SDK := build/console/vora-client.js
HOST ?= 127.0.0.1
# Test files run in parallel processes (most of a test's time is spent waiting on servers it started).
TEST_WORKERS ?= 3
PORT ?= 18085
WORKERS ?= 2
export VORA_DEV_KEY ?= $(CURDIR)/.vora/dev-key.pem
export VORA_REDIS_URL ?= redis://127.0.0.1:6379/0
DEMO_USER ?= demo
DEMO_IDENTITY ?= 910111000
DEMO_PASSWORD ?= demo
AUTH_PORT ?= 18087
SERVICE_CLIENT ?= demo-service
SERVICE_SECRET ?= demo-service-secret
# Only `make run` serves the server API: tests start their servers with keys of their own.
SERVER_API_KEYS_FILE ?= $(CURDIR)/.vora/server-api.key
SERVER_API_PORT ?= 18086

.PHONY: install run stop test test-tools test-fast lint format-js typecheck check-spec lint-spec check-breaking docs fuzz redis-server bench clean sdk

install: $(STAMP) $(ASYNCAPI_SPECS) $(DEVAUTH_MODULES) $(TOOLS_MODULES) $(PEERS_MODULES) $(ASYNCAPI_VENDOR) ## Create .venv with VORA and its dev tools (idempotent)

# The official AsyncAPI JSON Schemas, to validate spec/vora-events.asyncapi.yaml in tests.
$(ASYNCAPI_SPECS): | $(STAMP)
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	npm install --silent --no-audit --no-fund --prefix $(VENV)/asyncapi @asyncapi/specs@6.11.1

# The development authorization server (oidc-provider), exactly as devauth/package-lock.json pins it.
$(DEVAUTH_MODULES): devauth/package.json devauth/package-lock.json | $(ASYNCAPI_SPECS)
	npm ci --silent --no-audit --no-fund --prefix devauth

# The spec tools (tools/package.json). Scarf is Spectral's install-time analytics: nothing to report here.
$(TOOLS_MODULES): tools/package.json tools/package-lock.json | $(ASYNCAPI_SPECS)
	SCARF_ANALYTICS=false npm ci --silent --no-audit --no-fund --prefix tools

$(PEERS_MODULES): bench/peers/package.json bench/peers/package-lock.json | $(ASYNCAPI_SPECS)
	npm ci --silent --no-audit --no-fund --prefix bench/peers

# The AsyncAPI page (/vora/asyncapi/) serves @asyncapi/react-component's standalone bundle from the package.
$(ASYNCAPI_VENDOR): $(TOOLS_MODULES)
	bash scripts/vendor-asyncapi-page.sh
	@touch $@

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e clients/python
	@touch $(STAMP)

# The TypeScript SDK (@vora/client): exactly as its package-lock.json pins it, its generated types checked
# against spec/, built (dist/), and its Node test suite compiled and bundled for the browser test.
sdk: $(SDK_BUILT) $(CONSOLE_SDK) ## Install, check and build the TypeScript SDK in clients/typescript, and the console's bundle of it

# The hand-written JavaScript and TypeScript, formatted by Prettier as the SDK's package-lock.json pins it (.prettierrc.json).
PRETTIER := $(SDK_DIR)/node_modules/.bin/prettier
JS_SOURCES := $(SDK_DIR)/src $(SDK_DIR)/test $(SDK_DIR)/scripts bench/peers/*.js devauth/*.js tools/spec-diff.mjs \
	vora/rest/console/static/console.js examples/telephony/node/*.mjs

format-js: sdk ## Format the hand-written JavaScript and TypeScript with Prettier
	$(PRETTIER) --write --log-level warn $(JS_SOURCES)

$(SDK_MODULES): $(SDK_DIR)/package.json $(SDK_DIR)/package-lock.json | $(ASYNCAPI_SPECS)
	npm ci --silent --no-audit --no-fund --prefix $(SDK_DIR)

$(SDK_BUILT): $(SDK_MODULES) $(SDK_DIR)/tsconfig.json $(SDK_DIR)/tsconfig.test.json \
		$(wildcard $(SDK_DIR)/src/*.ts $(SDK_DIR)/src/generated/*.ts $(SDK_DIR)/test/*.ts $(SDK_DIR)/scripts/*.mjs) \
		spec/vora.yaml spec/vora-events.asyncapi.yaml
	npm run --silent --prefix $(SDK_DIR) check:generated
	npm run --silent --prefix $(SDK_DIR) build
	npm run --silent --prefix $(SDK_DIR) build:test
	@touch $@

# esbuild (the SDK's pinned devDependency) bundles dist/ as an app's bundler would: the console runs the SDK users get.
$(CONSOLE_SDK): $(SDK_BUILT)
	$(SDK_DIR)/node_modules/.bin/esbuild $(SDK_DIR)/dist/index.js --bundle --format=esm --platform=browser \
	  --target=es2022 --sourcemap --legal-comments=none --log-level=warning --outfile=$@

redis-server: ## Install redis-server with apt-get when it is missing (as root)
	@bash scripts/apt-ensure.sh redis-server redis-server

# The Java examples (examples/telephony/java) run as `java File.java`, which compiles them first: a JDK, not a JRE.
test-tools: redis-server ## Install what the topology, browser, observability and examples tests start: nginx, tinyproxy, Privoxy, Chromium, Prometheus, a JDK
	@bash scripts/apt-ensure.sh nginx nginx-light
	@bash scripts/apt-ensure.sh tinyproxy tinyproxy
	@bash scripts/apt-ensure.sh privoxy privoxy
	@bash scripts/apt-ensure.sh promtool prometheus
	@bash scripts/apt-ensure.sh javac default-jdk-headless
	@bash scripts/apt-ensure.sh chromium chromium && bash scripts/apt-ensure.sh chromedriver chromium-driver \
	  || echo "Chromium could not be installed: the browser tests will be skipped"

run: install sdk redis-server ## Start Redis if needed, a demo user, the dev authorization server and the API
	@bash scripts/ensure-redis.sh "$$VORA_REDIS_URL"
	@$(VORA) dev-key "$$VORA_DEV_KEY"
	@$(VORA) server-key "$(SERVER_API_KEYS_FILE)"
	@$(VORA) identities add $(DEMO_USER) $(DEMO_IDENTITY) 602128708 >/dev/null
	@$(VORA) identities add $(SERVICE_CLIENT) $(DEMO_IDENTITY) >/dev/null
	@bash scripts/run-banner.sh $(HOST) $(PORT) $(DEMO_USER) $(DEMO_IDENTITY) $(AUTH_PORT) $(DEMO_PASSWORD) $(SERVICE_CLIENT) $(SERVICE_SECRET) $(SERVER_API_PORT)
	@DEMO_USER=$(DEMO_USER) DEMO_PASSWORD=$(DEMO_PASSWORD) SERVICE_CLIENT=$(SERVICE_CLIENT) SERVICE_SECRET=$(SERVICE_SECRET) \
	  VORA_SERVER_API_KEYS_FILE="$(SERVER_API_KEYS_FILE)" VORA_SERVER_API_PORT=$(SERVER_API_PORT) \
	  exec bash scripts/run-dev.sh $(HOST) $(PORT) $(WORKERS) $(AUTH_PORT)

stop: ## Stop what make run started: VORA, the dev authorization server and the redis-server it started
	@bash scripts/stop-dev.sh $(PORT) $(SERVER_API_PORT) $(AUTH_PORT) $${VORA_METRICS_PORT:-9102}

test: install test-tools sdk ## Run the whole suite: lint, layers, types, spec, unit, server, contract
	$(VENV)/bin/ruff check vora tests bench testbed scripts clients/python fuzz deploy/observability
	$(VENV)/bin/ruff format --check vora tests bench testbed scripts clients/python fuzz deploy/observability
	$(PRETTIER) --check --log-level warn $(JS_SOURCES)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VORA) check-spec
	$(VORA) check-breaking
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: install redis-server ## Run the suite without the slow server and contract tests
	$(VENV)/bin/pytest -m "not slow"

lint: install sdk
	$(VENV)/bin/ruff check vora tests bench testbed scripts clients/python fuzz deploy/observability
	$(VENV)/bin/ruff format --check vora tests bench testbed scripts clients/python fuzz deploy/observability
	$(PRETTIER) --check --log-level warn $(JS_SOURCES)
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

check-spec: install
	$(VORA) check-spec

check-breaking: install ## Fail on changes to the spec documents that break clients of the last release
	$(VORA) check-breaking

lint-spec: install ## Lint the OpenAPI and AsyncAPI documents with Spectral (.spectral.yaml)
	tools/node_modules/.bin/spectral lint --fail-severity=warn -r .spectral.yaml $(SPEC_DOCUMENTS)

# Everything generated from spec/ and committed, which `make test` holds fresh: the rendered API documents
# and the TypeScript SDK's types (its check:generated), so that an API owner has one command to run.
docs: install $(SDK_MODULES) ## Render spec/vora.yaml and spec/vora-server.yaml into docs/api/, regenerate the TypeScript SDK's types
	bash scripts/render-api-docs.sh docs/api
	npm run --silent --prefix $(SDK_DIR) generate

fuzz: install redis-server ## Fuzz a VORA with schemathesis (FUZZ_URL, FUZZ_TOKEN...; default: one started on loopback), docs/qa.md
	$(PY) -m fuzz $(FUZZ_ARGS)

bench: install redis-server ## Measure VORA against its targets, each next to a same-run baseline (docs/BENCHMARKS.md)
	$(PY) -m bench --update-docs $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
