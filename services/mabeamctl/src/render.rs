//! Human-readable output: results, tables, timestamps. (`--json` prints the wire messages
//! as JSON instead.)

use std::fmt::Write as _;

use mabeam_protocol::{
    result::{FaultReason, Outcome, TaskResult},
    Status,
};

/// Unix milliseconds as UTC, e.g. `2026-11-21T08:30:57.123Z`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

pub fn fault_reason(reason: FaultReason) -> &'static str {
    match reason {
        FaultReason::Equivocation => "equivocation",
        FaultReason::InvalidSignature => "invalid signature",
        FaultReason::Replay => "replay",
        FaultReason::MalformedBallot => "malformed ballot",
        FaultReason::Untimely => "untimely",
        FaultReason::Silent => "silent",
    }
}

fn tally(tally: &std::collections::BTreeMap<String, f64>) -> String {
    tally
        .iter()
        .map(|(option, weight)| format!("{option} {weight}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn numbers(values: &[f64]) -> String {
    match values {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(f64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Choice {
            choice,
            support,
            tally: totals,
        } => format!("{choice} (support {support:.3}; {})", tally(totals)),
        Outcome::Value { value, dispersion } => {
            format!("{} (dispersion {dispersion})", numbers(value))
        }
        Outcome::Award { winner, bid, price } => format!("{winner} (bid {bid}, pays {price})"),
        Outcome::Leader { leader } => format!("leader {leader}"),
        Outcome::Assignment { assignments } => assignments
            .iter()
            .map(|(item, agent)| format!("{item} → {agent}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A result, one `label  value` line per field that has something to say.
pub fn result(r: &TaskResult) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{label:<13} {value}");
    };
    line("task", r.task_id.as_str());
    if let Some(session) = &r.session_id {
        line("session", session.as_str());
    }
    line("algorithm", &r.algorithm);
    line("status", r.status.as_str());
    if let Some(o) = &r.outcome {
        line("outcome", &outcome(o));
    }
    if let Some(reason) = &r.reason {
        line("reason", reason);
    }
    if let Some(error) = &r.error {
        line(
            "error",
            &format!("{}: {}", error.code.as_str(), error.message),
        );
    }
    line("rounds", &r.rounds.to_string());
    for round in &r.history {
        let mut text = format!("{} counted {}", round.algorithm, round.counted);
        if !round.tally.is_empty() {
            let _ = write!(text, "; {}", tally(&round.tally));
        }
        if let Some(aggregate) = &round.aggregate {
            let _ = write!(text, "; aggregate {}", numbers(aggregate));
        }
        if let Some(dispersion) = round.dispersion {
            let _ = write!(text, " (dispersion {dispersion})");
        }
        if !round.eliminated.is_empty() {
            let _ = write!(text, "; eliminated {}", round.eliminated.join(", "));
        }
        if round.exhausted > 0 {
            let _ = write!(text, "; {} exhausted", round.exhausted);
        }
        if let Some(note) = &round.note {
            let _ = write!(text, "; {note}");
        }
        line(&format!("  round {}", round.round), &text);
    }
    for switch in &r.switches {
        line(
            "switch",
            &format!(
                "{} → {} at round {} after {} ms: {}",
                switch.from, switch.to, switch.at_round, switch.elapsed_ms, switch.reason
            ),
        );
    }
    let participants = r
        .participants
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    line(
        "participants",
        &format!("{}: {participants}", r.participants.len()),
    );
    if !r.faulty_detected.is_empty() {
        let faulty = r
            .faulty_detected
            .iter()
            .map(|f| format!("{} ({})", f.agent_id, fault_reason(f.reason)))
            .collect::<Vec<_>>()
            .join(", ");
        line("faulty", &faulty);
    }
    if let Some(c) = &r.certificate {
        line(
            "certificate",
            &format!(
                "{} in round {}: {} signed commits of {} members (quorum {}, f={})",
                c.value,
                c.round,
                c.commits.len(),
                c.electorate.len(),
                c.quorum,
                c.fault_tolerance
            ),
        );
    }
    let t = &r.timings;
    let mut timings = format!("ran {} ms", t.duration_ms);
    if let (Some(submitted), Some(started)) = (t.submitted_ms, t.started_ms) {
        let _ = write!(timings, ", queued {} ms", started.saturating_sub(submitted));
    }
    if let Some(started) = t.started_ms {
        let _ = write!(timings, "; started {}", utc(started));
    }
    if let Some(finished) = t.finished_ms {
        let _ = write!(timings, ", finished {}", utc(finished));
    }
    line("timings", &timings);
    out
}

/// The one-word verdict after `submit --wait`.
pub fn verdict(status: Status) -> &'static str {
    match status {
        Status::Decided => "decided",
        Status::NoDecision => "no decision",
        Status::Failed => "failed",
        Status::Rejected => "rejected",
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut emit = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            let _ = write!(line, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    };
    emit(&mut header.iter().copied());
    for row in rows {
        emit(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mabeam_protocol::{
        result::{FaultyAgent, RoundRecord, Timings},
        AgentId, TaskId,
    };

    use super::*;

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_795_250_457_001), "2026-11-21T08:40:57.001Z");
    }

    #[test]
    fn a_result_reads_as_labelled_lines() {
        let r = TaskResult {
            v: 1,
            task_id: TaskId::new("t1").unwrap(),
            session_id: None,
            algorithm: "majority".into(),
            status: Status::Decided,
            outcome: Some(Outcome::Choice {
                choice: "A".into(),
                support: 0.75,
                tally: BTreeMap::from([("A".into(), 3.0), ("B".into(), 1.0)]),
            }),
            reason: None,
            rounds: 1,
            history: vec![RoundRecord {
                round: 1,
                algorithm: "majority".into(),
                counted: 4,
                ..RoundRecord::default()
            }],
            switches: vec![],
            participants: vec![AgentId::new("a1").unwrap(), AgentId::new("a2").unwrap()],
            faulty_detected: vec![FaultyAgent {
                agent_id: AgentId::new("a2").unwrap(),
                reason: FaultReason::Equivocation,
            }],
            certificate: None,
            error: None,
            timings: Timings {
                submitted_ms: Some(1000),
                started_ms: Some(1004),
                finished_ms: Some(1016),
                duration_ms: 12,
            },
        };
        let text = result(&r);
        assert!(
            text.contains("outcome       A (support 0.750; A 3, B 1)"),
            "{text}"
        );
        assert!(text.contains("participants  2: a1, a2"), "{text}");
        assert!(text.contains("faulty        a2 (equivocation)"), "{text}");
        assert!(text.contains("  round 1     majority counted 4"), "{text}");
        assert!(text.contains("ran 12 ms, queued 4 ms"), "{text}");
    }

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["ID", "STATUS"],
            &[
                vec!["agent-1".into(), "active".into()],
                vec!["a2".into(), "suspect".into()],
            ],
        );
        assert_eq!(text, "ID       STATUS\nagent-1  active\na2       suspect\n");
    }
}
