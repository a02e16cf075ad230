//! Runs the real `mabeamctl` binary on ballot files against known results.

// Test code: clippy.toml's allow-*-in-tests does not reach helpers outside `#[test]` fns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mabeamctl");

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ballots")
}

fn example(name: &str) -> PathBuf {
    examples_dir().join(name)
}

/// A file in the temp dir with a name no other test (or test process) uses; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(label: &str, contents: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "mabeamctl-test-{}-{}-{label}.json",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    fn json(label: &str, value: &Value) -> Self {
        Self::new(label, &serde_json::to_string_pretty(value).unwrap())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Runs `tally` and parses its stdout; the run must succeed.
fn tally(algorithm: &str, ballots: &Path, extra: &[&str]) -> Value {
    let path = ballots.to_str().unwrap();
    let mut args = vec!["tally", "--algorithm", algorithm, "--ballots", path];
    args.extend_from_slice(extra);
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `tally` expecting exit status 1; returns stderr.
fn tally_fails(algorithm: &str, ballots: &Path, extra: &[&str]) -> String {
    let path = ballots.to_str().unwrap();
    let mut args = vec!["tally", "--algorithm", algorithm, "--ballots", path];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout on error: {out:?}");
    String::from_utf8(out.stderr).unwrap()
}

fn choice_ballots(votes: &[(&str, &str)]) -> Value {
    let ballots: Vec<Value> = votes
        .iter()
        .map(|(agent, vote)| json!({"agent": agent, "vote": vote}))
        .collect();
    json!({"options": ["A", "B"], "ballots": ballots})
}

#[test]
fn majority_example_decides_accept() {
    let out = tally("majority", &example("majority.json"), &[]);
    assert_eq!(out["algorithm"], "majority");
    assert_eq!(out["status"], "decided");
    assert_eq!(out["outcome"]["kind"], "choice");
    assert_eq!(out["outcome"]["choice"], "accept");
    assert_eq!(out["outcome"]["support"], 0.75);
    assert_eq!(
        out["outcome"]["tally"],
        json!({"accept": 3.0, "reject": 1.0})
    );
    assert_eq!(out["reason"], Value::Null);
    assert_eq!(out["ballots_counted"], 5);
    assert_eq!(out["ballots_rejected"], json!([]));
    assert_eq!(out["rounds"].as_array().unwrap().len(), 1);
    assert_eq!(out["rounds"][0]["counted"], 5);
}

#[test]
fn supermajority_fails_at_three_quarters() {
    // 7 of 10 for A: 0.7 passes the default 2/3 but not 0.75.
    let votes: Vec<(String, &str)> = (0..10)
        .map(|i| (format!("a{i}"), if i < 7 { "A" } else { "B" }))
        .collect();
    let votes: Vec<(&str, &str)> = votes.iter().map(|(a, v)| (a.as_str(), *v)).collect();
    let file = TempFile::json("supermajority", &choice_ballots(&votes));

    let default = tally("supermajority", &file.0, &[]);
    assert_eq!(default["status"], "decided");
    assert_eq!(default["outcome"]["choice"], "A");

    let strict = tally("supermajority", &file.0, &["--param", "threshold=0.75"]);
    assert_eq!(strict["status"], "no_decision");
    assert_eq!(strict["outcome"], Value::Null);
    let reason = strict["reason"].as_str().unwrap();
    assert!(
        reason.contains("0.7000") && reason.contains(">= 0.7500"),
        "{reason}"
    );
    assert_eq!(strict["rounds"][0]["tally"], json!({"A": 7.0, "B": 3.0}));

    // --param wins over --params, which wins over the file's params.
    let merged = tally(
        "supermajority",
        &file.0,
        &[
            "--params",
            r#"{"threshold": 0.9}"#,
            "--param",
            "threshold=0.7",
        ],
    );
    assert_eq!(merged["status"], "decided");
    let from_params = tally(
        "supermajority",
        &file.0,
        &["--params", r#"{"threshold": 0.75}"#],
    );
    assert_eq!(from_params["status"], "no_decision");
}

#[test]
fn expertise_flips_the_plurality_winner() {
    let file = example("experts.json");
    let plurality = tally("plurality", &file, &[]);
    assert_eq!(plurality["outcome"]["choice"], "postgres");
    assert_eq!(
        plurality["outcome"]["tally"],
        json!({"postgres": 3.0, "sqlite": 2.0})
    );

    let weighted = tally("weighted", &file, &[]);
    assert_eq!(weighted["status"], "decided");
    assert_eq!(weighted["outcome"]["choice"], "sqlite");
    assert_eq!(
        weighted["outcome"]["tally"],
        json!({"postgres": 3.0, "sqlite": 6.0})
    );
    let support = weighted["outcome"]["support"].as_f64().unwrap();
    assert!((support - 2.0 / 3.0).abs() < 1e-12, "{support}");

    // Confidence multiplies expertise: experts at 0.4 confidence weigh 2.4 against 3.
    let mut shy: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    for ballot in shy["ballots"].as_array_mut().unwrap() {
        if ballot["vote"] == "sqlite" {
            ballot["confidence"] = json!(0.4);
        }
    }
    let shy = TempFile::json("shy-experts", &shy);
    let out = tally("weighted", &shy.0, &[]);
    assert_eq!(out["outcome"]["choice"], "postgres");
    let ignored = tally("weighted", &shy.0, &["--param", "use_confidence=false"]);
    assert_eq!(ignored["outcome"]["choice"], "sqlite");
}

#[test]
fn instant_runoff_first_round_leader_loses_after_transfers() {
    let out = tally("ranked_choice", &example("ranked.json"), &[]);
    assert_eq!(out["status"], "decided");
    assert_eq!(out["outcome"]["choice"], "B");
    let rounds = out["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{out:#}");
    assert_eq!(rounds[0]["tally"], json!({"A": 4.0, "B": 3.0, "C": 2.0}));
    assert_eq!(rounds[0]["eliminated"], json!(["C"]));
    assert_eq!(rounds[1]["tally"], json!({"A": 4.0, "B": 5.0}));
    assert_eq!(rounds[1].get("eliminated"), None);
    assert_eq!(out["outcome"]["support"], 5.0 / 9.0);
}

#[test]
fn second_price_auction_charges_the_runner_up_bid() {
    let file = example("auction.json");
    let out = tally("auction", &file, &[]);
    assert_eq!(out["status"], "decided");
    assert_eq!(
        out["outcome"],
        json!({"kind": "award", "winner": "worker-b", "bid": 25.0, "price": 17.0})
    );
    assert_eq!(out["ballots_counted"], 3);
    assert_eq!(
        out["ballots_rejected"],
        json!([{"agent": "worker-d", "reason": "auction does not accept a choice ballot"}])
    );
    let first = tally("auction", &file, &["--param", "pricing=first_price"]);
    assert_eq!(first["outcome"]["price"], 25.0);
    let reserve = tally("auction", &file, &["-p", "reserve=20"]);
    assert_eq!(reserve["outcome"]["price"], 20.0);
    let procurement = tally("auction", &file, &["-p", "lowest_wins=true"]);
    assert_eq!(procurement["outcome"]["winner"], "worker-a");
    assert_eq!(procurement["outcome"]["price"], 17.0);
}

#[test]
fn unknown_algorithm_lists_the_known_ones() {
    let stderr = tally_fails("raft", &example("majority.json"), &[]);
    assert!(stderr.contains("unknown algorithm \"raft\""), "{stderr}");
    for known in [
        "majority",
        "weighted",
        "ranked_choice",
        "auction",
        "work_distribution",
    ] {
        assert!(stderr.contains(known), "{known} missing from {stderr}");
    }
}

#[test]
fn malformed_json_reports_line_and_column() {
    let file = TempFile::new(
        "malformed",
        "{\n  \"options\": [\"A\"],\n  \"ballots\": [{\"agent\": \"a1\" \"vote\": \"A\"}]\n}\n",
    );
    let stderr = tally_fails("majority", &file.0, &[]);
    // The stray `"` of `"vote"` is the 30th character of line 3.
    assert!(stderr.contains("line 3, column 30"), "{stderr}");
    assert!(stderr.contains("expected `,` or `}`"), "{stderr}");

    // Well-formed JSON that is not a ballot file is located too.
    let file = TempFile::new(
        "not-a-ballot-file",
        "{\n  \"ballots\": [\n    {\"agent\": \"a1\", \"vote\": true}\n  ]\n}",
    );
    let stderr = tally_fails("majority", &file.0, &[]);
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("vote true"), "{stderr}");
}

#[test]
fn input_errors_exit_with_one() {
    let missing = Path::new("/nonexistent/mabeamctl/ballots.json");
    let stderr = tally_fails("majority", missing, &[]);
    assert!(stderr.contains("cannot read ballot file"), "{stderr}");

    let stderr = tally_fails("adaptive", &example("majority.json"), &[]);
    assert!(stderr.contains("needs live agents"), "{stderr}");
    let stderr = tally_fails("pipeline", &example("majority.json"), &[]);
    assert!(stderr.contains("needs live agents"), "{stderr}");

    let stderr = tally_fails(
        "supermajority",
        &example("majority.json"),
        &["-p", "threshold=1.5"],
    );
    assert!(stderr.contains("threshold must be in (0, 1]"), "{stderr}");
    let stderr = tally_fails(
        "majority",
        &example("majority.json"),
        &["-p", "treshold=0.5"],
    );
    assert!(stderr.contains("unknown field"), "{stderr}");
    let stderr = tally_fails(
        "majority",
        &example("majority.json"),
        &["--param", "threshold"],
    );
    assert!(stderr.contains("key=value"), "{stderr}");
    let stderr = tally_fails("majority", &example("majority.json"), &["--params", "[1]"]);
    assert!(stderr.contains("JSON object"), "{stderr}");

    // Usage errors exit with 1 too (not clap's 2); --help succeeds.
    let out = run(&["tally", "--algorithm", "majority"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["tally", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Ballot file"));
}

#[test]
fn invalid_duplicate_and_foreign_ballots_are_reported_not_counted() {
    let file = TempFile::json(
        "screening",
        &json!({
            "options": ["A", "B"],
            "agents": [{"id": "a1"}, {"id": "a2"}, {"id": "a3"}, {"id": "a4"}],
            "ballots": [
                {"agent": "a1", "vote": "A"},
                {"agent": "a2", "vote": "C"},
                {"agent": "a3", "vote": "B"},
                {"agent": "a1", "vote": "A", "confidence": 0.5},
                {"agent": "a4", "vote": "A"},
                {"agent": "a4", "vote": "B"},
                {"agent": "zed", "vote": "B"}
            ]
        }),
    );
    let out = tally("plurality", &file.0, &[]);
    assert_eq!(out["ballots_counted"], 2);
    let rejected = out["ballots_rejected"].as_array().unwrap();
    let agents: Vec<&str> = rejected
        .iter()
        .map(|r| r["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["a2", "a1", "a4", "a4", "zed"], "{rejected:#?}");
    assert!(rejected[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not one of the options"));
    assert!(rejected[1]["reason"]
        .as_str()
        .unwrap()
        .contains("duplicate"));
    assert!(rejected[2]["reason"]
        .as_str()
        .unwrap()
        .contains("equivocation"));
    assert!(rejected[4]["reason"]
        .as_str()
        .unwrap()
        .contains("not a member"));
    // A and B tie at 1 each: plurality's default tie-break decides nothing.
    assert_eq!(out["status"], "no_decision");
    assert_eq!(out["reason"], "tie between A, B");
    let lexicographic = tally("plurality", &file.0, &["-p", "tie_break=lexicographic"]);
    assert_eq!(lexicographic["outcome"]["choice"], "A");
}

#[test]
fn byzantine_offline_counts_commits_against_the_quorum() {
    // n = 7, f = 2, quorum 5.
    let votes = [
        ("a1", "A"),
        ("a2", "A"),
        ("a3", "A"),
        ("a4", "A"),
        ("a5", "A"),
        ("a6", "B"),
        ("a7", "B"),
    ];
    let file = TempFile::json("byzantine", &choice_ballots(&votes));
    let out = tally("byzantine", &file.0, &[]);
    assert_eq!(out["status"], "decided");
    assert_eq!(out["outcome"]["choice"], "A");
    assert_eq!(out["outcome"]["support"], 5.0 / 7.0);
    assert!(out["rounds"][0]["note"]
        .as_str()
        .unwrap()
        .contains("quorum=5 (f=2, n=7)"));
    // n = 6, f = 1: the quorum is ceil((6+1+1)/2) = 4, not 2f+1 = 3, so that two
    // disjoint groups of three cannot both certify.
    let split = [
        ("a1", "A"),
        ("a2", "A"),
        ("a3", "A"),
        ("a4", "B"),
        ("a5", "B"),
        ("a6", "B"),
    ];
    let file = TempFile::json("byzantine-split", &choice_ballots(&split));
    let out = tally("byzantine", &file.0, &[]);
    assert_eq!(out["status"], "no_decision", "{out}");

    let short = TempFile::json("byzantine-short", &choice_ballots(&votes[1..]));
    // Six voters: f = 1, quorum ceil((6+1+1)/2) = 4; A has 4.
    assert_eq!(tally("byzantine", &short.0, &[])["status"], "decided");
    // f = 2 needs n >= 7.
    let stderr = tally_fails("byzantine", &short.0, &["-p", "f=2"]);
    assert!(stderr.contains("needs at least 7"), "{stderr}");

    let split = [("a1", "A"), ("a2", "A"), ("a3", "B"), ("a4", "B")];
    let split = TempFile::json("byzantine-split", &choice_ballots(&split));
    let out = tally("byzantine", &split.0, &[]);
    assert_eq!(out["status"], "no_decision");
    assert!(
        out["reason"].as_str().unwrap().contains("quorum of 3"),
        "{out:#}"
    );
    // f = 0 over 4 agents: the quorum is still a majority (3), so a 2/2 split decides nothing.
    let out = tally("byzantine", &split.0, &["-p", "f=0"]);
    assert_eq!(out["status"], "no_decision");
    assert!(
        out["reason"].as_str().unwrap().contains("quorum of 3"),
        "{out:#}"
    );
}

#[test]
fn iterative_and_negotiation_are_tallied_as_one_round() {
    let values = TempFile::json(
        "iterative",
        &json!({
            "agents": [{"id": "a1", "expertise": 1}, {"id": "a2", "expertise": 3}, {"id": "a3"}],
            "ballots": [
                {"agent": "a1", "vote": [1.0, 2.0]},
                {"agent": "a2", "vote": [1.0, 2.0]},
                {"agent": "a3", "vote": [1.0]}
            ]
        }),
    );
    let out = tally("iterative", &values.0, &[]);
    assert_eq!(out["status"], "decided");
    assert_eq!(
        out["outcome"],
        json!({"kind": "value", "value": [1.0, 2.0], "dispersion": 0.0})
    );
    assert_eq!(out["rounds"].as_array().unwrap().len(), 1);
    assert_eq!(out["ballots_rejected"][0]["agent"], "a3");

    let spread = TempFile::json(
        "iterative-spread",
        &json!({"ballots": [
            {"agent": "a1", "vote": 0.0},
            {"agent": "a2", "vote": 1.0}
        ]}),
    );
    let out = tally("iterative", &spread.0, &[]);
    assert_eq!(out["status"], "no_decision");
    assert_eq!(out["rounds"][0]["aggregate"], json!([0.5]));
    assert_eq!(out["rounds"][0]["dispersion"], 0.5);
    let out = tally("iterative", &spread.0, &["-p", "require_convergence=false"]);
    assert_eq!(out["status"], "decided");
    let out = tally("iterative", &spread.0, &["-p", "aggregate=median"]);
    assert_eq!(out["rounds"][0]["aggregate"], json!([0.0]));

    let offers = TempFile::json(
        "negotiation",
        &json!({"ballots": [
            {"agent": "buyer", "vote": {"offer": {"value": 90, "min": 80, "max": 110}}},
            {"agent": "seller", "vote": {"offer": {"value": 120, "min": 100, "max": 140}}}
        ]}),
    );
    let out = tally("negotiation", &offers.0, &[]);
    assert_eq!(out["status"], "decided");
    assert_eq!(out["outcome"]["value"], json!([105.0]));
    let out = tally("negotiation", &offers.0, &["-p", "max=95"]);
    assert_eq!(out["status"], "no_decision");
    assert!(
        out["reason"].as_str().unwrap().contains("seller"),
        "{out:#}"
    );
}

#[test]
fn leader_election_and_work_distribution_run_offline() {
    let leader = TempFile::json(
        "leader",
        &json!({"ballots": [
            {"agent": "a1", "vote": "a2"},
            {"agent": "a2", "vote": "a2"},
            {"agent": "a3", "vote": "a1"}
        ]}),
    );
    let out = tally("leader_election", &leader.0, &[]);
    assert_eq!(out["outcome"], json!({"kind": "leader", "leader": "a2"}));
    let seeded = tally(
        "leader_election",
        &leader.0,
        &["-p", "method=random", "--seed", "3"],
    );
    let again = tally(
        "leader_election",
        &leader.0,
        &["-p", "method=random", "--seed", "3"],
    );
    assert_eq!(seeded, again, "the seed makes draws repeatable");

    let work = TempFile::json(
        "work",
        &json!({
            "agents": [{"id": "cpu-1"}, {"id": "gpu-1", "capabilities": ["gpu"]}],
            "params": {"strategy": "capability_match", "items": [
                {"id": "train", "capability": "gpu"}, "lint", "test"
            ]},
            "ballots": [
                {"agent": "cpu-1", "vote": {"load": {"load": 0, "capacity": 4}}},
                {"agent": "gpu-1", "vote": {"load": {"load": 3, "capacity": 4}}}
            ]
        }),
    );
    let out = tally("work_distribution", &work.0, &[]);
    assert_eq!(out["status"], "decided");
    assert_eq!(out["outcome"]["assignments"]["train"], "gpu-1");
    assert_eq!(out["outcome"]["assignments"]["lint"], "cpu-1");
    let stderr = tally_fails("work_distribution", &work.0, &["-p", "items=[]"]);
    assert!(stderr.contains("items must not be empty"), "{stderr}");
}

#[test]
fn every_example_ballot_file_runs() {
    // The algorithm each example is written for; a new example must be listed here.
    let expected = [
        ("auction.json", "auction", "worker-b"),
        ("experts.json", "weighted", "sqlite"),
        ("majority.json", "majority", "accept"),
        ("ranked.json", "ranked_choice", "B"),
    ];
    let mut found: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .collect();
    found.sort();
    let listed: Vec<&str> = expected.iter().map(|(f, _, _)| *f).collect();
    assert_eq!(found, listed, "examples/ballots and this test disagree");
    for (file, algorithm, winner) in expected {
        let out = tally(algorithm, &example(file), &[]);
        assert_eq!(out["status"], "decided", "{file}: {out:#}");
        let outcome = &out["outcome"];
        let got = outcome
            .get("choice")
            .or_else(|| outcome.get("winner"))
            .unwrap();
        assert_eq!(got, winner, "{file}");
    }
}
