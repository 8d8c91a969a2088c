#[tokio::main]
async fn main() -> std::process::ExitCode {
    ps_runtime::service::run_main(&session_intake::MANUAL, session_intake::IntakeConfig::from_env, session_intake::start).await
}
