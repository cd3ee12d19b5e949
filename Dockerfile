# syntax=docker/dockerfile:1
# lanyard's container image: `docker build -t lanyard .`
#
# Runtime base: debian:bookworm-slim, not distroless/cc. lanyard links OpenSSL dynamically
# (josekit signs and verifies with it), and distroless/cc ships no libssl; copying libssl.so.3
# and libcrypto.so.3 out of the builder would pin an architecture-specific path and leave
# OpenSSL outside Debian's security updates. bookworm-slim installs libssl3 from Debian, the
# same release the builder linked against, and runs as the unprivileged uid 65532. The SAML
# connector links libxml2 and libxmlsec1 (with its OpenSSL backend) the same way.

FROM rust:1-bookworm AS builder
WORKDIR /src
# The SAML connector verifies XML signatures with libxmlsec1 (samael's xmlsec feature), whose
# bindings bindgen generates at build time, hence clang. Unpinned for the reason given below.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libxml2-dev libxmlsec1-dev libclang-dev clang pkg-config
# The context is only what the build reads (see .dockerignore): manifests, sources, migrations
# and the embedded default config.
COPY . .
# Cache mounts keep downloaded crates and compiled dependencies between builds on one machine,
# so a source change recompiles lanyard's own crates only. The cache is not part of the layer,
# hence the binary is copied out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,id=lanyard-target,target=/src/target \
    cargo build --release --locked --bin lanyard \
    && cp target/release/lanyard lanyard

FROM debian:bookworm-slim
# Unpinned on purpose: Debian's bookworm archive only carries the latest security build, so a
# pinned version stops resolving as soon as a libssl3 update lands.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 ca-certificates \
       libxml2 libxmlsec1 libxmlsec1-openssl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nonroot
COPY --from=builder /src/lanyard /usr/local/bin/lanyard
USER 65532:65532
WORKDIR /tmp
EXPOSE 5556 5558
ENTRYPOINT ["lanyard"]
CMD ["serve", "--config", "/etc/lanyard/config.yaml"]
