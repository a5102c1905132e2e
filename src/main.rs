//! Thin binary: parse the command line and hand over to the library.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match kube_standby::cli::main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
