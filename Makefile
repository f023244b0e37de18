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

# All benchmarks, JSON in var/bench/ (one inference thread; 640x480 synthetic frames).
bench: $(STAMP) $(BENCH_MODEL)
	$(PY) -m edge bench model --model $(BENCH_MODEL) --out var/bench/model.json
	$(PY) -m edge bench pipeline --model $(BENCH_MODEL) --cells 20 --frames 10000 --out var/bench/pipeline-20.json
	$(PY) -m edge bench pipeline --model $(BENCH_MODEL) --cells 100 --frames 2000 --out var/bench/pipeline-100.json

# Reproduces the shipped default model (models/mda231-pc3.*) from the shared data set: leave-one-
# condition-out cross-validation (7 folds), the final fit on all 7 conditions, the file-level
# comparison, int8 export, card and report. About 10 minutes on 2 CPU cores.
MODEL_DATA ?= ../shared/data/fayyaz-mda231-pc3
model: $(STAMP)
	$(PY) -m train fit $(MODEL_DATA) --out models/mda231-pc3 --positive PC3 --group-by '(\d+kD\d)' --intensity standardised --size 64 --epochs 80 --patience 20 --dropout 0.1 --label-smoothing 0 --cv

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
