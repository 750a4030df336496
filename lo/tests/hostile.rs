//! The LO against hostile messages on an untrusted broker (the in-process rumqttd, real Git
//! repositories, scripted clients): nothing a message does may stop the site or wedge a node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ed25519_dalek::SigningKey;
use schemas::{DesiredState, LoChannel, NodeChannel, SiteStatus, Topics};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn t() -> Topics {
    Topics::default()
}

fn files(site_yaml: &str, n1_spec: &str) -> Vec<(String, Option<String>)> {
    let mut v = vec![
        (
            format!("sites/{SITE}/nodes.yaml"),
            Some(format!(
                "{}{n1_spec}---\n{}",
                node_doc("n1", "    role: gw\n"),
                node_doc("n2", "    role: gw\n")
            )),
        ),
        (
            format!("sites/{SITE}/web.yaml"),
            Some(deployment_doc("web", "reg/web:1", "")),
        ),
    ];
    if !site_yaml.is_empty() {
        v.push((
            format!("sites/{SITE}/site.yaml"),
            Some(site_yaml.to_owned()),
        ));
    }
    v
}

fn commit(repo: &Repo, files: &[(String, Option<String>)]) -> String {
    let refs: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_deref()))
        .collect();
    repo.commit(&refs, "commit")
}

struct Env {
    broker: broker::BrokerHandle,
    repo: Repo,
    _state: tempfile::TempDir,
    lo: Lo,
}

