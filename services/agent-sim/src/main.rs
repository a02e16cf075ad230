//! The `mabeam-agent-sim` binary: configuration from flags and environment, then
//! [`mabeam_agent_sim::run`] until SIGINT/SIGTERM.

use anyhow::Context as _;
use mabeam_agent_sim::{run, Config, KEYS};
use mabeam_runtime::{config::process_settings, shutdown::on_signal};

const ABOUT: &str = "runs a fleet of simulated agents (opinion profiles, Byzantine behaviours) on one NATS connection";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(env) = process_settings("mabeam-agent-sim", ABOUT, KEYS)? else {
        return Ok(());
    };
    let config = Config::from_env(&env).context("invalid configuration")?;
    run(config, on_signal()).await?;
    Ok(())
}
