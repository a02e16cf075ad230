//! Monitoring against a live stack: every service's `/metrics` passes `promtool check
//! metrics`; a real Prometheus process scrapes the stack, loads the recording and alert rules
//! of `deploy/prometheus/rules` and answers PromQL over its HTTP API; every metric the rules
//! and the Grafana dashboard (`deploy/grafana`) reference is one the services export, and
//! every dashboard query parses and returns data.
//!
//! Needs `prometheus` and `promtool` (`deploy/install-deps.sh` installs them); without them
//! the test fails rather than skips, so CI cannot go green unchecked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mabeam_ctl::demo::catalogue;
use mabeam_protocol::{
    fault::AgentBehaviour, session::SessionView, subjects, AgentId, ContentType, ErrorReply,
};
use mabeam_testkit::free_port;
use mabeam_tests::{http_get, Fleet, Stack, StackOptions};
use serde_json::{json, Value};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// A monitoring tool on PATH (or in /usr/sbin, /usr/bin); missing is a failure, not a skip.
fn tool(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run deploy/install-deps.sh (it installs prometheus and promtool)")
        })
}

/// A Prometheus server in its own temp dir, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(targets: &[(&str, SocketAddr)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut scrape = String::new();
        for (service, addr) in targets {
            scrape.push_str(&format!(
                "      - targets: [\"{addr}\"]\n        labels:\n          service: {service}\n"
            ));
        }
        let rules = repo_root().join("deploy/prometheus/rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}/recording.rules.yml\n  - {rules}/alerts.rules.yml\n\
             scrape_configs:\n  - job_name: mabeam\n    static_configs:\n{scrape}",
            rules = rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write config");
        let check = Command::new(tool("promtool"))
            .arg("check")
            .arg("config")
            .arg(&config_path)
            .output()
            .expect("run promtool");
        assert!(
            check.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Self {
            child,
            addr,
            log,
            _dir: dir,
        };
        let start = Instant::now();
        while !matches!(http_get(addr, "/-/ready"), Some((200, _))) {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited with {status}: {}", prometheus.logs());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "prometheus not ready: {}",
                prometheus.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the HTTP API; the `data` of a `success` answer.
    fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) =
            http_get(self.addr, path).ok_or_else(|| format!("no answer to {path}"))?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("{path}: {status} {e}: {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("{path}: {status} {answer}"));
        }
        Ok(answer["data"].clone())
    }

    /// An instant PromQL query: the result vector.
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Polls `promql` until `accept` holds for its result.
    fn wait_for(&self, promql: &str, accept: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let last = self.query(promql);
            if let Ok(result) = &last {
                if accept(result) {
                    return result.clone();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{promql}: last answer {last:?}; prometheus log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The metric names a PromQL expression reads: identifiers outside label matchers, ranges,
/// strings and grouping clauses that are neither functions, aggregations nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    ];
    // Aggregations may put their grouping clause before the parenthesis: `sum by (x) (…)`.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_group => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                skip_group = false;
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let called = chars.get(next) == Some(&'(');
                let lower = word.to_ascii_lowercase();
                if GROUPING.contains(&lower.as_str()) {
                    skip_group = called;
                } else if !called
                    && !KEYWORDS.contains(&lower.as_str())
                    && !AGGREGATIONS.contains(&lower.as_str())
                {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_parsed_out_of_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, algorithm) (rate(mabeam_decision_duration_seconds_bucket{namespace=~"$ns", le!="1"}[$__rate_interval]))) > 0.5 and on (ns) up offset 5m"#,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "mabeam_decision_duration_seconds_bucket".to_owned(),
            "up".to_owned()
        ])
    );
    let names = metric_names(
        "count(up{x=\"a{b\"} == 0) or vector(0) + a:b:c / ignoring(code) group_left foo_total",
    );
    assert_eq!(
        names,
        BTreeSet::from(["up".to_owned(), "a:b:c".to_owned(), "foo_total".to_owned()])
    );
}

/// `# TYPE` lines of an exposition: name → type.
fn exported_types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

/// Whether a series name exists in the expositions: as a metric, or as a histogram's
/// `_bucket`/`_sum`/`_count` (summaries: `_sum`/`_count`).
fn is_exported(name: &str, types: &BTreeMap<String, String>) -> bool {
    if types.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            matches!(types.get(base).map(String::as_str), Some("histogram"))
                || (*suffix != "_bucket"
                    && matches!(types.get(base).map(String::as_str), Some("summary")))
        })
    })
}

