//! The `mabeam-telemetry` binary: configuration from flags and environment, then
//! [`mabeam_telemetry::run`] until SIGINT/SIGTERM.

use anyhow::Context as _;
use mabeam_runtime::{config::process_settings, shutdown::on_signal};
use mabeam_telemetry::{run, Config, KEYS};

const ABOUT: &str = "event ingest, audit trail (Redis stream mabeam:audit) and aggregate metrics";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(env) = process_settings("mabeam-telemetry", ABOUT, KEYS)? else {
        return Ok(());
    };
    let config = Config::from_env(&env).context("invalid configuration")?;
    run(config, on_signal()).await?;
    Ok(())
}
