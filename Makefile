# Two entry points for a fresh machine: `make bench` (the main job) and `make test`.
# Both create or reuse .venv and install the pinned set before doing their work.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA ?= ../shared/data/mp_multifidelity.jsonl.gz
export DGLBACKEND := pytorch

.PHONY: install test bench clean-cache

$(STAMP): setup.cfg setup.py requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip" "setuptools<70" wheel
	$(PY) -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(VENV)/bin/cgat-bench run experiments.yaml --profile cpu --data $(SHARED_DATA)

clean-cache:
	rm -rf cache
