# Two commands on a fresh machine with python3 and make: `make up` runs the platform, `make test` tests it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt provider/pyproject.toml provider/integrations_provider/*.py | cksum | cut -d' ' -f1)
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)

.PHONY: install up down test bench lock clean smoke migrate

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt provider/pyproject.toml provider/integrations_provider/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall ./provider
	rm -f $(VENV)/.installed-*
	touch $@

up: install
	$(BIN)/python -m stack up

down:
	$(BIN)/python -m stack down

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench

# Re-resolve requirements.txt into constraints.txt in a scratch venv.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade "pip==26.3"
	.lock-venv/bin/python -m pip install --quiet -r requirements.txt
	( echo "# Full resolve of requirements.txt for Python 3.11 (make lock). Used by every install."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^integrations-provider' | sort -f ) > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache

# Apply our migrations to the database named by INTEGRATIONS_DATABASE_URL (what `make up` does too).
migrate: install
	$(BIN)/python -m etl.migrate

# Trigger the maintenance DAG on the running `make up` stack through the REST API and wait for success.
smoke:
	$(BIN)/python -m stack.smoke integrations_maintenance
