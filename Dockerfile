# syntax=docker/dockerfile:1
# EventRelay image: the `eventrelay` binary and CA certificates on Debian slim, run as
# uid 10001. Build from the repository root:
#   docker build -t eventrelay:0.1.0 .
# Pin the toolchain for reproducible builds with --build-arg RUST_VERSION=1.95.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------- builder
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src

# Every path Cargo.toml names must exist (the test target and the workspace's other members,
# loadtest/ and tests/support/, which are not built here), so copy the whole filtered context
# (.dockerignore keeps out target/, .git/ and the deployment files). The build script
# compiles proto/ with protox (no protoc), and migrations/ is embedded in the binary.
COPY . .

# Cache mounts keep the registry, git checkouts and target/ between builds; the binary is
# copied out of the cached target/ within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin eventrelay \
    && install -D -m 0755 target/release/eventrelay /out/eventrelay

# ---------------------------------------------------------------------------- runtime
# Debian slim rather than distroless: it has /bin/sleep for the Kubernetes preStop hook
# (the Helm chart's preStop.mode=exec default), and nothing else is added but CA
# certificates (rustls verifies TLS to Postgres, Redis, webhooks and OTLP against them).
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 eventrelay \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin eventrelay

COPY --from=builder /out/eventrelay /usr/local/bin/eventrelay

# Nothing but /tmp needs to be writable: run with a read-only root filesystem.
USER 10001:10001
WORKDIR /tmp

# 50051: gRPC (and grpc.health.v1); 9000: HTTP /healthz, /readyz, /metrics, websockets.
EXPOSE 50051 9000 9090

# The binary handles SIGTERM itself (readiness off, drain within
# ER_SHUTDOWN_GRACE_SECONDS), so it runs as PID 1 with no init wrapper.
STOPSIGNAL SIGTERM
ENTRYPOINT ["eventrelay"]
CMD ["serve"]
