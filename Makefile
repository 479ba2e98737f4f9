# The Makefile's targets are ReachRank's only entry points.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
REPO   ?= model_repo
DATA   ?= demo_data
HOST   ?= 127.0.0.1
PORT   ?= 50051
# Numba compiles each kernel once into this cache; later processes load it in well under a second.
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: venv serve demo test test-fast proto lint format bench bench-kserve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# tritonclient 2.51.0 (the tests' KServe v2 client; its wheel bundles perf_analyzer) declares
	# numpy<2 and protobuf<5 but runs with numpy 2 and protobuf 7, which the tests check: install
	# it without its declared dependencies (python-rapidjson comes from the dev extra).
	$(BIN)/python -m pip install -q --no-deps tritonclient==2.51.0
	touch $(STAMP)

venv: $(STAMP)

# Simulate the embedded marketplace and train the demo models (only when no repository exists).
demo: $(STAMP)
	@if [ -d $(REPO) ]; then echo "$(REPO) exists: keeping it (remove it to rebuild the demo)"; else \
	  $(BIN)/reachrank simulate --out $(DATA) && \
	  $(BIN)/reachrank train --events $(DATA) --format simulator --out $(REPO).tmp && \
	  mv $(REPO).tmp $(REPO); fi

serve: demo
	$(BIN)/reachrank serve --repo $(REPO) --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(REDIS)
	$(BIN)/python -m pytest

# The fast subset for development (under two minutes on two cores): everything but the tests
# marked `slow`, which are those that need the trained test repository (a real training run),
# start server processes or train models themselves. CI runs the whole suite (`make test`).
test-fast: $(STAMP)
	$(REDIS)
	$(BIN)/python -m pytest -m "not slow"

# grpc_tools.protoc over proto/reachrank/{v1,kserve/v2}/*.proto (proto/generate.py says why the
# KServe v2 protocol compiles from its own folder).
proto: $(STAMP)
	$(BIN)/python proto/generate.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# perf_analyzer (tritonclient 2.51.0's wheel; bench.kserve, bench.peers) links Debian's libb64.so.0d.
# Installed with apt-get (as root, or through sudo where there is one) when it is missing.
SUDO := $(if $(filter 0,$(shell id -u)),,$(shell command -v sudo))
LIBB64 = dpkg -s libb64-0d >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libb64-0d)
# The replica tests and bench.replicas run Debian's Redis 7 (redis-server) as the shared store.
REDIS = command -v redis-server >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server)

bench: $(STAMP)
	$(LIBB64)
	$(REDIS)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m bench

# Triton's perf_analyzer over the KServe v2 endpoint (see bench/kserve.py).
bench-kserve: $(STAMP)
	$(LIBB64)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m bench.kserve $(if $(wildcard $(REPO)),--repo $(REPO))

clean:
	rm -rf $(VENV) $(REPO) $(REPO).tmp $(DATA) .numba_cache .pytest_cache
