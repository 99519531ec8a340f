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

.PHONY: run test install clean-venv

$(STAMP): setup.py requirements.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[make] installing torch==2.13.0 (local CPU build) and TrackStream into $(VENV)"
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt --no-deps --no-build-isolation -e .
	@$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default (synthetic world, tiny models); RUN_DIR=... to choose the run directory.
run: $(STAMP)
	$(PY) -m pipeline --run-dir $(RUN_DIR)

# The whole test suite (CPU, tiny configs).
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
