# Multi-stage build. The build step is the same command CI runs (`cargo build --release --locked`).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchyard

# Slim runtime: glibc and CA certificates (provider TLS is verified against the system store).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/switchyard --create-home switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY config/ /etc/switchyard/
WORKDIR /var/lib/switchyard
USER 10001:10001
ENV SWITCHYARD_CONFIG=/etc/switchyard/switchyard.toml \
    SWITCHYARD_LISTEN=0.0.0.0:8080
EXPOSE 8080
# Probes: GET /health/liveness and GET /health/readiness (503 while draining).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["serve"]
