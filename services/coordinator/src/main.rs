use anyhow::Context;
use mabeam_coordinator::{run, Config, KEYS};
use mabeam_runtime::config::{from_process, Invocation};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let invocation = from_process(
        "mabeam-coordinator",
        "runs coordination sessions for tasks published on mabeam.tasks.submit",
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
