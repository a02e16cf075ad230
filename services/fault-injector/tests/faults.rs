//! The injector over real NATS and Redis: requests, agent faults, partitions, timing,
//! restarts, bad input and scenario runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::*;
use futures::StreamExt;
use mabeam_fault_injector::{
    partition,
    scenario::{self, Action, Scenario, ScenarioError, Step},
};
use mabeam_protocol::{
    codec::{decode, ContentType},
    fault::{AgentBehaviour, FaultHeal, FaultKind, FaultSpec, Link, LinkFault},
    subjects,
    telemetry::{EventKind, TelemetryEvent},
    ErrorCode, Limits, PROTOCOL_VERSION,
};
use mabeam_testkit::Infra;

fn spec(id: Option<&str>, fault: FaultKind) -> FaultSpec {
    FaultSpec {
        v: PROTOCOL_VERSION,
        id: id.map(str::to_owned),
        fault,
        start_after_ms: 0,
        duration_ms: None,
    }
}

fn behaviour_on(names: &[&str], behaviour: AgentBehaviour) -> FaultKind {
    FaultKind::Agents {
        agents: agents(names),
        behaviour,
    }
}

fn heal(id: Option<&str>) -> FaultHeal {
    FaultHeal {
        v: PROTOCOL_VERSION,
        id: id.map(str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_behaviour_reaches_each_named_agent_and_heals_by_id_with_events() {
    let infra = Infra::start();
    let injector = Injector::start(&infra, &[]).await;
    let client = client(&infra).await;
    let mut events = client
        .subscribe("mabeam.events.fault_injector.>")
        .await
        .unwrap();
    let mut a1 = faults_of(&client, &agent("a1")).await;
    let mut a2 = faults_of(&client, &agent("a2")).await;
    let mut bystander = faults_of(&client, &agent("a3")).await;

    let list = call(
        &client,
        subjects::FAULTS_INJECT,
        &spec(
            Some("byz"),
            behaviour_on(&["a1", "a2"], AgentBehaviour::Equivocate),
        ),
    )
    .await
    .unwrap();
    assert_eq!(list.faults.len(), 1);
    assert_eq!(list.faults[0].id, "byz");
    assert_eq!(list.faults[0].ends_ms, None);
    for sub in [&mut a1, &mut a2] {
        let c = expect_command(sub).await;
        assert_eq!(c.fault_id, "byz");
        assert_eq!(c.behaviour, Some(AgentBehaviour::Equivocate));
        assert!(c.unreachable.is_empty() && !c.coordinator_unreachable);
    }
    expect_silence(&mut bystander, Duration::from_millis(200)).await;

    let healed = call(&client, subjects::FAULTS_HEAL, &heal(Some("byz")))
        .await
        .unwrap();
    assert_eq!(healed.faults.len(), 1);
    assert_eq!(healed.faults[0].id, "byz");
    for sub in [&mut a1, &mut a2] {
        let c = expect_command(sub).await;
        assert_eq!((c.fault_id.as_str(), c.behaviour), ("byz", None));
    }
    let listed = call(&client, subjects::FAULTS_LIST, &heal(None))
        .await
        .unwrap();
    assert!(listed.faults.is_empty());

    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let m = tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .unwrap();
        let e: TelemetryEvent =
            decode(ContentType::MsgPack, &m.payload, &Limits::default()).unwrap();
        kinds.push(e.event);
    }
    assert!(
        matches!(&kinds[0], EventKind::FaultInjected { fault_id, description }
        if fault_id == "byz" && description.contains("equivocate"))
    );
    assert_eq!(
        kinds[1],
        EventKind::FaultHealed {
            fault_id: "byz".into()
        }
    );
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_all_heals_every_fault_and_ids_are_generated_when_absent() {
    let infra = Infra::start();
    let injector = Injector::start(&infra, &[]).await;
    let client = client(&infra).await;
    let mut a1 = faults_of(&client, &agent("a1")).await;
    let mut b1 = faults_of(&client, &agent("b1")).await;

    let first = call(
        &client,
        subjects::FAULTS_INJECT,
        &spec(None, behaviour_on(&["a1"], AgentBehaviour::Silent)),
    )
    .await
    .unwrap();
    let generated = first.faults[0].id.clone();
    assert!(generated.starts_with("f-"), "{generated}");
    call(
        &client,
        subjects::FAULTS_INJECT,
        &spec(
            Some("slow"),
            behaviour_on(
                &["b1"],
                AgentBehaviour::Slow {
                    delay_ms: 100,
                    jitter_ms: 10,
                },
            ),
        ),
    )
    .await
    .unwrap();
    expect_command(&mut a1).await;
    expect_command(&mut b1).await;
    let listed = call(&client, subjects::FAULTS_LIST, &heal(None))
        .await
        .unwrap();
    assert_eq!(listed.faults.len(), 2);

    let healed = call(&client, subjects::FAULTS_HEAL, &heal(None))
        .await
        .unwrap();
    let mut ids: Vec<String> = healed.faults.into_iter().map(|f| f.id).collect();
    ids.sort();
    let mut expected = vec![generated.clone(), "slow".to_owned()];
    expected.sort();
    assert_eq!(ids, expected);
    let c = expect_command(&mut a1).await;
    assert_eq!((c.fault_id, c.behaviour), (generated, None));
    let c = expect_command(&mut b1).await;
    assert_eq!((c.fault_id.as_str(), c.behaviour), ("slow", None));
    assert!(call(&client, subjects::FAULTS_LIST, &heal(None))
        .await
        .unwrap()
        .faults
        .is_empty());
    let again = call(&client, subjects::FAULTS_HEAL, &heal(None))
        .await
        .unwrap();
    assert!(
        again.faults.is_empty(),
        "heal-all with nothing active is no error"
    );
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_after_delays_a_fault_and_duration_heals_it() {
    let infra = Infra::start();
    let injector = Injector::start(&infra, &[]).await;
    let client = client(&infra).await;
    let mut a1 = faults_of(&client, &agent("a1")).await;

    let sent = Instant::now();
    let mut s = spec(Some("later"), behaviour_on(&["a1"], AgentBehaviour::Crash));
    s.start_after_ms = 400;
    s.duration_ms = Some(500);
    let list = call(&client, subjects::FAULTS_INJECT, &s).await.unwrap();
    let f = &list.faults[0];
    assert_eq!(f.ends_ms, Some(f.started_ms + 500));
    let scheduled = call(&client, subjects::FAULTS_LIST, &heal(None))
        .await
        .unwrap();
    assert_eq!(scheduled.faults.len(), 1, "scheduled faults are listed");

    let applied = expect_command(&mut a1).await;
    assert_eq!(applied.behaviour, Some(AgentBehaviour::Crash));
    assert!(
        sent.elapsed() >= Duration::from_millis(390),
        "applied after {:?}",
        sent.elapsed()
    );
    let lifted = expect_command(&mut a1).await;
    assert_eq!(
        (lifted.fault_id.as_str(), lifted.behaviour),
        ("later", None)
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(890),
        "healed after {:?}",
        sent.elapsed()
    );
    assert!(call(&client, subjects::FAULTS_LIST, &heal(None))
        .await
        .unwrap()
        .faults
        .is_empty());
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_cut_each_group_from_the_others_and_leave_outsiders_alone() {
    let infra = Infra::start();
    let injector = Injector::start(&infra, &[]).await;
    let client = client(&infra).await;
    let fleet = agents(&["p0", "p1", "p2", "p3", "p4", "p5"]);
    let groups = partition::fragmentation(&fleet, &[3, 2, 1]).unwrap();
    let mut subs = Vec::new();
    for a in &fleet {
        subs.push(faults_of(&client, a).await);
    }
    let mut outsider = faults_of(&client, &agent("p6")).await;

    call(
        &client,
        subjects::FAULTS_INJECT,
        &spec(
            Some("frag"),
            FaultKind::Partition {
                groups: groups.clone(),
                flap_ms: None,
            },
        ),
    )
    .await
    .unwrap();
    for (i, group) in groups.iter().enumerate() {
        let others: Vec<_> = groups
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, g)| g.clone())
            .collect();
        for a in group {
            let idx = fleet.iter().position(|x| x == a).unwrap();
            let c = expect_command(&mut subs[idx]).await;
            assert_eq!(c.fault_id, "frag");
            assert_eq!(c.behaviour, None);
            assert_eq!(c.unreachable, others, "agent {a}");
            assert_eq!(c.coordinator_unreachable, i != 0, "agent {a}");
        }
    }
    expect_silence(&mut outsider, Duration::from_millis(200)).await;

    call(&client, subjects::FAULTS_HEAL, &heal(Some("frag")))
        .await
        .unwrap();
    for sub in &mut subs {
        let c = expect_command(sub).await;
        assert_eq!(c.fault_id, "frag");
        assert!(c.behaviour.is_none() && c.unreachable.is_empty() && !c.coordinator_unreachable);
    }

    // The other shapes, through their constructors.
    let split = partition::clean_split(&fleet).unwrap();
    let isolated = partition::minority_isolation(&fleet, 2).unwrap();
    call(
        &client,
        subjects::FAULTS_INJECT,
        &spec(
            Some("iso"),
            FaultKind::Partition {
                groups: isolated,
                flap_ms: None,
            },
        ),
    )
    .await
    .unwrap();
    let c = expect_command(&mut subs[5]).await;
    assert_eq!(c.unreachable, agents(&["p0", "p1", "p2", "p3"]));
    assert!(
        c.coordinator_unreachable,
        "the isolated minority loses the coordinators"
    );
    let c = expect_command(&mut subs[0]).await;
    assert_eq!(c.unreachable, agents(&["p4", "p5"]));
    assert!(!c.coordinator_unreachable);
    assert_eq!(split[0], agents(&["p0", "p1", "p2"]));
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_partition_alternates_applied_and_healed() {
    let infra = Infra::start();
    let injector = Injector::start(&infra, &[]).await;
    let client = client(&infra).await;
    let fleet = agents(&["x0", "x1"]);
    let mut x1 = faults_of(&client, &fleet[1]).await;

    let sent = Instant::now();
    call(
        &client,
        subjects::FAULTS_INJECT,
        &spec(
            Some("flap"),
            FaultKind::Partition {
                groups: partition::clean_split(&fleet).unwrap(),
                flap_ms: Some(300),
            },
        ),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let c = expect_command(&mut x1).await;
        seen.push((sent.elapsed(), !c.unreachable.is_empty()));
    }
    let applied: Vec<bool> = seen.iter().map(|(_, on)| *on).collect();
    assert_eq!(applied, [true, false, true, false, true], "{seen:?}");
    for (k, (at, _)) in seen.iter().enumerate() {
        assert!(
            *at >= Duration::from_millis(300 * k as u64).saturating_sub(Duration::from_millis(20)),
            "change {k} came at {at:?}"
        );
    }
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_commands_are_sent_again_for_agents_that_restarted() {
    let infra = Infra::start();
    let injector = Injector::start(&infra, &[("MABEAM_FAULT_RESEND_MS", "200".into())]).await;
    let client = client(&infra).await;
    let mut a1 = faults_of(&client, &agent("a1")).await;
    call(
        &client,
        subjects::FAULTS_INJECT,
        &spec(
            Some("drop"),
            behaviour_on(&["a1"], AgentBehaviour::Drop { percent: 25.0 }),
        ),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let c = expect_command(&mut a1).await;
        assert_eq!(c.behaviour, Some(AgentBehaviour::Drop { percent: 25.0 }));
    }
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_injector_reapplies_stored_faults_and_still_heals_on_time() {
    let infra = Infra::start();
    let client = client(&infra).await;
    let first = Injector::start(&infra, &[]).await;
    let sent = Instant::now();
    let mut s = spec(
        Some("durable"),
        behaviour_on(&["a1"], AgentBehaviour::Replay),
    );
    s.duration_ms = Some(2000);
    call(&client, subjects::FAULTS_INJECT, &s).await.unwrap();
    first.stop().await;

    let mut a1 = faults_of(&client, &agent("a1")).await;
    let second = Injector::start(&infra, &[]).await;
    let again = expect_command(&mut a1).await;
    assert_eq!(
        (again.fault_id.as_str(), again.behaviour),
        ("durable", Some(AgentBehaviour::Replay))
    );
    let listed = call(&client, subjects::FAULTS_LIST, &heal(None))
        .await
        .unwrap();
    assert_eq!(listed.faults.len(), 1);
    assert_eq!(listed.faults[0].id, "durable");
    let healed = loop {
        let c = expect_command(&mut a1).await;
        if c.behaviour.is_none() {
            break c;
        }
    };
    assert_eq!(healed.fault_id, "durable");
    assert!(sent.elapsed() >= Duration::from_millis(1990));
    assert!(
        sent.elapsed() < Duration::from_millis(4000),
        "healed late: {:?}",
        sent.elapsed()
    );
    // Gone from Redis too: a third instance has nothing to restore.
    second.stop().await;
    let third = Injector::start(&infra, &[]).await;
    assert!(call(&client, subjects::FAULTS_LIST, &heal(None))
        .await
        .unwrap()
        .faults
        .is_empty());
    third.stop().await;
}

async fn refused(client: &async_nats::Client, s: &FaultSpec) -> mabeam_protocol::ErrorReply {
    call(client, subjects::FAULTS_INJECT, s)
        .await
        .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors() {
    let infra = Infra::start();
    let injector = Injector::start(&infra, &[]).await;
    let client = client(&infra).await;

    // Malformed bodies, in both encodings; the error comes back in the caller's encoding.
    for subject in [subjects::FAULTS_INJECT, subjects::FAULTS_HEAL] {
        let reply = call_raw(&client, subject, ContentType::MsgPack, vec![0xc1, 0x00]).await;
        let err = mabeam_runtime::reply::as_error(reply.headers.as_ref(), &reply.payload).unwrap();
        assert_eq!(err.code, ErrorCode::MalformedMessage, "{subject}");
        let reply = call_raw(&client, subject, ContentType::Json, b"{\"fault\":".to_vec()).await;
        assert_eq!(
            reply
                .headers
                .as_ref()
                .unwrap()
                .get("Content-Type")
                .unwrap()
                .as_str(),
            "application/json"
        );
        let err: mabeam_protocol::ErrorReply = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(err.code, ErrorCode::MalformedMessage, "{subject}");
    }

    // Empty agent list.
    let e = refused(
        &client,
        &spec(None, behaviour_on(&[], AgentBehaviour::Crash)),
    )
    .await;
    assert_eq!(e.code, ErrorCode::NoParticipants);

    // Zero and negative percentages.
    for percent in [0.0, -10.0] {
        let e = refused(
            &client,
            &spec(
                None,
                behaviour_on(&["a1"], AgentBehaviour::Drop { percent }),
            ),
        )
        .await;
        assert_eq!(e.code, ErrorCode::InvalidParams);
        assert!(e.message.contains("percent"), "{}", e.message);
    }

    // A link fault on a link without a proxy.
    let e = refused(
        &client,
        &spec(
            None,
            FaultKind::Link {
                link: Link::Redis,
                fault: LinkFault::Blackhole,
            },
        ),
    )
    .await;
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(
        e.message.contains("MABEAM_PROXY_REDIS_LISTEN"),
        "{}",
        e.message
    );

    // A duplicate id.
    let s = spec(Some("dup"), behaviour_on(&["a1"], AgentBehaviour::Corrupt));
    call(&client, subjects::FAULTS_INJECT, &s).await.unwrap();
    let e = refused(&client, &s).await;
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert!(e.message.contains("already"), "{}", e.message);

    // An unknown heal id.
    let e = call(&client, subjects::FAULTS_HEAL, &heal(Some("nope")))
        .await
        .expect_err("refused");
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert!(e.message.contains("nope"), "{}", e.message);

    // An id that could not be a subject token or key part.
    let e = refused(
        &client,
        &spec(Some("a b"), behaviour_on(&["a1"], AgentBehaviour::Crash)),
    )
    .await;
    assert_eq!(e.code, ErrorCode::InvalidParams);

    // Refusals change nothing.
    let listed = call(&client, subjects::FAULTS_LIST, &heal(None))
        .await
        .unwrap();
    assert_eq!(listed.faults.len(), 1);
    injector.stop().await;
}

#[test]
fn every_example_scenario_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/scenarios");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let scenario = scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!scenario.steps.is_empty(), "{}", path.display());
        count += 1;
    }
    assert!(count >= 3, "only {count} example scenarios");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_runs_its_steps_in_order_against_the_injector() {
    let infra = Infra::start();
    let injector = Injector::start(&infra, &[]).await;
    let client = client(&infra).await;
    let mut a1 = faults_of(&client, &agent("a1")).await;
    let text = r#"
name = "run"

[[steps]]
at_ms = 0
inject = { id = "s1", fault = { target = "agents", agents = ["a1"], behaviour = { type = "timing_attack" } } }

[[steps]]
at_ms = 300
partition = { id = "s2", shape = "clean_split", agents = ["a1", "a2"] }

[[steps]]
at_ms = 500
heal = "s1"

[[steps]]
at_ms = 500
heal = "unknown"

[[steps]]
at_ms = 600
heal_all = true
"#;
    let parsed = scenario::parse(text, scenario::Format::Toml).unwrap();
    let started = Instant::now();
    let mut progress = Vec::new();
    let outcomes = scenario::run(&client, &parsed, Duration::from_secs(2), |o| {
        progress.push((started.elapsed(), o.at_ms))
    })
    .await
    .unwrap();
    assert_eq!(outcomes.len(), 5);
    for (elapsed, at_ms) in &progress {
        assert!(
            *elapsed >= Duration::from_millis(*at_ms),
            "{elapsed:?} < {at_ms}"
        );
    }
    assert_eq!(outcomes[0].result.as_ref().unwrap().faults[0].id, "s1");
    assert_eq!(outcomes[1].result.as_ref().unwrap().faults[0].id, "s2");
    assert_eq!(outcomes[2].result.as_ref().unwrap().faults[0].id, "s1");
    let refusal = outcomes[3].result.as_ref().unwrap_err();
    assert!(refusal.starts_with("invalid_params"), "{refusal}");
    assert_eq!(outcomes[4].result.as_ref().unwrap().faults[0].id, "s2");
    assert_eq!(outcomes[2].description, "heal s1");

    // What a1 saw, in order: s1 on, s2 on, s1 off, s2 off.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let c = expect_command(&mut a1).await;
        seen.push((
            c.fault_id,
            c.behaviour.is_some() || !c.unreachable.is_empty(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("s1".to_owned(), true),
            ("s2".to_owned(), true),
            ("s1".to_owned(), false),
            ("s2".to_owned(), false)
        ]
    );
    injector.stop().await;

    // Without an injector the run stops at the first step, naming it.
    let lonely = Scenario {
        name: "x".into(),
        steps: vec![Step {
            at_ms: 0,
            action: Action::Heal { id: None },
        }],
    };
    let e = scenario::run(&client, &lonely, Duration::from_millis(500), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, ScenarioError::Request { index: 1, .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_an_injection_is_refused_as_unavailable() {
    let mut infra = Infra::start();
    let injector = Injector::start(&infra, &[]).await;
    let client = client(&infra).await;
    let mut a1 = faults_of(&client, &agent("a1")).await;
    infra.redis.stop();
    let e = call(
        &client,
        subjects::FAULTS_INJECT,
        &spec(Some("lost"), behaviour_on(&["a1"], AgentBehaviour::Crash)),
    )
    .await
    .expect_err("refused");
    assert_eq!(e.code, ErrorCode::Unavailable);
    // Not stored means not applied: a restart could not have healed it.
    expect_silence(&mut a1, Duration::from_millis(200)).await;
    infra.redis.start_again();
    injector.stop().await;
}
