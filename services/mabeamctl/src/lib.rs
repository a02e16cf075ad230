//! `mabeamctl`, the command-line tool of mabeam.
//!
//! The logic lives here and the binary is a thin shell: it parses [`Cli`], calls [`run`]
//! with stdout, and prints an error on stderr with [`CtlError::exit_code`] as its status.
//!
//! Subcommands are variants of [`Command`], each with its own `clap::Args` struct and module:
//! `tally` works offline; the live ones (`submit`, `agents`, `session`, `fault`, `scenario`,
//! `events`, `demo`) talk to the services over NATS with the connection options in [`Global`].

pub mod agents;
pub mod ballots;
pub mod client;
pub mod demo;
mod error;
pub mod events;
pub mod fault;
pub mod params;
pub mod render;
pub mod scenario;
pub mod submit;
pub mod tally;

use std::io::Write;

use clap::{Parser, Subcommand};

pub use client::Global;
pub use error::{exit, CtlError};
pub use tally::{TallyArgs, TallyReport};

const EXIT_HELP: &str = "\
Exit status:
  0  the command ran (submit --wait: the task was decided)
  1  error: NATS unreachable, no service answered, an error reply, no task stream
  2  usage: invalid flags or input file; nothing was sent
  3  submit --wait: the session ended without a decision
  4  submit --wait: the task failed or was rejected
  5  submit --wait: no result in time
tally keeps its own statuses: 0 when the tally ran, 1 on usage or input errors.

Error replies are printed as `error: <code>: <message>`.";

const TALLY_HELP: &str = "\
Ballot file (JSON):
  {
    \"options\": [\"A\", \"B\"],
    \"agents\": [{\"id\": \"a1\", \"expertise\": 2.0, \"capabilities\": [\"gpu\"]}],
    \"params\": {\"threshold\": 0.75},
    \"ballots\": [{\"agent\": \"a1\", \"vote\": \"A\", \"confidence\": 0.9}]
  }
  options  optional; choice algorithms vote on accept/reject without them
  agents   optional; default: every agent with a ballot, expertise 1
  params   optional; --params, then each --param, override them key by key

Votes: \"A\" choice | [\"B\",\"A\"] ranking | 0.7 number | [0.1,0.2] vector | {\"bid\": 10}
  | {\"offer\": {\"value\": 5, \"min\": 3, \"max\": 8}} | {\"load\": {\"load\": 1, \"capacity\": 4}}
  | null abstain. confidence defaults to 1.

Offline semantics: single-round algorithms are tallied as a session's round closes;
iterative and negotiation take the ballots as their final round; byzantine counts every
choice ballot as a signed commit and decides a value with a quorum of them. adaptive and
pipeline need live agents.

Exit status: 0 when the tally ran (decided or not; see \"status\"), 1 on usage or input errors.

Example:
  mabeamctl tally --algorithm supermajority --ballots ballots.json --param threshold=0.75";

/// mabeamctl: drive and inspect mabeam from the command line.
///
/// Results are printed on stdout (text, or JSON with --json); errors on stderr.
#[derive(Debug, Parser)]
#[command(name = "mabeamctl", version, propagate_version = true, after_long_help = EXIT_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a voting algorithm over a ballot file, offline, and print the result as JSON.
    #[command(after_long_help = TALLY_HELP)]
    Tally(TallyArgs),
    /// Submit a task on mabeam.tasks.submit (JetStream); --wait prints its result.
    #[command(after_long_help = submit::SUBMIT_HELP)]
    Submit(submit::SubmitArgs),
    /// List agents from the registry, by capability or status.
    Agents(agents::AgentsArgs),
    /// Show a task's result, or the live status of its session.
    Session(agents::SessionArgs),
    /// Inject, heal and list faults.
    #[command(subcommand)]
    Fault(fault::FaultCommand),
    /// Run a scenario file of timed faults.
    #[command(subcommand)]
    Scenario(scenario::ScenarioCommand),
    /// Follow the events every service publishes.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Submit one task of every algorithm, with faults injected, and print the outcomes
    /// (what `make run` shows); exit status 1 unless every task is decided.
    Demo(demo::DemoArgs),
}

/// Runs a parsed command line, writing its output to `out`; returns the exit status.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<u8, CtlError> {
    if let Command::Tally(args) = &cli.command {
        let report = tally::run(args)?;
        let text = serde_json::to_string_pretty(&report).map_err(CtlError::Encode)?;
        writeln!(out, "{text}")?;
        return Ok(exit::OK);
    }
    // One thread is plenty for one connection.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Runtime(e.to_string()))?;
    runtime.block_on(run_live(cli, out))
}

async fn run_live(cli: &Cli, out: &mut dyn Write) -> Result<u8, CtlError> {
    let global = &cli.global;
    match &cli.command {
        Command::Tally(_) => Ok(exit::OK),
        Command::Submit(args) => submit::run(global, args, out).await,
        Command::Agents(args) => agents::agents(global, args, out).await,
        Command::Session(args) => agents::session(global, args, out).await,
        Command::Fault(command) => fault::run(global, command, out).await,
        Command::Scenario(command) => scenario::run(global, command, out).await,
        Command::Events(events::EventsCommand::Tail(args)) => events::tail(global, args, out).await,
        Command::Demo(args) => demo::run(global, args, out).await,
    }
}

/// The subcommand a raw command line names (the first word that is neither a flag nor a
/// global option's value), so the binary can pick exit statuses even when parsing fails.
pub fn subcommand_of<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    const GLOBAL_VALUES: [&str; 7] = [
        "--nats-url",
        "--timeout",
        "--nats-creds",
        "--nats-token",
        "--nats-user",
        "--nats-password",
        "--nats-tls-ca",
    ];
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if GLOBAL_VALUES.contains(&arg) {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tally_arguments_parse() {
        let cli = Cli::try_parse_from([
            "mabeamctl",
            "tally",
            "--algorithm",
            "weighted",
            "--ballots",
            "b.json",
            "--param",
            "threshold=0.6",
            "-p",
            "inclusive=true",
            "--params",
            r#"{"basis": "eligible"}"#,
            "--seed",
            "7",
        ])
        .unwrap();
        let Command::Tally(args) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(args.algorithm, "weighted");
        assert_eq!(args.param.len(), 2);
        assert_eq!(args.seed, 7);
        assert!(args.params.is_some());
        let err = Cli::try_parse_from(["mabeamctl", "tally", "-a", "x", "-b", "f", "-p", "oops"])
            .unwrap_err();
        assert!(err.to_string().contains("key=value"), "{err}");
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "mabeamctl",
            "--nats-url",
            "nats://h:1",
            "agents",
            "--json",
            "--timeout",
            "250ms",
        ])
        .unwrap();
        assert_eq!(cli.global.nats_url, "nats://h:1");
        assert!(cli.global.json);
        assert_eq!(cli.global.timeout, std::time::Duration::from_millis(250));
        assert!(matches!(cli.command, Command::Agents(_)));
    }

    #[test]
    fn the_subcommand_is_found_past_global_options() {
        let find = |line: &[&'static str]| subcommand_of(line.to_vec());
        assert_eq!(
            find(&["--nats-url", "nats://x", "tally", "-a"]),
            Some("tally")
        );
        assert_eq!(find(&["--json", "submit"]), Some("submit"));
        assert_eq!(find(&["--timeout", "5s"]), None);
    }
}
