# The operator image; the same binary is the in-pod agent (`kube-standby agent`).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The `dist` profile (Cargo.toml): whole-program LTO, a smaller binary and RSS.
RUN cargo build --profile dist --locked --bin kube-standby

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/dist/kube-standby /usr/local/bin/kube-standby
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kube-standby"]
