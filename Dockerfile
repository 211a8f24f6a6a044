# Build: the release binary. Run: a slim image with the binary and the files it reads at run
# time (assets/ and catalog/; templates and migrations are compiled in).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin faceoff

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app faceoff
WORKDIR /app
COPY --from=build /src/target/release/faceoff /usr/local/bin/faceoff
COPY --from=build /src/assets ./assets
COPY --from=build /src/catalog ./catalog
RUN mkdir -p /app/data && chown faceoff /app/data
USER faceoff
ENV FACEOFF_ADDR=0.0.0.0:3000 \
    FACEOFF_DATA_DIR=/app/data \
    FACEOFF_LOG_FORMAT=json
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/3000"]
CMD ["faceoff", "serve"]
