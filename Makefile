# The two commands of the README:  make run  |  make test   (and make lint, run by make test)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint venv system clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

system:
	./tools/setup-system.sh

# the package (its compiled modules rebuilt when needed) and the test extra, ruff and mypy
# among it; $(BIN)/mypy stamps it done for make lint
INSTALL_TEST = $(BIN)/pip install -q -e ".[test]" && touch $(BIN)/mypy

# set up and run the proxy on the embedded default (udp 127.0.0.1:5060, ./kampx-data/)
run: venv
	$(BIN)/pip install -q -e .
	$(BIN)/kampx run

# set up everything the tests need (Debian packages included), lint, run the suite
test: venv system
	$(INSTALL_TEST)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider

# ruff (lint and format) and mypy over the package; their settings are in pyproject.toml
lint: $(BIN)/mypy
	$(BIN)/ruff check kampx
	$(BIN)/ruff format --check kampx
	$(BIN)/mypy kampx

# installed once, and again when pyproject.toml changed
$(BIN)/mypy: pyproject.toml | $(BIN)/python
	$(INSTALL_TEST)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache kampx/*.so kampx/*/*.so kampx/*.c kampx/*/*.c
