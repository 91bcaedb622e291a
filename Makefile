# Two entry points for a fresh machine: `make bench` (the main job) and `make test`.
# Both create or reuse .venv and install the pinned set before doing their work.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA ?= ../shared/data/mp_multifidelity.jsonl.gz
export DGLBACKEND := pytorch

.PHONY: install test bench bench-strategies clean-cache

$(STAMP): setup.cfg setup.py requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip" "setuptools<70" wheel
	$(PY) -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

BENCH := $(VENV)/bin/cgat-bench
STUDY := volume_to_e_form_grid

# The cpu profile's runs of the paper's experiments, then the paper's lr x weight-decay grid for
# inter-property transfer (two single-threaded study workers sharing the Optuna storage), then the
# report over all of them.
bench: $(STAMP)
	$(BENCH) run experiments.yaml --profile cpu --suite paper --data $(SHARED_DATA) --no-report
	$(BENCH) tune experiments.yaml --study $(STUDY) --profile cpu --data $(SHARED_DATA) --no-progress & first=$$!; \
	$(BENCH) tune experiments.yaml --study $(STUDY) --profile cpu --data $(SHARED_DATA) ; second=$$?; \
	wait $$first && test $$second -eq 0
	$(BENCH) report experiments.yaml --profile cpu --data $(SHARED_DATA)

# Delta learning and multi-fidelity training beside transfer (suite `strategies`), and its report.
bench-strategies: $(STAMP)
	$(BENCH) run experiments.yaml --profile cpu --suite strategies --data $(SHARED_DATA) --no-report
	$(BENCH) report experiments.yaml --profile cpu --suite strategies --data $(SHARED_DATA)

clean-cache:
	rm -rf cache
