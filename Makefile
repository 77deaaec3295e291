# Two commands from a fresh clone: `make run` and `make test`. Both make their own venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config/monitor.yaml

.PHONY: run test lint demo bench clean

$(BIN)/monitor: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/monitor           ## set up and run the daemon on the bundled config
	$(BIN)/monitor run --config $(CONFIG)

test: $(BIN)/monitor          ## set up and run the whole test suite (and lint)
	$(BIN)/ruff check monitor tests bench
	$(BIN)/hadolint Dockerfile
	$(BIN)/pytest -q

demo: $(BIN)/monitor          ## the 2022 outages replayed on loopback
	$(BIN)/monitor demo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
