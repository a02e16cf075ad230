//! `mabeam-load`: the load driver (`make load-test`), the scale ladder (`make scale`) and
//! the floor bench (`make bench-floor`). See the README's "Load testing" section.
//!
//! Exit status: 0 when every threshold held, 1 when one was breached (the reason is printed),
//! 2 when the run itself failed (stack did not start, bad arguments).

use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mabeam_benches::load::{
    floor, growth,
    profile::Profile,
    report::{self, Machine, Report},
    run::{self, RunOptions},
    scale, scenario,
    stack::{self, Fleets, StackSpec},
    thresholds,
};
use mabeam_protocol::{fault::FaultHeal, subjects, PROTOCOL_VERSION};

#[derive(Debug, Parser)]
#[command(
    name = "mabeam-load",
    about = "Open-model load driver, scale ladder and floor bench for mabeam"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Drive the scenario mix with a load profile (the default command).
    Run(RunArgs),
    /// One session over 10 … 1000 agents, then many concurrent sessions.
    Scale(ScaleArgs),
    /// Raw NATS and Redis on this machine: the floor every figure is compared with.
    Floor(FloorArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// smoke, ramp, spike, soak or stress.
    #[arg(long, env = "PROFILE", default_value = "smoke")]
    profile: Profile,
    /// Stretch the profile to this many seconds.
    #[arg(long, env = "DURATION")]
    duration: Option<f64>,
    /// Multiplies every scenario's base rate.
    #[arg(long, env = "RATE_SCALE", default_value_t = 1.0)]
    rate_scale: f64,
    /// Comma list of scenarios (default: all; stress: majority-5).
    #[arg(long, env = "SCENARIOS", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// The same mix at a handful of agents (the smoke run in `make test`).
    #[arg(long)]
    tiny: bool,
    /// Thresholds relaxed to "no errors".
    #[arg(long)]
    errors_only: bool,
    /// Threshold overrides: `majority-5.p99_ms=10,*.error_rate=0.01,weighted-200.p99_ms=none`.
    #[arg(long, env = "THRESHOLDS", default_value = "")]
    thresholds: String,
    /// Coordinator replicas of a stack started here.
    #[arg(long, env = "COORDINATORS", default_value_t = 1)]
    coordinators: usize,
    /// Sessions each coordinator of a stack started here runs at once
    /// (`MABEAM_MAX_SESSIONS`; the product default when absent). Bounded, the rest wait in
    /// the task queues, high priority first.
    #[arg(long, env = "MAX_SESSIONS")]
    max_sessions: Option<usize>,
    /// Where report.json and report.html go (default target/load-test/<profile>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Milliseconds between RSS / open-fd readings (default 2000, soak 5000).
    #[arg(long)]
    sample_every_ms: Option<u64>,
    /// Stress: a step fails above this error rate.
    #[arg(long, default_value_t = 0.01)]
    stress_error_rate: f64,
    /// Soak: every this many seconds Redis stops answering for two seconds (SIGSTOP, then
    /// SIGCONT); 0 turns the periodic fault off.
    #[arg(long, env = "SOAK_FAULT_EVERY_S", default_value_t = 60)]
    soak_fault_every_s: u64,
}

