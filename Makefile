# Two commands matter: `make run` and `make test`. Both (re)build .venv when it is
# missing or pyproject.toml / the lock changed, then do their job.
#
# Installs come from the lock (requirements/dev.txt: exact versions with hashes, made by
# `make lock` from pyproject.toml). On a Python the lock cannot serve (a newer one whose
# wheels it lacks and whose sdists will not build), the ranges in pyproject.toml are used
# instead, with a warning.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench lint fmt typecheck precompute cache-stats clean venv lock

PIP := $(BIN)/python -m pip install -q --disable-pip-version-check

$(STAMP): pyproject.toml requirements/dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -U pip
	$(PIP) -r requirements/dev.txt || { echo "make: the lock does not install on this Python; using pyproject.toml's ranges"; $(PIP) '.[local,dev]'; }
	$(PIP) --no-deps -e .
	@touch $(STAMP)

# Re-resolve the locks after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/pip-compile -q --strip-extras --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links -o requirements/prod.txt pyproject.toml
	$(BIN)/pip-compile -q --strip-extras --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links --extra local --extra dev -o requirements/dev.txt pyproject.toml

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m devtools

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

precompute: $(STAMP)
	$(BIN)/python -m bot precompute

cache-stats: $(STAMP)
	$(BIN)/python -m bot cache-stats

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
