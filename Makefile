# `make demo` and `make test` create .venv from requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast venv
venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# the demo search on the built-in data (8 trials, small model), then the winner's retraining and submission
demo: $(VENV)/.installed
	$(PY) run_search.py --space demo.yaml
	$(PY) run_best.py --epochs 8

# the full suite (CI runs this)
test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# the unit tests only, for the edit-test loop: no Ray cluster, no search, no long rollouts
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" tests
