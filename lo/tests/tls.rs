//! The LO against a real Mosquitto with a TLS listener and a password file: TLS and login
//! end to end (retained desired documents and presence read back with `mosquitto_sub
//! --cafile`, and `lo plan --broker mqtts://…`'s reader), a broker certificate from the wrong
//! CA (no session, the LO keeps running and retrying) and a missing CA file (refused at
//! start). Needs `mosquitto`, `mosquitto_sub`, `mosquitto_pub`, `mosquitto_passwd` and
//! `openssl`: skipped without them, mandatory with `CI=true`.
#![cfg(feature = "mqtt-tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use schemas::{DesiredState, LoChannel, NodeChannel, Presence, SiteStatus, Topics};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use harness::tls::{make_ca, poll, require_tools, TlsBroker};

/// The LO's login on the test broker.
const USER: &str = "lo";

fn files() -> Vec<(&'static str, Option<String>)> {
    vec![
        (
            "sites/s1/nodes.yaml",
            Some(node_doc("n1", "    role: gw\n")),
        ),
        (
            "sites/s1/web.yaml",
            Some(deployment_doc("web", "reg/web:1", "")),
        ),
    ]
}

fn tls_config(repo: &Path, state: &Path, url: String, ca: PathBuf) -> lo::config::Config {
    let mut cfg = lo_config(repo, state, "127.0.0.1:1".parse().unwrap());
    cfg.broker = url;
    cfg.tls_ca_file = Some(ca);
    cfg
}

fn commit(repo: &Repo) -> String {
    let f = files();
    let refs: Vec<(&str, Option<&str>)> = f.iter().map(|(p, c)| (*p, c.as_deref())).collect();
    repo.commit(&refs, "first")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lo_over_tls_with_login_publishes_retained_desired_and_presence() {
    if !require_tools() {
        return;
    }
    assert_eq!(SITE, "s1");
    let broker = Arc::new(TlsBroker::start(USER));
    let repo = Repo::new();
    let c1 = commit(&repo);
    let state = tempfile::tempdir().unwrap();
    let lo = Lo::start(tls_config(
        repo.path(),
        state.path(),
        broker.url(),
        broker.ca(),
    ))
    .await;
    let t = Topics::default();

    let b = broker.clone();
    let topic = t.node(SITE, "n1", NodeChannel::Desired);
    let doc = poll(Duration::from_secs(20), move || {
        b.retained(&topic)
            .and_then(|p| serde_json::from_slice::<DesiredState>(&p).ok())
    })
    .await
    .unwrap_or_else(|| panic!("no retained desired over TLS\n{}", broker.proc.log()));
    assert_eq!(doc.revision.commit, c1);
    assert_eq!(doc.deployments.len(), 1);
    assert!(lo.running.shared.mqtt_connected.load(Ordering::SeqCst));

    let b = broker.clone();
    let topic = t.lo(SITE, LoChannel::Online);
    let lo_online = poll(Duration::from_secs(10), move || {
        b.retained(&topic)
            .and_then(|p| serde_json::from_slice::<Presence>(&p).ok())
            .filter(|p| p.online)
    })
    .await;
    assert!(lo_online.is_some(), "no LO presence over TLS");
    assert!(
        broker.logged_in(&format!("lo-{SITE}")),
        "{}",
        broker.proc.log()
    );

    // A node's presence and status published over TLS reach the LO (its subscriptions
    // work) and show in its retained site summary.
    broker.publish_retained(&t.node(SITE, "n1", NodeChannel::Online), &presence(true, 1));
    broker.publish_retained(
        &t.node(SITE, "n1", NodeChannel::Status),
        &serde_json::to_vec(&status_for(&doc, None)).unwrap(),
    );
    let b = broker.clone();
    let topic = t.lo(SITE, LoChannel::Status);
    let summary = poll(Duration::from_secs(20), move || {
        b.retained(&topic)
            .and_then(|p| serde_json::from_slice::<SiteStatus>(&p).ok())
            .filter(|s| {
                s.nodes
                    .iter()
                    .any(|n| n.node == "n1" && n.converged && n.online)
            })
    })
    .await;
    assert!(
        summary.is_some(),
        "no converged n1 in the retained lo/status"
    );

    // `lo plan --broker mqtts://… --tls-ca-file` reads the same broker.
    let url: schemas::BrokerUrl = broker.url().parse().unwrap();
    let observed = lo::cli::observe_broker(
        &url,
        Some(&broker.ca()),
        &t,
        SITE,
        Duration::from_millis(500),
        Duration::from_secs(10),
        lo::cli::MAX_OBSERVED_NODES,
    )
    .await;
    assert!(observed.is_ok(), "{:?}", observed.err());

    lo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lo_with_the_wrong_ca_does_not_connect_and_keeps_retrying() {
    if !require_tools() {
        return;
    }
    let broker = Arc::new(TlsBroker::start(USER));
    let other = tempfile::tempdir().unwrap();
    let wrong_ca = make_ca(other.path(), "some other CA");
    let repo = Repo::new();
    let c1 = commit(&repo);
    let state = tempfile::tempdir().unwrap();
    let lo = Lo::start(tls_config(
        repo.path(),
        state.path(),
        broker.url(),
        wrong_ca.clone(),
    ))
    .await;
    // The LO serves the commit from Git, but gets no broker session.
    wait_until("commit served", Duration::from_secs(20), || {
        lo.running.shared.served_commit().filter(|c| *c == c1)
    })
    .await;
    let b = broker.clone();
    let attempts = poll(Duration::from_secs(15), move || {
        let n = b.failed_handshakes();
        (n >= 4).then_some(n)
    })
    .await
    .unwrap_or_else(|| panic!("the LO stopped retrying\n{}", broker.proc.log()));
    assert!(attempts >= 4);
    assert!(!lo.running.shared.mqtt_connected.load(Ordering::SeqCst));
    assert!(
        !broker.logged_in(&format!("lo-{SITE}")),
        "{}",
        broker.proc.log()
    );
    let b = broker.clone();
    let topic = Topics::default().node(SITE, "n1", NodeChannel::Desired);
    let desired = tokio::task::spawn_blocking(move || b.retained(&topic))
        .await
        .unwrap();
    assert_eq!(desired, None, "the LO published with the wrong CA");

    // `lo plan`'s reader fails instead of hanging.
    let url: schemas::BrokerUrl = broker.url().parse().unwrap();
    let observed = lo::cli::observe_broker(
        &url,
        Some(&wrong_ca),
        &Topics::default(),
        SITE,
        Duration::from_millis(500),
        Duration::from_secs(10),
        lo::cli::MAX_OBSERVED_NODES,
    )
    .await;
    assert!(observed.is_err());

    lo.stop().await;
}

#[tokio::test]
async fn lo_refuses_to_start_with_a_missing_ca_file() {
    let repo = Repo::new();
    commit(&repo);
    let state = tempfile::tempdir().unwrap();
    let cfg = tls_config(
        repo.path(),
        state.path(),
        "mqtts://lo:pw@127.0.0.1:8883".into(),
        state.path().join("no-such-ca.pem"),
    );
    let source = lo::app::open_git_source(&cfg).await.expect("git source");
    let err = lo::app::start(cfg, source, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("tls_ca_file"), "{err}");
}
