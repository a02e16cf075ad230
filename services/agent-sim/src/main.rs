use anyhow::Context;
use mabeam_agent_sim::{run, Config, KEYS};
use mabeam_runtime::config::{from_process, Invocation};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let invocation = from_process(
        "mabeam-agent-sim",
        "runs a fleet of simulated agents (opinion profiles, Byzantine behaviours) on one NATS connection",
        KEYS,
        std::env::vars(),
        std::env::args().skip(1),
    )?;
    let env = match invocation {
        Invocation::Help(text) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{text}");
            }
            return Ok(());
        }
        Invocation::Run(env) => env,
    };
    let config = Config::from_env(&env).context("invalid configuration")?;
    run(config, mabeam_runtime::shutdown::on_signal()).await?;
    Ok(())
}
