# Lockstep: a multi-stage build. The builder compiles the release binary; the runtime image holds
# only that binary, the examples (manifests and their data) and the C runtime it links against.
#   docker build -t lockstep:latest .
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --bin lockstep && strip target/release/lockstep

FROM debian:bookworm-slim
RUN useradd --uid 10001 --create-home lockstep
COPY --from=builder /src/target/release/lockstep /usr/local/bin/lockstep
COPY --from=builder /src/examples /opt/lockstep/examples
USER lockstep
WORKDIR /home/lockstep
ENTRYPOINT ["/usr/local/bin/lockstep"]
