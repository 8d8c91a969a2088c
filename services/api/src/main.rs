#[tokio::main]
async fn main() -> std::process::ExitCode {
    ps_runtime::service::run_main(&payments_api::MANUAL, payments_api::ApiConfig::from_env, |config, stop| async move {
        payments_api::start(config, stop).await.map(|running| running.service)
    })
    .await
}
