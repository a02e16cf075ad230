//! The `mabeam-fault-injector` binary: configuration from flags and environment, then
//! [`mabeam_fault_injector::run`] until SIGINT/SIGTERM.

use std::io::Write as _;

use anyhow::Context as _;
use mabeam_fault_injector::{Config, KEYS};
use mabeam_runtime::config::{from_process, Invocation};

const ABOUT: &str = "injects and heals agent faults, partitions and NATS/Redis link faults";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let invocation = from_process(
        "mabeam-fault-injector",
        ABOUT,
        KEYS,
        std::env::vars(),
        std::env::args().skip(1),
    )?;
    let env = match invocation {
        Invocation::Help(text) => {
            // Written, not println!ed: `--help | head` must not panic on a closed pipe.
            let _ = writeln!(std::io::stdout(), "{text}");
            return Ok(());
        }
        Invocation::Run(env) => env,
    };
    let config = Config::from_env(&env).context("invalid configuration")?;
    let shutdown = mabeam_runtime::shutdown::on_signal();
    mabeam_fault_injector::run(config, shutdown).await?;
    Ok(())
}
