//! The open-model engine: one scheduler per scenario sends tasks at their intended times;
//! one subscription on `mabeam.results.>` receives every result; one collector owns the
//! in-flight map and the histograms (no locks on the hot path).

use std::{
    collections::{BTreeMap, HashMap},
    io::{IsTerminal as _, Write as _},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt as _;
use hdrhistogram::Histogram;
use mabeam_protocol::{
    codec::{decode, encode, ContentType},
    subjects, Limits, Status, TaskId, TaskResult,
};
use mabeam_runtime::reply;
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    histogram,
    procfs::{self, Watched},
    profile::{Arrivals, Profile, Shape},
    record,
    report::{
        GaugeSeries, Knee, Latency, Point, ResourceSeries, RoundLatency, ScenarioReport, StressStep,
    },
    scenario::Scenario,
    stack::Target,
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub profile: Profile,
    pub shape: Shape,
    pub rate_scale: f64,
    pub scenarios: Vec<Scenario>,
    /// How often RSS and fds are read.
    pub sample_every: Duration,
    /// Stress: p99 bound per scenario (ms) and the error-rate bound of a step.
    pub stress_p99_ms: Vec<f64>,
    pub stress_error_rate: f64,
}

/// What the engine measured, before thresholds.
#[derive(Debug)]
pub struct Measured {
    pub scenarios: Vec<ScenarioReport>,
    pub resources: Vec<ResourceSeries>,
    /// NATS pending bytes and Redis used memory over the run.
    pub gauges: Vec<GaugeSeries>,
    pub stress: Option<Knee>,
    pub duration: Duration,
}

#[derive(Debug)]
enum Event {
    Sent {
        key: u64,
        scenario: usize,
        intended: Instant,
        phase: usize,
    },
    PublishFailed {
        key: u64,
        why: String,
    },
    Done {
        key: u64,
        at: Instant,
        status: Status,
        rounds: u32,
        code: Option<String>,
    },
}

fn key(scenario: usize, seq: u64) -> u64 {
    ((scenario as u64) << 40) | seq
}

/// Task ids are `lt-<run>-<scenario>-<seq>`; the run id keeps re-runs against one stack apart
/// (task ids are deduplication keys).
fn task_id(run: &str, scenario: usize, seq: u64) -> String {
    format!("lt-{run}-{scenario}-{seq}")
}

fn parse_task_id(prefix: &str, id: &str) -> Option<u64> {
    let rest = id.strip_prefix(prefix)?;
    let (s, q) = rest.split_once('-')?;
    Some(key(s.parse().ok()?, q.parse().ok()?))
}

#[allow(clippy::too_many_arguments)]
async fn schedule(
    index: usize,
    scenario: Scenario,
    shape: Shape,
    rate: f64,
    start: tokio::time::Instant,
    run: Arc<str>,
    js: async_nats::jetstream::Context,
    tx: mpsc::UnboundedSender<Event>,
    stop: CancellationToken,
) {
    for (seq, (t, phase)) in (0u64..).zip(Arrivals::new(&shape, rate)) {
        let intended = start + Duration::from_secs_f64(t);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(intended) => {}
        }
        let id = task_id(&run, index, seq);
        let k = key(index, seq);
        let body = TaskId::new(id.clone())
            .map_err(|e| e.to_string())
            .and_then(|tid| scenario.task(tid).map_err(|e| e.to_string()))
            .and_then(|task| encode(ContentType::MsgPack, &task).map_err(|e| e.to_string()));
        let subject = scenario.priority.subject();
        let _ = tx.send(Event::Sent {
            key: k,
            scenario: index,
            intended: intended.into_std(),
            phase,
        });
        let body = match body {
            Ok(b) => b,
            Err(why) => {
                let _ = tx.send(Event::PublishFailed { key: k, why });
                continue;
            }
        };
        let js = js.clone();
        let tx = tx.clone();
        // Sending never waits for the previous send: the schedule is the only clock.
        tokio::spawn(async move {
            let mut headers = reply::headers_for(ContentType::MsgPack);
            headers.insert("Nats-Msg-Id", id.as_str());
            let acked = match js.publish_with_headers(subject, headers, body.into()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(why) = acked {
                let _ = tx.send(Event::PublishFailed { key: k, why });
            }
        });
    }
}

