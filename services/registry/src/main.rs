//! The `mabeam-registry` binary: configuration from flags and environment, then
//! [`mabeam_registry::run`] until SIGINT/SIGTERM.

use anyhow::Context as _;
use mabeam_registry::{run, Config, KEYS};
use mabeam_runtime::{config::process_settings, shutdown::on_signal};

const ABOUT: &str =
    "agent registry: registration bound to keys, heartbeats, liveness, queries, quarantine";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(env) = process_settings("mabeam-registry", ABOUT, KEYS)? else {
        return Ok(());
    };
    let config = Config::from_env(&env).context("invalid configuration")?;
    run(config, on_signal()).await?;
    Ok(())
}
