//! The agent status lifecycle as pure functions of the current status and the clock: what a
//! registration, a heartbeat or heartbeat silence does to an agent.
//!
//! ```text
//! register ─▶ registered ─hb─▶ active ◀─hb── suspect ◀─ttl─ registered | active | recovered
//!                                 ▲                          failed ◀─ttl─ any of those, suspect
//!                                 └──hb── recovered ◀─hb── failed
//! evidence ─▶ quarantined (sticky: heartbeats and re-registration leave it)
//! ```

use mabeam_protocol::registry::AgentStatus;

/// Heartbeat TTLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Silence after which an agent is suspect.
    pub suspect_after_ms: u64,
    /// Silence after which an agent has failed; greater than `suspect_after_ms`.
    pub failed_after_ms: u64,
}

/// The status an agent moves to when it has been silent since `last_seen_ms` (its last
/// heartbeat, or its registration if that is later) and the time is `now_ms`; `None` when it
/// stays. An agent silent past both TTLs goes straight to `Failed` (a sweep may have been
/// missed while no registry ran).
pub fn timed_transition(
    status: AgentStatus,
    last_seen_ms: u64,
    now_ms: u64,
    ttl: &Liveness,
) -> Option<AgentStatus> {
    use AgentStatus::*;
    let silent_ms = now_ms.saturating_sub(last_seen_ms);
    match status {
        Registered | Active | Recovered | Suspect if silent_ms >= ttl.failed_after_ms => {
            Some(Failed)
        }
        Registered | Active | Recovered if silent_ms >= ttl.suspect_after_ms => Some(Suspect),
        _ => None,
    }
}

/// The status after an accepted heartbeat.
pub fn after_heartbeat(status: AgentStatus) -> AgentStatus {
    use AgentStatus::*;
    match status {
        Failed => Recovered,
        Quarantined => Quarantined,
        Registered | Active | Suspect | Recovered => Active,
    }
}

/// The status after an accepted (re-)registration: evidence against the id outlives both
/// re-registration and deregistration, and an agent coming back after it failed (typically a
/// restarted process) is `recovered`.
pub fn after_registration(previous: Option<AgentStatus>, quarantined: bool) -> AgentStatus {
    match previous {
        _ if quarantined => AgentStatus::Quarantined,
        Some(AgentStatus::Failed) => AgentStatus::Recovered,
        _ => AgentStatus::Registered,
    }
}

/// Whether heartbeat silence can still change this status, i.e. whether the sweeper has to
/// watch the agent.
pub fn is_timed(status: AgentStatus) -> bool {
    use AgentStatus::*;
    matches!(status, Registered | Active | Recovered | Suspect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AgentStatus::*;

    const TTL: Liveness = Liveness {
        suspect_after_ms: 300,
        failed_after_ms: 800,
    };

    const ALL: [AgentStatus; 6] = [Registered, Active, Suspect, Failed, Recovered, Quarantined];

    #[test]
    fn silence_makes_live_agents_suspect_then_failed() {
        for status in [Registered, Active, Recovered] {
            assert_eq!(timed_transition(status, 1000, 1299, &TTL), None);
            assert_eq!(timed_transition(status, 1000, 1300, &TTL), Some(Suspect));
            assert_eq!(timed_transition(status, 1000, 1799, &TTL), Some(Suspect));
            assert_eq!(timed_transition(status, 1000, 1800, &TTL), Some(Failed));
        }
        assert_eq!(timed_transition(Suspect, 1000, 1799, &TTL), None);
        assert_eq!(timed_transition(Suspect, 1000, 1800, &TTL), Some(Failed));
    }

    #[test]
    fn failed_and_quarantined_agents_stay_whatever_the_silence() {
        for status in [Failed, Quarantined] {
            for now in [1000, 1300, 1800, u64::MAX] {
                assert_eq!(timed_transition(status, 1000, now, &TTL), None);
            }
            assert!(!is_timed(status));
        }
    }

    #[test]
    fn a_clock_behind_the_last_heartbeat_changes_nothing() {
        for status in ALL {
            assert_eq!(timed_transition(status, 5000, 1000, &TTL), None);
        }
    }

    #[test]
    fn heartbeats_activate_and_recover() {
        assert_eq!(after_heartbeat(Registered), Active);
        assert_eq!(after_heartbeat(Active), Active);
        assert_eq!(after_heartbeat(Suspect), Active);
        assert_eq!(after_heartbeat(Failed), Recovered);
        assert_eq!(after_heartbeat(Recovered), Active);
        assert_eq!(after_heartbeat(Quarantined), Quarantined);
    }

    #[test]
    fn quarantine_survives_registration() {
        assert_eq!(after_registration(None, false), Registered);
        assert_eq!(after_registration(Some(Active), false), Registered);
        assert_eq!(after_registration(Some(Failed), false), Recovered);
        assert_eq!(after_registration(Some(Failed), true), Quarantined);
        assert_eq!(after_registration(None, true), Quarantined);
    }

    #[test]
    fn the_sweeper_watches_exactly_the_statuses_time_can_change() {
        for status in ALL {
            let changes = timed_transition(status, 0, u64::MAX, &TTL).is_some();
            assert_eq!(is_timed(status), changes, "{status:?}");
        }
    }

    #[test]
    fn the_documented_heartbeat_loss_path() {
        // registered → active → suspect → failed → recovered → active
        let mut status = Registered;
        let mut trail = vec![status];
        status = after_heartbeat(status);
        trail.push(status);
        let last_heartbeat = 0;
        status = timed_transition(status, last_heartbeat, 400, &TTL).unwrap();
        trail.push(status);
        status = timed_transition(status, last_heartbeat, 900, &TTL).unwrap();
        trail.push(status);
        status = after_heartbeat(status);
        trail.push(status);
        status = after_heartbeat(status);
        trail.push(status);
        assert_eq!(
            trail,
            [Registered, Active, Suspect, Failed, Recovered, Active]
        );
    }
}