#[derive(Debug, Clone, clap::Args)]
struct ScaleArgs {
    /// Agents per rung.
    #[arg(long, value_delimiter = ',', default_values_t = scale::LADDER)]
    agents: Vec<usize>,
    /// Sessions per rung (the median is reported).
    #[arg(long, default_value_t = 5)]
    sessions: usize,
    /// Concurrent sessions (0 skips that part).
    #[arg(long, default_value_t = 10_000)]
    concurrent: usize,
    /// How long each concurrent session stays open (its timeout; its agents never vote).
    #[arg(long, default_value_t = 30_000)]
    hold_ms: u64,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
struct FloorArgs {
    /// Repetitions; the median of each figure is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Multiplies the message counts (0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    #[arg(long)]
    out: Option<PathBuf>,
}

fn out_dir(given: Option<PathBuf>, name: &str) -> PathBuf {
    given.unwrap_or_else(|| {
        let bins = stack::bin_dir();
        bins.parent()
            .map_or_else(|| PathBuf::from("target"), PathBuf::from)
            .join("load-test")
            .join(name)
    })
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Service settings for a stack started here: the product's default heartbeat TTLs (the
/// harness's test defaults are short, and 450 agents heartbeating every 300 ms is load of
/// its own).
fn service_env() -> Vec<(String, String)> {
    [
        ("MABEAM_HEARTBEAT_INTERVAL_MS", "2000"),
        ("MABEAM_SUSPECT_AFTER_MS", "6000"),
        ("MABEAM_FAILED_AFTER_MS", "15000"),
        ("MABEAM_LEASE_MS", "1500"),
        ("MABEAM_RESUME_SCAN_MS", "200"),
        ("MABEAM_DRAIN_TIMEOUT_MS", "5000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn load(args: RunArgs) -> anyhow::Result<bool> {
    let overrides = thresholds::parse(&args.thresholds)?;
    let mut names = args.scenarios.clone();
    if names.is_empty() && args.profile == Profile::Stress {
        names.push("majority-5".into());
    }
    let scenarios = scenario::select(args.tiny, &names)?;
    let shape = args
        .profile
        .shape(args.duration.map(Duration::from_secs_f64));
    let bounds: Vec<thresholds::Bounds> = scenarios
        .iter()
        .map(|s| thresholds::resolve(&s.name, args.errors_only, &overrides))
        .collect();
    let out = out_dir(args.out.clone(), &args.profile.to_string());
    let logs = out.join("logs");
    let external = std::env::var("MABEAM_NATS_URL").is_ok_and(|u| !u.is_empty());
    eprintln!(
        "mabeam-load: profile {}, {:.0} s, {} scenarios, stack {}",
        args.profile,
        shape.total().as_secs_f64(),
        scenarios.len(),
        if external {
            "from MABEAM_NATS_URL"
        } else {
            "started here"
        }
    );
    let mut env = service_env();
    if args.profile == Profile::Soak {
        // Results kept two minutes: Redis can reach its plateau within the run.
        env.push(("MABEAM_RESULT_TTL_S".into(), "120".into()));
    }
    if let Some(n) = args.max_sessions {
        env.push(("MABEAM_MAX_SESSIONS".into(), n.to_string()));
    }
    let target = stack::start(&StackSpec {
        name: format!("load-{}", args.profile),
        coordinators: args.coordinators,
        fault_injector: scenarios.iter().any(|s| s.fault.is_some()),
        env,
    })
    .await?;
    let mut fleets = Fleets::default();
    for s in &scenarios {
        fleets.spawn(&target, s, 2000, &logs)?;
    }
    for s in &scenarios {
        stack::wait_agents(&target, &mut fleets, s, Duration::from_secs(120)).await?;
        stack::inject_fault(&target, s).await?;
    }
    // Fault commands travel on NATS: let them land before the first task.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut watched = target.watched.clone();
    watched.extend(fleets.watched());
    let started_unix_ms = run::unix_ms();
    let soak = args.profile == Profile::Soak;
    let pauses = tokio_util::sync::CancellationToken::new();
    let redis_pid = watched
        .iter()
        .find(|w| w.name == "redis-server")
        .map(|w| w.pid);
    let nemesis = match redis_pid {
        Some(pid) if soak && args.soak_fault_every_s > 0 => Some(tokio::spawn(pause_redis(
            pid,
            Duration::from_secs(args.soak_fault_every_s),
            pauses.clone(),
        ))),
        _ => None,
    };
    let measured = run::run(
        &target,
        watched,
        &RunOptions {
            profile: args.profile,
            shape,
            rate_scale: args.rate_scale,
            scenarios: scenarios.clone(),
            sample_every: Duration::from_millis(args.sample_every_ms.unwrap_or(
                if args.profile == Profile::Soak {
                    5000
                } else {
                    2000
                },
            )),
            stress_p99_ms: bounds.iter().map(|b| b.p99_ms.unwrap_or(1000.0)).collect(),
            stress_error_rate: args.stress_error_rate,
        },
    )
    .await?;
    pauses.cancel();
    let redis_pauses = match nemesis {
        Some(task) => task.await.unwrap_or(0),
        None => 0,
    };
    for s in scenarios.iter().filter(|s| s.fault.is_some()) {
        let heal = FaultHeal {
            v: PROTOCOL_VERSION,
            id: Some(format!("load-{}", s.name)),
        };
        let healed: anyhow::Result<mabeam_protocol::fault::FaultList> =
            stack::request(&target.client, subjects::FAULTS_HEAL, &heal).await;
        if let Err(e) = healed {
            eprintln!("mabeam-load: could not heal fault load-{}: {e:#}", s.name);
        }
    }
    fleets.stop();
    let mut breaches: Vec<thresholds::Breach> = measured
        .scenarios
        .iter()
        .zip(&bounds)
        .flat_map(|(s, b)| thresholds::check(s, b))
        .collect();
    let growth = if soak {
        growth::judge_all(&measured.resources, &measured.gauges)
    } else {
        Vec::new()
    };
    for g in growth.iter().filter(|g| g.unbounded()) {
        breaches.push(thresholds::Breach {
            scenario: "soak".into(),
            metric: format!("{} (last-quarter median)", g.series),
            limit: g.limit.unwrap_or(0.0),
            actual: g.end.unwrap_or(0.0),
        });
    }
    if soak {
        say(&report::growth_table(&growth, redis_pauses));
    }
    let report = Report {
        profile: args.profile.to_string(),
        harness: if external { "external" } else { "processes" }.into(),
        started_unix_ms,
        duration_s: measured.duration.as_secs_f64(),
        rate_scale: args.rate_scale,
        machine: Machine::this(),
        passed: breaches.is_empty(),
        scenarios: measured.scenarios,
        resources: measured.resources,
        gauges: measured.gauges,
        growth,
        stress: measured.stress,
        breaches,
    };
    say(&report::table(&report));
    report::write(&report, &out)?;
    say(&format!(
        "\nreport: {}\n       {}\n",
        out.join("report.json").display(),
        out.join("report.html").display()
    ));
    for b in &report.breaches {
        eprintln!("threshold breached: {b}");
    }
    Ok(report.passed)
}

/// The soak's periodic infrastructure fault: Redis frozen for two seconds every `every`
/// (every service sees a stalled link, then recovers). Returns how many pauses it made.
async fn pause_redis(
    pid: u32,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> usize {
    let signal = |sig: &str| {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status();
    };
    let mut pauses = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return pauses,
            _ = tokio::time::sleep(every) => {}
        }
        signal("-STOP");
        pauses += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
        signal("-CONT");
    }
}

async fn scale_ladder(args: ScaleArgs) -> anyhow::Result<()> {
    let out = out_dir(args.out.clone(), "scale");
    let logs = out.join("logs");
    let target = stack::start(&StackSpec {
        name: "load-scale".into(),
        coordinators: 1,
        fault_injector: args.concurrent > 0,
        env: service_env(),
    })
    .await?;
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let mut rungs = Vec::new();
    say(&format!(
        "{:>6} {:>8} {:>8} {:>12} {:>12} {:>12} {:>14} {:>12} {:>14}\n",
        "agents",
        "sessions",
        "decided",
        "median ms",
        "session ms",
        "max ms",
        "msgs/session",
        "KB/agent",
        "registration ms"
    ));
    for &n in &args.agents {
        let r = scale::rung(&target, n, args.sessions, &run, &logs)
            .await
            .with_context(|| format!("rung of {n} agents"))?;
        say(&format!(
            "{:>6} {:>8} {:>8} {:>12.1} {:>12.1} {:>12.1} {:>14.0} {:>12.1} {:>14.0}\n",
            r.agents,
            r.sessions,
            r.decided,
            r.duration_ms_median,
            r.session_ms_median,
            r.duration_ms_max,
            r.messages_per_session,
            r.fleet_rss_bytes_per_agent / 1024.0,
            r.registration_ms
        ));
        rungs.push(r);
    }
    let concurrency = if args.concurrent > 0 {
        let c = scale::concurrency(
            &target,
            args.concurrent,
            Duration::from_millis(args.hold_ms),
            &run,
            &logs,
        )
        .await?;
        say(&format!(
            "\n{} sessions submitted in {:.1} s; peak {} open at once; coordinator RSS {:.1} MB → {:.1} MB; {} results, {} missing\n",
            c.sessions,
            c.submit_seconds,
            c.peak_active,
            c.coordinator_rss_before_bytes as f64 / 1e6,
            c.coordinator_rss_peak_bytes as f64 / 1e6,
            c.results,
            c.missing
        ));
        Some(c)
    } else {
        None
    };
    std::fs::create_dir_all(&out)?;
    let json = serde_json::json!({
        "machine": Machine::this(),
        "ladder": rungs,
        "concurrency": concurrency,
    });
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&json)?)?;
    say(&format!(
        "\nreport: {}\n",
        out.join("report.json").display()
    ));
    Ok(())
}

async fn floor_bench(args: FloorArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for i in 0..args.runs.max(1) {
        let f = floor::measure(args.scale).await?;
        say(&format!("run {}:\n{}", i + 1, floor::table(&f)));
        runs.push(f);
    }
    let m = floor::medians(&runs);
    say(&format!(
        "\nmedian of {} runs:\n{}",
        runs.len(),
        floor::table(&m)
    ));
    let out = out_dir(args.out, "floor");
    std::fs::create_dir_all(&out)?;
    let json = serde_json::json!({ "machine": Machine::this(), "median": m, "runs": runs });
    std::fs::write(out.join("floor.json"), serde_json::to_vec_pretty(&json)?)?;
    say(&format!("report: {}\n", out.join("floor.json").display()));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The harness and the fleets look for the service binaries here; set before any thread
    // starts.
    if std::env::var_os("MABEAM_BIN_DIR").is_none() {
        std::env::set_var("MABEAM_BIN_DIR", stack::bin_dir());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mabeam-load: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            None => load(cli.run).await,
            Some(Cmd::Run(args)) => load(args).await,
            Some(Cmd::Scale(args)) => scale_ladder(args).await.map(|()| true),
            Some(Cmd::Floor(args)) => floor_bench(args).await.map(|()| true),
        }
    });
    // Stop the stack's processes before the runtime goes.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mabeam-load: {e:#}");
            ExitCode::from(2)
        }
    }
}
