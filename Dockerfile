# The operator image; the same binary is the in-pod agent (`kube-standby agent`).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The `dist` profile (Cargo.toml): whole-program LTO, a smaller binary and RSS.
RUN cargo build --profile dist --locked --bin kube-standby

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/dist/kube-standby /usr/local/bin/kube-standby
# No fastbins in glibc's allocator: the webhook's answers are buffers of 1 KiB and more, and
# before each allocation that size glibc first merges every chunk in its fastbins, on the
# request's thread. Without fastbins the webhook's p99 at 1,000 rps read 0.98-1.01x its
# floor's (five runs); with them 1.01-1.05x (six runs). Resident memory at 1,000 HSDs was
# the same (PERFORMANCE.md, "The answer's bytes, and the allocator").
ENV GLIBC_TUNABLES=glibc.malloc.mxfast=0
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kube-standby"]
