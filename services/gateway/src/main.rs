#[tokio::main]
async fn main() -> std::process::ExitCode {
    ps_runtime::service::run_main(&payment_gateway::MANUAL, payment_gateway::GatewayConfig::from_env, |config, stop| async {
        payment_gateway::start(config, stop).await.map(|running| running.service)
    })
    .await
}
