# dtmfguard: set-up, checks, demo and benchmarks. CI runs `make test` (see .ci/run).
#
#   make demo    the whole product on this machine, with the default configuration
#   make test    lint, type-check, the test suite, kernels again without JIT, short benchmark
#   make bench   the full benchmarks
#   make lint    ruff and mypy only
#   make venv    .venv with dtmfguard installed in editable mode, with the dev tools
#   make deps    the Debian packages the tests and the demo use

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Touched after a successful install: pip runs again only when the metadata changed.
STAMP := $(VENV)/.installed-stamp

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test bench lint venv deps

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $@

deps:
	tools/install-debian-deps.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy dtmfguard

# pytest exits 5 when it collected no test, which fails the target like any error.
# The kernel pass re-runs the `kernels` tests as plain Python (NUMBA_DISABLE_JIT=1), so
# coverage and tracebacks see the kernel code; it is required once a kernel module exists.
test: lint deps
	$(PY) -m pytest
	@if ls dtmfguard/kernels/[!_]*.py >/dev/null 2>&1; then \
		echo "NUMBA_DISABLE_JIT=1 $(PY) -m pytest -m kernels"; \
		NUMBA_DISABLE_JIT=1 $(PY) -m pytest -m kernels; \
	else \
		echo "no kernel modules yet: skipping the NUMBA_DISABLE_JIT=1 pass"; \
	fi
	@if [ -f bench/__main__.py ]; then \
		echo "$(PY) -m bench --short --check"; \
		$(PY) -m bench --short --check; \
	else \
		echo "bench/__main__.py does not exist yet: skipping the short benchmark"; \
	fi

demo: venv deps
	$(VENV)/bin/dtmfguard demo

bench: venv deps
	$(PY) -m bench
