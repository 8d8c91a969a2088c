#[tokio::main]
async fn main() -> std::process::ExitCode {
    ps_runtime::service::run_main(&checkout::MANUAL, checkout::CheckoutConfig::from_env, |config, stop| async {
        checkout::start(config, stop).await.map(|running| running.service)
    })
    .await
}
