# Lockstep: a multi-stage build. The builder compiles the release binary with RDMA support (the
# `rdma` feature: a vendored rdma-core, hence cmake and libclang); the runtime image holds only
# that binary, the examples (manifests and their data), the C runtime it links against and the
# RDMA provider libraries (ibverbs-providers: mlx5, efa, rxe, ...) the binary loads when a
# device is present. Without a device `rdma` fails at start naming why and `auto` uses TCP.
#   docker build -t lockstep:latest .
FROM rust:1-bookworm AS builder
RUN apt-get update && apt-get install -y --no-install-recommends cmake libclang-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --features rdma --bin lockstep && strip target/release/lockstep

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ibverbs-providers \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --create-home lockstep
COPY --from=builder /src/target/release/lockstep /usr/local/bin/lockstep
COPY --from=builder /src/examples /opt/lockstep/examples
USER lockstep
WORKDIR /home/lockstep
ENTRYPOINT ["/usr/local/bin/lockstep"]
