# The documented way to build, run and test flagd-redis-sync. `make` lists the targets.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
DOCKER ?= docker
IMAGE ?= flagd-redis-sync:dev
COMPOSE_FILE := compose/docker-compose.yml
# The binary the integration tests run: built once up front, not inside a test (where the
# build time would count against the test's timeout). Absolute: tests run in their crate's
# directory.
TEST_BIN := $(abspath $(or $(CARGO_TARGET_DIR),target))/debug/flagd-redis-sync

.PHONY: help
help: ## List the targets
	@echo "flagd-redis-sync: make TARGET"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN { FS = ":.*## " } { printf "  %-14s %s\n", $$1, $$2 }'
	@echo
	@echo "Quick start: 'make run' (throw-away Redis + the service), then 'make test'."

.PHONY: build
build: ## Build the release binary (target/release/flagd-redis-sync)
	$(CARGO) build --release --bin flagd-redis-sync

.PHONY: run
run: ## Run the service against a throw-away redis-server seeded with docs/examples/flags.json
	scripts/run-local.sh

.PHONY: test
test: ## Run every test: unit, integration (real redis-server, real binary) and CLI
	scripts/ensure-redis.sh
	scripts/ensure-python-venv.sh
	$(CARGO) build --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "FLAGD_REDIS_SYNC_BIN=$(TEST_BIN) $(CARGO) nextest run --workspace"; \
		FLAGD_REDIS_SYNC_BIN="$(TEST_BIN)" $(CARGO) nextest run --workspace; \
	else \
		echo "cargo-nextest not found (cargo install cargo-nextest --locked): using cargo test"; \
		FLAGD_REDIS_SYNC_BIN="$(TEST_BIN)" $(CARGO) test --workspace; \
	fi

.PHONY: smoke
smoke: ## One end-to-end pass: seed, serve, change a flag, print the push latency
	scripts/ensure-redis.sh
	$(CARGO) run -q -p integration --example smoke

# The benchmark runs the release binary, whatever `make test` built.
BENCH_BIN := $(abspath $(or $(CARGO_TARGET_DIR),target))/release/flagd-redis-sync
BENCH_BUILD := $(CARGO) build --release -p flagd-redis-sync --bin flagd-redis-sync -p integration --example bench

.PHONY: bench
bench: ## Full benchmark (about 3 min, quiet machine): rewrites docs/benchmarks.md and docs/bench/
	scripts/ensure-redis.sh
	$(BENCH_BUILD)
	FLAGD_REDIS_SYNC_BIN="$(BENCH_BIN)" $(CARGO) run -q --release -p integration --example bench

.PHONY: bench-quick
bench-quick: ## Fewer cases and rounds (under 3 min); writes target/bench-quick/ only
	scripts/ensure-redis.sh
	$(BENCH_BUILD)
	FLAGD_REDIS_SYNC_BIN="$(BENCH_BIN)" $(CARGO) run -q --release -p integration --example bench -- \
		--quick --no-doc --out $(abspath $(or $(CARGO_TARGET_DIR),target))/bench-quick

.PHONY: lint
lint: ## cargo fmt --check, clippy with warnings as errors, bash -n on the scripts, cargo deny if installed
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	for f in scripts/*.sh .ci/run; do bash -n "$$f"; done
	@if $(CARGO) deny --version >/dev/null 2>&1; then $(MAKE) --no-print-directory deny; \
	else echo "cargo-deny not installed (cargo install --locked cargo-deny): make deny skipped"; fi

.PHONY: deny
deny: ## cargo deny (deny.toml): licences, banned crates, sources; advisories when the RustSec database can be fetched
	$(CARGO) deny check licenses bans sources
	@if $(CARGO) deny fetch >/dev/null 2>&1; then \
		echo "$(CARGO) deny check advisories"; $(CARGO) deny check advisories; \
	else \
		echo "advisories NOT checked: the RustSec advisory database (GitHub) cannot be fetched from here"; \
	fi

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: compose-check
compose-check: ## Check compose/docker-compose.yml statically (no Docker engine needed)
	@if $(DOCKER) compose version >/dev/null 2>&1; then \
		echo "$(DOCKER) compose -f $(COMPOSE_FILE) config -q"; \
		$(DOCKER) compose -f $(COMPOSE_FILE) config -q; \
	else \
		echo "docker compose plugin not found: checking with scripts/check-compose.py"; \
	fi
	python3 scripts/check-compose.py $(COMPOSE_FILE)

.PHONY: deploy-check
deploy-check: ## Check the Kubernetes manifests (docs/deploy/) and the image HEALTHCHECK; no cluster needed
	$(CARGO) test -q -p integration --test it deploy::

.PHONY: docs
docs: ## Regenerate docs/configuration.md from the command-line definition
	UPDATE_DOCS=1 $(CARGO) test -q -p flagd-redis-sync --lib configuration_reference

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine)
	$(DOCKER) build -f compose/Dockerfile -t $(IMAGE) .

.PHONY: compose-up
compose-up: ## Start redis, a seed, the service and flagd with Docker Compose
	$(DOCKER) compose -f $(COMPOSE_FILE) up --build
