# edgeveil: `make demo` runs the main job on the virtual defaults, `make test` the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: all venv demo test lint check-mpy bench-device bench-host bench-verify fuzz-verify clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

demo: venv
	$(BIN)/edgeveil demo

lint: venv
	$(BIN)/ruff check host device tests tools
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

bench-device: venv
	$(BIN)/python tools/bench_device.py

bench-host: venv
	$(BIN)/python tools/bench_host.py

bench-verify: venv
	$(BIN)/python tools/bench_verify.py

# The verifier's fuzz test at 50,000 inputs (make test runs 2,000).
fuzz-verify: venv
	EDGEVEIL_FUZZ_N=50000 $(BIN)/python -m pytest -q tests/host/test_verify_fuzz.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info host/*.egg-info
