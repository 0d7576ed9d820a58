# Outpost: one image for the master and the edge (the command chooses).
# Build: docker build -t outpost .   (the commit is passed in, as the
# build context has no .git: --build-arg BUILD_COMMIT=$(git rev-parse HEAD))

FROM rust:1.95-bookworm AS build
ARG BUILD_COMMIT=unknown
ENV BUILD_COMMIT=${BUILD_COMMIT}
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin outpost \
    && strip target/release/outpost

FROM debian:bookworm-slim
# ca-certificates: a master or edge talking to a CA-signed peer or
# PostgreSQL over TLS needs the system roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20230311+deb12u1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 outpost \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/outpost --create-home outpost
COPY --from=build /src/target/release/outpost /usr/local/bin/outpost
COPY --from=build /src/modules /usr/local/share/outpost/modules
COPY --from=build /src/config /etc/outpost
ENV OUTPOST_DATA_DIR=/var/lib/outpost \
    OUTPOST_MODULES_DIR=/usr/local/share/outpost/modules \
    OUTPOST_API_ADDR=0.0.0.0:8080 \
    OUTPOST_LINK_ADDR=0.0.0.0:17400
USER 10001:10001
WORKDIR /var/lib/outpost
EXPOSE 8080 17400
ENTRYPOINT ["/usr/local/bin/outpost"]
CMD ["master", "--config", "/etc/outpost/master.toml"]
