# The Faceoff image. Build: the release binary, its dependencies in a layer of their own (a
# source change rebuilds only the crate). Run: a slim image with the binary and the files it
# reads at run time (assets/ and catalog/; templates and migrations are compiled in), as an
# unprivileged user with a numeric id, writing only under the data volume /app/data (so the root
# file system can be read-only). Checked by tests/api/deploy.rs (the HEALTHCHECK and CMD lines
# run against a real server) and by hadolint in .ci/run; docs/production.md says how to run it.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first: this layer is rebuilt only when Cargo.toml or Cargo.lock change. The
# stubs stand in for every target the manifest declares.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for bench in ledger jobs pages queue arena; do echo 'fn main() {}' > "benches/$bench.rs"; done \
    && cargo build --release --locked --bin faceoff \
    && rm -rf src benches
COPY . .
# COPY keeps the sources' modification times, which can be older than the stubs': touch the
# crate roots so cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin faceoff

FROM debian:bookworm-slim
# ca-certificates: TLS to Stripe, Black Forest Labs, S3 and a PostgreSQL that asks for it. Not
# pinned: Debian's stable archive keeps only the current version, and the CA bundle should be
# the newest anyway.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 faceoff \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin faceoff \
    && install -d -o 10001 -g 10001 -m 0750 /app/data
WORKDIR /app
COPY --from=build /src/target/release/faceoff /usr/local/bin/faceoff
COPY --from=build /src/assets ./assets
COPY --from=build /src/catalog ./catalog
# The metrics listener (9464) answers on every interface of the container so that Prometheus
# can scrape it over the private network; it is not EXPOSEd: never publish it.
# MIMALLOC_PURGE_DELAY=0: the allocator returns freed memory to the system at once instead of
# after 10 ms (image work frees 12 MiB buffers: bench/run's peak RSS 210 -> 142 MiB, same speed).
ENV FACEOFF_ADDR=0.0.0.0:3000 \
    FACEOFF_METRICS_ADDR=0.0.0.0:9464 \
    FACEOFF_DATA_DIR=/app/data \
    FACEOFF_LOG_FORMAT=json \
    MIMALLOC_PURGE_DELAY=0
# Local media (FACEOFF_STORAGE_URL unset) and other local state: the only place the app writes.
VOLUME ["/app/data"]
USER 10001:10001
EXPOSE 3000
# SIGTERM: finish in-flight requests, give running jobs back, exit 0 (at most 70 s: give the
# container a stop grace period of 80 s, `docker stop -t 80`).
STOPSIGNAL SIGTERM
# `faceoff health` asks /readyz on FACEOFF_ADDR and exits 0 or 1 (the image has no curl, and
# Debian's /bin/sh has no /dev/tcp). The first start migrates and loads the catalog.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 CMD ["faceoff", "health"]
CMD ["faceoff", "serve"]