async fn listen(mut sub: async_nats::Subscriber, prefix: String, tx: mpsc::UnboundedSender<Event>) {
    let results_prefix = "mabeam.results.";
    while let Some(msg) = sub.next().await {
        let at = Instant::now();
        let Some(id) = msg.subject.as_str().strip_prefix(results_prefix) else {
            continue;
        };
        let Some(k) = parse_task_id(&prefix, id) else {
            continue;
        };
        let decoded = reply::content_type(msg.headers.as_ref())
            .and_then(|ct| decode::<TaskResult>(ct, &msg.payload, &Limits::default()));
        let event = match decoded {
            Ok(r) => Event::Done {
                key: k,
                at,
                status: r.status,
                rounds: r.rounds,
                code: r.error.map(|e| e.code.as_str().to_owned()),
            },
            Err(e) => Event::Done {
                key: k,
                at,
                status: Status::Failed,
                rounds: 0,
                code: Some(format!("undecodable_result: {e}")),
            },
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

async fn sample(
    watched: Vec<Watched>,
    infra: Infra,
    every: Duration,
    start: Instant,
    stop: CancellationToken,
) -> (Vec<ResourceSeries>, Vec<GaugeSeries>) {
    let mut readings: Vec<Vec<procfs::Reading>> = vec![Vec::new(); watched.len()];
    let mut nats_pending = GaugeSeries::new("nats_pending_bytes");
    let mut redis_memory = GaugeSeries::new("redis_used_memory_bytes");
    let mut redis = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let t = start.elapsed().as_secs_f64();
        for (w, r) in watched.iter().zip(&mut readings) {
            if let Some(x) = procfs::read(w.pid, t) {
                r.push(x);
            }
        }
        if let Some(monitor) = infra.nats_monitor.clone() {
            let pending = tokio::task::spawn_blocking(move || nats_pending_bytes(&monitor))
                .await
                .ok()
                .flatten();
            if let Some(v) = pending {
                nats_pending.points.push((t, v));
            }
        }
        if let Some(v) = redis_used_memory(&infra.redis_url, &mut redis).await {
            redis_memory.points.push((t, v));
        }
    }
    let resources = watched
        .into_iter()
        .zip(readings)
        .map(|(w, r)| ResourceSeries::new(w.name, w.pid, r))
        .collect();
    let gauges = [nats_pending, redis_memory]
        .into_iter()
        .filter(|g| !g.points.is_empty())
        .collect();
    (resources, gauges)
}

/// Where the infrastructure's own gauges are read.
#[derive(Debug, Clone)]
pub struct Infra {
    /// NATS monitoring base URL (`http://host:port`).
    pub nats_monitor: Option<String>,
    pub redis_url: String,
}

/// Bytes NATS holds for its clients, summed over connections (`/connz` `pending_bytes`).
fn nats_pending_bytes(monitor: &str) -> Option<f64> {
    let addr = monitor
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .ok()?;
    let (status, body) = mabeam_tests::http_get(addr, "/connz?limit=100000")?;
    if status != 200 {
        return None;
    }
    let connz: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        connz["connections"]
            .as_array()?
            .iter()
            .filter_map(|c| c["pending_bytes"].as_f64())
            .sum(),
    )
}

/// Redis `used_memory`, on a connection opened once and kept.
async fn redis_used_memory(
    url: &str,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
) -> Option<f64> {
    if conn.is_none() {
        let client = redis::Client::open(url).ok()?;
        *conn = client.get_multiplexed_async_connection().await.ok();
    }
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn.as_mut()?)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

struct Pending {
    scenario: usize,
    intended: Instant,
    phase: usize,
}

/// One scenario's (or one stress step's) counts and latencies.
struct Tally {
    sent: u64,
    completed: u64,
    errors: u64,
    hist: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            sent: 0,
            completed: 0,
            errors: 0,
            hist: histogram(),
        }
    }
}

struct Stats {
    all: Tally,
    round_hist: Histogram<u64>,
    rounds_max: u32,
    errors_by_kind: BTreeMap<String, u64>,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    last_ok: Option<Instant>,
    ok: u64,
    second: Tally,
    series: Vec<Point>,
    steps: Vec<Tally>,
}

