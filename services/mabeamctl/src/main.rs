//! The `mabeamctl` binary: parses the command line and runs it (see the `mabeam_ctl` lib).
//!
//! Exit status: 0 when the command ran (for `tally`, whether or not it decided), 1 on usage
//! or input errors, with the reason on stderr.

// stdout is this binary's interface: results are printed there as JSON.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use clap::Parser as _;
use mabeam_ctl::{run, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print on stdout and succeed; usage errors exit with 1
            // (clap's own default would be 2) so every input error has one status.
            let failed = e.use_stderr();
            let _ = e.print();
            return if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match execute(&cli) {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mabeamctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn execute(cli: &Cli) -> anyhow::Result<String> {
    Ok(run(cli)?)
}
