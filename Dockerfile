# syntax=docker/dockerfile:1.7
# One image for every role: `orderflow <role>` (gateway, iam, catalog, order,
# order-projector, payment, migrate …). Multi-stage: cargo-chef caches the dependency
# build in its own layer, so a source change rebuilds only the workspace crates.
#
# BINARY=source (the default, production) builds the binary here from source. BINARY=prebuilt
# takes one built outside instead, from a build context named `prebuilt` holding `orderflow`
# (`deploy/image/build --prebuilt FILE`: the image test, which cannot spend a from-scratch
# release build inside the image on CI's two cores); the final stage is the same.

ARG RUST_VERSION=1.95
ARG BINARY=source
FROM rust:${RUST_VERSION}-slim-bookworm AS chef
WORKDIR /src
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config \
 && rm -rf /var/lib/apt/lists/* \
 && cargo install cargo-chef --locked --version 0.1.73

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin orderflow
COPY . .
# The commit, for the traces' service.version (the context has no .git).
ARG REVISION=unknown
# The same `cargo build` as the tests build, in release.
RUN ORDERFLOW_REVISION="${REVISION}" cargo build --release --locked --bin orderflow \
 && install -D -m 0755 target/release/orderflow /out/orderflow

FROM scratch AS binary-source
COPY --from=builder /out/orderflow /out/orderflow

FROM scratch AS binary-prebuilt
# `prebuilt` is a build context (--build-context prebuilt=DIR), not a stage.
# hadolint ignore=DL3022
COPY --from=prebuilt orderflow /out/orderflow

# hadolint ignore=DL3006
FROM binary-${BINARY} AS binary

# Distroless with glibc and CA certificates; runs as uid 65532, no shell, no curl.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="orderflow" \
      org.opencontainers.image.description="orderflow: an online shop for Chile as Rust microservices (one binary, one role per subcommand)" \
      org.opencontainers.image.source="https://gitlab.com/orderflow/orderflow" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=binary /out/orderflow /usr/local/bin/orderflow
USER 65532:65532
ENV LOG_FORMAT=json
# gateway REST, gRPC ports of iam/catalog/order/payment/dte, admin ports.
EXPOSE 8080 50051 50052 50053 50054 50055 9101 9102 9103 9104 9105 9106
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/orderflow", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/orderflow"]
CMD ["all"]
