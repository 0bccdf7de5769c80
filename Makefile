# CityAgent — every target sets up what it needs first (a .venv with the project installed).
# Needs only Python 3.11, git and make; packages come from PyPI.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install up test test-unit test-integration lint bench clean

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

test: $(STAMP)  ## lint, then every test: unit and integration (starts the embedded broker)
	$(BIN)/ruff check .
	$(BIN)/pytest

test-unit: $(STAMP)  ## the tests that need nothing running (seconds)
	$(BIN)/pytest -m "not integration"

test-integration: $(STAMP)  ## the tests that need Kafka
	$(BIN)/pytest -m integration

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .

bench: $(STAMP)  ## readings/s through the detection agent vs raw consume (median of 3)
	$(BIN)/cityagent bench

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
