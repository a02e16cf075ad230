//! Redis access as the services make it (`mabeam_runtime::redis`), against real
//! redis-servers: an ACL user limited to mabeam's keys, TLS and mutual TLS with certificates
//! from `deploy/nats/gen-certs.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, process::Command, time::Duration};

use mabeam_runtime::{config::settings, CommonConfig, Readiness, Shutdown};
use mabeam_testkit::{free_port, RedisServer};

fn redis_config(pairs: &[(&str, &str)]) -> mabeam_runtime::config::RedisConfig {
    CommonConfig::from_env(&settings(pairs), "redis-test")
        .unwrap()
        .redis
}

/// Connects as a service does (retrying until it works, so a refusal shows as a timeout).
async fn service_connection(
    config: &mabeam_runtime::config::RedisConfig,
) -> redis::aio::ConnectionManager {
    let shutdown = Shutdown::new();
    let connect =
        mabeam_runtime::redis::connect(config, Readiness::new().register("redis"), &shutdown);
    let conn = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .expect("connected within 10 s")
        .unwrap();
    shutdown.cancel();
    conn
}

/// One attempt, for the refusals.
async fn attempt(config: &mabeam_runtime::config::RedisConfig) -> redis::RedisResult<String> {
    let client = mabeam_runtime::redis::client(config).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async(&mut conn).await
}

#[tokio::test]
async fn the_acl_user_reaches_mabeam_keys_only_and_wrong_passwords_are_refused() {
    let redis = tokio::task::spawn_blocking(|| {
        RedisServer::start_with_args(&[
            "--user",
            "default",
            "off",
            "--user",
            "mabeam",
            "on",
            ">acl-pass-1",
            "~mabeam:*",
            "+@all",
            "-@dangerous",
        ])
    })
    .await
    .unwrap();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, "acl-pass-1\n").unwrap();
    // The password from a file, as a mounted secret.
    let settings_map = mabeam_runtime::config::resolve_secret_files(
        settings(&[
            ("MABEAM_REDIS_URL", &url),
            ("MABEAM_REDIS_USER", "mabeam"),
            (
                "MABEAM_REDIS_PASSWORD_FILE",
                password_file.to_str().unwrap(),
            ),
        ]),
        |p| std::fs::read_to_string(p),
    )
    .unwrap();
    let config = CommonConfig::from_env(&settings_map, "redis-test")
        .unwrap()
        .redis;
    assert!(!format!("{config:?}").contains("acl-pass-1"));

    let mut conn = service_connection(&config).await;
    let _: () = redis::cmd("SET")
        .arg("mabeam:acl-probe")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let outside: redis::RedisResult<()> = redis::cmd("SET")
        .arg("elsewhere")
        .arg("1")
        .query_async(&mut conn)
        .await;
    let e = outside.unwrap_err();
    assert!(e.to_string().to_uppercase().contains("NOPERM"), "{e}");
    let admin: redis::RedisResult<()> = redis::cmd("FLUSHALL").query_async(&mut conn).await;
    assert!(admin
        .unwrap_err()
        .to_string()
        .to_uppercase()
        .contains("NOPERM"));

    let wrong = redis_config(&[
        ("MABEAM_REDIS_URL", &url),
        ("MABEAM_REDIS_USER", "mabeam"),
        ("MABEAM_REDIS_PASSWORD", "nope"),
    ]);
    let e = attempt(&wrong).await.unwrap_err();
    assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed, "{e}");
    // Without credentials the disabled default user gets nowhere.
    let e = attempt(&redis_config(&[("MABEAM_REDIS_URL", &url)]))
        .await
        .unwrap_err();
    assert!(
        e.to_string().to_uppercase().contains("NOAUTH")
            || e.kind() == redis::ErrorKind::AuthenticationFailed,
        "{e}"
    );
}

fn certificates(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("deploy/nats/gen-certs.sh");
    let out = Command::new(script)
        .arg(dir)
        .output()
        .expect("gen-certs.sh (needs openssl)");
    assert!(
        out.status.success(),
        "gen-certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A redis-server with a TLS port beside its plain one; `clients` is `yes` for mutual TLS.
async fn tls_redis(certs: &Path, clients: &'static str) -> (RedisServer, u16) {
    let tls_port = free_port();
    let c = |f: &str| certs.join(f).display().to_string();
    let args = vec![
        "--tls-port".to_owned(),
        tls_port.to_string(),
        "--tls-cert-file".to_owned(),
        c("server.pem"),
        "--tls-key-file".to_owned(),
        c("server-key.pem"),
        "--tls-ca-cert-file".to_owned(),
        c("ca.pem"),
        "--tls-auth-clients".to_owned(),
        clients.to_owned(),
    ];
    let redis = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        RedisServer::start_with_args(&args)
    })
    .await
    .unwrap();
    (redis, tls_port)
}

#[tokio::test]
async fn tls_and_mutual_tls_to_redis_connect_with_the_configured_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certificates(&certs);
    let c = |f: &str| certs.join(f).display().to_string();

    let (_tls, port) = tls_redis(&certs, "no").await;
    let url = format!("rediss://127.0.0.1:{port}");
    let with_ca = redis_config(&[
        ("MABEAM_REDIS_URL", &url),
        ("MABEAM_REDIS_TLS_CA", &c("ca.pem")),
    ]);
    let mut conn = service_connection(&with_ca).await;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    // The system roots do not know the development CA.
    assert!(attempt(&redis_config(&[("MABEAM_REDIS_URL", &url)]))
        .await
        .is_err());

    let (_mtls, port) = tls_redis(&certs, "yes").await;
    let url = format!("rediss://127.0.0.1:{port}");
    let with_cert = redis_config(&[
        ("MABEAM_REDIS_URL", &url),
        ("MABEAM_REDIS_TLS_CA", &c("ca.pem")),
        ("MABEAM_REDIS_TLS_CERT", &c("client.pem")),
        ("MABEAM_REDIS_TLS_KEY", &c("client-key.pem")),
    ]);
    let mut conn = service_connection(&with_cert).await;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    let certless = redis_config(&[
        ("MABEAM_REDIS_URL", &url),
        ("MABEAM_REDIS_TLS_CA", &c("ca.pem")),
    ]);
    assert!(
        attempt(&certless).await.is_err(),
        "mutual TLS let a client without a certificate in"
    );
}
