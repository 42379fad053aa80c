# One entry point per chore. `make run` and `make test` set up everything they need.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install system-deps lint test test-unit test-integration test-e2e run bench soak clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

system-deps:
	bash scripts/system-deps.sh

lint: install
	$(BIN)/ruff check outbox_app handlers tests examples
	$(BIN)/ruff format --check outbox_app handlers tests examples
	$(BIN)/mypy

test: system-deps install lint
	$(BIN)/pytest $(PYTEST_ARGS)

# One layer at a time (each folder of tests/ is a layer; `make test` runs them all).
test-unit: install
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-integration: system-deps install
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

test-e2e: system-deps install
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

run:
	bash scripts/system-deps.sh --build-only
	$(MAKE) install
	$(BIN)/outbox-app dev --demo-rate 50

bench: system-deps install
	$(BIN)/outbox-app bench

soak: system-deps install
	$(BIN)/outbox-app soak

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache outbox.sqlite3* outbox-dev.sqlite3*