impl Stats {
    fn new(phases: usize) -> Self {
        Self {
            all: Tally::new(),
            round_hist: histogram(),
            rounds_max: 0,
            errors_by_kind: BTreeMap::new(),
            first_sent: None,
            last_sent: None,
            last_ok: None,
            ok: 0,
            second: Tally::new(),
            series: Vec::new(),
            steps: (0..phases).map(|_| Tally::new()).collect(),
        }
    }

    fn error(&mut self, phase: usize, kind: String) {
        self.all.errors += 1;
        self.second.errors += 1;
        if let Some(s) = self.steps.get_mut(phase) {
            s.errors += 1;
        }
        *self.errors_by_kind.entry(kind).or_default() += 1;
    }
}

fn progress_bar(done: f64) -> String {
    let width = 20;
    let filled = ((done.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// Runs the profile against `target`.
pub async fn run(
    target: &Target,
    watched: Vec<Watched>,
    opts: &RunOptions,
) -> anyhow::Result<Measured> {
    let run_id: Arc<str> = format!("{:08x}", rand::thread_rng().gen::<u32>()).into();
    let prefix = format!("lt-{run_id}-");
    let (tx, mut rx) = mpsc::unbounded_channel();
    // One subscription for every result, opened before the first send.
    let sub = target.client.subscribe(subjects::RESULTS_ALL).await?;
    target.client.flush().await?;
    let listener = tokio::spawn(listen(sub, prefix, tx.clone()));
    let js = async_nats::jetstream::new(target.client.clone());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let sampler_stop = CancellationToken::new();
    let sampler = tokio::spawn(sample(
        watched,
        Infra {
            nats_monitor: target.nats_monitor.clone(),
            redis_url: target.redis_url.clone(),
        },
        opts.sample_every,
        started,
        sampler_stop.clone(),
    ));
    let schedulers: Vec<_> = opts
        .scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(schedule(
                i,
                s.clone(),
                opts.shape.clone(),
                s.base_rate * opts.rate_scale,
                start,
                run_id.clone(),
                js.clone(),
                tx.clone(),
                stop.clone(),
            ))
        })
        .collect();
    drop(tx);
    let phases = opts.shape.phases.len();
    let mut stats: Vec<Stats> = opts.scenarios.iter().map(|_| Stats::new(phases)).collect();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let result_timeout: Vec<Duration> = opts
        .scenarios
        .iter()
        .map(|s| Duration::from_millis(s.timeout_ms) + Duration::from_secs(5))
        .collect();
    let total = opts.shape.total().as_secs_f64();
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut next_second = start.into_std() + Duration::from_secs(1);
    let mut last_print = Instant::now();
    let mut stress_steps: Vec<StressStep> = Vec::new();
    let mut stopped_because: Option<String> = None;
    let mut sending = true;
    let mut interval_all = histogram();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Sent { key, scenario, intended, phase }) => {
                    let s = &mut stats[scenario];
                    s.all.sent += 1;
                    s.second.sent += 1;
                    if let Some(st) = s.steps.get_mut(phase) { st.sent += 1; }
                    s.first_sent.get_or_insert(intended);
                    s.last_sent = Some(intended);
                    pending.insert(key, Pending { scenario, intended, phase });
                }
                Some(Event::PublishFailed { key, why }) => {
                    if let Some(p) = pending.remove(&key) {
                        let kind = if why.contains("timed out") { "publish_timeout" } else { "publish" };
                        stats[p.scenario].error(p.phase, kind.to_owned());
                    }
                }
                Some(Event::Done { key, at, status, rounds, code }) => {
                    let Some(p) = pending.remove(&key) else { continue };
                    let latency = at.saturating_duration_since(p.intended);
                    let s = &mut stats[p.scenario];
                    s.all.completed += 1;
                    s.second.completed += 1;
                    record(&mut s.all.hist, latency);
                    record(&mut s.second.hist, latency);
                    record(&mut interval_all, latency);
                    if let Some(st) = s.steps.get_mut(p.phase) {
                        st.completed += 1;
                        record(&mut st.hist, latency);
                    }
                    s.rounds_max = s.rounds_max.max(rounds);
                    record(&mut s.round_hist, latency / rounds.max(1));
                    if status == Status::Decided {
                        s.ok += 1;
                        s.last_ok = Some(at);
                    } else {
                        let kind = match code {
                            Some(c) => format!("{}:{c}", status.as_str()),
                            None => status.as_str().to_owned(),
                        };
                        s.error(p.phase, kind);
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                // Results that never came.
                let late: Vec<u64> = pending
                    .iter()
                    .filter(|(_, p)| now.saturating_duration_since(p.intended) > result_timeout[p.scenario])
                    .map(|(k, _)| *k)
                    .collect();
                for k in late {
                    if let Some(p) = pending.remove(&k) {
                        stats[p.scenario].error(p.phase, "timeout".into());
                    }
                }
                while now >= next_second {
                    let t = next_second.saturating_duration_since(start.into_std()).as_secs_f64();
                    for s in &mut stats {
                        let lat = Latency::of(&s.second.hist);
                        s.series.push(Point {
                            t_s: t,
                            offered: s.second.sent,
                            completed: s.second.completed,
                            errors: s.second.errors,
                            p50_ms: lat.p50,
                            p99_ms: lat.p99,
                            max_ms: lat.max,
                        });
                        s.second = Tally::new();
                    }
                    next_second += Duration::from_secs(1);
                }
                if opts.profile == Profile::Stress {
                    evaluate_steps(opts, &stats, &pending, start.into_std(), &mut stress_steps, &mut stopped_because, &stop);
                }
                if last_print.elapsed() >= Duration::from_secs(if tty { 1 } else { 5 }) {
                    let elapsed = now.saturating_duration_since(start.into_std()).as_secs_f64();
                    last_print = now;
                    let recent: Vec<&Point> = stats.iter().filter_map(|s| s.series.last()).collect();
                    let offered: u64 = recent.iter().map(|p| p.offered).sum();
                    let done: u64 = recent.iter().map(|p| p.completed).sum();
                    let errors: u64 = stats.iter().map(|s| s.all.errors).sum();
                    let line = format!(
                        "{} {:>5.0}/{:.0}s  offered {:>7.1}/s  results {:>7.1}/s  p99 {:>8.2} ms  errors {}  in flight {}",
                        progress_bar(elapsed / total), elapsed.min(total), total,
                        offered as f64, done as f64, super::ms(&interval_all, 0.99), errors, pending.len()
                    );
                    interval_all.reset();
                    let mut err = std::io::stderr().lock();
                    let _ = if tty { write!(err, "\r{line}") } else { writeln!(err, "{line}") };
                    let _ = err.flush();
                }
                if sending && schedulers.iter().all(|h| h.is_finished()) {
                    sending = false;
                }
                if !sending && pending.is_empty() {
                    break;
                }
            }
        }
    }
    if tty {
        eprintln!();
    }
    stop.cancel();
    listener.abort();
    sampler_stop.cancel();
    let (resources, gauges) = sampler.await.unwrap_or_default();
    let duration = started.elapsed();
    let scenarios = opts
        .scenarios
        .iter()
        .zip(stats)
        .map(|(sc, s)| scenario_report(sc, s))
        .collect();
    let stress = (opts.profile == Profile::Stress).then(|| knee(stress_steps, stopped_because));
    Ok(Measured {
        scenarios,
        resources,
        gauges,
        stress,
        duration,
    })
}

