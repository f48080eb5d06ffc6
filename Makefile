PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned first so that no dependency pulls a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,offline]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The main job: a small study on the offline default (e5-small, synthetic data), end to end.
demo: $(STAMP)
	$(BIN)/polyticket demo

lint: $(STAMP)
	$(BIN)/ruff check polyticket tests benchmarks

clean:
	rm -rf $(VENV)
