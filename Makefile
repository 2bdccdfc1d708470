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
SOURCES := $(shell find lsr index service -name '*.py' -o -name '*.json' -o -name '*.html' 2>/dev/null)

.PHONY: demo test lint venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=69" wheel

# torch first: the pinned CPU wheel lies on local disk; any other spec may pull a multi-GB CUDA build.
$(VENV)/.deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q "torch==2.13.0" -e ".[serve,models,dev]" --config-settings editable_mode=strict
	touch $@

# strict editable installs link files one by one: re-link when a source file appears or changes.
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=strict
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(BIN)/pytest tests

lint: $(VENV)/.installed
	$(BIN)/ruff check lsr index service tests scripts

demo: $(VENV)/.installed
	$(BIN)/lsr demo --out $(DEMO_INDEX) --host $(HOST) --port $(PORT)

clean:
	rm -rf $(VENV) build *.egg-info
