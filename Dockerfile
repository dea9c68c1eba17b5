# syntax=docker/dockerfile:1
# The onboard binary in a small runtime image, with onboard-lab (the fakes and benchmarks) beside
# it for the compose file's fakes. Subcommand as the argument:
#   docker run --rm onboard:local worker
#   docker run --rm --entrypoint onboard-lab onboard:local fake-xendit --listen 0.0.0.0:4010

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build outputs between builds (BuildKit, the default
# builder since Docker 23); the binary is copied out because target/ is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/onboard target/release/onboard-lab /usr/local/bin/

FROM debian:bookworm-slim
# TLS to Xendit and to SMTP servers verifies against the system's CA certificates.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/onboard \
        --shell /usr/sbin/nologin onboard
COPY --from=build /usr/local/bin/onboard /usr/local/bin/onboard-lab /usr/local/bin/
USER 10001:10001
WORKDIR /home/onboard
EXPOSE 8080
ENTRYPOINT ["onboard"]
CMD ["worker"]
