# syntax=docker/dockerfile:1
# mailer: handles prospect events (a Signup handler).
#
# Build from the repository root (Docker, or Podman with --format docker so the
# HEALTHCHECK is kept):
#   docker build -f docker/mailer.Dockerfile -t signup/mailer .
# Configuration comes only from SIGNUP__… environment variables and secret
# files (SIGNUP_FILE__…); nothing secret is in the image.

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Only the dependencies: this layer stays cached until a manifest or Cargo.lock changes.
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin mailer \
 && mkdir /out && cp target/release/mailer /out/

FROM ${RUNTIME_IMAGE} AS runtime
# The same first layer in every image, so it is built and stored once.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin signup
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mailer" \
      org.opencontainers.image.description="handles prospect events (a Signup handler)." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.vendor="Signup"
COPY config/ /etc/signup/
COPY --from=builder /out/mailer /usr/local/bin/mailer
ENV SIGNUP_ENV=production \
    SIGNUP_CONFIG_DIR=/etc/signup
USER 10001:10001
EXPOSE 8085
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 CMD ["mailer", "check"]
ENTRYPOINT ["mailer"]
CMD ["run"]
