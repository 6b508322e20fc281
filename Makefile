# `make demo` and `make test` create .venv from requirements.txt on first use, at the versions in constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo demo-pbt test test-fast bench-quality bench-speed bench-search venv wandb constraints
venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $@

# Weights & Biases for --wandb (optional; the tests install it to test it)
wandb: $(VENV)/.wandb
$(VENV)/.wandb: $(VENV)/.installed requirements-wandb.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-wandb.txt -c constraints.txt
	touch $@

# constraints.txt anew: the newest releases requirements.txt admits, in a scratch venv, frozen (then run make test)
constraints:
	rm -rf .venv-constraints && $(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt \
		-r requirements-wandb.txt
	{ sed -n '1,2p' constraints.txt; .venv-constraints/bin/python -m pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-constraints

# the demo search on the built-in data (8 trials, small model), then the winner retrained as demo.yaml's `retrain`
# says (8 epochs, cosine LR) and its submission
demo: $(VENV)/.installed
	$(PY) run_search.py --space demo.yaml
	$(PY) run_best.py

# Population Based Training on the built-in data (a population of 4, small model, 8 epochs), then the winner's
# learned schedule replayed from scratch and its submission
demo-pbt: $(VENV)/.installed
	$(PY) run_search.py --space demo_pbt.yaml
	$(PY) run_best.py

# the full suite (CI runs this), W&B included
test: $(VENV)/.installed $(VENV)/.wandb
	$(PY) -m pytest -q tests

# the unit tests only, for the edit-test loop: no Ray cluster, no search, no long rollouts
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" tests

# the demo's search and retraining on a dataset of another seed, against the default configuration at equal
# budget and against repeating the first frame (about 30 minutes on 2 CPU cores; see docs/QUALITY.md)
bench-quality: $(VENV)/.installed
	$(PY) -m tune_cvae bench quality

# search strategies raced at equal budgets (trial-epochs), each against its control with the same knowledge, over
# 10 paired seeds on two datasets the spaces were not tuned on, at 32 and 128 trial-epochs: about 20 hours on 2 CPU
# cores (ARGS="--seeds 3 --budgets 32": about 2 hours; ARGS="--data DIR" for your own LAB4-layout folder; `python -m
# tune_cvae bench search --help` lists the rows; see docs/QUALITY.md)
bench-search: $(VENV)/.installed
	$(PY) -m tune_cvae bench search $(ARGS)

# training and rollout speed of the project's path against the template's loop re-created, same data and model
# (add ARGS="--device cuda" on a GPU machine: it also measures 1, 2, 4 and 8 trials sharing the GPU)
bench-speed: $(VENV)/.installed
	$(PY) -m tune_cvae bench speed $(ARGS)
