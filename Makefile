# Two commands on a fresh machine with Python 3.10+:
#   make demo   set up .venv, run detect-changes on sample_data/, print accuracy
#   make test   set up .venv, run the test suite (with doctests)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench sample clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,plot]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf results
	$(BIN)/detect-changes sample_data/*.tif --out results --format gpkg --format geojson --format kml
	$(BIN)/python -m changedetect.evaluate results sample_data

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/coregistration.py
	$(BIN)/python benchmarks/kernels.py
	$(BIN)/python benchmarks/accuracy_pairs.py
	$(BIN)/python benchmarks/accuracy_sites.py --spacenet7
	$(BIN)/python benchmarks/dating.py --sites 0 1 2 3 4

# regenerate the bundled sample site (deterministic)
sample: $(STAMP)
	rm -rf sample_data/*.tif sample_data/truth.geojson sample_data/misregistration.json
	$(BIN)/python -m changedetect.synthetic sample_data --seed 7

clean:
	rm -rf $(VENV) results .pytest_cache
