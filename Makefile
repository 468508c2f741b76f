# Countersign. `make demo` serves the embedded demo; `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest venv worker beat stack

# (Re)create the virtualenv when it is missing or the pinned requirements changed.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# The official MCP TypeScript SDK, a test client for MCP Tasks (tests/e2e/test_mcp_tasks.py), from its lock file.
TS_CLIENT := tests/e2e/mcp_tasks_client
$(TS_CLIENT)/node_modules/.package-lock.json: $(TS_CLIENT)/package-lock.json
	npm ci --prefix $(TS_CLIENT) --no-audit --no-fund --loglevel=error

demo: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py seed_demo
	@echo "Countersign on http://127.0.0.1:$(PORT)/ (log in as admin, admin2, reviewer, reviewer2, operator or auditor; password countersign-demo)"
	$(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) config.asgi:application

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# django-stubs loads the settings; type-checking needs no database, so use the embedded ones.
typecheck: $(STAMP)
	env -u DATABASE_URL -u REDIS_URL $(VENV)/bin/mypy
	cd sdk/python && $(abspath $(VENV))/bin/mypy

# With DATABASE_URL and REDIS_URL set the suite runs on PostgreSQL and Redis;
# the production settings then need a SECRET_KEY, an audit chain key and an anchor
# file, which tests may make up (each test then uses an anchor file of its own).
pytest: $(STAMP) $(TS_CLIENT)/node_modules/.package-lock.json
	SECRET_KEY="$${SECRET_KEY:-test-only-not-a-secret}" \
	AUDIT_CHAIN_KEY="$${AUDIT_CHAIN_KEY:-test-only-audit-chain-key}" \
	AUDIT_ANCHOR_FILE="$${AUDIT_ANCHOR_FILE:-/tmp/countersign-test-anchors.log}" \
	$(PY) -m pytest

test: lint typecheck pytest

# The production topology on this machine: 2 web processes on one port, 2 workers, beat, the relay.
stack: $(STAMP)
	VENV=$(VENV) bash deploy/stack.sh

worker: $(STAMP)
	$(VENV)/bin/celery -A config worker --without-mingle --without-gossip --loglevel=INFO

beat: $(STAMP)
	$(VENV)/bin/celery -A config beat --loglevel=INFO
