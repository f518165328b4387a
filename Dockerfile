# The keyledger binary in a small image; used by docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p keyledger-api --bin keyledger

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /data keyledger && mkdir -p /data && chown keyledger /data
COPY --from=build /src/target/release/keyledger /usr/local/bin/keyledger
USER keyledger
WORKDIR /data
ENV KEYLEDGER_LISTEN=0.0.0.0:8080 \
    KEYLEDGER_DATA_DIR=/data \
    DATABASE_URL=sqlite:///data/keyledger.db
EXPOSE 8080
ENTRYPOINT ["keyledger"]
CMD ["serve"]
