# rmm-sensor: `make demo` analyzes a bundled sample, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_TOOLS := tshark tcpdump tcpreplay iproute2 prometheus prometheus-alertmanager systemd
TEST_COMMANDS := tshark tcpdump tcpreplay tcprewrite ip prometheus promtool amtool systemd-analyze

.PHONY: demo test lint typecheck system-deps bench fuzz clean

# The modules setup.py compiles: editing one rebuilds them, so a stale build never shadows it.
COMPILED := $(shell sed -n 's/^ *"\(sensor\/.*\.py\)",$$/\1/p' setup.py)

$(STAMP): pyproject.toml setup.py $(COMPILED)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# a module dropped from the compiled list must not leave its old build behind to shadow it
	find sensor -name '*.so' -delete; rm -f sensor_native__mypyc.*.so
	$(BIN)/pip install --quiet -e '.[dev]'
	@# An editable install leaves the interpreted modules without bytecode, and with
	@# PYTHONDONTWRITEBYTECODE set every start compiles them again (about 40 ms of each run).
	$(BIN)/python -m compileall -q sensor
	touch $@

demo: $(STAMP)
	@# exit status 1 means "unsanctioned session found": that is the demo's point, not a failure
	$(BIN)/rmm-sensor analyze pcaps/demo-mixed.pcap || [ $$? -eq 1 ]

# Debian tools the tests drive (tshark is the independent oracle). Needs root, as CI has.
system-deps:
	@missing=0; for c in $(TEST_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	if [ $$missing -eq 1 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_TOOLS); \
	fi

lint: $(STAMP)
	$(BIN)/ruff check sensor tests bench pcaps
	$(BIN)/ruff format --check sensor tests bench pcaps

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-deps lint typecheck
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	@command -v ndpiReader >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libndpi-bin tshark)
	$(BIN)/python bench/make_capture.py
	$(BIN)/python bench/run.py

# Random and mutated inputs through every parser, the readers and the engine, for about five
# minutes; prints the inputs tried per target (tests/robustness/fuzz.py). Not part of `make test`.
fuzz: $(STAMP)
	$(BIN)/python -m tests.robustness.fuzz --seconds $(or $(FUZZ_SECONDS),300)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
