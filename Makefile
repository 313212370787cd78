# The two commands of the README:  make run  |  make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test venv system clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

system:
	./tools/setup-system.sh

# set up and run the proxy on the embedded default (udp 127.0.0.1:5060, ./kampx-data/)
run: venv
	$(BIN)/pip install -q -e .
	$(BIN)/kampx run

# set up everything the tests need (Debian packages included) and run the suite
test: venv system
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info kampx/*.so kampx/*/*.so kampx/*.c kampx/*/*.c
