//! The `mabeamctl` binary: parses the command line and runs it (see the `mabeam_ctl` lib).
//!
//! Exit status: see `mabeamctl --help`. `tally` keeps its documented statuses (0 when the
//! tally ran, 1 on usage or input errors); live commands exit 2 on usage errors.

use std::process::ExitCode;

use clap::Parser as _;
use mabeam_ctl::{exit, run, subcommand_of, Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print on stdout and succeed.
            let failed = e.use_stderr();
            let _ = e.print();
            if !failed {
                return ExitCode::SUCCESS;
            }
            let args: Vec<String> = std::env::args().skip(1).collect();
            let tally = subcommand_of(args.iter().map(String::as_str)) == Some("tally");
            return ExitCode::from(if tally { exit::ERROR } else { exit::USAGE });
        }
    };
    let mut stdout = std::io::stdout().lock();
    match run(&cli, &mut stdout) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            if matches!(cli.command, Command::Tally(_)) {
                eprintln!("mabeamctl: {:#}", anyhow::Error::from(e));
                ExitCode::from(exit::ERROR)
            } else {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    }
}
