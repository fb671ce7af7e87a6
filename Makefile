# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test synapse

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

# A real Synapse for the federation compat tests, in its own virtualenv so its dependencies stay
# apart from ours. The stamp names the version: installed once, redone only when the version
# changes (or the stamp is gone, e.g. after a failed install). The tests never skip without it:
# synapse_compat_tests/federation_fixture.py fails naming this target.
SYNAPSE_VERSION := 1.163.2
SYNAPSE_VENV := .venv-synapse
SYNAPSE_STAMP := $(SYNAPSE_VENV)/.installed-$(SYNAPSE_VERSION)
$(SYNAPSE_STAMP):
	rm -rf $(SYNAPSE_VENV)
	$(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/pip install --quiet --disable-pip-version-check 'matrix-synapse==$(SYNAPSE_VERSION)'
	$(SYNAPSE_VENV)/bin/python -c "import importlib.metadata as m, synapse.app.homeserver; assert m.version('matrix-synapse') == '$(SYNAPSE_VERSION)'"
	touch $@

synapse: $(SYNAPSE_STAMP)

# Install and run every test (needs PostgreSQL on 127.0.0.1:5432; fails loudly without it).
test: $(VENV)/.installed-test $(JS_DIR)/node_modules/.installed $(SYNAPSE_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
