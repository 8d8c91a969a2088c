# The two commands the README gives: `make run` and `make test`.
CARGO ?= cargo

.PHONY: run test services browser stripe build unit fmt lint bench faults profile validate demo

run: services build
	./scripts/run-fleet.sh

test: services browser stripe build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		echo "cargo-nextest not found; running cargo test one test at a time (cargo install cargo-nextest is faster)"; \
		$(CARGO) test --workspace --no-fail-fast -- --test-threads=1; \
	fi

browser:
	./scripts/ensure-browser.sh

# localstripe, the stand-in Stripe the connector's tests run against.
stripe:
	./scripts/ensure-localstripe.sh

services:
	./scripts/ensure-services.sh

# Integration tests spawn the real service binaries, so build them first.
build:
	$(CARGO) build --workspace --bins

# Pure tests only: no broker, no database.
unit:
	$(CARGO) test -p ps-contract -p ps-runtime

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Throughput figures (release build); BENCH_SCALE=N multiplies the work.
bench: services
	$(CARGO) build --release --workspace --bins
	$(CARGO) bench -p integration-tests --bench fleet

# The three session types against `make run` (in another terminal), as a story.
demo: build
	$(CARGO) run -q -p integration-tests --bin demo

# The deploy manifests, docker-compose.yml and docs/asyncapi.json against their
# schemas and parsers (offline); the image too where Docker runs.
validate:
	scripts/validate.sh

# The fleet benchmark under perf, drawn as docs/bench/flamegraph.svg.
profile:
	scripts/profile.sh

# The fault suite, quick and long scenarios one at a time (the long ones restart
# this machine's RabbitMQ and PostgreSQL), then the table, also in docs/faults.md.
faults: services stripe build
	rm -rf target/faults
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run -p integration-tests --test faults --run-ignored all --test-threads 1 --no-fail-fast; \
	else \
		$(CARGO) test -p integration-tests --test faults -- --include-ignored --test-threads=1; \
	fi; status=$$?; $(CARGO) run -q -p integration-tests --bin faults-report && exit $$status
