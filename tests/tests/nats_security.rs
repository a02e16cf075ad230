//! The locked-down deployment, over real servers: nats-server started with the committed
//! `deploy/nats` configuration (users from `gen-users.sh`, per-role subject permissions),
//! Redis with an ACL user, every service with its own credentials (passwords from files and
//! the environment, an nkey for the coordinator). The stack decides tasks; forbidden
//! publishes and subscriptions are refused by the server; TLS and mutual TLS connect; no
//! secret reaches a log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use async_nats::ConnectErrorKind;
use futures::StreamExt;
use mabeam_protocol::{subjects, ContentType, Status};
use mabeam_runtime::{config::settings, CommonConfig, Readiness, Shutdown};
use mabeam_testkit::{Infra, NatsServer, RedisServer};
use mabeam_tests::{Fleet, Stack, StackOptions};
use serde_json::json;
use tokio::sync::mpsc;

fn nats_deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .join("deploy/nats")
}

/// 32 random hex characters.
fn secret() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The deploy/nats files in `dir`, with `users.conf` generated for `fleets` (and extra
/// generator environment, e.g. nkey public keys).
fn nats_config(dir: &Path, fleets: &[&str], generator_env: &[(&str, &str)]) {
    for file in [
        "nats-server.conf",
        "nats-server-tls.conf",
        "nats-server-mtls.conf",
        "permissions.conf",
    ] {
        std::fs::copy(nats_deploy_dir().join(file), dir.join(file)).unwrap();
    }
    let mut gen = Command::new(nats_deploy_dir().join("gen-users.sh"));
    for fleet in fleets {
        gen.arg("--fleet").arg(fleet);
    }
    let out = gen
        .envs(generator_env.iter().copied())
        .output()
        .expect("gen-users.sh");
    assert!(
        out.status.success(),
        "gen-users.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("users.conf"), out.stdout).unwrap();
}

/// Password users of the generated config (every role but the nkey coordinator).
const PASSWORD_USERS: [(&str, &str); 6] = [
    ("registry", "REGISTRY"),
    ("fault-injector", "FAULT_INJECTOR"),
    ("telemetry", "TELEMETRY"),
    ("client", "CLIENT"),
    ("operator", "OPERATOR"),
    ("secfleet", "SECFLEET"),
];

struct Passwords(BTreeMap<&'static str, String>);

impl Passwords {
    fn new() -> Self {
        Self(PASSWORD_USERS.iter().map(|(u, _)| (*u, secret())).collect())
    }

    fn of(&self, user: &str) -> &str {
        &self.0[user]
    }

    /// What nats-server reads its password variables from: quoted, since it parses them as
    /// config values (a hex password could otherwise read as a number).
    fn server_env(&self) -> Vec<(String, String)> {
        PASSWORD_USERS
            .iter()
            .map(|(user, var)| {
                (
                    format!("MABEAM_NATS_PASSWORD_{var}"),
                    format!("\"{}\"", self.0[user]),
                )
            })
            .collect()
    }
}

fn start_nats(config: &Path, env: &[(String, String)]) -> NatsServer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    NatsServer::start_with_config_env(Some(config), &env)
}

/// A raw client with `user`'s password whose server errors (permission violations) arrive
/// on the returned channel.
async fn connect_as(
    url: &str,
    user: &str,
    password: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(format!("_INBOX.{user}"))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
    (client, rx)
}

async fn expect_violation(errors: &mut mpsc::UnboundedReceiver<String>, what: &str) {
    let error = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .unwrap_or_else(|_| panic!("no permissions violation for {what}"))
        .unwrap();
    assert!(
        error.contains("Permissions Violation") && error.contains(what),
        "{error}"
    );
}

async fn no_message(sub: &mut async_nats::Subscriber, within: Duration) {
    if let Ok(Some(m)) = tokio::time::timeout(within, sub.next()).await {
        panic!("a refused message was delivered on {}", m.subject);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_work_with_their_own_credentials_and_forbidden_subjects_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator_key = nkeys::KeyPair::new_user();
    let coordinator_seed = coordinator_key.seed().unwrap();
    let passwords = Passwords::new();
    let fleet_ids: Vec<String> = (0..4).map(|i| format!("sec-{i:05}")).collect();
    nats_config(
        dir.path(),
        &[&format!("secfleet={}", fleet_ids.join(","))],
        &[(
            "MABEAM_NATS_NKEY_COORDINATOR",
            coordinator_key.public_key().as_str(),
        )],
    );
    let redis_password = secret();
    let acl_user = format!(">{redis_password}");
    let (nats, redis) = {
        let config = dir.path().join("nats-server.conf");
        let env = passwords.server_env();
        let acl_user = acl_user.clone();
        tokio::task::spawn_blocking(move || {
            (
                start_nats(&config, &env),
                // The default user is off: only the ACL user, on mabeam's keys, no admin
                // or dangerous commands.
                RedisServer::start_with_args(&[
                    "--user",
                    "default",
                    "off",
                    "--user",
                    "mabeam",
                    "on",
                    &acl_user,
                    "~mabeam:*",
                    "+@all",
                    "-@dangerous",
                ]),
            )
        })
        .await
        .unwrap()
    };
    let nats_url = nats.url();

    // Secrets in files, as mounted container secrets are.
    let file = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{content}\n")).unwrap();
        path.display().to_string()
    };
    let redis_password_file = file("redis-password", &redis_password);
    let registry_password_file = file("registry-password", passwords.of("registry"));
    let coordinator_seed_file = file("coordinator.nk", &coordinator_seed);
    let user = |opts: StackOptions, service: &str, user: &str| {
        opts.service_with(service, "MABEAM_NATS_USER", user)
            .service_with(service, "MABEAM_NATS_PASSWORD", passwords.of(user))
            .service_with(
                service,
                "MABEAM_NATS_INBOX_PREFIX",
                &format!("_INBOX.{user}"),
            )
    };
    let opts = StackOptions::new("nats-security")
        .telemetry()
        .fault_injector()
        .fleet(Fleet::new("sec", 4))
        .with("MABEAM_REDIS_USER", "mabeam")
        .with("MABEAM_REDIS_PASSWORD_FILE", &redis_password_file)
        .service_with("registry", "MABEAM_NATS_USER", "registry")
        .service_with(
            "registry",
            "MABEAM_NATS_PASSWORD_FILE",
            &registry_password_file,
        )
        .service_with("registry", "MABEAM_NATS_INBOX_PREFIX", "_INBOX.registry")
        .service_with(
            "coordinator-0",
            "MABEAM_NATS_NKEY_SEED_FILE",
            &coordinator_seed_file,
        )
        .service_with(
            "coordinator-0",
            "MABEAM_NATS_INBOX_PREFIX",
            "_INBOX.coordinator",
        )
        .client_auth("operator", passwords.of("operator"), "_INBOX.operator");
    let opts = user(opts, "telemetry", "telemetry");
    let opts = user(opts, "fault-injector", "fault-injector");
    let opts = user(opts, "agent-sim-sec", "secfleet");
    let mut stack = Stack::start_with_infra(Infra { nats, redis }, opts).await;

    // End to end: a plain vote, a Byzantine agreement (whose agents read each other's
    // signed votes and publish their own) and a task through the high-priority queue.
    for (id, algorithm, priority) in [
        ("sec-majority", "majority", "normal"),
        ("sec-byz", "byzantine", "normal"),
        ("sec-urgent", "majority", "high"),
    ] {
        let result = stack
            .decide(
                json!({"task_id": id, "algorithm": algorithm, "proposal": "deploy?",
                       "options": ["yes", "no"], "participants": {"all": true},
                       "priority": priority}),
                ContentType::Json,
                Duration::from_secs(20),
            )
            .await;
        assert_eq!(result.status, Status::Decided, "{algorithm}: {result:?}");
        assert_eq!(result.participants.len(), 4);
    }

    // The coordinator's view of one vote subject, through its own nkey credentials.
    let coordinator = async_nats::ConnectOptions::with_nkey(coordinator_seed.clone())
        .custom_inbox_prefix("_INBOX.coordinator")
        .connect(&nats_url)
        .await
        .unwrap();
    let mut votes = coordinator
        .subscribe("mabeam.sessions.s-probe.votes.*")
        .await
        .unwrap();
    coordinator.flush().await.unwrap();

    // An agent of the fleet publishes on its own vote subject: delivered.
    let (fleet, mut fleet_errors) =
        connect_as(&nats_url, "secfleet", passwords.of("secfleet")).await;
    fleet
        .publish("mabeam.sessions.s-probe.votes.sec-00001", "mine".into())
        .await
        .unwrap();
    fleet.flush().await.unwrap();
    let own = tokio::time::timeout(Duration::from_secs(5), votes.next())
        .await
        .expect("own vote delivered")
        .unwrap();
    assert_eq!(
        own.subject.as_str(),
        "mabeam.sessions.s-probe.votes.sec-00001"
    );

    // Voting in another agent's name: refused by the server, never delivered.
    fleet
        .publish("mabeam.sessions.s-probe.votes.intruder-7", "forged".into())
        .await
        .unwrap();
    fleet.flush().await.unwrap();
    expect_violation(
        &mut fleet_errors,
        "mabeam.sessions.s-probe.votes.intruder-7",
    )
    .await;
    no_message(&mut votes, Duration::from_millis(300)).await;

    // Agents cannot submit tasks, read other agents' inboxes or everyone's replies.
    let js = async_nats::jetstream::new(stack.client.clone());
    let queued = |mut s: async_nats::jetstream::stream::Stream| async move {
        s.info().await.unwrap().state.messages
    };
    let before = queued(js.get_stream(subjects::TASKS_STREAM).await.unwrap()).await;
    fleet
        .publish(subjects::TASKS_SUBMIT, b"{}".as_slice().into())
        .await
        .unwrap();
    fleet.flush().await.unwrap();
    expect_violation(&mut fleet_errors, subjects::TASKS_SUBMIT).await;
    let _sneak = fleet
        .subscribe("mabeam.agents.victim-1.inbox")
        .await
        .unwrap();
    expect_violation(&mut fleet_errors, "mabeam.agents.victim-1.inbox").await;
    let _snoop = fleet.subscribe("_INBOX.>").await.unwrap();
    expect_violation(&mut fleet_errors, "_INBOX.>").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = queued(js.get_stream(subjects::TASKS_STREAM).await.unwrap()).await;
    assert_eq!(
        before, after,
        "the refused submission reached the task stream"
    );

    // A client may submit tasks but not vote, nor inject faults.
    let (client, mut client_errors) = connect_as(&nats_url, "client", passwords.of("client")).await;
    client
        .publish("mabeam.sessions.s-probe.votes.sec-00001", "vote".into())
        .await
        .unwrap();
    client
        .publish(subjects::FAULTS_INJECT, "{}".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    expect_violation(
        &mut client_errors,
        "mabeam.sessions.s-probe.votes.sec-00001",
    )
    .await;
    expect_violation(&mut client_errors, subjects::FAULTS_INJECT).await;
    no_message(&mut votes, Duration::from_millis(300)).await;

    // Swarm broadcasts: a client may message an agent, but not write its inbox (proposals
    // come from coordinators only); an agent may not message another.
    let mut messages = fleet
        .subscribe("mabeam.agents.sec-00001.messages")
        .await
        .unwrap();
    let mut inbox = fleet
        .subscribe("mabeam.agents.sec-00001.inbox")
        .await
        .unwrap();
    fleet.flush().await.unwrap();
    client
        .publish("mabeam.agents.sec-00001.messages", "hello".into())
        .await
        .unwrap();
    client
        .publish("mabeam.agents.sec-00001.inbox", "fake proposal".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let hello = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("the broadcast is delivered")
        .unwrap();
    assert_eq!(hello.payload.as_ref(), b"hello");
    expect_violation(&mut client_errors, "mabeam.agents.sec-00001.inbox").await;
    no_message(&mut inbox, Duration::from_millis(300)).await;
    fleet
        .publish("mabeam.agents.sec-00002.messages", "psst".into())
        .await
        .unwrap();
    fleet.flush().await.unwrap();
    expect_violation(&mut fleet_errors, "mabeam.agents.sec-00002.messages").await;

    // Wrong or missing credentials do not get in at all.
    let wrong =
        async_nats::ConnectOptions::with_user_and_password("registry".into(), "guess".into())
            .max_reconnects(Some(1))
            .connect(&nats_url)
            .await;
    assert_eq!(
        wrong.err().map(|e| e.kind()),
        Some(ConnectErrorKind::AuthorizationViolation),
        "a wrong password is refused as such"
    );
    let anonymous = async_nats::ConnectOptions::new()
        .max_reconnects(Some(1))
        .connect(&nats_url)
        .await;
    assert_eq!(
        anonymous.err().map(|e| e.kind()),
        Some(ConnectErrorKind::AuthorizationViolation),
        "an anonymous client is refused as such"
    );

    // Still deciding after the attempts.
    let result = stack
        .decide(
            json!({"task_id": "sec-after", "algorithm": "majority", "proposal": "still?",
                   "options": ["yes", "no"], "participants": {"all": true}}),
            ContentType::Json,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(result.status, Status::Decided);

    // No secret in any service's log, including its debug output of the configuration.
    let logs: Vec<PathBuf> = std::iter::once(&stack.registry)
        .chain(&stack.coordinators)
        .chain(stack.telemetry.as_ref())
        .chain(stack.fault_injector.as_ref())
        .chain(&stack.fleets)
        .map(|p| p.log_path().to_path_buf())
        .collect();
    for p in stack
        .coordinators
        .iter_mut()
        .chain(std::iter::once(&mut stack.registry))
    {
        p.terminate(Duration::from_secs(10)).await;
    }
    let secrets: Vec<&str> = passwords
        .0
        .values()
        .map(String::as_str)
        .chain([redis_password.as_str(), coordinator_seed.as_str()])
        .collect();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.is_empty(), "{} is empty", log.display());
        for s in &secrets {
            assert!(!text.contains(s), "a secret is in {}", log.display());
        }
    }
}

/// A runtime NATS connection, exactly as a service makes it, from its settings.
async fn runtime_connect(pairs: &[(&str, &str)]) -> async_nats::Client {
    let config = CommonConfig::from_env(&settings(pairs), "tls-test").unwrap();
    let readiness = Readiness::new();
    let shutdown = Shutdown::new();
    let connect = mabeam_runtime::nats::connect(
        &config.nats,
        "tls-test",
        readiness.register("nats"),
        &shutdown,
    );
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(client) => client.unwrap(),
        Err(_) => {
            shutdown.cancel();
            panic!("no TLS connection within 10 s")
        }
    }
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

/// A message through the server and back on the client's own inbox.
async fn round_trip(client: &async_nats::Client) {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client.publish(inbox, "ping".into()).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("round trip")
        .unwrap();
    assert_eq!(m.payload.as_ref(), b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_connect_and_plain_or_unverified_clients_do_not() {
    let dir = tempfile::tempdir().unwrap();
    nats_config(dir.path(), &[], &[]);
    let certs = dir.path().join("certs");
    let out = Command::new(nats_deploy_dir().join("gen-certs.sh"))
        .arg(&certs)
        .output()
        .expect("gen-certs.sh (needs openssl)");
    assert!(
        out.status.success(),
        "gen-certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = |name: &str| certs.join(name).display().to_string();
    let passwords = Passwords::new();
    let mut env = passwords.server_env();
    // No nkey given to the generator here: the coordinator has a password too.
    env.push((
        "MABEAM_NATS_PASSWORD_COORDINATOR".into(),
        format!("\"{}\"", secret()),
    ));
    env.push(("MABEAM_NATS_SERVER_CERT".into(), cert("server.pem")));
    env.push(("MABEAM_NATS_SERVER_KEY".into(), cert("server-key.pem")));
    env.push(("MABEAM_NATS_CLIENT_CA".into(), cert("ca.pem")));
    let (tls, mtls) = {
        let (a, b) = (
            dir.path().join("nats-server-tls.conf"),
            dir.path().join("nats-server-mtls.conf"),
        );
        let env = env.clone();
        tokio::task::spawn_blocking(move || (start_nats(&a, &env), start_nats(&b, &env)))
            .await
            .unwrap()
    };
    let password = passwords.of("client").to_owned();
    let ca = cert("ca.pem");
    let base = |url: &str| {
        vec![
            ("MABEAM_NATS_URL", url.to_owned()),
            ("MABEAM_NATS_USER", "client".to_owned()),
            ("MABEAM_NATS_PASSWORD", password.clone()),
            ("MABEAM_NATS_INBOX_PREFIX", "_INBOX.client".to_owned()),
            ("MABEAM_NATS_TLS_CA", ca.clone()),
        ]
    };

    // TLS: the service settings with the CA connect and carry traffic.
    let tls_settings = base(&tls.url());
    let client = runtime_connect(&as_refs(&tls_settings)).await;
    assert!(client.server_info().tls_required);
    round_trip(&client).await;
    // A client that does not trust the CA (system roots only) is not let in.
    let untrusting =
        async_nats::ConnectOptions::with_user_and_password("client".into(), password.clone())
            .require_tls(true)
            .max_reconnects(Some(1))
            .connect(tls.url())
            .await;
    // rustls reports the unknown issuer as an I/O error of the handshake.
    let err = untrusting.expect_err("a client without the CA fails the TLS handshake");
    assert!(
        matches!(err.kind(), ConnectErrorKind::Tls | ConnectErrorKind::Io)
            && err.to_string().contains("certificate"),
        "a client without the CA fails the TLS handshake, not otherwise: {err}"
    );

    // Mutual TLS: with the client certificate it connects ...
    let mut mtls_settings = base(&mtls.url());
    mtls_settings.push(("MABEAM_NATS_TLS_CERT", cert("client.pem")));
    mtls_settings.push(("MABEAM_NATS_TLS_KEY", cert("client-key.pem")));
    let client = runtime_connect(&as_refs(&mtls_settings)).await;
    round_trip(&client).await;
    // ... and without one the server refuses the handshake.
    let certless =
        async_nats::ConnectOptions::with_user_and_password("client".into(), password.clone())
            .require_tls(true)
            .add_root_certificates(certs.join("ca.pem"))
            .max_reconnects(Some(1))
            .connect(mtls.url())
            .await;
    match certless {
        Err(e) => assert!(
            matches!(e.kind(), ConnectErrorKind::Tls | ConnectErrorKind::Io),
            "refused for the wrong reason: {e}"
        ),
        // Some TLS stacks only see the refusal on the first exchange after the handshake:
        // that exchange must fail, not hang.
        Ok(c) => {
            let flushed = tokio::time::timeout(Duration::from_secs(3), c.flush())
                .await
                .expect("the refused connection answers, it does not hang");
            assert!(
                flushed.is_err(),
                "a client without a certificate got through mutual TLS"
            );
        }
    }
}
