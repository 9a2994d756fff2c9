# foundry-proxy container image.
#
#   docker build -t foundry-proxy .
#   docker run --rm -p 127.0.0.1:8080:8080 --env-file .env foundry-proxy            # the proxy
#   docker run --rm -p 127.0.0.1:8080:8080 foundry-proxy demo --listen 0.0.0.0:8080 # the demo
#
# Two stages: a full Rust toolchain compiles a release binary, and a distroless runtime
# image holds only that binary, glibc and libgcc. The binary has the Mozilla CA roots
# built in (webpki-roots), so the runtime image needs no CA bundle. Extra CAs can still
# be mounted and named with SSL_CERT_FILE.

# ---- build ----------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: build the locked dependency graph against an
# empty library and an empty main. This layer is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real source. COPY keeps the files' own modification times, which can be older
# than the placeholder build above. Touch them so cargo rebuilds this crate and does not
# reuse the placeholder.
COPY src ./src
RUN find src -type f -exec touch {} + \
    && cargo build --release --locked --bin foundry-proxy \
    && ./target/release/foundry-proxy --version

# ---- runtime --------------------------------------------------------------------------
# distroless "cc": glibc, libgcc and nothing else (no shell, no package manager).
# The ":nonroot" variant runs as uid 65532, so the proxy never runs as root.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /src/target/release/foundry-proxy /usr/local/bin/foundry-proxy

# Outside a container the proxy listens on 127.0.0.1 only, so nothing on the network can
# use its Azure identity. Inside one, 127.0.0.1 is the container's own loopback: a
# published port (-p) could never reach it. So the container listens on all of ITS
# interfaces, and the boundary moves to the port mapping. Publish it on the host's
# loopback (-p 127.0.0.1:8080:8080) unless other machines should reach the proxy.
# This variable beats a `listen` key in a mounted config file. Override it with -e, or
# with --listen, which beats both.
ENV FOUNDRY_PROXY_LISTEN=0.0.0.0:8080
# Container logs are not terminals: no ANSI colour codes. For JSON logs, set
# FOUNDRY_PROXY_LOG_FORMAT=json.
ENV NO_COLOR=1

EXPOSE 8080
USER nonroot:nonroot

# `docker run IMAGE` runs the proxy. `docker run IMAGE demo …` or `… emulate …` runs another command.
ENTRYPOINT ["/usr/local/bin/foundry-proxy"]
CMD ["serve"]
