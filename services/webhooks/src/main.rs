use ps_runtime::{service, telemetry, Env};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match webhook_dispatch::WebhookConfig::from_env(&Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", webhook_dispatch::SERVICE);
            return ExitCode::from(2);
        }
    };
    let _telemetry = telemetry::init(webhook_dispatch::SERVICE);
    let stop = service::shutdown_on_signal();
    match webhook_dispatch::start(config, stop).await {
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
