# syntax=docker/dockerfile:1
# Multi-stage build of the `paddock` binary (the workspace: the server package at the root and its
# member crates under crates/). The build uses the committed .sqlx/ query data (SQLX_OFFLINE=true),
# the same way CI builds, so no database is needed at build time.

FROM rust:1.95-bookworm AS build
WORKDIR /src
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo .cargo
COPY .sqlx .sqlx
COPY migrations migrations
COPY queries queries
COPY src src
COPY crates crates
RUN cargo build --release --locked --bin paddock

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin paddock
COPY --from=build /src/target/release/paddock /usr/local/bin/paddock
USER paddock
ENV PADDOCK_LISTEN=0.0.0.0:8080 PADDOCK_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["paddock"]
CMD ["serve"]
