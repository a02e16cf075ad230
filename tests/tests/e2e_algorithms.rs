//! Every algorithm through `mabeam.tasks.submit`, in JSON and in MessagePack, decided by a
//! simulated fleet over real processes; results on the results subject and in Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::BTreeMap, time::Duration};

use mabeam_ctl::demo::catalogue;
use mabeam_protocol::{ContentType, Status};
use mabeam_tests::{Fleet, Stack, StackOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_is_decided_in_json_and_msgpack() {
    let stack = Stack::start(
        StackOptions::new("every-algorithm")
            .coordinators(2)
            .with("MABEAM_DYNAMIC_WEIGHTS", "true")
            .fleet(
                Fleet::new("agent", 7)
                    .with("MABEAM_SIM_PROFILE", "consensus")
                    .with("MABEAM_SIM_NOISE", "0"),
            ),
    )
    .await;
    let expertise_before: BTreeMap<String, f64> = stack
        .agents()
        .await
        .agents
        .into_iter()
        .map(|a| (a.agent_id.to_string(), a.expertise))
        .collect();
    for (encoding, content_type) in [
        ("json", ContentType::Json),
        ("msgpack", ContentType::MsgPack),
    ] {
        let tasks = catalogue(&format!("e2e-{encoding}"), &json!({"all": true}));
        let mut watches = Vec::new();
        for (algorithm, task) in &tasks {
            let id = task["task_id"].as_str().unwrap().to_owned();
            watches.push((algorithm, id.clone(), stack.watch(&id).await));
            stack.submit(task.clone(), content_type).await;
        }
        for (algorithm, id, mut sub) in watches {
            let result = Stack::result(&mut sub, Duration::from_secs(30)).await;
            assert_eq!(
                result.status,
                Status::Decided,
                "{algorithm} ({encoding}) was not decided: {result:?}"
            );
            assert!(
                result.outcome.is_some(),
                "{algorithm}: decided without an outcome"
            );
            assert_eq!(
                result.participants.len(),
                7,
                "{algorithm}: every agent took part"
            );
            if *algorithm == "byzantine" {
                let cert = result
                    .certificate
                    .as_ref()
                    .expect("byzantine results carry a certificate");
                cert.verify(&Default::default())
                    .expect("the certificate verifies");
            }
            let stored = stack
                .stored_result(&id)
                .await
                .expect("result stored in Redis");
            assert_eq!(
                stored, result,
                "{algorithm}: Redis and the results subject agree"
            );
            let view = stack.session(&id).await.expect("sessions.get answers");
            assert_eq!(
                view.result.as_ref(),
                Some(&result),
                "{algorithm}: sessions.get returns the result"
            );
        }
    }
    // Every agent agreed with every decision, so the coordinators' agreement reports raised
    // each agent's expertise (dynamic weights are on in this stack).
    for agent in stack.agents().await.agents {
        let before = expertise_before[agent.agent_id.as_str()];
        assert!(
            agent.expertise > before,
            "{}: expertise {before} -> {} after agreeing with every decision",
            agent.agent_id,
            agent.expertise
        );
    }
}
