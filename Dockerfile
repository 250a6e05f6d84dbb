# sluice in a container. The build needs only the crate registry (crates.io,
# through cargo) and Debian's; nothing is downloaded at run time: no model, no binary.
#
#   docker build -t sluice .
#   docker run --rm -v "$PWD:/data" sluice init jsonl
#   docker run --rm -v "$PWD:/data" sluice run
#
# The base images are build arguments, for a registry mirror or images made
# locally (docs/deploy.md): --build-arg RUST_IMAGE=... --build-arg RUNTIME_IMAGE=...
# The workspace needs Rust 1.94 or newer (`rust-version` in Cargo.toml).
#
# The MiniLM embedder is not built in (it needs model files on disk): build with
# --build-arg FEATURES=minilm and mount the model directory to use it.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
ARG FEATURES=""
WORKDIR /src
COPY . .
# --locked: exactly the versions of Cargo.lock.
RUN cargo build --release --locked -p sluice --features "${FEATURES}" \
 && cp target/release/sluice /usr/local/bin/sluice

FROM ${RUNTIME_IMAGE}
# CA certificates for HTTPS sources and APIs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /data --shell /usr/sbin/nologin sluice \
 && mkdir -p /data && chown sluice /data
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
USER sluice
WORKDIR /data
# `sluice serve` listens here when started with --bind 0.0.0.0:8000 (needs SLUICE_API_TOKEN).
EXPOSE 8000
ENTRYPOINT ["sluice"]
CMD ["--help"]
