#[tokio::main]
async fn main() -> std::process::ExitCode {
    ps_runtime::service::run_main(&webhook_dispatch::MANUAL, webhook_dispatch::WebhookConfig::from_env, webhook_dispatch::start).await
}
