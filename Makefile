# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of torch is pinned only where no GPU is present (see constraints.txt).
CONSTRAINTS := $(shell command -v nvidia-smi >/dev/null 2>&1 || echo "-c constraints.txt")

.PHONY: install demo test test-fast lint data clean

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(CONSTRAINTS) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

data:
	bash scripts/get_fashion_mnist.sh

demo: install data
	$(PY) -m hf_vq.cli demo

lint: install
	$(VENV)/bin/ruff check hf_vq tests scripts utils

test: install data lint
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info outputs
