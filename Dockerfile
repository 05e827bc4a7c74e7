# herald: a static binary (rustls, bundled SQLite, musl; no OpenSSL) on an empty image with
# only the CA certificates, a state volume and a non-root user.
#
# From source (the build stage compiles it):
#   docker build -t herald .
# From a binary built outside Docker, pulling no image at all (scripts/container-test.sh):
# a context directory holding `herald` (x86_64-unknown-linux-musl), `ca-certificates.crt` and
# an empty `state/`:
#   docker build --build-arg HERALD_FILES=prebuilt -t herald DIR
#
#   docker run -d -v herald-state:/var/lib/herald \
#     -v /etc/herald/herald.toml:/etc/herald/herald.toml:ro -e IMAP_PASSWORD=... herald
# The HEALTHCHECK runs `herald health` (GET /readyz), so set `[server] listen`.

# Which stage supplies /out: "build" (compile here) or "prebuilt" (take it from the context).
ARG HERALD_FILES=build

FROM rust:1.95-slim-bookworm AS build
# musl-tools: the C compiler for bundled SQLite and ring on the musl target.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin herald \
    && install -D target/x86_64-unknown-linux-musl/release/herald /out/usr/local/bin/herald \
    && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt \
    && install -d -o 65532 -g 65532 /out/var/lib/herald

FROM scratch AS prebuilt
COPY herald /out/usr/local/bin/herald
COPY ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt
COPY --chown=65532:65532 state /out/var/lib/herald

# hadolint ignore=DL3006
FROM ${HERALD_FILES} AS files

FROM scratch
COPY --from=files /out/ /
VOLUME ["/var/lib/herald"]
USER 65532:65532
ENV HERALD_CONFIG=/etc/herald/herald.toml
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/herald", "health"]
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["run"]
