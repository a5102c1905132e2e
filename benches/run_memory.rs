//! Resident memory of `kube-standby run` when idle, against a minimal fake API server that
//! serves empty lists and silent watches (no cluster here). Prints VmRSS once ready.
//!
//!   cargo bench --bench run_memory
fn main() {
    #[path = "../tests/support/fake_apiserver.rs"]
    mod fake_apiserver;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let api = fake_apiserver::start().await;
        let run = fake_apiserver::spawn_run(env!("CARGO_BIN_EXE_kube-standby"), &api).await;
        let ready = run.wait_ready().await;
        if !ready {
            println!("run mode never became ready");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        match run.rss_kib() {
            Some(kib) => println!(
                "kube-standby run, idle (caches synced, 0 objects): VmRSS = {:.1} MiB",
                kib as f64 / 1024.0
            ),
            None => println!("could not read VmRSS"),
        }
    });
}
