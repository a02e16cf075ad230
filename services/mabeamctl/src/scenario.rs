//! `mabeamctl scenario run FILE`: play a scenario of timed faults (TOML or YAML) through
//! the fault-injector's scenario runner.

use std::{io::Write, path::PathBuf};

use mabeam_fault_injector::scenario::{self, Format, Scenario, StepOutcome};

use crate::{
    client::{self, Global},
    error::exit,
    CtlError,
};

#[derive(Debug, clap::Subcommand)]
pub enum ScenarioCommand {
    /// Play a scenario file against the running fault-injector, step by step.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The scenario: a .toml, .yaml or .yml file.
    pub file: PathBuf,
    /// Check the file and print its steps without running them.
    #[arg(long)]
    pub check: bool,
}

/// Reads and checks the file; every problem is a usage error (nothing was injected).
pub fn load(path: &std::path::Path) -> Result<Scenario, CtlError> {
    let format = Format::from_path(path).map_err(|e| CtlError::usage(e.to_string()))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::usage(format!("cannot read {}: {e}", path.display())))?;
    scenario::parse(&text, format).map_err(|e| CtlError::usage(format!("{}: {e}", path.display())))
}

fn step_line(global: &Global, outcome: &StepOutcome) -> String {
    if global.json {
        let value = match &outcome.result {
            Ok(list) => serde_json::json!({
                "at_ms": outcome.at_ms,
                "description": outcome.description,
                "ok": true,
                "active": list.faults,
            }),
            Err(error) => serde_json::json!({
                "at_ms": outcome.at_ms,
                "description": outcome.description,
                "ok": false,
                "error": error,
            }),
        };
        return value.to_string();
    }
    match &outcome.result {
        Ok(list) => format!(
            "+{:>7} ms  {}: ok, {} active fault(s)",
            outcome.at_ms,
            outcome.description,
            list.faults.len()
        ),
        Err(error) => format!(
            "+{:>7} ms  {}: refused: {error}",
            outcome.at_ms, outcome.description
        ),
    }
}

pub async fn run(
    global: &Global,
    command: &ScenarioCommand,
    out: &mut dyn Write,
) -> Result<u8, CtlError> {
    let ScenarioCommand::Run(args) = command;
    let scenario = load(&args.file)?;
    if args.check {
        writeln!(
            out,
            "scenario {:?}: {} step(s), valid",
            scenario.name,
            scenario.steps.len()
        )?;
        for step in &scenario.steps {
            writeln!(out, "+{:>7} ms  {}", step.at_ms, step.action.describe())?;
        }
        return Ok(exit::OK);
    }
    let client = client::connect(global).await?;
    let _ = writeln!(
        std::io::stderr(),
        "running scenario {:?}: {} step(s)",
        scenario.name,
        scenario.steps.len()
    );
    // Lines go out as the steps happen; a write error is kept and reported at the end.
    let mut write_error = None;
    let outcomes = scenario::run(&client, &scenario, global.timeout, |outcome| {
        if write_error.is_none() {
            if let Err(e) =
                writeln!(out, "{}", step_line(global, outcome)).and_then(|()| out.flush())
            {
                write_error = Some(e);
            }
        }
    })
    .await
    .map_err(|e| CtlError::Scenario(e.to_string()))?;
    if let Some(e) = write_error {
        return Err(CtlError::Output(e));
    }
    let refused = outcomes.iter().filter(|o| o.result.is_err()).count();
    if refused > 0 {
        let _ = writeln!(
            std::io::stderr(),
            "error: {refused} of {} step(s) refused by the fault-injector",
            outcomes.len()
        );
        return Ok(exit::ERROR);
    }
    Ok(exit::OK)
}
