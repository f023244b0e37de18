# One entry point. Every target creates or updates the local virtualenvs by itself, so on a
# fresh machine `make demo` and `make test` are the whole set-up. Two of them, as on the two
# kinds of machine: .venv-edge has only what a Pi installs (the `edge` extra: no TensorFlow),
# .venv everything (training, and psycopg for the PostgreSQL pull and report, too).

PYTHON ?= python3
VENV ?= .venv
EDGE_VENV ?= .venv-edge
PY := $(VENV)/bin/python
EDGE_PY := $(EDGE_VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EDGE_STAMP := $(EDGE_VENV)/.installed-stamp

.PHONY: venv demo test test-edge test-train lint bench soak model model-fast tiny-model clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[edge,train,postgres,dev]'
	touch $(STAMP)

$(EDGE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_PY) -m pip install --quiet --upgrade pip
	$(EDGE_PY) -m pip install --quiet -e '.[edge,dev]'
	touch $(EDGE_STAMP)

venv: $(STAMP) $(EDGE_STAMP)

# The demo runs the service with the shipped model: the edge install alone, as on a Pi.
SHIPPED_MODEL := models/mda231-pc3.tflite
DEMO_MODEL := $(SHIPPED_MODEL)
BENCH_MODEL := $(SHIPPED_MODEL)

demo: $(EDGE_STAMP)
	$(EDGE_PY) -m edge.demo --model $(DEMO_MODEL)

# Lint, then the edge tests where a Pi's packages are all there is (no TensorFlow), then the
# training tests (tests/train/) with everything. CI runs exactly this.
test: lint test-edge test-train

test-edge: $(EDGE_STAMP)
	$(EDGE_PY) -m pytest -q tests --ignore=tests/train

test-train: $(STAMP)
	$(PY) -m pytest -q tests/train

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The tiny model the edge tests use (tests/models/tiny.*), from the project's own training and
# export code; tests/train/test_tiny_model.py says when it is stale.
tiny-model: $(STAMP)
	$(PY) -m train.synthetic_model tests/models/tiny

# All benchmarks, JSON in var/bench/ (640x480 synthetic frames): each shipped model alone at
# one thread and every core, and the service end to end with 20 cells a frame at both (a new
# field every frame, a still field, a stage moving every 50 frames); the accurate default also at
# 100 cells a frame, and with the live view watched by a client at 10 frames a second against none;
# and deploy/pull.sh's no-op and incremental pulls with 50k, 500k and 5M views held (about 20 min).
# The cluster flag's accuracy per culture condition, on frames composed from the shared crops, and
# what a 2-epoch fit of them costs the desktop (peak resident memory, wall and CPU time, each
# backbone in its own process: train/fit_bench.py), when the shared data is present (a fit that
# refuses its int8 export, as a 2-epoch compact fit from scratch may, is reported, not a failure).
FAST_MODEL := models/mda231-pc3-fast.tflite
bench: $(EDGE_STAMP) $(STAMP)
	$(EDGE_PY) -m edge bench model --model $(BENCH_MODEL) --out var/bench/model.json
	$(EDGE_PY) -m edge bench pipeline --model $(BENCH_MODEL) --threads 1 --cells 20 --frames 2000 --out var/bench/pipeline-20-1thread.json
	$(EDGE_PY) -m edge bench pipeline --model $(BENCH_MODEL) --cells 20 --frames 2000 --out var/bench/pipeline-20.json
	$(EDGE_PY) -m edge bench pipeline --model $(BENCH_MODEL) --cells 100 --frames 500 --out var/bench/pipeline-100.json
	$(EDGE_PY) -m edge bench pipeline --model $(BENCH_MODEL) --threads 1 --cells 20 --frames 2000 --field still --out var/bench/pipeline-still-20-1thread.json
	$(EDGE_PY) -m edge bench pipeline --model $(BENCH_MODEL) --threads 1 --cells 20 --frames 2000 --field moving --move-every 50 --out var/bench/pipeline-moving-20-1thread.json
	$(EDGE_PY) -m edge bench live --model $(BENCH_MODEL) --threads 1 --cells 20 --frames 500 --client-hz 10 --rounds 2 --out var/bench/live-20-1thread.json
	$(EDGE_PY) deploy/pull_bench.py --views 50000 500000 5000000 --out var/bench/pull.json
	if [ -d $(MODEL_DATA) ]; then \
	  $(EDGE_PY) -m edge bench clusters --data $(MODEL_DATA) --group-by '(\d+kD\d)' --per-condition 60 --out var/bench/clusters.json; fi
	if [ -d $(MODEL_DATA) ]; then \
	  $(PY) -m train.fit_bench --data $(MODEL_DATA) --epochs 2 --out var/bench/fit.json -- --positive PC3 --group-by '(\d+kD\d)'; fi
	if [ -f $(FAST_MODEL) ]; then \
	  $(EDGE_PY) -m edge bench model --model $(FAST_MODEL) --out var/bench/model-fast.json && \
	  $(EDGE_PY) -m edge bench pipeline --model $(FAST_MODEL) --threads 1 --cells 20 --frames 2000 --out var/bench/pipeline-fast-20-1thread.json && \
	  $(EDGE_PY) -m edge bench pipeline --model $(FAST_MODEL) --cells 20 --frames 2000 --out var/bench/pipeline-fast-20.json && \
	  $(EDGE_PY) -m edge bench pipeline --model $(FAST_MODEL) --threads 1 --cells 20 --frames 2000 --field still --out var/bench/pipeline-fast-still-20-1thread.json && \
	  $(EDGE_PY) -m edge bench pipeline --model $(FAST_MODEL) --threads 1 --cells 20 --frames 2000 --field moving --move-every 50 --out var/bench/pipeline-fast-moving-20-1thread.json; fi

# The soak (tests/soak.py): `metascope run` under a schedule of faults (a corrupt database, kill -9,
# the snapshots folder replaced by a file, a full state disk: root only, a stalled process, the fake
# camera busy at start, stalled mid-run and busy at the restart), then one
# uninterrupted 50,000-frame new-field segment with the fast model at one thread, its resident memory
# sampled; the account (rows lost, faults recovered, frames not stored by design, memory drift) is
# JSON in var/soak/soak.json. About an hour on a 2-core VM. `make test` runs its short form
# (tests/test_soak.py).
soak: $(EDGE_STAMP)
	$(EDGE_PY) tests/soak.py --model $(FAST_MODEL) --long-frames 50000 --threads 1 --out var/soak/soak.json

# Reproduces both shipped models from the shared data set, each with one recipe whose
# cross-validation folds train exactly like its final fit (train/recipe.py):
# models/mda231-pc3       EfficientNet-Lite0 fine-tuned from ImageNet, 96 px: leave-one-
#                         condition-out CV (7 folds), the final fit, the file-level comparison,
#                         int8 export, card, report, and every model's answers on 8 fixed views
#                         of each cell (mda231-pc3.distill.npz), from which `fit --teacher` can
#                         teach a smaller network (README);
# models/mda231-pc3-fast  the same recipe at 64 px (31 M multiply-accumulates a cell, 44 % of the
#                         default's): it scored every held-out condition above the floor below,
#                         where the compact CNN taught by the default did not (40kD1 0.47-0.50).
# About 55 minutes on 2 CPU cores (the default 28, the fast model 27: `make model-fast` alone);
# the cards record the wall time.
# A model that scores any held-out condition below MIN_GROUP_AUC would call a culture like it
# backwards or at random: its fit exits 6 and writes nothing over the shipped one (install.sh
# needs both files), which stays; the other fit still runs, and make model ends with status 6
# naming what was refused.
MODEL_DATA ?= ../shared/data/fayyaz-mda231-pc3
MIN_GROUP_AUC ?= 0.6
# --frames: each fold's model is also scored per tracked cell on its held-out condition (the
# call a rig logs), recorded in the card beside the crop-level figure (about 1 min a fold here).
MODEL_ARGS := --positive PC3 --group-by '(\d+kD\d)' --cv --frames --min-group-auc $(MIN_GROUP_AUC)
REFUSED = { code=$$?; [ $$code -eq 6 ] || exit $$code; refused="$$refused $(1)"; \
  echo "make model: $(1) refused (see $(1).refused.*); the shipped $(1).tflite stays" >&2; }
FIT_DEFAULT = $(PY) -m train fit $(MODEL_DATA) --out models/mda231-pc3 $(MODEL_ARGS) --distill-views 8
FIT_FAST = $(PY) -m train fit $(MODEL_DATA) --out models/mda231-pc3-fast $(MODEL_ARGS) --size 64 --no-leak-check
model: $(STAMP)
	refused=""; \
	$(FIT_DEFAULT) || $(call REFUSED,models/mda231-pc3); \
	$(FIT_FAST) || $(call REFUSED,models/mda231-pc3-fast); \
	if [ -n "$$refused" ]; then echo "make model: refused:$$refused" >&2; exit 6; fi

model-fast: $(STAMP)
	refused=""; $(FIT_FAST) || { $(call REFUSED,models/mda231-pc3-fast); exit 6; }

clean:
	rm -rf $(VENV) $(EDGE_VENV) var .pytest_cache .ruff_cache
