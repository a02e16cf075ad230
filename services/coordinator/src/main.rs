//! The `mabeam-coordinator` binary: configuration from flags and environment, then
//! [`mabeam_coordinator::run`] until SIGINT/SIGTERM.

use anyhow::Context as _;
use mabeam_coordinator::{run, Config, KEYS};
use mabeam_runtime::{config::process_settings, shutdown::on_signal};

const ABOUT: &str = "runs coordination sessions for tasks published on mabeam.tasks.submit";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(env) = process_settings("mabeam-coordinator", ABOUT, KEYS)? else {
        return Ok(());
    };
    let config = Config::from_env(&env).context("invalid configuration")?;
    run(config, on_signal()).await?;
    Ok(())
}
