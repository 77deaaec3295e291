# Two commands from a fresh clone: `make run` and `make test`. Both make their own venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config/monitor.yaml

.PHONY: run test test-fast lint demo bench clean audit lock pin-base

$(BIN)/monitor: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/monitor           ## set up and run the daemon on the bundled config
	$(BIN)/monitor run --config $(CONFIG)

test: $(BIN)/monitor          ## set up and run the whole test suite (and lint, and types)
	$(BIN)/ruff check monitor tests bench
	$(BIN)/mypy --strict monitor
	$(BIN)/hadolint Dockerfile
	$(BIN)/pytest -q

# The daemon tests mostly wait (on intervals, on subprocesses), so they run in parallel well
# beyond the number of cores; `make test` stays serial, as CI runs it.
JOBS ?= 4
test-fast: $(BIN)/monitor     ## the inner loop: lint, then every test but the integration ones
	$(BIN)/ruff check monitor tests bench
	$(BIN)/pytest -q -n $(JOBS) -m 'not integration'

demo: $(BIN)/monitor          ## the 2022 outages replayed on loopback
	$(BIN)/monitor demo

audit: $(BIN)/monitor         ## known advisories in the image's pinned dependencies (needs PyPI)
	$(BIN)/pip install --quiet 'pip-audit>=2.7'
	$(BIN)/pip-audit --strict --disable-pip --require-hashes -r requirements.lock

# requirements.lock: every dependency of the image, pinned with hashes, for Python 3.12 (the
# image's). Run after changing dependencies in pyproject.toml; commit the result.
LOCK_PYTHON ?= python3.12
lock:
	$(LOCK_PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet 'pip-tools>=7.4'
	.lock-venv/bin/pip-compile --quiet --upgrade --generate-hashes --strip-extras --allow-unsafe \
	    --all-build-deps --no-emit-index-url --output-file requirements.lock pyproject.toml
	rm -rf .lock-venv

# Pin the Dockerfile's base image to the current digest of its tag (needs docker and the
# registry). Review the diff and commit it; rerun to pick up security fixes of the image.
BASE_TAG ?= python:3.12-slim
pin-base:
	docker pull --quiet $(BASE_TAG)
	digest=$$(docker image inspect --format '{{index .RepoDigests 0}}' $(BASE_TAG) | cut -d@ -f2) \
	    && sed -i -E "s|^ARG PYTHON_IMAGE=.*|ARG PYTHON_IMAGE=$(BASE_TAG)@$$digest|" Dockerfile
	grep '^ARG PYTHON_IMAGE=' Dockerfile

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
