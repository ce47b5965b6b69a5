# Set-up and entry points. Every target is idempotent and reuses one virtual environment;
# llama-cpp-python (which compiles for ~5.5 min) is built once into a wheel cache outside the repo.
PYTHON ?= python3.11
VENV ?= .venv
# llama.cpp compiles for the CPU it is built on (-march=native), so a wheel built on one CPU can
# die of an illegal instruction on another (AVX-512 vs AVX2 machines of one kind): one cache per
# instruction-set flags.
CPU_KEY := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | grep -owE 'avx[0-9a-z_]*|sse[0-9a-z_]*|ssse3|fma|f16c|bmi2|amx[0-9a-z_]*' | sort -u | md5sum | cut -c1-12)
WHEELS ?= $(HOME)/.cache/picospec/wheels/$(CPU_KEY)
LLAMA_CPP_VERSION := 0.3.36
BIN := $(VENV)/bin

.PHONY: setup models demo test test-fast soak proto clean nginx

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		$(BIN)/pip wheel --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELS)
	$(BIN)/pip install --quiet --find-links $(WHEELS) -e '.[dev,hf]'
	touch $@

models: setup
	$(BIN)/picospec models pull

demo: models
	$(BIN)/picospec demo

# tests/test_balancer.py runs clouds behind nginx (Debian's nginx-light: 1.22 on bookworm); under
# `make test` and `make test-fast` a missing nginx fails it instead of skipping it.
nginx:
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		(apt-get update && apt-get install -y --no-install-recommends nginx-light)

# --durations: the slowest tests in every run's log, to see where the suite's time goes.
test: models nginx
	PICOSPEC_REQUIRE_NGINX=1 $(BIN)/python -m pytest -q --durations=25

test-fast: setup nginx
	PICOSPEC_REQUIRE_NGINX=1 $(BIN)/python -m pytest -q -m "not real"

# A 10-minute soak (faults at random under 4 edges) and a 10,000-frame fuzz of a running cloud;
# their figures are in docs/reliability.md.
soak: setup
	PICOSPEC_SOAK_S=600 PICOSPEC_FUZZ_FRAMES=10000 $(BIN)/python -m pytest -q -s tests/test_soak.py tests/test_fuzz.py -k "soak or partition or hostile"

proto: setup
	$(BIN)/python -m grpc_tools.protoc -Ipicospec/wire=picospec/wire --python_out=. --grpc_python_out=. --pyi_out=. picospec/wire/picospec.proto

clean:
	rm -rf $(VENV) .pytest_cache
