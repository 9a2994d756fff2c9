# foundry-proxy container image: one static binary in an empty image.
#
#   docker build -t foundry-proxy .                           # compile from source (below)
#   scripts/container-image foundry-proxy                     # or package a binary built on this machine
#
#   docker run --rm -p 127.0.0.1:8080:8080 --env-file .env foundry-proxy              # the proxy
#   docker run --rm -p 127.0.0.1:8080:8080 foundry-proxy demo --listen 0.0.0.0:8080   # the demo
#
# Stages, in the order the classic (non-BuildKit) builder runs them:
#   base      the runtime image without the binary: no shell, no libc, no package manager;
#             a non-root user, the port, the health check, the entrypoint
#   prebuilt  base + a static binary from the build context (--target prebuilt): how
#             scripts/container-image and the tests package a binary built on the host
#   build     compiles the static binary from source in the official Rust image
#   runtime   base + the binary from `build` (the default target)
# The classic (non-BuildKit) builder runs every stage up to the one it builds, so
# `--target prebuilt` never needs the Rust image, and a default build also runs `prebuilt`
# (harmlessly, see below). BuildKit skips the stages the target does not need.

# ---- base -----------------------------------------------------------------------------
FROM scratch AS base

# Outside a container the proxy listens on 127.0.0.1 only, so nothing on the network can use
# its Azure identity. A published port (-p) cannot reach a container's loopback, so the image
# listens on all of the container's interfaces and the boundary moves to the port mapping:
# publish on the host's loopback (-p 127.0.0.1:8080:8080). As a sidecar (Compose
# network_mode: service:…, a Kubernetes pod) set FOUNDRY_PROXY_LISTEN=127.0.0.1:8080: the
# app shares the proxy's loopback and nothing else can reach it.
ENV FOUNDRY_PROXY_LISTEN=0.0.0.0:8080
# Container logs are not terminals: no ANSI colour codes. FOUNDRY_PROXY_LOG_FORMAT=json
# writes one JSON object per line to stdout.
ENV NO_COLOR=1
# The Mozilla CA roots are compiled into the binary, so the image needs no CA bundle. For
# extra CAs (a TLS-inspecting egress proxy), mount a PEM file and set SSL_CERT_FILE.

EXPOSE 8080
# A numeric uid:gid (the "nonroot" ids of distroless images): no /etc/passwd needed, and
# Kubernetes' runAsNonRoot can verify it.
USER 65532:65532

# `foundry-proxy healthcheck` asks /readyz on FOUNDRY_PROXY_LISTEN (0.0.0.0 → 127.0.0.1):
# healthy while the proxy holds a valid Entra ID token. It needs no shell or curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/foundry-proxy", "healthcheck"]

# The binary is PID 1: SIGTERM (docker stop, Kubernetes) stops accepting connections and
# drains in-flight requests for FOUNDRY_PROXY_SHUTDOWN_GRACE seconds (default 30). Give the
# container more than that before SIGKILL (docker stop -t 35, stop_grace_period,
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
# `docker run IMAGE` runs the proxy; `docker run IMAGE demo …`, `… emulate …`, `… check`
# run another command.
ENTRYPOINT ["/usr/local/bin/foundry-proxy"]
CMD ["serve"]

# ---- prebuilt -------------------------------------------------------------------------
# A static binary built on the host, packaged into the same runtime image:
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu
#   docker build --target prebuilt --build-arg BINARY=foundry-proxy -f Dockerfile DIR
# where DIR holds the binary (and nothing big: it is the build context).
# scripts/container-image does both. BINARY must be given. Its default names the Dockerfile
# (which .dockerignore keeps in the context) so that the classic builder's pass through this
# stage during a default build succeeds; that pass is thrown away, the runtime stage never
# uses it.
FROM base AS prebuilt
ARG BINARY=Dockerfile
COPY ${BINARY} /usr/local/bin/foundry-proxy

# ---- build ----------------------------------------------------------------------------
FROM rust:1-bookworm AS build
# release: fat LTO, the smallest binary. container: a faster build, a slightly larger one.
ARG PROFILE=release
WORKDIR /src
# glibc linked in statically: the binary runs in an empty image. Name resolution still
# works there: glibc ≥ 2.34 has its "files" and "dns" lookups built in.
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TERM_COLOR=never

# Dependencies first, in their own layer: the locked dependency graph built against an empty
# library and an empty main. Rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --profile "$PROFILE" --locked --target "$(rustc -vV | sed -n 's/^host: //p')" \
    && rm -rf src

# The real source. COPY keeps the files' modification times, which can be older than the
# placeholder build above: touch them so cargo rebuilds this crate.
COPY src ./src
RUN find src -type f -exec touch {} + \
    && target="$(rustc -vV | sed -n 's/^host: //p')" \
    && cargo build --profile "$PROFILE" --locked --target "$target" --bin foundry-proxy \
    && cp "target/$target/$PROFILE/foundry-proxy" /foundry-proxy \
    && /foundry-proxy --version

# ---- runtime (default) ----------------------------------------------------------------
FROM base AS runtime
COPY --from=build /foundry-proxy /usr/local/bin/foundry-proxy
