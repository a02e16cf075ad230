//! `mabeam-scenario`: run the example scenarios against a running stack (`make run` leaves
//! one up) and print each one's checks; `validate` runs them all and writes the validation
//! report.
//!
//! ```sh
//! mabeam-scenario list
//! mabeam-scenario hierarchical            # one scenario, seed sizes
//! mabeam-scenario all --small             # every scenario with small agent counts
//! mabeam-scenario validate --out docs     # every scenario + docs/validation-report.{md,json}
//! ```
//!
//! Connection: `MABEAM_NATS_URL` (and the other `MABEAM_NATS_*` settings). Agents heartbeat
//! every `MABEAM_HEARTBEAT_INTERVAL_MS` (2000; keep it below the registry's suspect TTL). The
//! ensemble scenario asks an LLM when `MABEAM_LLM_URL` is set (see the README's Agents
//! section). Exit status: 0 every check passed, 1 a check failed or a scenario could not run,
//! 2 usage.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::Parser;
use mabeam_examples::{
    fleet::Ctx,
    scenarios::{self, Size},
    validate,
};
use mabeam_runtime::config::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "mabeam-scenario",
    about = "Run mabeam's example scenarios against a running stack"
)]
struct Cli {
    /// A scenario name, `all`, `validate` or `list`.
    what: String,
    /// Small agent counts (the fast subset `make test` runs).
    #[arg(long)]
    small: bool,
    /// With `validate`: where to write validation-report.md and validation-report.json.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    /// Print the reports as JSON instead of text.
    #[arg(long)]
    json: bool,
}

async fn main_inner(cli: Cli, out: &mut impl Write) -> anyhow::Result<bool> {
    if cli.what == "list" {
        for (name, about) in scenarios::NAMES {
            writeln!(out, "{name:<14} {about}")?;
        }
        return Ok(true);
    }
    let size = if cli.small { Size::Small } else { Size::Full };
    let ctx = Ctx::from_env().await?;
    if cli.what == "validate" {
        let v = validate::run(&ctx, size).await?;
        v.write(&cli.out)?;
        if cli.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        } else {
            for r in &v.scenarios {
                write!(out, "{}", r.render())?;
            }
            for c in &v.criteria {
                let status = match c.met {
                    Some(true) => "met",
                    Some(false) => "NOT MET",
                    None => "not measured",
                };
                writeln!(
                    out,
                    "[{status:>12}] {} — {}: {}",
                    c.category, c.requirement, c.measured
                )?;
            }
            writeln!(
                out,
                "readiness score {:.2}; report in {}/validation-report.md",
                v.readiness_score,
                cli.out.display()
            )?;
        }
        return Ok(v.scenarios.iter().all(|r| r.passed));
    }
    let names: Vec<&str> = if cli.what == "all" {
        scenarios::NAMES.iter().map(|(n, _)| *n).collect()
    } else {
        vec![cli.what.as_str()]
    };
    let mut ok = true;
    for name in names {
        let report = scenarios::run(&ctx, name, size).await?;
        if cli.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        } else {
            write!(out, "{}", report.render())?;
        }
        out.flush()?;
        ok &= report.passed;
    }
    Ok(ok)
}

#[tokio::main]
async fn main() -> ExitCode {
    mabeam_runtime::logging::init("warn,mabeam_examples=info", &LogFormat::Text);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let mut stdout = std::io::stdout();
    match main_inner(cli, &mut stdout).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "mabeam-scenario: {e:#}");
            ExitCode::from(1)
        }
    }
}
