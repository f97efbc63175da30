# Two commands on a fresh machine with python3 and make: `make up` runs the platform, `make test` tests it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUM    = $(shell cat $(1) | cksum | cut -d' ' -f1)
RUNTIME_STAMP := $(VENV)/.runtime-$(call SUM,requirements.txt constraints.txt provider/pyproject.toml provider/integrations_provider/*.py)
TEST_STAMP    := $(VENV)/.test-$(call SUM,requirements-test.txt constraints.txt)
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)

.PHONY: install install-test up down test lint bench lock clean smoke migrate psql

# The runtime set: what `make up` and the image run.
install: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): requirements.txt constraints.txt provider/pyproject.toml provider/integrations_provider/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall ./provider
	rm -f $(VENV)/.runtime-* $(VENV)/.test-*
	touch $@

# The test set on top: pytest, the linters, what the tests and benchmarks import.
install-test: $(TEST_STAMP)

$(TEST_STAMP): $(RUNTIME_STAMP) requirements-test.txt
	$(BIN)/python -m pip install --quiet -r requirements-test.txt -c constraints.txt
	rm -f $(VENV)/.test-*
	touch $@

up: install
	$(BIN)/python -m stack up

down:
	$(BIN)/python -m stack down

# The layer contract (pyproject.toml [tool.importlinter]) and ruff run before the tests: CI enforces both.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

bench: install-test
	$(BIN)/python -m bench

# Re-resolve requirements.txt + requirements-test.txt into constraints.txt in a scratch venv.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade "pip==26.3"
	.lock-venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-test.txt
	( echo "# Full resolve of requirements.txt + requirements-test.txt for Python 3.11 (make lock). Used by every install."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^integrations-provider' | sort -f ) > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache

# Apply our migrations to INTEGRATIONS_DATABASE_URL, else to make up's embedded database.
migrate: install
	$(BIN)/python -m stack migrate

# psql on make up's embedded database (the password comes from .local/secrets.json, never the screen).
psql: install
	$(BIN)/python -m stack psql

# Trigger the maintenance DAG on the running `make up` stack through the REST API and wait for success.
smoke:
	$(BIN)/python -m stack.smoke integrations_maintenance
