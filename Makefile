# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Install and start the server: config, signing key and SQLite database go to ./data on first run.
run: $(VENV)/.installed
	mkdir -p data
	cd data && ../$(BIN)/hearth $(ARGS)

# The Node part of the compat tests (matrix-js-sdk in Node 22), installed exactly from its
# committed lockfile; redone only when node_modules is gone or the lockfile changed.
JS_DIR := synapse_compat_tests/js
$(JS_DIR)/node_modules/.installed: $(JS_DIR)/package-lock.json $(JS_DIR)/package.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund
	touch $@

# Install and run every test (needs PostgreSQL on 127.0.0.1:5432; fails loudly without it).
test: $(VENV)/.installed-test $(JS_DIR)/node_modules/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)
