# Everything a fresh machine needs comes from here: a pinned uv, then the locked environment in .venv/.
PYTHON ?= python3
UV := .tools/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test lint typecheck unit install system-packages audit kafka kafka-if-possible test-broker

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

# Apache Kafka's jars from Maven Central (the version is pinned in the pom), copied once into .tools/kafka/lib
# and fetched again only when the pom changes. Needs Java 17+ and Maven; batch mode, so CI without a tty works.
KAFKA_POM := paydesk/kafka/pom.xml
KAFKA_LIB := .tools/kafka/lib
MVN := mvn -B -q -Dstyle.color=never

$(KAFKA_LIB)/.fetched: $(KAFKA_POM)
	rm -rf $(KAFKA_LIB)
	$(MVN) -f $(KAFKA_POM) dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(KAFKA_LIB)
	touch $@

kafka: $(KAFKA_LIB)/.fetched

# `make run` fetches Kafka where it can; without Java or Maven, `paydesk run` says so and runs on Tansu.
kafka-if-possible:
	@if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory kafka; fi

# The tests run on Apache Kafka unless PAYDESK_TEST_BROKER=tansu or PAYDESK_TEST_KAFKA_BOOTSTRAP names a broker.
test-broker:
	@if [ "$${PAYDESK_TEST_BROKER:-kafka}" = kafka ] && [ -z "$$PAYDESK_TEST_KAFKA_BOOTSTRAP" ]; then \
		$(MAKE) --no-print-directory kafka; fi

## Start the whole system on embedded Postgres and Kafka (Ctrl-C stops it).
run: install kafka-if-possible
	PAYDESK_DEVELOPMENT=true $(VENV)/bin/paydesk run

## Every check: lint, types, then all tests on real Postgres and a real Apache Kafka.
test: install system-packages test-broker
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
