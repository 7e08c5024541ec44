# Everything a fresh machine needs comes from here: a pinned uv, then the locked environment in .venv/.
PYTHON ?= python3
UV := .tools/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test lint typecheck unit install

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==0.13.8

$(VENV)/.installed: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

## Start the whole system on embedded Postgres and Kafka (Ctrl-C stops it).
run: install
	$(VENV)/bin/paydesk run

## Every check: lint, types, then all tests on real Postgres and a real Kafka-protocol broker.
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest
