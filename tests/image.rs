//! What the operator image (the `Dockerfile`) promises beyond the binary: the shipped build
//! profile, and glibc's allocator without fastbins (PERFORMANCE.md, "The answer's bytes, and
//! the allocator": with them, each webhook answer's buffer first merged every freed small
//! chunk, and the p99 at 1,000 rps sat above the floor's).

fn dockerfile() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).expect("Dockerfile")
}

/// The instructions of the image's last stage (the one that runs), comments left out.
fn final_stage(text: &str) -> Vec<String> {
    let stages: Vec<&str> = text.split("\nFROM ").collect();
    stages
        .last()
        .expect("a stage")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[test]
fn the_running_image_has_no_glibc_fastbins() {
    let stage = final_stage(&dockerfile());
    let tunables: Vec<&String> = stage
        .iter()
        .filter(|l| l.starts_with("ENV GLIBC_TUNABLES="))
        .collect();
    assert_eq!(tunables.len(), 1, "{stage:?}");
    let value = tunables[0].trim_start_matches("ENV GLIBC_TUNABLES=");
    assert!(
        value.split(':').any(|t| t == "glibc.malloc.mxfast=0"),
        "{value}"
    );
}

#[test]
fn the_image_ships_the_dist_build() {
    let text = dockerfile();
    assert!(text.contains("cargo build --profile dist --locked --bin kube-standby"));
    let stage = final_stage(&text);
    assert!(
        stage
            .iter()
            .any(|l| l.starts_with("COPY --from=build /src/target/dist/kube-standby ")),
        "{stage:?}"
    );
}
