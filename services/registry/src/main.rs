//! The `mabeam-registry` binary: configuration from flags and environment, then
//! [`mabeam_registry::run`] until SIGINT/SIGTERM.

// --help is printed on stdout.
#![allow(clippy::print_stdout)]

use anyhow::Context as _;
use mabeam_registry::{Config, KEYS};
use mabeam_runtime::config::{from_process, Invocation};

const ABOUT: &str =
    "agent registry: registration bound to keys, heartbeats, liveness, queries, quarantine";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let invocation = from_process(
        "mabeam-registry",
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
    mabeam_registry::run(config, shutdown).await?;
    Ok(())
}
