# mabeam — every entry point a developer or CI needs. `make help` lists them.

CARGO ?= cargo
# Seeded runs in `make sim`; override: make sim SIM_RUNS=1000000
SIM_RUNS ?= 100000

.PHONY: help test fmt fmt-check lint clippy check-pure-core unit e2e bins deps sim bench bench-build build release run stop

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

test: fmt-check clippy check-pure-core unit bench-build ## everything CI runs: format, lints, purity check, all tests
	@echo "make test: all checks passed"

fmt: ## format the workspace
	$(CARGO) fmt --all

fmt-check: ## fail on unformatted code
	$(CARGO) fmt --all -- --check

lint: fmt-check clippy ## formatting and clippy

clippy: ## clippy on every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The consensus core must stay pure: no async runtime, NATS or Redis client anywhere in its
# dependency tree (normal and build dependencies; dev-dependencies are test-only).
check-pure-core: ## fail if mabeam-consensus depends on tokio, NATS or Redis
	@tree=$$($(CARGO) tree -p mabeam-consensus -e normal,build --prefix none --locked) || { echo "cargo tree failed: cannot check purity"; exit 1; }; \
	deps=$$(echo "$$tree" | awk '{print $$1}' | sort -u); \
	echo "$$deps" | grep -qx 'mabeam-protocol' || { echo "dependency tree looks wrong (no mabeam-protocol): $$deps"; exit 1; }; \
	bad=$$(echo "$$deps" | grep -E '^(tokio|tokio-[a-z-]+|async-nats|nats|redis|deadpool|deadpool-[a-z-]+|mio|async-std|smol)$$' || true); \
	if [ -n "$$bad" ]; then echo "mabeam-consensus must be pure, but depends on: $$bad"; exit 1; fi; \
	echo "mabeam-consensus is pure: $$(echo "$$deps" | wc -l) crates, none doing I/O"

# The end-to-end tests start the service binaries as processes: build them first.
unit: bins ## unit, property, simulation (short campaign), CLI and end-to-end process tests
	$(CARGO) test --workspace --locked

e2e: bins ## only the end-to-end tests over real processes (nats-server, redis-server, services)
	$(CARGO) test --locked -p mabeam-tests

bins: ## build the service binaries the end-to-end tests run
	$(CARGO) build --workspace --bins --locked

deps: ## install nats-server and redis-server (apt-get) if missing
	deploy/install-deps.sh

run: ## the whole stack on loopback with a demo of every algorithm; Ctrl-C or make stop ends it
	deploy/run-local.sh

stop: ## stop what make run started
	deploy/stop-local.sh

sim: ## long seeded simulation campaign (SIM_RUNS runs) with a summary table
	MABEAM_SIM_RUNS=$(SIM_RUNS) $(CARGO) test --release --locked -p mabeam-consensus --test simulation campaign -- --ignored --nocapture

bench: ## criterion benchmarks (tallies, sessions, signatures)
	$(CARGO) bench --locked -p mabeam-benches

bench-build: ## compile the benchmarks so they cannot rot
	$(CARGO) bench --locked -p mabeam-benches --no-run

build: ## debug build of everything
	$(CARGO) build --workspace --locked

release: ## release build of everything
	$(CARGO) build --workspace --release --locked
