#[tokio::main]
async fn main() -> std::process::ExitCode {
    ps_runtime::service::run_main(&session_lifecycle::MANUAL, session_lifecycle::LifecycleConfig::from_env, session_lifecycle::start).await
}
