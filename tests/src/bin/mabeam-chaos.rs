//! `make chaos`: the fault matrix on a local stack (processes), written as markdown and JSON,
//! with the run's history checked. Exits 1 when safety or the history check failed.
//!
//! ```text
//! mabeam-chaos [--out DIR] [--history FILE] [--algorithms a,b] [--faults x,y]
//!              [--parallel N] [--no-kill]
//! ```

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use mabeam_tests::{
    chaos::{self, Algorithm, Nemesis, Plan},
    Stack,
};

const USAGE: &str = "usage: mabeam-chaos [--out DIR] [--history FILE] [--algorithms a,b] [--faults x,y] [--parallel N] [--no-kill]";

struct Args {
    plan: Plan,
    out: PathBuf,
    history: PathBuf,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut plan = Plan::full();
    let mut out = PathBuf::from("docs");
    let mut history = PathBuf::from("target/chaos/history.jsonl");
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => out = value()?.into(),
            "--history" => history = value()?.into(),
            "--parallel" => {
                plan.parallel = value()?.parse().map_err(|e| format!("--parallel: {e}"))?;
            }
            "--no-kill" => plan.kill_coordinators = false,
            "--algorithms" => {
                let wanted = value()?;
                plan.algorithms = wanted
                    .split(',')
                    .map(|name| {
                        Algorithm::ALL
                            .into_iter()
                            .find(|a| a.as_str() == name)
                            .ok_or(format!("unknown algorithm {name:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--faults" => {
                let wanted = value()?;
                let all = Nemesis::all();
                plan.nemeses = wanted
                    .split(',')
                    .map(|name| {
                        all.iter()
                            .find(|n| n.name == name)
                            .cloned()
                            .ok_or(format!("unknown fault {name:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args { plan, out, history })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut stack = Stack::start(chaos::stack_options(&args.plan)).await;
    let report = chaos::run(&mut stack, &args.plan, &mut std::io::stderr()).await;
    drop(stack);
    if let Err(e) = report.write(&args.out, &args.history) {
        eprintln!("cannot write the report: {e}");
        return ExitCode::FAILURE;
    }
    let _ = writeln!(std::io::stdout().lock(), "{}", report.markdown());
    eprintln!(
        "wrote {}/fault-matrix.{{md,json}} and {}",
        args.out.display(),
        args.history.display()
    );
    for cell in report.missed() {
        eprintln!(
            "liveness: {} under {} within f ended {} ({})",
            cell.algorithm.as_str(),
            cell.nemesis,
            cell.verdict.as_str(),
            cell.reason.as_deref().unwrap_or("no reason")
        );
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        eprintln!("SAFETY OR HISTORY VIOLATION: {:?}", report.check.violations);
        ExitCode::FAILURE
    }
}
