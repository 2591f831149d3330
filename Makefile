# Two commands on a fresh machine:  `make demo` (the whole family on banking77)  and  `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DATA_FOUND := $(or $(YANJIN_DATA),$(wildcard ../shared/data/banking77/train.csv),$(wildcard .yanjin/data/banking77/train.csv))

.PHONY: demo test bench bench-family install clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
ifeq ($(DATA_FOUND),)
	$(BIN)/yanjin data fetch banking77
endif
	$(BIN)/yanjin pipeline run --profile demo --variant all
	$(BIN)/yanjin bench family --output-dir .yanjin/bench --latency-runs 100 --throughput-batches 10

test: $(VENV)/.installed
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/v1.py

# every registered full-profile version side by side -> benchmarks/results/family.{json,md,png}
bench-family: $(VENV)/.installed
	$(BIN)/yanjin bench family --state-dir .yanjin-bench

clean:
	rm -rf .yanjin .yanjin-bench
