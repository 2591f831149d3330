# Two commands on a fresh machine:  `make demo` (the whole family on banking77)  and  `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DATA_FOUND := $(or $(YANJIN_DATA),$(wildcard ../shared/data/banking77/train.csv),$(wildcard .yanjin/data/banking77/train.csv))

.PHONY: demo test bench bench-family bench-drift bench-season bench-screens bench-serving rehearse install clean

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
	# drift thresholds of the served member, from its own test texts, before anyone reads a drift check
	$(BIN)/yanjin monitor calibrate banking77-lite
	@echo; $(BIN)/yanjin status
	@echo "\nNext (the command is $(BIN)/yanjin; or: source $(VENV)/bin/activate): the MLflow UI" \
	  "($(BIN)/mlflow ui --backend-store-uri sqlite:///$$PWD/.yanjin/mlflow.db), a model card" \
	  "($(BIN)/yanjin card banking77-pro 1), the server ($(BIN)/yanjin serve, Swagger UI at http://127.0.0.1:3000/docs)"

# real non-banking text for the drift tests' out-of-domain traffic: Debian's fortune-cookie files
OOD_TEXT := /usr/share/games/fortunes
$(OOD_TEXT):
	@command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && (apt-get install -y -qq fortunes >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq fortunes >/dev/null)) || \
	  { echo "the drift tests need Debian's fortunes package: sudo apt-get install fortunes"; exit 1; }

# `kubectl kustomize` renders the manifests without a cluster (Debian's kubectl package)
KUBECTL := /usr/bin/kubectl
$(KUBECTL):
	@command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && (apt-get install -y -qq kubectl >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq kubectl >/dev/null)) || \
	  { echo "the manifest tests need kubectl: sudo apt-get install kubectl"; exit 1; }

# PostgreSQL binaries: the integration test starts a throwaway cluster of its own (Debian's postgresql)
PG_CTL := $(firstword $(wildcard /usr/lib/postgresql/*/bin/pg_ctl) /usr/lib/postgresql/15/bin/pg_ctl)
$(PG_CTL):
	@command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && (apt-get install -y -qq postgresql >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)) || \
	  { echo "the integration test needs PostgreSQL: sudo apt-get install postgresql"; exit 1; }

# a real browser for what users see (the MLflow UI, the Swagger UI): Debian's headless Chromium
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) || \
	  { echo "the browser tests need Chromium: sudo apt-get install chromium"; exit 1; }

test: $(VENV)/.installed $(OOD_TEXT) $(KUBECTL) $(PG_CTL) $(CHROMIUM)
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/v1.py

# every registered full-profile version side by side -> benchmarks/results/family.{json,md,png}
bench-family: $(VENV)/.installed
	$(BIN)/yanjin bench family --state-dir .yanjin-bench

# drift check calibration and its false-alarm / detection figures -> benchmarks/results/drift.json
bench-drift: $(VENV)/.installed $(OOD_TEXT)
	$(BIN)/python benchmarks/drift_calibration.py --state-dir .yanjin-bench

# a season end to end (shift, drift, retraining, shadow verdict, promotion) and the controls' labels to a verdict
bench-season: $(VENV)/.installed
	$(BIN)/python benchmarks/season.py --profile demo --runs 20

# what a reviewer sees (Swagger UI, an MLflow version page, a drift report, select.png) in headless Chromium
bench-screens: $(VENV)/.installed $(OOD_TEXT) $(CHROMIUM)
	$(BIN)/python benchmarks/screens.py

# Lite and V1 served under load beside the pre-reshaping server, a naive baseline and a no-op ceiling
bench-serving: $(VENV)/.installed
	$(BIN)/python benchmarks/serving/load_test.py --state-dir .yanjin-bench

# cluster mode in real containers: Docker engine, images, pipeline steps, serving (as root: dockerd)
DOCKERD := /usr/sbin/dockerd
$(DOCKERD):
	@command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && (apt-get install -y -qq docker.io debootstrap >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq docker.io debootstrap >/dev/null)) || \
	  { echo "the rehearsal needs Docker and debootstrap: sudo apt-get install docker.io debootstrap"; exit 1; }

rehearse: $(VENV)/.installed $(DOCKERD) $(PG_CTL)
	$(BIN)/python infra/rehearse.py

clean:
	rm -rf .yanjin .yanjin-bench
