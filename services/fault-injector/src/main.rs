//! The `mabeam-fault-injector` binary: configuration from flags and environment, then
//! [`mabeam_fault_injector::run`] until SIGINT/SIGTERM.

use anyhow::Context as _;
use mabeam_fault_injector::{run, Config, KEYS};
use mabeam_runtime::{config::process_settings, shutdown::on_signal};

const ABOUT: &str = "injects and heals agent faults, partitions and NATS/Redis link faults";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(env) = process_settings("mabeam-fault-injector", ABOUT, KEYS)? else {
        return Ok(());
    };
    let config = Config::from_env(&env).context("invalid configuration")?;
    run(config, on_signal()).await?;
    Ok(())
}
