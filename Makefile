# Two commands on a fresh machine with Python 3.11+:
#   make demo   set up .venv, run detect-changes on sample_data/, print accuracy
#   make test   set up .venv, run the test suite (with doctests)
# Both install the exact versions in constraints.txt (pyproject.toml keeps the ranges), so a
# new release of a dependency cannot change results or turn CI red; `make constraints`
# refreshes the pins from the newest releases the ranges allow.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIN    := constraints.txt

.PHONY: demo test bench sample constraints clean

$(STAMP): pyproject.toml $(PIN)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "make demo / make test need Python 3.11 or newer for the pinned versions in $(PIN) (found " + sys.version.split()[0] + "); set PYTHON=python3.11, or pip install -e . to use the ranges of pyproject.toml")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip -c $(PIN)
	$(BIN)/python -m pip install --quiet -c $(PIN) -e ".[test,plot]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf results
	$(BIN)/detect-changes sample_data/*.tif --out results --format gpkg --format geojson --format kml
	$(BIN)/python -m changedetect.evaluate results sample_data

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/real.py
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/coregistration.py
	$(BIN)/python benchmarks/kernels.py
	$(BIN)/python benchmarks/cpu_paths.py --real
	$(BIN)/python benchmarks/real_inputs.py
	$(BIN)/python benchmarks/accuracy_pairs.py
	$(BIN)/python benchmarks/accuracy_sites.py --spacenet7
	$(BIN)/python benchmarks/dating.py --sites 0 1 2 3 4

# regenerate the bundled sample site (deterministic)
sample: $(STAMP)
	rm -rf sample_data/*.tif sample_data/truth.geojson sample_data/misregistration.json
	$(BIN)/python -m changedetect.synthetic sample_data --seed 7

# refresh constraints.txt: the newest releases that pyproject.toml's ranges allow, installed in
# a throw-away venv and frozen; run `make test` after it and commit both if it passes
constraints:
	rm -rf .venv-pin build
	$(PYTHON) -m venv .venv-pin
	.venv-pin/bin/python -m pip install --quiet --upgrade pip
	.venv-pin/bin/python -m pip install --quiet ".[test,plot]"
	{ echo "# Exact versions that make demo, make test and .ci/run install (pip -c). Refreshed by"; \
	  echo "# make constraints on $$(date -u +%Y-%m-%d) with Python $$(.venv-pin/bin/python -c 'import platform; print(platform.python_version())')."; \
	  .venv-pin/bin/python -m pip freeze --all --exclude changedetect; } > $(PIN).new
	mv $(PIN).new $(PIN)
	rm -rf .venv-pin build

clean:
	rm -rf $(VENV) results .pytest_cache
