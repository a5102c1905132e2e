//! Thin binary: parse the command line and hand over to the library.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    if kube_standby::cli::main().await {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
