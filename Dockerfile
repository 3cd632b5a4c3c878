# Lockstep: a multi-stage build. The builder compiles the release binary with RDMA support (the
# `rdma` feature: a static ibverbs shim built with cmake, bindings generated with libclang);
# the runtime image holds only that binary, the examples (manifests and their data), the C
# runtime it links against, and libibverbs with the RDMA provider libraries (ibverbs-providers,
# which pulls libibverbs1: mlx5, efa, rxe, ...) that the binary loads at run time. Without a
# device `rdma` fails at start naming what is missing and `auto` uses TCP.
#   docker build -t lockstep:latest .
FROM rust:1-bookworm AS builder
RUN apt-get update && apt-get install -y --no-install-recommends cmake libclang-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --features rdma --bin lockstep && strip target/release/lockstep

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libibverbs1 ibverbs-providers \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --create-home lockstep
COPY --from=builder /src/target/release/lockstep /usr/local/bin/lockstep
COPY --from=builder /src/examples /opt/lockstep/examples
USER lockstep
WORKDIR /home/lockstep
ENTRYPOINT ["/usr/local/bin/lockstep"]
