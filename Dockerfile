# herald: a static binary (rustls, bundled SQLite, musl; no OpenSSL) on a distroless image.
#
#   docker build -t herald .
#   docker run -d -v herald-state:/var/lib/herald \
#     -v /etc/herald/herald.toml:/etc/herald/herald.toml:ro -e IMAP_PASSWORD=... herald

FROM rust:1.95-slim-bookworm AS build
# musl-tools: the C compiler for bundled SQLite and ring on the musl target.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin herald \
    && install -D target/x86_64-unknown-linux-musl/release/herald /out/herald \
    && install -d -o 65532 -g 65532 /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/herald /usr/local/bin/herald
COPY --from=build --chown=65532:65532 /out/state /var/lib/herald
VOLUME ["/var/lib/herald"]
USER 65532:65532
ENV HERALD_CONFIG=/etc/herald/herald.toml
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["run"]
