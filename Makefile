# mabeam — every entry point a developer or CI needs. `make help` lists them.

CARGO ?= cargo
# Seeded runs in `make sim`; override: make sim SIM_RUNS=1000000
SIM_RUNS ?= 100000
# `make load-test` profile: smoke, ramp, spike, soak or stress (DURATION, RATE_SCALE,
# SCENARIOS, THRESHOLDS, COORDINATORS and MABEAM_NATS_URL/MABEAM_REDIS_URL are read too).
PROFILE ?= smoke
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
LOAD_BINS = -p mabeam-registry -p mabeam-coordinator -p mabeam-fault-injector -p mabeam-telemetry -p mabeam-agent-sim -p mabeam-benches

# `make soak` length in minutes (Redis is paused for 2 s every SOAK_FAULT_EVERY_S seconds).
SOAK_MINUTES ?= 30

# `make chaos` extras, e.g. CHAOS_ARGS="--algorithms byzantine --faults equivocate,coalition --no-kill"
CHAOS_ARGS ?=

# Cases per fuzz property in `make fuzz` (`make test` runs 256 each); override: make fuzz FUZZ_CASES=1000000
FUZZ_CASES ?= 100000


# Binaries the images are built from: release for `make images`; `make test` builds its test
# images from the debug binaries it already has.
IMAGE_PROFILE ?= release

.PHONY: help test k8s-validate k8s-manifests fmt fmt-check lint clippy check-pure-core unit e2e bins deps sim fuzz bench bench-build build release run stop images test-images scenario validate load-test load-smoke scale bench-floor chaos soak soak-smoke

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

test: fmt-check clippy check-pure-core unit bench-build k8s-manifests load-smoke soak-smoke ## everything CI runs: format, lints, purity check, all tests, load smoke
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

# The end-to-end tests start the service binaries as processes and as containers: build both.
unit: bins test-images ## unit, property, simulation (short campaign), CLI and full-stack tests on both harnesses
	$(CARGO) test --workspace --locked

e2e: bins test-images ## only the full-stack tests (processes and containers)
	$(CARGO) test --locked -p mabeam-tests

images: ## container images, offline (docker import): services from $(IMAGE_PROFILE) binaries, NATS/Redis/Prometheus from OS packages
	$(CARGO) build --workspace --bins --locked $(if $(filter release,$(IMAGE_PROFILE)),--release,)
	deploy/images.sh --profile $(IMAGE_PROFILE)

# Without a Docker engine the container tests skip (saying why); CI sets MABEAM_REQUIRE_DOCKER=1.
test-images: bins
	@if docker info >/dev/null 2>&1; then deploy/images.sh --profile debug; \
	else echo "no Docker engine reachable: container images not built, container tests will skip"; fi

bins: ## build the service binaries the end-to-end tests run
	$(CARGO) build --workspace --bins --locked

# Kubernetes manifests and monitoring: overlays render and validate (strict schemas, restricted
# pod security), Prometheus configs/rules/rule tests pass, and a real Prometheus scrapes a
# running stack whose metrics back every rule and dashboard query.
k8s-validate: k8s-manifests bins ## render and validate k8s/ overlays, Prometheus rules and the Grafana dashboard against a live stack
	$(CARGO) test --locked -p mabeam-tests --test prometheus_scrape

# The static half of k8s-validate; `make test` runs the live scrape test with the other tests.
k8s-manifests:
	k8s/validate.sh

deps: ## install nats-server and redis-server (apt-get) if missing
	deploy/install-deps.sh

run: ## the whole stack on loopback with a demo of every algorithm; Ctrl-C or make stop ends it
	deploy/run-local.sh

stop: ## stop what make run started
	deploy/stop-local.sh

# Scenarios and validation run against a running stack (make run; MABEAM_NATS_URL elsewhere).
# SMALL=1: the small agent counts `make test` uses.
NAME ?= all
scenario: ## one example scenario against a running stack: make scenario NAME=byzantine [SMALL=1]
	$(CARGO) run --release --locked -q -p mabeam-examples --bin mabeam-scenario -- $(NAME) $(if $(SMALL),--small)

validate: ## every scenario against a running stack; writes docs/validation-report.{md,json}
	$(CARGO) run --release --locked -q -p mabeam-examples --bin mabeam-scenario -- validate --out docs $(if $(SMALL),--small)

