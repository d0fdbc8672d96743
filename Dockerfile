# syntax=docker/dockerfile:1
# Multi-stage: build with the locked dependencies, ship the static-ish binary alone on a
# distroless nonroot base (glibc only; TLS is rustls with the ring provider, no OpenSSL).
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src src
COPY crds crds
COPY testenv testenv
COPY bench bench
# Workspace members (the development token server, the tests' support): needed to load the
# workspace, not built.
COPY devserver devserver
COPY test-support test-support
RUN cargo build --release --locked --bin groupdocs-token-operator -p groupdocs-token-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/groupdocs-token-operator /usr/local/bin/groupdocs-token-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/groupdocs-token-operator"]
CMD ["run"]
