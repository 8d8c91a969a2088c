#[tokio::main]
async fn main() -> std::process::ExitCode {
    ps_runtime::service::run_main(&charge_scheduler::MANUAL, charge_scheduler::SchedulerConfig::from_env, |config, stop| async {
        charge_scheduler::start(config, std::sync::Arc::new(charge_scheduler::clock::SystemClock), stop).await.map(|r| r.service)
    })
    .await
}
