//! What a run produced: the table on stdout, `report.json` and `report.html` (SVG plots drawn
//! with plotters, no scripts or network needed to read it).

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use plotters::prelude::*;
use serde::Serialize;

use super::{growth::Growth, procfs::Reading, thresholds::Breach};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        use super::ms;
        Self {
            p50: ms(h, 0.5),
            p95: ms(h, 0.95),
            p99: ms(h, 0.99),
            p999: ms(h, 0.999),
            max: if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1000.0
            },
        }
    }
}

/// One second of one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub t_s: f64,
    /// Tasks sent in this second.
    pub offered: u64,
    /// Results (any status) received in this second.
    pub completed: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Default, Copy, PartialEq, Serialize)]
pub struct RoundLatency {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub algorithm: String,
    pub agents: usize,
    /// The injected fault, when any (`<n> × <behaviour>`).
    pub faults: Option<String>,
    /// Sessions per second sent (over the sending window).
    pub offered_rate: f64,
    /// Sessions per second decided (first send to last result).
    pub achieved_rate: f64,
    pub sent: u64,
    pub completed: u64,
    /// Latency from the intended send time to the result, of every result.
    pub latency_ms: Latency,
    pub errors: u64,
    pub error_rate: f64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub rounds_max: u32,
    /// Latency divided by the session's rounds.
    pub round_latency_ms: RoundLatency,
    pub series: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceSeries {
    pub process: String,
    pub pid: u32,
    pub readings: Vec<Reading>,
    pub rss_first_bytes: u64,
    pub rss_last_bytes: u64,
    pub rss_max_bytes: u64,
    pub open_fds_max: u64,
}

impl ResourceSeries {
    pub fn new(process: String, pid: u32, readings: Vec<Reading>) -> Self {
        Self {
            rss_first_bytes: readings.first().map_or(0, |r| r.rss_bytes),
            rss_last_bytes: readings.last().map_or(0, |r| r.rss_bytes),
            rss_max_bytes: readings.iter().map(|r| r.rss_bytes).max().unwrap_or(0),
            open_fds_max: readings.iter().map(|r| r.open_fds).max().unwrap_or(0),
            process,
            pid,
            readings,
        }
    }
}

/// A gauge of the infrastructure over the run: `(seconds since start, value)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GaugeSeries {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl GaugeSeries {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            points: Vec::new(),
        }
    }
}

/// The stress profile's answer: the last step every scenario passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Knee {
    /// Offered sessions/s of the last passing step (all scenarios together), if any passed.
    pub offered_rate: Option<f64>,
    pub achieved_rate: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Why the next step failed, or that every step passed.
    pub stopped_because: String,
    pub steps: Vec<StressStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StressStep {
    pub step: usize,
    pub offered_rate: f64,
    pub achieved_rate: f64,
    pub p99_ms: f64,
    pub error_rate: f64,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub profile: String,
    pub harness: String,
    pub started_unix_ms: u64,
    pub duration_s: f64,
    pub rate_scale: f64,
    pub machine: Machine,
    pub scenarios: Vec<ScenarioReport>,
    pub resources: Vec<ResourceSeries>,
    pub gauges: Vec<GaugeSeries>,
    /// Soak: whether each sampled series stayed bounded (see `growth`).
    pub growth: Vec<Growth>,
    pub stress: Option<Knee>,
    pub breaches: Vec<Breach>,
    pub passed: bool,
}

/// The soak's resource verdicts, one line per series.
pub fn growth_table(growth: &[Growth], redis_pauses: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nsoak: {redis_pauses} Redis pauses of 2 s; bounded = last-quarter median ≤ second-quarter median × (1 + ratio) + slack"
    );
    let _ = writeln!(
        s,
        "{:<40} {:>8} {:>16} {:>16} {:>16}  verdict",
        "series", "samples", "baseline", "end", "limit"
    );
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    for g in growth {
        let _ = writeln!(
            s,
            "{:<40} {:>8} {:>16} {:>16} {:>16}  {}",
            g.series,
            g.samples,
            num(g.baseline),
            num(g.end),
            num(g.limit),
            match g.bounded {
                Some(true) => "bounded",
                Some(false) => "GROWING",
                None => "too few samples",
            }
        );
    }
    s
}

/// The per-scenario table.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "scenario",
        "agents",
        "offered/s",
        "achieved/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "err rate"
    );
    for x in &r.scenarios {
        let _ = writeln!(
            s,
            "{:<22} {:>6} {:>9.1} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>8.4}",
            x.name,
            x.agents,
            x.offered_rate,
            x.achieved_rate,
            x.latency_ms.p50,
            x.latency_ms.p95,
            x.latency_ms.p99,
            x.latency_ms.p999,
            x.latency_ms.max,
            x.errors,
            x.error_rate
        );
    }
    for x in r.scenarios.iter().filter(|x| !x.errors_by_kind.is_empty()) {
        let _ = writeln!(s, "  {} errors: {:?}", x.name, x.errors_by_kind);
    }
    if !r.resources.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<28} {:>10} {:>10} {:>10} {:>8}",
            "process", "RSS first", "RSS last", "RSS max", "fds max"
        );
        for p in &r.resources {
            let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
            let _ = writeln!(
                s,
                "{:<28} {:>10} {:>10} {:>10} {:>8}",
                p.process,
                mb(p.rss_first_bytes),
                mb(p.rss_last_bytes),
                mb(p.rss_max_bytes),
                p.open_fds_max
            );
        }
    }
    if let Some(k) = &r.stress {
        let _ = writeln!(s, "\nstress steps:");
        for st in &k.steps {
            let _ = writeln!(
                s,
                "  step {:>2}: offered {:>8.1}/s achieved {:>8.1}/s p99 {:>8.2} ms errors {:.4} {}",
                st.step,
                st.offered_rate,
                st.achieved_rate,
                st.p99_ms,
                st.error_rate,
                if st.passed { "ok" } else { "FAILED" }
            );
        }
        match k.offered_rate {
            Some(rate) => {
                let _ = writeln!(
                    s,
                    "knee: {rate:.1} sessions/s offered; {}",
                    k.stopped_because
                );
            }
            None => {
                let _ = writeln!(s, "knee: below the first step; {}", k.stopped_because);
            }
        }
    }
    s
}

