# Stratus: every target installs what it needs first, so each works on a fresh clone.
#   make dev     the whole app on the embedded local cloud (Ctrl-C stops it)
#   make demo    walk through every execution model (on the running `make dev` cloud, if any)
#                (ARGS=--verbose also streams the function logs)
#   make test    the whole suite (lint, types, unit, functional, infra, e2e, browser, benchmark smoke)
#                (installs the distribution's chromium + chromium-driver with apt when missing)
#   make eval    run the agents' eval suites offline and gate on the baselines
#                (ARGS="--junit eval.xml --report eval.md --json eval.json", ...)
#   make synth   synthesize the CDK app (no AWS credentials, no Docker)
#   make deploy  deploy a stage to AWS: make deploy STAGE=prod
#   make bench   write bench/report.md
#   make soak    chaos soak: 1,000 jobs under kills and model faults (bench/report.md)

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
STAGE ?= dev
UV := .tools/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export UV_LINK_MODE := copy

.PHONY: env browser dev demo test lint typecheck synth deploy diff bench soak lock clean eval

env: $(VENV)/.synced node_modules/.installed

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The console's browser test drives the distribution's Chromium (a browser download of
# its own cannot work offline); installed with apt when missing (as root, or with sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; }

lock: $(UV)
	$(UV) lock
	$(UV) export --frozen --no-default-groups --no-emit-project --no-hashes --no-header --no-annotate \
		--format requirements-txt > layers/requirements.txt

dev: env
	$(PY) -m infra.cli dev

demo: env
	@$(PY) -m infra.cli demo $(ARGS)

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: env
	$(VENV)/bin/mypy

test: lint typecheck browser
	$(VENV)/bin/pytest -n 2 --dist loadgroup --durations=25

eval: env
	$(PY) -m infra.cli eval $(ARGS)

synth: env
	npx cdk synth --quiet -c stage=$(STAGE)

diff: env
	npx cdk diff -c stage=$(STAGE)

deploy: env
	npx cdk deploy -c stage=$(STAGE) --require-approval broadening

bench: env
	$(PY) -m bench.run

soak: env
	$(PY) -m bench.soak

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache
