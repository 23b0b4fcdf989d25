# townhall: `make run` starts everything; `make test` checks everything.
# Both bootstrap what they need on a fresh clone: a .venv pinned by constraints.txt,
# and (as root, when missing) Debian's ffmpeg and chromium for the end-to-end tests.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (0: one process). A module's tests stay in one
# worker, in order, sharing its module-scoped servers (--dist loadfile). Tests marked
# realtime (audio continuity, pace) then run alone: the other worker's load made them flaky.
TEST_WORKERS ?= 2

.PHONY: run test lint unit bench system-deps lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade 'pip>=24,<27'
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

run: $(STAMP)
	$(BIN)/townhall serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Both passes run; the first failure's code is make's (5, nothing selected, is no failure).
test: $(STAMP) system-deps lint
	@rc=0; \
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 \
		-n $(TEST_WORKERS) --dist loadfile -m "not realtime" $(PYTEST_ARGS) \
		|| { r=$$?; [ $$r -eq 5 ] || rc=$$r; }; \
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=5 \
		-m realtime $(PYTEST_ARGS) || { r=$$?; [ $$r -eq 5 ] || [ $$rc -ne 0 ] || rc=$$r; }; \
	exit $$rc

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

# Re-pin every dependency after changing pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^townhall' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .import_linter_cache