impl Env {
    async fn start(
        files: &[(String, Option<String>)],
        tweak: impl FnOnce(&mut lo::config::Config),
    ) -> Env {
        let broker = start_broker();
        let repo = Repo::new();
        let c = commit(&repo, files);
        let state = tempfile::tempdir().unwrap();
        let mut cfg = lo_config(repo.path(), state.path(), broker.connect_addr());
        tweak(&mut cfg);
        let lo = Lo::start(cfg).await;
        wait_until("commit served", T, || {
            lo.running.shared.served_commit().filter(|s| *s == c)
        })
        .await;
        wait_until("mqtt", T, || {
            lo.running
                .shared
                .mqtt_connected
                .load(Ordering::SeqCst)
                .then_some(())
        })
        .await;
        Env {
            broker,
            repo,
            _state: state,
            lo,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.broker.connect_addr()
    }

    fn metric(&self, name: &str) -> u64 {
        metric(&self.lo.running.shared.metrics.encode(), name)
    }

    /// The desired document a freshly connected agent of `node` receives.
    async fn fresh_desired(&self, node: &str) -> DesiredState {
        let c = Client::connect(
            self.addr(),
            &format!("probe-{node}-{}", fastrand::u32(..)),
            None,
        )
        .await;
        c.client
            .subscribe(
                t().node(SITE, node, NodeChannel::Desired),
                rumqttc::QoS::AtLeastOnce,
            )
            .await
            .unwrap();
        let d = wait_until("retained desired", T, || c.last_desired(node)).await;
        c.stop();
        d
    }

    async fn ready_status(&self) -> (u16, String) {
        http_get(self.lo.running.http_addr, "/readyz", None).await
    }
}

/// The value of a counter or gauge line `name` (summed over labels) in an OpenMetrics text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn http_get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("http answers")
        .unwrap();
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_generation_desired_document_is_not_followed_and_the_node_is_not_wedged() {
    let env = Env::start(&files("", ""), |_| {}).await;
    let ours = env.fresh_desired("n1").await;
    assert!(ours.generation >= 1);
    // One unsigned retained document with u64::MAX on n1's topic.
    let attacker = Client::connect(env.addr(), "attacker", None).await;
    let mut evil = ours.clone();
    evil.generation = u64::MAX;
    attacker
        .publish(
            t().node(SITE, "n1", NodeChannel::Desired),
            true,
            serde_json::to_vec(&evil).unwrap(),
        )
        .await;
    // The LO re-asserts its own document: a fresh agent gets our generation, not u64::MAX.
    wait_until("ignored", T, || {
        (env.metric("lo_generations_ignored_total") >= 1).then_some(())
    })
    .await;
    wait_until("re-asserted", T, || {
        (env.metric("lo_desired_reasserted_total") >= 1).then_some(())
    })
    .await;
    let d = env.fresh_desired("n1").await;
    assert_eq!(d, ours, "the broker holds the LO's document again");
    // A generation far ahead but below the maximum is not followed either.
    evil.generation = ours.generation + 50_000_000;
    attacker
        .publish(
            t().node(SITE, "n1", NodeChannel::Desired),
            true,
            serde_json::to_vec(&evil).unwrap(),
        )
        .await;
    wait_until("ignored twice", T, || {
        (env.metric("lo_generations_ignored_total") >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.fresh_desired("n1").await.generation, ours.generation);
    assert_eq!(env.ready_status().await.0, 200);
    env.lo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_signing_an_unsigned_newer_desired_document_is_not_followed() {
    let key = SigningKey::from_bytes(&[3; 32]);
    let seed = schemas::sign::signing_key_to_base64(&key);
    let env = Env::start(&files("", ""), |c| c.signing_key = Some(seed)).await;
    let ours = env.fresh_desired("n1").await;
    schemas::sign::verify(&ours, &key.verifying_key()).expect("signed by the LO");
    let mut evil = ours.clone();
    evil.generation += 5; // within the step bound: only the signature says it is not ours
    evil.signature = None;
    let attacker = Client::connect(env.addr(), "attacker", None).await;
    attacker
        .publish(
            t().node(SITE, "n1", NodeChannel::Desired),
            true,
            serde_json::to_vec(&evil).unwrap(),
        )
        .await;
    wait_until("re-asserted", T, || {
        (env.metric("lo_desired_reasserted_total") >= 1).then_some(())
    })
    .await;
    let d = env.fresh_desired("n1").await;
    assert_eq!(
        d.generation, ours.generation,
        "not superseded above the forgery"
    );
    schemas::sign::verify(&d, &key.verifying_key()).expect("still ours");
    env.lo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_deleted_desired_topic_is_reasserted_at_most_once_a_second() {
    let env = Env::start(&files("", ""), |_| {}).await;
    let ours = env.fresh_desired("n2").await;
    let attacker = Client::connect(env.addr(), "attacker", None).await;
    let topic = t().node(SITE, "n2", NodeChannel::Desired);
    attacker
        .publish(topic.clone(), true, b"garbage".to_vec())
        .await;
    wait_until("re-asserted", T, || {
        (env.metric("lo_desired_reasserted_total") >= 1).then_some(())
    })
    .await;
    assert_eq!(env.fresh_desired("n2").await, ours);
    // Deleted (empty retained payload): re-asserted too.
    attacker.publish(topic.clone(), true, Vec::new()).await;
    wait_until("re-asserted after deletion", T, || {
        (env.metric("lo_desired_reasserted_total") >= 2).then_some(())
    })
    .await;
    assert_eq!(env.fresh_desired("n2").await, ours);
    // A writer that fights the LO for 3 s: at most about one re-assertion per second.
    let before = env.metric("lo_desired_reasserted_total");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        attacker
            .publish(topic.clone(), true, b"{\"x\":1}".to_vec())
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fights = env.metric("lo_desired_reasserted_total") - before;
    assert!(
        (1..=6).contains(&fights),
        "{fights} re-assertions in ~4.5 s"
    );
    assert_eq!(
        env.fresh_desired("n2").await,
        ours,
        "the LO has the last word"
    );
    assert_eq!(env.ready_status().await.0, 200);
    env.lo.stop().await;
}

fn hb_payload(seq: u64) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"schema": "fleet.heartbeat/v1", "seq": seq,
        "uptimeS": 1, "observedGeneration": 0, "converged": false}),
    )
    .unwrap()
}

fn node_online(st: &SiteStatus, node: &str) -> bool {
    st.nodes.iter().any(|n| n.node == node && n.online)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_max_epoch_presence_does_not_pin_a_node_offline() {
    let env = Env::start(&files("", ""), |_| {}).await;
    let node = Client::connect(env.addr(), "n1", None).await;
    let online = t().node(SITE, "n1", NodeChannel::Online);
    let hb = t().node(SITE, "n1", NodeChannel::Heartbeat);
    node.publish(online.clone(), true, presence(true, 7)).await;
    node.publish(hb.clone(), false, hb_payload(1)).await;
    wait_until("n1 online", T, || {
        env.lo.status().filter(|s| node_online(s, "n1"))
    })
    .await;
    let attacker = Client::connect(env.addr(), "attacker", None).await;
    attacker
        .publish(online.clone(), true, presence(false, u64::MAX))
        .await;
    attacker
        .publish(online.clone(), true, presence(false, (1 << 53) - 1))
        .await;
    wait_until("n1 shown offline", T, || {
        env.lo.status().filter(|s| !node_online(s, "n1"))
    })
    .await;
    // The real agent speaks again: a heartbeat marks it online.
    node.publish(hb.clone(), false, hb_payload(2)).await;
    wait_until("n1 online again", T, || {
        env.lo.status().filter(|s| node_online(s, "n1"))
    })
    .await;
    // And its next session's presence (epoch 8) is not refused as stale.
    node.publish(online.clone(), true, presence(false, 7)).await;
    node.publish(online.clone(), true, presence(true, 8)).await;
    node.publish(hb, false, hb_payload(3)).await;
    wait_until("n1 online with epoch 8", T, || {
        env.lo.status().filter(|s| node_online(s, "n1"))
    })
    .await;
    env.lo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_invented_nodes_are_bounded_and_forgotten_when_deleted() {
    let env = Env::start(&files("", ""), |_| {}).await;
    let attacker = Client::connect(env.addr(), "n1", None).await;
    let n = 5_000;
    for i in 0..n {
        attacker
            .publish(
                t().node(SITE, &format!("ghost-{i}"), NodeChannel::Online),
                true,
                presence(true, 1),
            )
            .await;
    }
    let st = wait_until("untracked counted", T, || {
        env.lo
            .status()
            .filter(|s| s.unknown_nodes_untracked.is_some_and(|u| u >= 4_000))
    })
    .await;
    assert_eq!(
        st.unknown_nodes_count,
        Some(lo::reports::MAX_UNDECLARED_NODES as u32)
    );
    assert!(st.unknown_nodes.len() <= 101);
    // The retained site status fits and decodes; the LO never lost its connection.
    let watcher = Client::connect(env.addr(), "watcher", None).await;
    let lo_status = t().lo(SITE, LoChannel::Status);
    watcher
        .client
        .subscribe(lo_status.clone(), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let payload = wait_until("lo/status", T, || watcher.last_other(&lo_status)).await;
    assert!(payload.len() < 192 * 1024);
    let published: SiteStatus = serde_json::from_slice(&payload).unwrap();
    assert!(published.unknown_nodes_count.is_some());
    assert_eq!(env.metric("lo_mqtt_reconnects_total"), 0);
    assert_eq!(env.ready_status().await.0, 200);
    // The topics are deleted: the LO forgets the nodes it tracked.
    for i in 0..n {
        attacker
            .publish(
                t().node(SITE, &format!("ghost-{i}"), NodeChannel::Online),
                true,
                Vec::new(),
            )
            .await;
    }
    wait_until("unknown nodes forgotten", T, || {
        env.lo
            .status()
            .filter(|s| s.unknown_nodes.is_empty() && s.unknown_nodes_count.is_none())
    })
    .await;
    assert_eq!(env.ready_status().await.0, 200);
    env.lo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_deep_statuses_are_refused_and_the_lo_keeps_serving() {
    let env = Env::start(&files("", ""), |_| {}).await;
    let node = Client::connect(env.addr(), "n1", None).await;
    let topic = t().node(SITE, "n1", NodeChannel::Status);
    let doc = env.fresh_desired("n1").await;
    let mut st = serde_json::to_value(status_for(&doc, None)).unwrap();
    // 60,000 deployments (~240 KB, under the broker's 256 KiB).
    st["deployments"] = serde_json::Value::Array(vec![serde_json::json!({}); 60_000]);
    let started = Instant::now();
    node.publish(topic.clone(), true, serde_json::to_vec(&st).unwrap())
        .await;
    // 100,000 levels of nesting.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    node.publish(topic.clone(), true, deep.into_bytes()).await;
    wait_until("both refused", T, || {
        let m = env.lo.running.shared.metrics.encode();
        (m.contains("lo_messages_rejected_total{kind=\"oversized\"} 1")
            && m.contains("lo_messages_rejected_total{kind=\"malformed\"} 1"))
        .then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // A sane status right after is ingested.
    node.publish(
        topic,
        true,
        serde_json::to_vec(&status_for(&doc, None)).unwrap(),
    )
    .await;
    wait_until("n1 converged", T, || {
        env.lo
            .status()
            .filter(|s| s.nodes.iter().any(|n| n.node == "n1" && n.converged))
    })
    .await;
    assert_eq!(env.ready_status().await.0, 200);
    env.lo.stop().await;
}

const SIGNED_SITE: &str = "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: s1\nspec:\n  security:\n    requireSignedReports: true\n";

fn signed(payload: &[u8], topic: &str, epoch: u64, seq: u64, key: &SigningKey) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    schemas::sign::sign_report(&mut v, topic, epoch, seq, key);
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_signed_reports_refuse_unsigned_foreign_and_replayed_reports() {
    let key = SigningKey::from_bytes(&[11; 32]);
    let other = SigningKey::from_bytes(&[12; 32]);
    let pubkey = schemas::sign::verifying_key_to_base64(&key.verifying_key());
    let n1_spec = format!("spec:\n  publicKey: {pubkey}\n");
    let env = Env::start(&files(SIGNED_SITE, &n1_spec), |_| {}).await;
    let doc = env.fresh_desired("n1").await;
    let node = Client::connect(env.addr(), "n1", None).await;
    let topic = t().node(SITE, "n1", NodeChannel::Status);
    let status = serde_json::to_vec(&status_for(&doc, None)).unwrap();
    let rejected = |kind: &str| {
        let m = env.lo.running.shared.metrics.encode();
        metric(
            &m.lines()
                .filter(|l| l.contains(&format!("kind=\"{kind}\"")))
                .collect::<Vec<_>>()
                .join("\n"),
            "lo_messages_rejected_total",
        )
    };
    // Unsigned: refused.
    node.publish(topic.clone(), true, status.clone()).await;
    wait_until("unsigned refused", T, || {
        (rejected("unsigned") >= 1).then_some(())
    })
    .await;
    // Signed by another key, or for another node's topic: refused.
    node.publish(topic.clone(), true, signed(&status, &topic, 1, 1, &other))
        .await;
    let elsewhere = t().node(SITE, "n2", NodeChannel::Status);
    node.publish(topic.clone(), true, signed(&status, &elsewhere, 1, 1, &key))
        .await;
    wait_until("bad signatures refused", T, || {
        (rejected("bad_signature") >= 2).then_some(())
    })
    .await;
    let st = wait_until("refusals noted", T, || {
        env.lo.status().filter(|s| {
            s.nodes.iter().any(|n| {
                n.node == "n1"
                    && n.reports
                        .as_deref()
                        .is_some_and(|r| r.starts_with("3 refused"))
            })
        })
    })
    .await;
    let n1 = st.nodes.iter().find(|n| n.node == "n1").unwrap();
    assert!(!n1.converged, "nothing accepted yet");
    let n2 = st.nodes.iter().find(|n| n.node == "n2").unwrap();
    assert_eq!(
        n2.reports.as_deref(),
        Some("unsigned refused: no publicKey in Git")
    );
    // Properly signed: accepted.
    node.publish(topic.clone(), true, signed(&status, &topic, 2, 5, &key))
        .await;
    wait_until("n1 converged", T, || {
        env.lo
            .status()
            .filter(|s| s.nodes.iter().any(|n| n.node == "n1" && n.converged))
    })
    .await;
    // The same message again is harmless; an older one is a replay.
    node.publish(topic.clone(), true, signed(&status, &topic, 2, 5, &key))
        .await;
    node.publish(topic.clone(), true, signed(&status, &topic, 2, 4, &key))
        .await;
    wait_until("replay refused", T, || {
        (rejected("replay") >= 1).then_some(())
    })
    .await;
    assert_eq!(rejected("replay"), 1);
    // Presence: the session's online (seq 9) and its Will signed earlier (seq 1) both count;
    // an older session's presence is a replay.
    let online = t().node(SITE, "n1", NodeChannel::Online);
    node.publish(
        online.clone(),
        true,
        signed(&presence(true, 3), &online, 3, 9, &key),
    )
    .await;
    wait_until("n1 online", T, || {
        env.lo.status().filter(|s| node_online(s, "n1"))
    })
    .await;
    node.publish(
        online.clone(),
        true,
        signed(&presence(false, 3), &online, 3, 1, &key),
    )
    .await;
    wait_until("n1 offline by its Will", T, || {
        env.lo.status().filter(|s| !node_online(s, "n1"))
    })
    .await;
    node.publish(
        online.clone(),
        true,
        signed(&presence(true, 2), &online, 2, 50, &key),
    )
    .await;
    wait_until("old session replay refused", T, || {
        (rejected("replay") >= 2).then_some(())
    })
    .await;
    // Nothing unsigned from n2 (no key) is accepted: not even its presence.
    let n2c = Client::connect(env.addr(), "n2", None).await;
    n2c.publish(
        t().node(SITE, "n2", NodeChannel::Online),
        true,
        presence(true, 1),
    )
    .await;
    wait_until("n2 presence refused", T, || {
        (rejected("unsigned") >= 2).then_some(())
    })
    .await;
    assert!(!node_online(&env.lo.status().unwrap(), "n2"));
    env.lo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_auth_protects_status_metrics_and_sync_but_not_probes() {
    let env = Env::start(&files("", ""), |c| c.http_auth = Some("ops:pw".into())).await;
    let addr = env.lo.running.http_addr;
    assert_eq!(http_get(addr, "/healthz", None).await.0, 200);
    assert_eq!(http_get(addr, "/readyz", None).await.0, 200);
    for path in ["/status", "/metrics"] {
        assert_eq!(http_get(addr, path, None).await.0, 401, "{path}");
        assert_eq!(
            http_get(addr, path, Some("Basic b3BzOnB4")).await.0,
            401,
            "{path} wrong password"
        );
        assert_eq!(
            http_get(addr, path, Some("Basic b3BzOnB3")).await.0,
            200,
            "{path} right password"
        );
    }
    env.lo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_token_never_appears_in_status_or_audit() {
    let broker = start_broker();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = lo_config(
        std::path::Path::new("/unused"),
        state.path(),
        broker.connect_addr(),
    );
    cfg.repo = "https://lo:tok3n-s3cret@127.0.0.1:9/acme/fleet.git".into();
    let lo = Lo::start(cfg).await;
    let st = wait_until("source error", T, || {
        lo.status().filter(|s| s.last_error.is_some())
    })
    .await;
    let err = st.last_error.unwrap();
    assert!(!err.message.contains("tok3n-s3cret"), "{}", err.message);
    assert!(lo
        .running
        .shared
        .site_status_json()
        .is_some_and(|j| !j.to_string().contains("tok3n")));
    lo.stop().await;
    let audit = std::fs::read_to_string(state.path().join("audit").join("audit.log")).unwrap();
    assert!(audit.contains("source"), "{audit}");
    assert!(!audit.contains("tok3n-s3cret"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_document_above_the_packet_limit_is_a_rejected_commit_and_the_lo_stays_connected() {
    // A 64 KiB packet limit, and a commit whose rendered document for n1 needs 80 KiB of env:
    // the commit is rejected (naming the node and the limit), nothing is published, and the
    // LO neither loses its connection nor stops serving the last good revision.
    let env = Env::start(&files("", ""), |c| {
        c.max_packet_size = 64 * 1024;
        c.limits.max_desired_bytes = 60 * 1024;
    })
    .await;
    let before = env.fresh_desired("n2").await;
    let env_lines: String = (0..800)
        .map(|i| format!("        VAR_{i:04}: \"{}\"\n", "x".repeat(90)))
        .collect();
    let big = format!(
        "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: big\nspec:\n  nodes: [n1]\n  components:\n    - name: main\n      image: reg/big:1\n      env:\n{env_lines}"
    );
    let mut f = files("", "");
    f.push((format!("sites/{SITE}/big.yaml"), Some(big)));
    let bad = commit(&env.repo, &f);
    env.lo.running.shared.sync.notify_one();
    let err = wait_until("rejected", T, || {
        env.lo
            .status()
            .and_then(|s| s.last_error)
            .filter(|e| e.commit == bad)
    })
    .await;
    assert!(
        err.problems
            .iter()
            .any(|p| p.message.contains("node n1") && p.message.contains("max_desired_bytes")),
        "{err:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_ne!(
        env.lo.running.shared.served_commit().as_deref(),
        Some(bad.as_str())
    );
    assert_eq!(env.fresh_desired("n2").await.generation, before.generation);
    assert_eq!(env.metric("lo_publish_refused_total"), 0);
    assert_eq!(env.metric("lo_mqtt_reconnects_total"), 0);
    assert_eq!(env.ready_status().await.0, 200);
    env.lo.stop().await;
}

/// `lo plan --broker` reads what anyone on the broker wrote: invented nodes are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lo_plan_reads_a_bounded_number_of_invented_nodes() {
    let broker = start_broker();
    let writer = Client::connect(broker.local_addr(), "intruder", None).await;
    for i in 0..30 {
        writer
            .publish(
                t().node(SITE, &format!("ghost-{i:02}"), NodeChannel::Online),
                true,
                presence(true, 1),
            )
            .await;
    }
    let url: schemas::BrokerUrl = format!("mqtt://{}", broker.local_addr()).parse().unwrap();
    let read = |max_nodes| {
        let url = url.clone();
        async move {
            lo::cli::observe_broker(
                &url,
                None,
                &t(),
                SITE,
                Duration::from_millis(500),
                Duration::from_secs(10),
                max_nodes,
            )
            .await
            .expect("observed")
        }
    };
    // Every retained presence is there to be read …
    let mut all = 0;
    for _ in 0..20 {
        all = read(1_000).await.len();
        if all == 30 {
            break;
        }
    }
    assert_eq!(all, 30);
    // … and no more than the bound is kept.
    assert_eq!(read(10).await.len(), 10);
}
