# mnist-tfx: `make run` and `make test` set everything up on a fresh machine.
# The environment is .venv (Python 3.11), installed with uv from requirements.lock.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Python 3.11 (TFDV 1.16 has no wheels for 3.12): pyenv's, else one on PATH that
# runs (pyenv shims may not), else Debian's. uv never downloads one.
PYTHON_VERSION := 3.11
PYTHON311 ?= $(shell ls -d $$HOME/.pyenv/versions/3.11.*/bin/python3.11 2>/dev/null | tail -n 1 | grep . || (python3.11 -c "import sys" >/dev/null 2>&1 && command -v python3.11) || (test -x /usr/bin/python3.11 && echo /usr/bin/python3.11))
# uv: from PATH, else installed into .tools/ by pip (no other download).
UV_ON_PATH := $(shell command -v uv 2>/dev/null)
UV ?= $(if $(UV_ON_PATH),$(UV_ON_PATH),.tools/bin/uv)
export UV_PYTHON_DOWNLOADS := never
comma := ,
MNIST_DIR ?=
RUN_ARGS ?=
SERVE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help setup run test test-deps serve bench bench-serving bench-warmup bench-scaling soak lock clean

help:
	@echo "make run [MNIST_DIR=dir] [RUN_ARGS='--model basic ...']  set up, then run the pipeline"
	@echo "make test                                               set up, then run the tests (then e2e and serving with MNIST_TFX_SPEEDUPS=0)"
	@echo "make serve [SERVE_ARGS='--host 0.0.0.0']                serve outputs/serving_model over REST :8501 and gRPC :8500"
	@echo "make bench MNIST_DIR=dir                                plain Keras vs the pipeline (BENCH_ARGS='--model cnn', '--tune')"
	@echo "make bench-serving                                      in-process vs REST vs gRPC latency and throughput (after make run)"
	@echo "make bench-warmup                                       a new version's first request, with and without its warm-up (after make run)"
	@echo "make soak                                               16 clients for 60 s while a new and a corrupt version appear (after make run)"
	@echo "make bench-scaling MNIST_DIR=dir                        data components at 10k/35k/70k: in-process, 2 workers, portable"
	@echo "make lock                                               re-resolve requirements.lock"

.tools/bin/uv:
	python3 -m pip install --quiet --target .tools uv

# The environment is (re)built when the lock file or setup.py changes.
$(VENV)/.installed: requirements.lock setup.py | $(UV)
	@test -n "$(PYTHON311)" || { echo "Python $(PYTHON_VERSION) not found (install it, or pass PYTHON311=/path/to/python3.11)"; exit 1; }
	@# An environment of another Python (an older checkout's) is rebuilt.
	@$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != ($(subst .,$(comma),$(PYTHON_VERSION))))' 2>/dev/null || \
	  { rm -rf $(VENV) && $(UV) venv --quiet --python "$(PYTHON311)" $(VENV); }
	@# Bytecode is compiled once here: where PYTHONDONTWRITEBYTECODE is set,
	@# Python would otherwise compile ~7,000 files on every start (~12 s).
	@echo "Installing requirements.lock into $(VENV) (Python $(PYTHON_VERSION), bytecode compiled) ..."
	@$(UV) pip sync --quiet --python $(PY) --compile-bytecode requirements.lock
	@$(UV) pip install --quiet --python $(PY) --no-deps --compile-bytecode -e .
	@echo "$(VENV) is ready"
	@touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/mnist-tfx run $(if $(MNIST_DIR),--data-dir "$(MNIST_DIR)") $(RUN_ARGS)

# The report's browser test needs Debian's Chromium and ChromeDriver.
# Debian packages the tests use: chromium for the report's browser test,
# mariadb-server for ML Metadata in a database server (started by the test).
test-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && \
	  { command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ]; } || { \
	  echo "Installing Debian's chromium, chromium-driver and mariadb-server for the tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver mariadb-server >/dev/null; }

# After the whole suite, the end-to-end and serving tests once more with every
# speed-up off (mnist_tfx/speedups): each library's plain path must still work.
# Not when PYTEST_ARGS picks tests.
SPEEDUPS_OFF_TESTS := tests/test_pipeline_e2e.py tests/test_service.py tests/test_server.py \
  tests/test_model_store.py tests/test_serving_rest.py tests/test_serving_grpc.py \
  tests/test_serving_batching.py tests/test_serving_bad_inputs.py

test: setup test-deps
	$(PY) -m pytest $(PYTEST_ARGS)
	$(if $(PYTEST_ARGS),,MNIST_TFX_SPEEDUPS=0 $(PY) -m pytest -p no:cacheprovider $(SPEEDUPS_OFF_TESTS))

serve: setup
	$(VENV)/bin/mnist-tfx serve $(SERVE_ARGS)

bench: setup
	$(PY) -m bench.pipeline_bench $(if $(MNIST_DIR),--data-dir "$(MNIST_DIR)") $(BENCH_ARGS)

bench-serving: setup
	@# The load generators: wrk (REST) and h2load (gRPC), Debian's C clients.
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk nghttp2-client >/dev/null; }
	$(PY) -m bench.serving_bench

bench-warmup: setup
	$(PY) -m bench.warmup_bench

soak: setup
	$(PY) -m bench.soak

bench-scaling: setup
	$(PY) -m bench.pipeline_bench --scaling $(if $(MNIST_DIR),--data-dir "$(MNIST_DIR)")

lock: | $(UV)
	$(UV) pip compile --python-version $(PYTHON_VERSION) --python-platform x86_64-unknown-linux-gnu requirements.in -o requirements.lock

clean:
	rm -rf $(VENV) .tools outputs .pytest_cache