/// Every PromQL expression in the dashboard, with Grafana's variables given values that
/// match everything.
fn dashboard_queries() -> Vec<String> {
    let path = repo_root().join("deploy/grafana/mabeam-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        // label_values(<selector>, <label>): the selector is PromQL.
                        ("definition", Value::String(d)) => {
                            let inner = d
                                .strip_prefix("label_values(")
                                .and_then(|r| r.rsplit_once(','))
                                .map(|(sel, _)| sel.to_owned())
                                .unwrap_or_else(|| panic!("unexpected variable query {d}"));
                            out.push(inner);
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "dashboard queries found: {exprs:?}");
    exprs
        .into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$namespace", ".*")
                .replace("$service", ".*")
                .replace("$instance", ".*")
        })
        .collect()
}

/// The fault-injector reports ready once NATS and Redis are connected, which can be just
/// before its endpoints are subscribed: wait until something answers on them.
async fn wait_fault_endpoints(stack: &Stack) {
    let start = Instant::now();
    while stack
        .client
        .request(subjects::FAULTS_LIST, Vec::new().into())
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no fault-injector answers on {}",
            subjects::FAULTS_LIST
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn inject(stack: &Stack, id: &str, agent: &str, behaviour: AgentBehaviour) {
    stack
        .inject_agent_fault(id, vec![AgentId::new(agent).unwrap()], behaviour)
        .await;
}

async fn heal(stack: &Stack, id: &str) {
    stack.heal_fault(id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_stack_and_every_referenced_metric_exists() {
    let promtool = tool("promtool");
    tool("prometheus");
    let stack = Stack::start(
        StackOptions::new("prometheus-scrape")
            .coordinators(2)
            .fault_injector()
            .telemetry()
            .fleet(Fleet::new("prom", 7).with("MABEAM_SIM_PROFILE", "consensus"))
            .with("MABEAM_LAG_POLL_MS", "200"),
    )
    .await;

    // Drive work that touches every family of metrics: an equivocating and a forging agent
    // (detections, refused ballots, fault commands; healed at the end, so the dashboard's
    // active-fault annotation has something to show), one task per algorithm, a rejected
    // task and a refused request.
    wait_fault_endpoints(&stack).await;
    inject(
        &stack,
        "prom-equivocate",
        "prom-00000",
        AgentBehaviour::Equivocate,
    )
    .await;
    inject(
        &stack,
        "prom-forge",
        "prom-00001",
        AgentBehaviour::InvalidSignature,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tasks = catalogue("prom", &json!({"all": true}));
    let mut watches = Vec::new();
    for (_, task) in &tasks {
        let id = task["task_id"].as_str().unwrap().to_owned();
        watches.push(stack.watch(&id).await);
        stack.submit(task.clone(), ContentType::Json).await;
    }
    let bad = json!({"task_id": "prom-bad", "algorithm": "telepathy", "proposal": {}, "participants": {"all": true}});
    watches.push(stack.watch("prom-bad").await);
    stack.submit(bad, ContentType::Json).await;
    for mut sub in watches {
        Stack::result(&mut sub, Duration::from_secs(60)).await;
    }
    let unknown: Result<SessionView, ErrorReply> = stack.session("prom-never-submitted").await;
    assert!(unknown.is_err());
    let sessions = tasks.len();

    // Telemetry counts sessions from events: wait until it has counted them all.
    let telemetry = stack.telemetry.as_ref().unwrap();
    let start = Instant::now();
    loop {
        let counted: f64 = telemetry
            .metrics()
            .lines()
            .filter(|l| l.starts_with("mabeam_sessions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if counted >= sessions as f64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "telemetry counted {counted} of {sessions} sessions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every running service's exposition is clean for promtool.
    let mut targets: Vec<(&str, SocketAddr)> = vec![("registry", stack.registry.http())];
    targets.extend(stack.coordinators.iter().map(|c| ("coordinator", c.http())));
    targets.push((
        "fault-injector",
        stack.fault_injector.as_ref().unwrap().http(),
    ));
    targets.push(("telemetry", telemetry.http()));
    targets.extend(stack.fleets.iter().map(|f| ("agent-sim", f.http())));
    let mut types = BTreeMap::new();
    for (service, addr) in &targets {
        let (status, text) = http_get(*addr, "/metrics").expect("metrics answer");
        assert_eq!(status, 200, "{service} /metrics");
        let mut check = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics on {service} ({addr}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        types.extend(exported_types(&text));
    }

    // A real Prometheus scrapes every service and evaluates the rules.
    let prometheus = tokio::task::spawn_blocking(move || Prometheus::start(&targets))
        .await
        .unwrap();
    let expected_targets = 2 + stack.coordinators.len() + stack.fleets.len() + 1;
    let up = prometheus.wait_for("up{job=\"mabeam\"} == 1", |r| r.len() == expected_targets);
    let services: BTreeSet<&str> = up
        .iter()
        .filter_map(|s| s["metric"]["service"].as_str())
        .collect();
    assert_eq!(
        services,
        BTreeSet::from([
            "agent-sim",
            "coordinator",
            "fault-injector",
            "registry",
            "telemetry"
        ])
    );
    let decided = prometheus.wait_for("sum(mabeam_sessions_total)", |r| {
        r.first().map(sample_value).unwrap_or(0.0) >= sessions as f64
    });
    assert!(sample_value(&decided[0]) >= sessions as f64);
    prometheus.wait_for(
        "mabeam_dependency_up{job=\"mabeam\", dependency=\"nats\"} == 1",
        |r| r.len() == expected_targets,
    );
    prometheus.wait_for(
        "mabeam_dependency_up{job=\"mabeam\", dependency=\"redis\"} == 1",
        |r| r.len() == expected_targets - stack.fleets.len(),
    );
    // The recording rules evaluate over the scraped series.
    let recorded = prometheus.wait_for("namespace_algorithm_status:mabeam_sessions:rate5m", |r| {
        !r.is_empty()
    });
    assert!(recorded
        .iter()
        .all(|s| s["metric"]["algorithm"].is_string() && s["metric"]["status"].is_string()));

    // Every rule loaded and evaluates without error; collect their expressions.
    let start = Instant::now();
    let (records, rule_exprs) = loop {
        let groups = prometheus.api("/api/v1/rules").expect("rules API");
        let rules: Vec<Value> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        assert!(rules.len() >= 15, "rules loaded: {rules:?}");
        let unhealthy: Vec<&Value> = rules.iter().filter(|r| r["health"] != "ok").collect();
        if unhealthy.is_empty() {
            let records: BTreeSet<String> = rules
                .iter()
                .filter(|r| r["type"] == "recording")
                .map(|r| r["name"].as_str().unwrap().to_owned())
                .collect();
            let exprs: Vec<String> = rules
                .iter()
                .map(|r| r["query"].as_str().unwrap().to_owned())
                .collect();
            break (records, exprs);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "rules not healthy: {unhealthy:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };

    // Every metric the rules and the dashboard read is exported by some service (or is a
    // recording rule, or Prometheus' own `up`).
    let dashboard = dashboard_queries();
    let mut missing = BTreeSet::new();
    for expr in rule_exprs.iter().chain(&dashboard) {
        for name in metric_names(expr) {
            let known = if name.contains(':') {
                records.contains(&name)
            } else {
                name == "up" || is_exported(&name, &types)
            };
            if !known {
                missing.insert(format!("{name} (in {expr})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "referenced but not exported: {missing:#?}"
    );

    // Every dashboard query parses and returns data for this stack. A `rate()` over a
    // counter born moments ago needs a second scrape first: ask again until each has data.
    let start = Instant::now();
    let mut empty: Vec<String> = dashboard.clone();
    loop {
        let mut still = Vec::new();
        for expr in &empty {
            match prometheus.query(expr) {
                Ok(result) if result.is_empty() => still.push(expr.clone()),
                Ok(_) => {}
                Err(e) => panic!("dashboard query does not run: {e}"),
            }
        }
        empty = still;
        if empty.is_empty() || start.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data: {empty:#?}"
    );

    // Telemetry and the injector agree on the two active faults; healing clears both.
    prometheus.wait_for(
        "max(mabeam_faults_active) == 2 and on () sum(mabeam_fault_injector_faults_active) == 2",
        |r| r.len() == 1,
    );
    heal(&stack, "prom-equivocate").await;
    heal(&stack, "prom-forge").await;
    prometheus.wait_for("max(mabeam_faults_active) == 0", |r| r.len() == 1);
}