fn scenario_report(sc: &Scenario, s: Stats) -> ScenarioReport {
    let window = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let per_sec = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    // Offered over the sending window (n sends span n-1 intervals).
    let offered_rate = per_sec(
        s.all.sent.saturating_sub(1),
        window(s.first_sent, s.last_sent),
    );
    let achieved_rate = per_sec(s.ok, window(s.first_sent, s.last_ok));
    ScenarioReport {
        name: sc.name.clone(),
        algorithm: sc.algorithm.to_owned(),
        agents: sc.agents,
        faults: sc
            .fault
            .as_ref()
            .map(|f| format!("{} × {:?}", f.agents, f.behaviour)),
        offered_rate,
        achieved_rate,
        sent: s.all.sent,
        completed: s.all.completed,
        latency_ms: Latency::of(&s.all.hist),
        errors: s.all.errors,
        error_rate: if s.all.sent > 0 {
            s.all.errors as f64 / s.all.sent as f64
        } else {
            0.0
        },
        errors_by_kind: s.errors_by_kind,
        rounds_max: s.rounds_max,
        round_latency_ms: RoundLatency {
            p50: super::ms(&s.round_hist, 0.5),
            p99: super::ms(&s.round_hist, 0.99),
        },
        series: s.series,
    }
}

/// Stress: judges each step two seconds after it ends (results of its last sends have had
/// time to arrive); a step with tasks still in flight past the bound fails on p99.
#[allow(clippy::too_many_arguments)]
fn evaluate_steps(
    opts: &RunOptions,
    stats: &[Stats],
    pending: &HashMap<u64, Pending>,
    start: Instant,
    steps: &mut Vec<StressStep>,
    stopped_because: &mut Option<String>,
    stop: &CancellationToken,
) {
    let grace = 2.0;
    let elapsed = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64();
    while stopped_because.is_none() && steps.len() < opts.shape.phases.len() {
        let k = steps.len();
        if elapsed < opts.shape.phase_end(k) + grace {
            return;
        }
        let secs = opts.shape.phases[k].duration.as_secs_f64();
        let (mut sent, mut ok, mut errors) = (0u64, 0u64, 0u64);
        let mut p99 = 0.0f64;
        let mut failures = Vec::new();
        for (i, s) in stats.iter().enumerate() {
            let st = &s.steps[k];
            let in_flight = pending
                .values()
                .filter(|p| p.scenario == i && p.phase == k)
                .count() as u64;
            sent += st.sent;
            ok += st.completed.saturating_sub(st.errors);
            errors += st.errors;
            let bound = opts.stress_p99_ms.get(i).copied().unwrap_or(1000.0);
            // Still in flight two seconds after the step: later than any bound we use.
            let stuck = st.sent > 0 && (in_flight as f64) / (st.sent as f64) > 0.01;
            let step_p99 = if stuck {
                f64::INFINITY
            } else {
                super::ms(&st.hist, 0.99)
            };
            p99 = p99.max(step_p99);
            let error_rate = if st.sent > 0 {
                st.errors as f64 / st.sent as f64
            } else {
                0.0
            };
            if step_p99 > bound {
                failures.push(format!(
                    "{}: p99 {step_p99:.2} ms > {bound} ms",
                    opts.scenarios[i].name
                ));
            }
            if error_rate > opts.stress_error_rate {
                failures.push(format!(
                    "{}: error rate {error_rate:.4} > {}",
                    opts.scenarios[i].name, opts.stress_error_rate
                ));
            }
        }
        let passed = failures.is_empty();
        steps.push(StressStep {
            step: k,
            offered_rate: sent as f64 / secs,
            achieved_rate: ok as f64 / secs,
            p99_ms: p99,
            error_rate: if sent > 0 {
                errors as f64 / sent as f64
            } else {
                0.0
            },
            passed,
        });
        if !passed {
            *stopped_because = Some(format!("step {k} failed: {}", failures.join("; ")));
            stop.cancel();
        }
    }
}

fn knee(steps: Vec<StressStep>, stopped_because: Option<String>) -> Knee {
    let last_ok = steps.iter().rev().find(|s| s.passed);
    Knee {
        offered_rate: last_ok.map(|s| s.offered_rate),
        achieved_rate: last_ok.map(|s| s.achieved_rate),
        p99_ms: last_ok.map(|s| s.p99_ms),
        stopped_because: stopped_because
            .unwrap_or_else(|| "every step passed: the knee is above the last step".into()),
        steps,
    }
}

/// Milliseconds since the epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip_to_their_key() {
        let id = task_id("00ab", 3, 12345);
        assert_eq!(parse_task_id("lt-00ab-", &id), Some(key(3, 12345)));
        assert_eq!(parse_task_id("lt-ffff-", &id), None);
        assert_eq!(parse_task_id("lt-00ab-", "lt-00ab-x-1"), None);
    }
}
