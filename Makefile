# Two entry points for a fresh machine: `make bench` (the main job) and `make test`.
# Both create or reuse .venv and install the pinned set before doing their work.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA ?= ../shared/data/mp_multifidelity.jsonl.gz
export DGLBACKEND := pytorch

.PHONY: install test chromium-install bench bench-extra bench-replicate bench-strategies quick pretrain clean-cache postgres-install server server-stop

$(STAMP): setup.cfg setup.py requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip" "setuptools<70" wheel
	$(PY) -m pip install --quiet -c requirements.lock -e ".[test]"
	@# The CPU kernels compile once per machine (about 40 s on two cores); without a C++ compiler the model
	@# runs as torch operations.
	$(PY) -c "from cgat_dgl import kernels; kernels.load()" || echo "warning: the CPU kernels did not build; training runs slower"
	touch $(STAMP)

install: $(STAMP)

# The tests start throwaway PostgreSQL clusters (initdb, pg_ctl): install Debian's package once, when
# no initdb is found (as root, else through sudo); a no-op, and instant, once it is there.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
postgres-install:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL (apt-get install postgresql)"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q postgresql; }

# The browser tests (tests/test_browser_*.py) drive Debian's headless Chromium against the MLflow UI:
# installed the same way, once.
chromium-install:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Chromium (apt-get install chromium)"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; }

test: $(STAMP) postgres-install chromium-install
	$(PY) -m pytest

# A local PostgreSQL (data in mlflow/postgres/) and an MLflow tracking server over it; prints the
# tracking URI and the database URLs. `make server-stop` stops both.
server: $(STAMP) postgres-install
	$(PY) -m benchmarks.server

server-stop: $(STAMP)
	$(PY) -m benchmarks.server --stop

BENCH := $(VENV)/bin/cgat-bench
STUDY := volume_to_e_form_lr_wd

# The cpu profile's runs of the paper's experiments, every one trained to a validation plateau and
# the pre-trainings served by the shipped models of pretrained_models/ where their cards match, then
# the report over them.
bench: $(STAMP)
	$(BENCH) run experiments.yaml --profile cpu --suite paper --data $(SHARED_DATA) --no-report
	$(BENCH) report experiments.yaml --profile cpu --data $(SHARED_DATA)

# After `make bench`, in the same store: band gaps on every HSE training material and on open gaps
# only (suite `all_data`), the reference's normalisation (suite `reference`), and the paper's
# lr x weight-decay grid for inter-property transfer, relative to each strategy's default rate, for
# full transfer and no transfer alike (two single-threaded study workers sharing the Optuna
# storage), then the report over everything.
bench-extra: $(STAMP)
	$(BENCH) run experiments.yaml --profile cpu --suite all_data,reference --data $(SHARED_DATA) --no-report
	$(BENCH) tune experiments.yaml --study $(STUDY) --strategy none,full --profile cpu --data $(SHARED_DATA) --no-progress & first=$$!; \
	$(BENCH) tune experiments.yaml --study $(STUDY) --strategy none,full --profile cpu --data $(SHARED_DATA) ; second=$$?; \
	wait $$first && test $$second -eq 0
	$(BENCH) report experiments.yaml --profile cpu --data $(SHARED_DATA)

# Replication of the headline intra-property tasks, after `make bench` in the same store: the same
# transfers from a second pre-trained model per source (pre-training seed 1) and on a second split
# (split seed 1, its own pre-trained models and test set), so that their intervals cover splits,
# pre-trained models, seeds and test materials. Four pre-trainings (about 90 minutes each on one
# thread, two side by side) and their transfers: about 5 hours on 2 cores, resumable at any point.
REPLICATED := gap_hse,e_form_r2scan,e_form_expt
bench-replicate: $(STAMP)
	$(BENCH) run experiments.yaml --profile cpu --only $(REPLICATED) --pretrain-seed 1 --data $(SHARED_DATA) --no-report
	$(BENCH) run experiments.yaml --profile cpu --only $(REPLICATED) --split-seed 1 --data $(SHARED_DATA) --no-report
	$(BENCH) report experiments.yaml --profile cpu --data $(SHARED_DATA)
	$(BENCH) report experiments.yaml --profile cpu --splits 0 --suite paper --data $(SHARED_DATA)
	$(BENCH) report experiments.yaml --profile cpu --splits 1 --suite paper --data $(SHARED_DATA) \
	  --compare-to mlflow/reports/cpu-paper-split-0

# Every pre-trained model of the cpu profile trained anew (resumable: a killed run continues from its
# last.pt), then written to pretrained_models/ with its card. A store that already holds them (from
# the shipped models) skips them: use a fresh store, e.g. MLFLOW_TRACKING_URI=sqlite:///mlflow/pretrain.db.
pretrain: $(STAMP)
	$(BENCH) run experiments.yaml --profile cpu --pretrain-only --retrain-pretrained --data $(SHARED_DATA)
	$(BENCH) pretrained experiments.yaml --profile cpu --export --data $(SHARED_DATA)

# A pipeline check in about 20 minutes (profile quick: 3 pre-training and 10 transfer epochs, capped
# pools); its report says so and states no verdicts.
quick: $(STAMP)
	$(BENCH) run experiments.yaml --profile quick --suite paper --data $(SHARED_DATA)

# Delta learning and multi-fidelity training beside transfer (suite `strategies`), and its report.
bench-strategies: $(STAMP)
	$(BENCH) run experiments.yaml --profile cpu --suite strategies --data $(SHARED_DATA) --no-report
	$(BENCH) report experiments.yaml --profile cpu --suite strategies --data $(SHARED_DATA)

clean-cache:
	rm -rf cache
