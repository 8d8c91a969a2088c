# syntax=docker/dockerfile:1
# One image with every binary; a deployment picks one with its command:
#   docker build -t payment-sessions:0.1.0 .
#   docker run --rm payment-sessions:0.1.0 session-intake --help
# Dependencies build in their own layer (cargo-chef), so a source change
# rebuilds only the workspace's crates.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ENV PACKAGES="-p session-intake -p checkout -p payment-gateway -p session-lifecycle -p charge-scheduler -p webhook-dispatch -p payments-api -p psctl"
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json $PACKAGES
COPY . .
RUN cargo build --release --locked $PACKAGES --bins \
 && mkdir /out \
 && cp target/release/session-intake target/release/checkout target/release/payment-gateway \
       target/release/session-lifecycle target/release/charge-scheduler target/release/webhook-dispatch \
       target/release/payments-api target/release/psctl /out/

FROM debian:bookworm-slim AS runtime
# CA roots for amqps, PostgreSQL TLS and https webhooks; nothing else.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ps \
 && useradd --system --uid 10001 --gid ps --no-create-home --shell /usr/sbin/nologin ps
COPY --from=builder /out/ /usr/local/bin/
USER 10001:10001
# Health, readiness and metrics (each service's HEALTH_ADDR); the checkout also serves 8080.
EXPOSE 9101 9102 9103 9104 9105 9106 8080
ENTRYPOINT []
CMD ["session-intake", "--help"]
