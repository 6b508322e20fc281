# `make demo` and `make test` create .venv from requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test venv
venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) -m tune_cvae.train --save_root runs/demo --num_epoch 4 --F_dim 32 --L_dim 8 --N_dim 4 --D_out_dim 32 \
		--partial 0.2 --kl_reduction mean --kl_anneal_type None --kl_beta_max 0.001 --tfr_sde 1 --tfr_d_step 0.5 \
		--lr 0.003 --lr_scheduler none --infer_z zero

test: $(VENV)/.installed
	$(PY) -m pytest -q tests
