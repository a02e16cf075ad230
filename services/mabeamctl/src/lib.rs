//! `mabeamctl`, the command-line tool of mabeam.
//!
//! The logic lives here and the binary is a thin shell: it parses [`Cli`], calls [`run`],
//! prints what it returns on stdout, and an error on stderr with exit status 1.
//!
//! Subcommands are variants of [`Command`], each with its own `clap::Args` struct and module.
//! Today there is `tally` (offline, no services needed); the live ones (`submit`, `agents`,
//! `session`, `fault`, `scenario`, `events`) will add variants and a shared connection
//! option group on [`Cli`].

pub mod ballots;
mod error;
pub mod params;
pub mod tally;

use clap::{Parser, Subcommand};

pub use error::CtlError;
pub use tally::{TallyArgs, TallyReport};

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
/// Results are printed on stdout as JSON; errors on stderr, with exit status 1.
#[derive(Debug, Parser)]
#[command(name = "mabeamctl", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a voting algorithm over a ballot file, offline, and print the result as JSON.
    #[command(after_long_help = TALLY_HELP)]
    Tally(TallyArgs),
}

/// Runs a parsed command line; returns what to print on stdout.
pub fn run(cli: &Cli) -> Result<String, CtlError> {
    match &cli.command {
        Command::Tally(args) => {
            let report = tally::run(args)?;
            serde_json::to_string_pretty(&report).map_err(CtlError::Encode)
        }
    }
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
        let Command::Tally(args) = cli.command;
        assert_eq!(args.algorithm, "weighted");
        assert_eq!(args.param.len(), 2);
        assert_eq!(args.seed, 7);
        assert!(args.params.is_some());
        let err = Cli::try_parse_from(["mabeamctl", "tally", "-a", "x", "-b", "f", "-p", "oops"])
            .unwrap_err();
        assert!(err.to_string().contains("key=value"), "{err}");
    }
}
