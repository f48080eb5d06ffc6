PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned first so that no dependency pulls a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,offline]'
	touch $(STAMP)

# the optional extras the suite also covers (the Ray executor on a local cluster)
RAY_STAMP := $(VENV)/.installed-ray
$(RAY_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,offline,ray]'
	touch $(RAY_STAMP)

setup: $(STAMP)

test: $(RAY_STAMP)
	$(BIN)/python -m pytest -q

# The main job: a small study on the offline default (e5-small, synthetic data), end to end.
demo: $(STAMP)
	$(BIN)/polyticket demo

# Side-by-side ratios (masked/dense step, overlap, mask files, padding, study throughput),
# printed as a table and written as JSON; BENCH_ARGS=--smoke for a seconds-long run.
BENCH_OUT ?= benchmarks/results/bench.json
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --out $(BENCH_OUT) $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check polyticket tests benchmarks

clean:
	rm -rf $(VENV)
