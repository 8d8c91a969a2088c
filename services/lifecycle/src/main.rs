use ps_runtime::{service, telemetry, Env};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match session_lifecycle::LifecycleConfig::from_env(&Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", session_lifecycle::SERVICE);
            return ExitCode::from(2);
        }
    };
    let _telemetry = telemetry::init(session_lifecycle::SERVICE);
    let stop = service::shutdown_on_signal();
    match session_lifecycle::start(config, stop).await {
        Ok(running) => {
            running.stopped().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "could not start");
            ExitCode::FAILURE
        }
    }
}
