# Everything a fresh machine needs comes from here: a pinned uv, then the locked environment in .venv/.
PYTHON ?= python3
UV := .tools/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test lint typecheck unit install system-packages audit

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==0.13.8

$(VENV)/.installed: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

# Tests render PDFs to PNG (pdftoppm) and drive the dashboard in a real headless browser: Debian's packages.
SYSTEM_PACKAGES := chromium poppler-utils
system-packages:
	@if ! command -v chromium >/dev/null || ! command -v pdftoppm >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); \
	fi

## Start the whole system on embedded Postgres and Kafka (Ctrl-C stops it).
run: install
	PAYDESK_DEVELOPMENT=true $(VENV)/bin/paydesk run

## Every check: lint, types, then all tests on real Postgres and a real Kafka-protocol broker.
test: install system-packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest

## Known vulnerabilities in the locked dependencies (pip-audit, on demand). --strict fails when a package could not be
## checked, so an unreachable vulnerability database is never reported as "no known vulnerabilities".
AUDIT_SERVICE ?= pypi
audit: install
	$(UV) export --frozen --format requirements-txt --no-emit-project -q -o $(VENV)/audit-requirements.txt
	$(VENV)/bin/pip-audit --strict --vulnerability-service $(AUDIT_SERVICE) --disable-pip --require-hashes \
		--progress-spinner off -r $(VENV)/audit-requirements.txt
