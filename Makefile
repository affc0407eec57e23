# VORA: two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
VORA := $(VENV)/bin/vora
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 18085
WORKERS ?= 2
export VORA_DEV_KEY ?= $(CURDIR)/.vora/dev-key.pem
export VORA_REDIS_URL ?= redis://127.0.0.1:6379/0
DEMO_USER ?= demo
DEMO_IDENTITY ?= 910111000

.PHONY: install run test test-fast lint typecheck check-spec redis-server bench clean

install: $(STAMP) ## Create .venv with VORA and its dev tools (idempotent)

$(STAMP): pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

redis-server: ## Install redis-server with apt-get when it is missing (as root)
	@if ! command -v redis-server >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is missing: install it (apt-get install redis-server)"; exit 1; fi; \
	fi

run: install redis-server ## Start Redis if needed, create the dev key and a demo user, serve the API
	@bash scripts/ensure-redis.sh "$$VORA_REDIS_URL"
	@$(VORA) dev-key "$$VORA_DEV_KEY"
	@$(VORA) identities add $(DEMO_USER) $(DEMO_IDENTITY) 602128708 >/dev/null
	@bash scripts/run-banner.sh $(HOST) $(PORT) $(DEMO_USER) $(DEMO_IDENTITY)
	@exec $(VORA) serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: install redis-server ## Run the whole suite: lint, types, spec, unit, server, contract
	$(VENV)/bin/ruff check vora tests
	$(VENV)/bin/ruff format --check vora tests
	$(VENV)/bin/mypy
	$(VORA) check-spec
	$(VENV)/bin/pytest

test-fast: install redis-server ## Run the suite without the slow server and contract tests
	$(VENV)/bin/pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check vora tests
	$(VENV)/bin/ruff format --check vora tests

typecheck: install
	$(VENV)/bin/mypy

check-spec: install
	$(VORA) check-spec

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