pub fn write(r: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(dir.join("report.html"), html(r)?)?;
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

type Series = (String, Vec<(f64, f64)>);

/// A line chart as an SVG string.
fn chart(title: &str, y_label: &str, series: &[Series]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let x_max = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.0))
            .fold(1.0f64, f64::max);
        let y_max = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.1))
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.1;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        c.configure_mesh()
            .x_desc("seconds")
            .y_desc(y_label)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (i, (name, points)) in series.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            c.draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(svg)
}

fn html(r: &Report) -> anyhow::Result<String> {
    let per = |f: fn(&Point) -> f64| -> Vec<Series> {
        r.scenarios
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.series.iter().map(|p| (p.t_s, f(p))).collect(),
                )
            })
            .collect()
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>mabeam load test: {p}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}\
         .fail{{color:#b00}}</style></head><body><h1>mabeam load test: {p}</h1>\
         <p>{cpus} CPUs ({model}), kernel {kernel}; harness {h}; {d:.0} s; rate scale {rs}.</p>",
        p = escape(&r.profile),
        cpus = r.machine.cpus,
        model = escape(&r.machine.cpu_model),
        kernel = escape(&r.machine.kernel),
        h = escape(&r.harness),
        d = r.duration_s,
        rs = r.rate_scale,
    );
    if r.passed {
        out.push_str("<p>Every threshold held.</p>");
    } else {
        out.push_str("<p class=\"fail\">Thresholds breached:</p><ul class=\"fail\">");
        for b in &r.breaches {
            let _ = write!(out, "<li>{}</li>", escape(&b.to_string()));
        }
        out.push_str("</ul>");
    }
    out.push_str("<table><tr><th>scenario</th><th>agents</th><th>faults</th><th>offered/s</th><th>achieved/s</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>errors</th><th>error rate</th></tr>");
    for s in &r.scenarios {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{:.4}</td></tr>",
            escape(&s.name),
            s.agents,
            escape(s.faults.as_deref().unwrap_or("")),
            s.offered_rate,
            s.achieved_rate,
            s.latency_ms.p50,
            s.latency_ms.p95,
            s.latency_ms.p99,
            s.latency_ms.p999,
            s.latency_ms.max,
            s.errors,
            s.error_rate
        );
    }
    out.push_str("</table>");
    out.push_str(&chart("p99 latency per second", "ms", &per(|p| p.p99_ms))?);
    out.push_str(&chart("p50 latency per second", "ms", &per(|p| p.p50_ms))?);
    out.push_str(&chart(
        "throughput: results per second",
        "sessions/s",
        &per(|p| p.completed as f64),
    )?);
    out.push_str(&chart(
        "offered: tasks sent per second",
        "sessions/s",
        &per(|p| p.offered as f64),
    )?);
    if !r.resources.is_empty() {
        let rss: Vec<Series> = r
            .resources
            .iter()
            .map(|p| {
                (
                    p.process.clone(),
                    p.readings
                        .iter()
                        .map(|x| (x.t_s, x.rss_bytes as f64 / 1e6))
                        .collect(),
                )
            })
            .collect();
        out.push_str(&chart("resident memory", "MB", &rss)?);
        let fds: Vec<Series> = r
            .resources
            .iter()
            .map(|p| {
                (
                    p.process.clone(),
                    p.readings
                        .iter()
                        .map(|x| (x.t_s, x.open_fds as f64))
                        .collect(),
                )
            })
            .collect();
        out.push_str(&chart("open file descriptors", "fds", &fds)?);
    }
    if let Some(k) = &r.stress {
        out.push_str("<h2>stress steps</h2><table><tr><th>step</th><th>offered/s</th><th>achieved/s</th><th>p99 ms</th><th>error rate</th><th>passed</th></tr>");
        for st in &k.steps {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td><td>{:.4}</td><td>{}</td></tr>",
                st.step, st.offered_rate, st.achieved_rate, st.p99_ms, st.error_rate, st.passed
            );
        }
        let _ = write!(
            out,
            "</table><p>knee: {} sessions/s offered; {}</p>",
            k.offered_rate
                .map_or("below the first step".to_owned(), |r| format!("{r:.1}")),
            escape(&k.stopped_because)
        );
    }
    out.push_str("</body></html>\n");
    Ok(out)
}