# Release binaries: a thousand simulated agents and twelve concurrent sessions per batch.
chaos: ## fault matrix: every agent fault × algorithm, within/beyond f, coordinator kills, history check → docs/fault-matrix.{md,json}
	$(CARGO) build --release --locked --bins $(LOAD_BINS) -p mabeam-tests
	$(TARGET_DIR)/release/mabeam-chaos --out docs --history $(TARGET_DIR)/chaos/history.jsonl $(CHAOS_ARGS)

sim: ## long seeded simulation campaign (SIM_RUNS runs) with a summary table
	MABEAM_SIM_RUNS=$(SIM_RUNS) $(CARGO) test --release --locked -p mabeam-consensus --test simulation campaign -- --ignored --nocapture

# Stable-toolchain fuzzing: the proptest fuzz properties of every decoder (random bytes and
# damaged valid messages through every decoder) and of the scenario-file parser, FUZZ_CASES
# cases each, optimised. The coverage-guided cargo-fuzz target in fuzz/
# needs nightly (`cargo +nightly fuzz run decode_any`).
fuzz: ## fixed-budget fuzzing of every decoder and the scenario parser on stable (FUZZ_CASES per property)
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --locked -p mabeam-protocol --test hostile_input -- never_panic
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --locked -p mabeam-fault-injector --test fuzz_scenarios

bench: ## criterion benchmarks (tallies, sessions, signatures)
	$(CARGO) bench --locked -p mabeam-benches

bench-build: ## compile the benchmarks so they cannot rot
	$(CARGO) bench --locked -p mabeam-benches --no-run

build: ## debug build of everything
	$(CARGO) build --workspace --locked

release: ## release build of everything
	$(CARGO) build --workspace --release --locked

# Load runs use release builds: the figures mean nothing unoptimised.
load-test: ## open-model load run (PROFILE=smoke|ramp|spike|soak|stress); table, target/load-test/<profile>/report.{json,html}
	$(CARGO) build --release --locked --bins $(LOAD_BINS)
	PROFILE=$(PROFILE) $(TARGET_DIR)/release/mabeam-load run

# A few seconds at tiny agent counts on the debug build `make unit` made; only "no errors"
# is held, so the driver cannot rot without slowing CI down.
load-smoke: bins ## a few seconds of the load driver at tiny agent counts, thresholds relaxed to no errors
	$(CARGO) run --locked -q -p mabeam-benches --bin mabeam-load -- run --profile smoke --duration 4 --tiny --errors-only --out $(TARGET_DIR)/load-test/load-smoke

# Endurance under steady load with a periodic infrastructure fault; the verdict is whether any
# sampled series (RSS and fds of every process, NATS pending bytes, Redis used memory) keeps
# growing. Results expire after two minutes so Redis can plateau within the run.
soak: ## steady load for SOAK_MINUTES (30) with Redis paused every minute; fails if RSS, fds, NATS pending or Redis memory grow without bound
	$(CARGO) build --release --locked --bins $(LOAD_BINS)
	$(TARGET_DIR)/release/mabeam-load run --profile soak --duration $$(( $(SOAK_MINUTES) * 60 )) --coordinators 2 --errors-only --thresholds '*.error_rate=0.01' --out $(TARGET_DIR)/load-test/soak

# The soak's code path in `make test`: 20 s at tiny agent counts, one Redis pause, a reading a
# second. It holds the growth verdict and only a loose error bound: at a few sessions a second
# one session caught in the pause is already several percent.
soak-smoke: bins
	SOAK_FAULT_EVERY_S=10 $(CARGO) run --locked -q -p mabeam-benches --bin mabeam-load -- run --profile soak --duration 20 --tiny --errors-only --thresholds '*.error_rate=0.1' --coordinators 2 --sample-every-ms 1000 --out $(TARGET_DIR)/load-test/soak-smoke

scale: ## scale ladder: one session over 10…1000 agents, then 10,000 concurrent sessions (target/load-test/scale)
	$(CARGO) build --release --locked --bins $(LOAD_BINS)
	$(TARGET_DIR)/release/mabeam-load scale

bench-floor: ## raw NATS pub/sub, request/reply, JetStream publish and Redis HSET on this machine (target/load-test/floor)
	$(CARGO) build --release --locked -p mabeam-benches --bin mabeam-load
	$(TARGET_DIR)/release/mabeam-load floor
