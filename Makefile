# One entry point. Every target creates or updates the local virtualenv by itself, so on a
# fresh machine `make demo` and `make test` are the whole set-up.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test lint bench model clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[edge,train,dev]'
	touch $(STAMP)

venv: $(STAMP)

# The demo runs the service with the shipped model; until models/mda231-pc3.tflite exists it
# trains the tiny synthetic model (seconds, needs tensorflow) and uses that instead.
SHIPPED_MODEL := models/mda231-pc3.tflite
DEMO_MODEL := $(if $(wildcard $(SHIPPED_MODEL)),$(SHIPPED_MODEL),var/demo/model/synthetic-demo.tflite)
BENCH_MODEL := $(DEMO_MODEL)

var/demo/model/synthetic-demo.tflite: | $(STAMP)
	$(PY) -c 'from train.synthetic_model import train_synthetic_model as t; t("var/demo/model/synthetic-demo")'

demo: $(STAMP) $(DEMO_MODEL)
	$(PY) -m edge.demo --model $(DEMO_MODEL)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# All benchmarks, JSON in var/bench/ (640x480 synthetic frames): each shipped model alone at
# one thread and every core, and the service end to end with 20 cells a frame at both; the
# accurate default also at 100 cells a frame.
FAST_MODEL := models/mda231-pc3-fast.tflite
bench: $(STAMP) $(BENCH_MODEL)
	$(PY) -m edge bench model --model $(BENCH_MODEL) --out var/bench/model.json
	$(PY) -m edge bench pipeline --model $(BENCH_MODEL) --threads 1 --cells 20 --frames 2000 --out var/bench/pipeline-20-1thread.json
	$(PY) -m edge bench pipeline --model $(BENCH_MODEL) --cells 20 --frames 2000 --out var/bench/pipeline-20.json
	$(PY) -m edge bench pipeline --model $(BENCH_MODEL) --cells 100 --frames 500 --out var/bench/pipeline-100.json
	if [ -f $(FAST_MODEL) ]; then \
	  $(PY) -m edge bench model --model $(FAST_MODEL) --out var/bench/model-fast.json && \
	  $(PY) -m edge bench pipeline --model $(FAST_MODEL) --threads 1 --cells 20 --frames 2000 --out var/bench/pipeline-fast-20-1thread.json && \
	  $(PY) -m edge bench pipeline --model $(FAST_MODEL) --cells 20 --frames 2000 --out var/bench/pipeline-fast-20.json; fi

# Reproduces both shipped models from the shared data set, each with one recipe whose
# cross-validation folds train exactly like its final fit (train/recipe.py):
# models/mda231-pc3       EfficientNet-Lite0 fine-tuned from ImageNet, 96 px: leave-one-
#                         condition-out CV (7 folds), the final fit, the file-level comparison,
#                         int8 export, card, report, and every model's answers on 8 fixed views
#                         of each cell (mda231-pc3.distill.npz) for the student below;
# models/mda231-pc3-fast  the compact CNN taught by it, each CV fold by the same fold's teacher.
# About 2 hours on 2 CPU cores; the cards record the wall time.
MODEL_DATA ?= ../shared/data/fayyaz-mda231-pc3
MODEL_ARGS := --positive PC3 --group-by '(\d+kD\d)' --cv
model: $(STAMP)
	$(PY) -m train fit $(MODEL_DATA) --out models/mda231-pc3 $(MODEL_ARGS) --distill-views 8
	$(PY) -m train fit $(MODEL_DATA) --out models/mda231-pc3-fast $(MODEL_ARGS) --backbone compact --size 64 \
	  --teacher models/mda231-pc3 --no-leak-check

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
