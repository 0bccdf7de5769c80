# CityAgent — every target sets up what it needs first (a .venv with the project installed).
# Needs only Python 3.11, git and make; packages come from PyPI.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install browser up test test-unit test-integration lint bench clean
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "CityAgent needs Python 3.11; got " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install CityAgent with its test tools

up: $(STAMP)  ## run the whole pipeline: broker, worker, API and simulator (Ctrl-C stops all)
	$(BIN)/cityagent up --simulate

browser:  ## Chromium (and CJK fonts) for the dashboard's browser test, from apt where missing
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-noto-cjk; }

# Two test processes, each module whole in one of them (module fixtures start workers and
# APIs). Under pytest-xdist schemathesis fuzzes only the first API operation (1 of 25,
# measured), so the fuzzing module runs after, in one process.
FUZZ     := tests/integration/test_api_fuzz.py
PARALLEL := -n 2 --dist loadfile --ignore=$(FUZZ)

test: $(STAMP) browser  ## lint, then every test: unit, integration (embedded broker) and the browser
	$(BIN)/ruff check .
	$(BIN)/pytest $(PARALLEL)
	$(BIN)/pytest $(FUZZ)

test-unit: $(STAMP)  ## the tests that need nothing running (seconds)
	$(BIN)/pytest -m "not integration"

test-integration: $(STAMP) browser  ## the tests that need Kafka (and the browser test)
	$(BIN)/pytest $(PARALLEL) -m integration
	$(BIN)/pytest -m integration $(FUZZ)

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .

bench: $(STAMP)  ## readings/s through the detection agent vs raw consume (median of 3)
	$(BIN)/cityagent bench

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
