# rocketrank — the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch's CPU build is installed before the project, so the project's range is already
# satisfied and pip never pulls the multi-GB CUDA build. On Linux with PyTorch's CPU
# index reachable that is torch==$(TORCH_VERSION)+cpu from it (the +cpu local version
# exists only there); without the index (offline machines with a local wheel folder in
# pip's config, like the one this project is developed on) the plain pin is installed
# from pip's configured sources. The Dockerfiles install the same build.
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_PROBE_TIMEOUT ?= 10
# What `make install` installs: the service and the training CLI.
EXTRAS ?= serve,train
DEMO_DIR ?= demo
DEMO_ROWS ?= 200000
PYTEST_ARGS ?=

.PHONY: install install-test demo test test-fast test-slow lint format clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# constraints.txt pins every dependency to the versions the tests ran with.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	@if [ "$$(uname -s)" = Linux ] && $(BIN)/python -c "import urllib.request as u; \
	      u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=$(TORCH_PROBE_TIMEOUT))" 2>/dev/null; then \
	    echo "torch: CPU build torch==$(TORCH_VERSION)+cpu from $(TORCH_CPU_INDEX)"; \
	    $(BIN)/pip install --quiet -c constraints.txt --extra-index-url $(TORCH_CPU_INDEX) \
	        torch==$(TORCH_VERSION)+cpu; \
	else \
	    echo "torch: $(TORCH_CPU_INDEX) unreachable; torch==$(TORCH_VERSION) from pip's configured sources"; \
	    $(BIN)/pip install --quiet -c constraints.txt torch==$(TORCH_VERSION); \
	fi
	$(BIN)/pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/python -m rocketrank.demo --dir $(DEMO_DIR) --rows $(DEMO_ROWS)

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install-test
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install-test
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
