use ps_runtime::{service, telemetry, Env};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match payment_gateway::GatewayConfig::from_env(&Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", payment_gateway::SERVICE);
            return ExitCode::from(2);
        }
    };
    let _telemetry = telemetry::init(payment_gateway::SERVICE);
    let stop = service::shutdown_on_signal();
    match payment_gateway::start(config, stop).await {
        Ok(running) => {
            running.service.stopped().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "could not start");
            ExitCode::FAILURE
        }
    }
}
