//! The `mabeam-telemetry` binary: configuration from flags and environment, then
//! [`mabeam_telemetry::run`] until SIGINT/SIGTERM.

// --help is printed on stdout.
#![allow(clippy::print_stdout)]

use anyhow::Context as _;
use mabeam_runtime::config::{from_process, Invocation};
use mabeam_telemetry::{Config, KEYS};

const ABOUT: &str = "event ingest, audit trail (Redis stream mabeam:audit) and aggregate metrics";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let invocation = from_process(
        "mabeam-telemetry",
        ABOUT,
        KEYS,
        std::env::vars(),
        std::env::args().skip(1),
    )?;
    let env = match invocation {
        Invocation::Help(text) => {
            println!("{text}");
            return Ok(());
        }
        Invocation::Run(env) => env,
    };
    let config = Config::from_env(&env).context("invalid configuration")?;
    let shutdown = mabeam_runtime::shutdown::on_signal();
    mabeam_telemetry::run(config, shutdown).await?;
    Ok(())
}
