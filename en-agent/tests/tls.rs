//! The agent against a real Mosquitto with a TLS listener and a password file: TLS and
//! login end to end, and a broker certificate from the wrong CA (no session, the agent
//! keeps running and retrying), and a missing or empty CA file (refused at start). Needs
//! `mosquitto`, `mosquitto_sub`, `mosquitto_pub`,
//! `mosquitto_passwd` and `openssl`: skipped without them, mandatory with `CI=true`.
#![cfg(feature = "tls")]

mod common;

use common::*;
use en_agent::runtime::fake::FakeRuntime;
use en_agent::{Config, Counters};
use schemas::wire::NodeStatus;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use harness::tls::{make_ca, poll, require_tools, TlsBroker};

/// The agent's login on the test broker.
const USER: &str = "n1";

fn agent_config(url: &str, ca: PathBuf, dir: &Path) -> Config {
    let mut c = Config::new(SITE, NODE);
    c.state_dir = dir.to_owned();
    c.broker = Some(url.parse().expect("url"));
    c.tls_ca_file = Some(ca);
    c.heartbeat = Duration::from_millis(500);
    c.status_debounce = Duration::from_millis(50);
    c
}

fn status_topic() -> String {
    format!("fleet/{SITE}/nodes/{NODE}/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_over_tls_with_login_reports_status() {
    if !require_tools() {
        return;
    }
    let broker = Arc::new(TlsBroker::start(USER));
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::new();
    fake.add_registry_image("reg/web:v1");
    let stop = CancellationToken::new();
    let agent = en_agent::spawn(
        agent_config(&broker.url(), broker.ca(), dir.path()),
        Arc::new(fake.clone()),
        stop.clone(),
    )
    .expect("spawn");

    // The desired document, published by a TLS client with the same login.
    let d = doc(1, vec![deployment("app", vec![comp("web", "reg/web:v1")])]);
    broker.publish_retained(&format!("fleet/{SITE}/nodes/{NODE}/desired"), &bytes(&d));

    let b = broker.clone();
    let status = poll(Duration::from_secs(20), move || {
        b.retained(&status_topic())
            .and_then(|p| serde_json::from_slice::<NodeStatus>(&p).ok())
            .filter(|s| s.observed_generation == 1 && s.converged)
    })
    .await
    .unwrap_or_else(|| panic!("no converged status over TLS\n{}", broker.proc.log()));
    assert_eq!(status.node, NODE);
    assert!(Counters::get(&agent.counters().mqtt_sessions) >= 1);
    assert!(fake.containers().iter().all(|c| c.info.is_running()));
    // Mosquitto saw the agent log in as USER over the TLS listener.
    assert!(
        broker.logged_in(&format!("en-{SITE}-{NODE}")),
        "{}",
        broker.proc.log()
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .expect("agent stops in time")
        .expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_with_the_wrong_ca_does_not_connect_and_keeps_retrying() {
    if !require_tools() {
        return;
    }
    let broker = Arc::new(TlsBroker::start(USER));
    let other = tempfile::tempdir().expect("tempdir");
    let wrong_ca = make_ca(other.path(), "some other CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::new();
    fake.add_registry_image("reg/web:v1");
    let stop = CancellationToken::new();
    let agent = en_agent::spawn(
        agent_config(&broker.url(), wrong_ca, dir.path()),
        Arc::new(fake.clone()),
        stop.clone(),
    )
    .expect("spawn");

    // Several attempts (backoff 0.5 s doubling, with jitter), none gets a session.
    let b = broker.clone();
    let attempts = poll(Duration::from_secs(20), move || {
        let n = b.failed_handshakes();
        (n >= 4).then_some(n)
    })
    .await
    .unwrap_or_else(|| panic!("the agent stopped retrying\n{}", broker.proc.log()));
    assert!(attempts >= 4);
    assert_eq!(Counters::get(&agent.counters().mqtt_sessions), 0);
    let b = broker.clone();
    let presence = tokio::task::spawn_blocking(move || {
        b.retained(&format!("fleet/{SITE}/nodes/{NODE}/online"))
    })
    .await
    .expect("join");
    assert_eq!(presence, None, "the agent connected with the wrong CA");
    assert!(
        !broker.logged_in(&format!("en-{SITE}-{NODE}")),
        "{}",
        broker.proc.log()
    );

    // The agent itself keeps working (offline) and stops cleanly.
    agent.submit_desired(bytes(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    )));
    agent
        .wait_status(Duration::from_secs(20), |s| {
            s.observed_generation == 1 && s.converged
        })
        .await
        .expect("converges offline");
    let b = broker.clone();
    let status = tokio::task::spawn_blocking(move || b.retained(&status_topic()))
        .await
        .expect("join");
    assert_eq!(status, None);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .expect("agent stops in time")
        .expect("agent stops");
}

#[tokio::test]
async fn agent_refuses_a_missing_or_empty_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    for ca in [dir.path().join("missing.pem"), empty] {
        let state = tempfile::tempdir().expect("tempdir");
        let r = en_agent::spawn(
            agent_config("mqtts://n1:pw@127.0.0.1:8883", ca.clone(), state.path()),
            Arc::new(FakeRuntime::new()),
            CancellationToken::new(),
        );
        let err = r.expect_err("refused").to_string();
        assert!(err.contains("tls ca file"), "{ca:?}: {err}");
    }
}
