//! The LO against the in-process broker and real Git repositories, with scripted nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use schemas::{LoChannel, NodeChannel, SiteStatus, Topics};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn base_files(image: &str) -> Vec<(String, Option<String>)> {
    vec![
        (
            format!("sites/{SITE}/nodes.yaml"),
            Some(format!(
                "{}---\n{}",
                node_doc("n1", "    role: gw\n"),
                node_doc("n2", "    role: cam\n")
            )),
        ),
        (
            format!("sites/{SITE}/web.yaml"),
            Some(deployment_doc(
                "web",
                image,
                "  nodeSelector:\n    role: gw\n",
            )),
        ),
        (
            format!("sites/{SITE}/agent.yaml"),
            Some(deployment_doc("agent", "reg/agent:1", "")),
        ),
    ]
}

fn commit(repo: &Repo, files: &[(String, Option<String>)], msg: &str) -> String {
    let refs: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_deref()))
        .collect();
    repo.commit(&refs, msg)
}

fn topics() -> Topics {
    Topics::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscriber_gets_retained_desired_and_status_is_summarised() {
    let broker = start_broker();
    let repo = Repo::new();
    let c1 = commit(&repo, &base_files("reg/web:1"), "first");
    let state = tempfile::tempdir().unwrap();
    let lo = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
    wait_until("commit served", T, || {
        lo.running.shared.served_commit().filter(|c| *c == c1)
    })
    .await;
    wait_until("mqtt", T, || {
        lo.running
            .shared
            .mqtt_connected
            .load(std::sync::atomic::Ordering::SeqCst)
            .then_some(())
    })
    .await;

    // A node that subscribes after the LO published gets its retained document.
    let t = topics();
    let will = (t.node(SITE, "n1", NodeChannel::Online), presence(false, 7));
    let node = Client::connect(broker.connect_addr(), "n1", Some(will)).await;
    node.client
        .subscribe(
            t.node(SITE, "n1", NodeChannel::Desired),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let doc = wait_until("desired for n1", T, || node.last_desired("n1")).await;
    assert_eq!(doc.revision.commit, c1);
    let names: Vec<&str> = doc.deployments.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["agent", "web"]);
    assert!(doc.generation >= 1);
    assert!(doc
        .deployments
        .iter()
        .all(|d| d.components.iter().all(|c| c.hash_is_valid())));

    // Presence and a converged status show in the site summary, retained on lo/status.
    node.publish(
        t.node(SITE, "n1", NodeChannel::Online),
        true,
        presence(true, 7),
    )
    .await;
    let st = status_for(&doc, None);
    node.publish(
        t.node(SITE, "n1", NodeChannel::Status),
        true,
        serde_json::to_vec(&st).unwrap(),
    )
    .await;
    let summary = wait_until("n1 converged", T, || {
        lo.status().filter(|s| {
            s.nodes
                .iter()
                .any(|n| n.node == "n1" && n.converged && n.online)
        })
    })
    .await;
    let n1 = summary.nodes.iter().find(|n| n.node == "n1").unwrap();
    assert_eq!(n1.desired_generation, doc.generation);
    assert_eq!(n1.commit.as_deref(), Some(c1.as_str()));
    assert!(n1.converged_in_ms.is_some());
    let web = summary
        .deployments
        .iter()
        .find(|d| d.name == "web")
        .unwrap();
    assert_eq!((web.nodes, web.counts.installed), (1, 1));
    let agent = summary
        .deployments
        .iter()
        .find(|d| d.name == "agent")
        .unwrap();
    assert_eq!(
        (agent.nodes, agent.counts.installed, agent.counts.pending),
        (2, 1, 1)
    );

    let watcher = Client::connect(broker.connect_addr(), "watcher", None).await;
    watcher
        .client
        .subscribe(t.lo(SITE, LoChannel::Status), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    watcher
        .client
        .subscribe(t.lo(SITE, LoChannel::Online), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_until("retained site status with n1 converged", T, || {
        let p = watcher.last_other(&t.lo(SITE, LoChannel::Status))?;
        let s: SiteStatus = serde_json::from_slice(&p).ok()?;
        s.nodes
            .iter()
            .any(|n| n.node == "n1" && n.converged)
            .then_some(())
    })
    .await;
    wait_until("lo online", T, || {
        let p = watcher.last_other(&t.lo(SITE, LoChannel::Online))?;
        let pr: schemas::Presence = serde_json::from_slice(&p).ok()?;
        pr.online.then_some(())
    })
    .await;

    // A stale Will (older epoch) does not mark the node offline; the current one does.
    node.publish(
        t.node(SITE, "n1", NodeChannel::Online),
        true,
        presence(false, 6),
    )
    .await;
    // An unknown node announcing itself on the same connection (ordered after the stale
    // Will) is listed: proof that the stale Will was processed before the check.
    node.publish(
        t.node(SITE, "zz", NodeChannel::Online),
        true,
        presence(true, 1),
    )
    .await;
    let s = wait_until("unknown node listed", T, || {
        lo.status()
            .filter(|s| s.unknown_nodes.contains(&"zz".to_owned()))
    })
    .await;
    assert!(
        s.nodes.iter().any(|n| n.node == "n1" && n.online),
        "stale Will ignored"
    );
    node.publish(
        t.node(SITE, "n1", NodeChannel::Online),
        true,
        presence(false, 7),
    )
    .await;
    wait_until("n1 offline", T, || {
        lo.status()
            .filter(|s| s.nodes.iter().any(|n| n.node == "n1" && !n.online))
    })
    .await;

    // /healthz, /readyz, /metrics.
    let http = lo.running.http_addr;
    let (code, body) = http_get(http, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = http_get(http, "/metrics").await;
    assert!(metrics.contains("lo_nodes_online"), "{metrics}");
    assert!(
        metrics.contains("lo_reconcile_duration_seconds"),
        "{metrics}"
    );
    lo.stop().await;
    let h = lo::audit::history(&state.path().join("audit"), Some("n1"), None, 50).unwrap();
    assert!(h.iter().any(|e| e.kind == "published"), "{h:?}");
    assert!(
        h.iter().any(|e| e.message.contains("stale presence")),
        "{h:?}"
    );
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_published_other_sites_ignored_bad_commits_kept_out() {
    let broker = start_broker();
    let repo = Repo::new();
    let c1 = commit(&repo, &base_files("reg/web:1"), "first");
    let state = tempfile::tempdir().unwrap();
    let lo = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
    let t = topics();
    let node = Client::connect(broker.connect_addr(), "n1", None).await;
    node.client
        .subscribe(
            t.all_nodes(SITE, NodeChannel::Desired),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let d1 = wait_until("first doc", T, || {
        node.last_desired("n1").filter(|d| d.revision.commit == c1)
    })
    .await;

    // A new commit is detected and published with a higher generation.
    let c2 = commit(&repo, &base_files("reg/web:2"), "web 2");
    let d2 = wait_until("second doc", T, || {
        node.last_desired("n1").filter(|d| d.revision.commit == c2)
    })
    .await;
    assert!(d2.generation > d1.generation);
    assert_eq!(d2.deployments[1].components[0].image, "reg/web:2");

    // A commit touching another site only: nothing new is published.
    let c3 = commit(
        &repo,
        &[(
            "sites/other/x.yaml".into(),
            Some(deployment_doc("x", "reg/x:1", "")),
        )],
        "other site",
    );
    // A malformed commit: rejected, the error is visible, the last good revision stays.
    let bad = vec![(format!("sites/{SITE}/web.yaml"), Some("apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  components:\n    - name: main\n      imagee: reg/web:3\n".to_owned()))];
    let c4 = commit(&repo, &bad, "typo");
    let s = wait_until("error reported", T, || {
        lo.status()
            .filter(|s| s.last_error.as_ref().is_some_and(|e| e.commit == c4))
    })
    .await;
    let err = s.last_error.unwrap();
    assert_eq!(err.problems[0].file, format!("sites/{SITE}/web.yaml"));
    assert!(err.problems[0].line.is_some());
    assert_eq!(s.revision.unwrap().commit, c2, "last good revision served");
    assert_ne!(c3, c2);
    assert_eq!(
        node.last_desired("n1").unwrap().generation,
        d2.generation,
        "other-site and bad commits publish nothing"
    );
    let (_, metrics) = http_get(lo.running.http_addr, "/metrics").await;
    assert!(metrics.contains("lo_rejected_commits_total 1"), "{metrics}");

    // A commit removing every deployment is held.
    let empty = vec![
        (format!("sites/{SITE}/web.yaml"), None),
        (format!("sites/{SITE}/agent.yaml"), None),
    ];
    let c5 = commit(&repo, &empty, "delete everything");
    let s = wait_until("held", T, || {
        lo.status()
            .filter(|s| s.held.as_ref().is_some_and(|h| h.commit == c5))
    })
    .await;
    assert_eq!(s.revision.unwrap().commit, c2);

    // Fixing it: served again; n2 removed from the site gets an explicit empty document.
    let mut fixed = base_files("reg/web:3");
    fixed[0].1 = Some(node_doc("n1", "    role: gw\n"));
    let c6 = commit(&repo, &fixed, "fix, drop n2");
    let d6 = wait_until("fixed doc", T, || {
        node.last_desired("n1").filter(|d| d.revision.commit == c6)
    })
    .await;
    assert_eq!(d6.deployments.len(), 2);
    let n2 = wait_until("n2 emptied", T, || {
        node.last_desired("n2").filter(|d| d.revision.commit == c6)
    })
    .await;
    assert!(n2.deployments.is_empty());
    lo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_survives_restart_and_is_not_bumped_without_change() {
    let broker = start_broker();
    let repo = Repo::new();
    commit(&repo, &base_files("reg/web:1"), "first");
    let state = tempfile::tempdir().unwrap();
    let t = topics();
    let watcher = Client::connect(broker.connect_addr(), "w", None).await;
    watcher
        .client
        .subscribe(
            t.all_nodes(SITE, NodeChannel::Desired),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();

    let lo = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
    let g1 = wait_until("doc", T, || node_gen(&watcher)).await;
    lo.stop().await;

    // Restart with the same commit: same generation (same content).
    let lo = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
    wait_until("served", T, || lo.running.shared.served_commit()).await;
    wait_until("republished", T, || {
        (watcher.inbox.lock().unwrap().desired.len() >= 4).then_some(())
    })
    .await;
    assert_eq!(node_gen(&watcher), Some(g1));
    lo.stop().await;

    // A new commit while the LO is down: after restart the generation is above the old one.
    let c2 = commit(&repo, &base_files("reg/web:2"), "second");
    let lo = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
    let d = wait_until("new doc", T, || {
        watcher
            .last_desired("n1")
            .filter(|d| d.revision.commit == c2)
    })
    .await;
    assert!(d.generation > g1, "{} > {g1}", d.generation);
    lo.stop().await;
}

fn node_gen(c: &Client) -> Option<u64> {
    c.last_desired("n1").map(|d| d.generation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republishes_everything_after_a_broker_restart() {
    let first = start_broker();
    let proxy = Proxy::start(first.connect_addr()).await;
    let repo = Repo::new();
    let c1 = commit(&repo, &base_files("reg/web:1"), "first");
    let state = tempfile::tempdir().unwrap();
    let lo = Lo::start(lo_config(repo.path(), state.path(), proxy.addr)).await;
    wait_until("served", T, || lo.running.shared.served_commit()).await;
    let t = topics();
    let n = Client::connect(first.connect_addr(), "n1", None).await;
    n.client
        .subscribe(
            t.node(SITE, "n1", NodeChannel::Desired),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let d = wait_until("doc on first broker", T, || n.last_desired("n1")).await;

    // The broker "restarts": a fresh one with no retained messages, connections dropped.
    let second = start_broker();
    proxy.switch(second.connect_addr());
    let late = Client::connect(second.connect_addr(), "n1-late", None).await;
    late.client
        .subscribe(
            t.all_nodes(SITE, NodeChannel::Desired),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let again = wait_until("doc republished on the new broker", T, || {
        late.last_desired("n1")
    })
    .await;
    assert_eq!(
        again.generation, d.generation,
        "same document, same generation"
    );
    assert_eq!(again.revision.commit, c1);
    wait_until("n2 too", T, || late.last_desired("n2")).await;
    let (_, metrics) = http_get(lo.running.http_addr, "/metrics").await;
    assert!(metrics.contains("lo_mqtt_reconnects_total 1"), "{metrics}");
    lo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_retained_statuses_are_ingested_at_start() {
    const N: usize = 2_000;
    let broker = start_broker();
    let repo = Repo::new();
    let site = format!("apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: {SITE}\nspec:\n  enrollment:\n    auto: true\n");
    let files = vec![
        (format!("sites/{SITE}/site.yaml"), Some(site)),
        (
            format!("sites/{SITE}/agent.yaml"),
            Some(deployment_doc("agent", "reg/agent:1", "")),
        ),
    ];
    commit(&repo, &files, "auto");
    let t = topics();
    let publisher = Client::connect(broker.connect_addr(), "fleet-sim", None).await;
    let template = schemas::DesiredState {
        schema: Default::default(),
        site: SITE.into(),
        node: String::new(),
        generation: 3,
        revision: schemas::Revision {
            commit: "c0".into(),
            path: format!("sites/{SITE}"),
        },
        issued_at: "t".into(),
        deployments: vec![],
        signature: None,
    };
    for i in 0..N {
        let mut d = template.clone();
        d.node = format!("node-{i:05}");
        let st = status_for(&d, None);
        publisher
            .publish(
                t.node(SITE, &d.node, NodeChannel::Status),
                true,
                serde_json::to_vec(&st).unwrap(),
            )
            .await;
    }
    // Every status is retained before the LO starts: a reader sees the last one.
    let probe = Client::connect(broker.connect_addr(), "probe", None).await;
    probe
        .client
        .subscribe(
            t.node(SITE, &format!("node-{:05}", N - 1), NodeChannel::Status),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    wait_until("last status retained", T, || {
        probe.last_other(&t.node(SITE, &format!("node-{:05}", N - 1), NodeChannel::Status))
    })
    .await;

    let state = tempfile::tempdir().unwrap();
    let lo = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
    let s = wait_until("all nodes ingested", Duration::from_secs(60), || {
        lo.status().filter(|s| {
            s.nodes
                .iter()
                .filter(|n| n.observed_generation == 3)
                .count()
                == N
        })
    })
    .await;
    assert_eq!(s.nodes.len(), N);
    lo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deployment_rolls_back_once_and_stops() {
    let broker = start_broker();
    let repo = Repo::new();
    let policy = "  policy:\n    onFailure: rollback\n";
    let files = |image: &str| {
        vec![
            (
                format!("sites/{SITE}/n.yaml"),
                Some(node_doc("n1", "    role: gw\n")),
            ),
            (
                format!("sites/{SITE}/web.yaml"),
                Some(deployment_doc("web", image, policy)),
            ),
        ]
    };
    let c1 = commit(&repo, &files("reg/web:1"), "v1");
    let state = tempfile::tempdir().unwrap();
    let lo = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
    let t = topics();
    let node = Client::connect(broker.connect_addr(), "n1", None).await;
    node.client
        .subscribe(
            t.node(SITE, "n1", NodeChannel::Desired),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let status_topic = t.node(SITE, "n1", NodeChannel::Status);

    let d1 = wait_until("v1", T, || {
        node.last_desired("n1").filter(|d| d.revision.commit == c1)
    })
    .await;
    node.publish(
        status_topic.clone(),
        true,
        serde_json::to_vec(&status_for(&d1, None)).unwrap(),
    )
    .await;
    wait_until("v1 converged", T, || {
        lo.status().filter(|s| s.nodes.iter().any(|n| n.converged))
    })
    .await;

    let c2 = commit(&repo, &files("reg/web:2"), "v2");
    let d2 = wait_until("v2", T, || {
        node.last_desired("n1").filter(|d| d.revision.commit == c2)
    })
    .await;
    node.publish(
        status_topic.clone(),
        true,
        serde_json::to_vec(&status_for(&d2, Some("web"))).unwrap(),
    )
    .await;

    // Rolled back: same revision, the deployment at the commit last installed.
    let d3 = wait_until("rollback doc", T, || {
        node.last_desired("n1")
            .filter(|d| d.generation > d2.generation)
    })
    .await;
    assert_eq!(d3.revision.commit, c2);
    assert_eq!(d3.deployments[0].commit, c1);
    assert_eq!(d3.deployments[0].components[0].image, "reg/web:1");
    wait_until("rollback reported", T, || {
        lo.status().filter(|s| {
            s.deployments
                .iter()
                .any(|d| d.rolled_back == vec!["n1".to_owned()])
        })
    })
    .await;

    // The rollback fails too: reported, nothing more published.
    node.publish(
        status_topic.clone(),
        true,
        serde_json::to_vec(&status_for(&d3, Some("web"))).unwrap(),
    )
    .await;
    let (_, _) = wait_until("rollback_failed decision", T, || {
        let m = lo.running.shared.metrics.encode();
        m.contains("lo_decisions_total{kind=\"rollback_failed\"} 1")
            .then_some(((), ()))
    })
    .await;
    assert_eq!(
        node.last_desired("n1").unwrap().generation,
        d3.generation,
        "no action loop"
    );
    lo.stop().await;
    let h = lo::audit::history(&state.path().join("audit"), Some("n1"), Some("web"), 10).unwrap();
    let msgs: Vec<&str> = h.iter().map(|e| e.message.as_str()).collect();
    assert!(
        msgs.iter().any(|m| m.starts_with("rollback to")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.starts_with("rollback failed")),
        "{msgs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lo_presence_epoch_is_a_persisted_counter() {
    let broker = start_broker();
    let repo = Repo::new();
    commit(&repo, &base_files("reg/web:1"), "first");
    let state = tempfile::tempdir().unwrap();
    let t = topics();
    let topic = t.lo(SITE, LoChannel::Online);
    let watcher = Client::connect(broker.connect_addr(), "watcher", None).await;
    watcher
        .client
        .subscribe(topic.clone(), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let presence_of = |w: &Client| {
        w.last_other(&topic)
            .map(|p| serde_json::from_slice::<schemas::Presence>(&p).unwrap())
    };
    let mut seen = Vec::new();
    for round in 1..=2u64 {
        let lo = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
        let p = wait_until("lo online", T, || {
            presence_of(&watcher).filter(|p| p.online && !seen.contains(&p.epoch))
        })
        .await;
        // A counter from a fresh state dir, not a clock: 1, then 2 after the restart.
        assert_eq!(p.epoch, round, "epoch of connection {round}");
        let stored = std::fs::read_to_string(state.path().join("lo-epoch")).unwrap();
        assert_eq!(stored.trim(), round.to_string(), "persisted");
        seen.push(p.epoch);
        lo.stop().await;
        let off = wait_until("lo offline", T, || {
            presence_of(&watcher).filter(|p| !p.online)
        })
        .await;
        assert_eq!(off.epoch, round, "offline with the session's epoch");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_signing_key_every_desired_document_is_signed() {
    use schemas::sign;
    let broker = start_broker();
    let repo = Repo::new();
    commit(&repo, &base_files("reg/web:1"), "first");
    let state = tempfile::tempdir().unwrap();
    let watcher = Client::connect(broker.connect_addr(), "w", None).await;
    watcher
        .client
        .subscribe(
            topics().all_nodes(SITE, NodeChannel::Desired),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let key = sign::Ed25519SigningKey::from_bytes(&[5u8; 32]);
    let seed = sign::signing_key_to_base64(&key);
    let mut cfg = lo_config(repo.path(), state.path(), broker.connect_addr());
    cfg.signing_key = Some(seed);
    cfg.signing_key_id = "site-key".into();
    let lo = Lo::start(cfg).await;
    for node in ["n1", "n2"] {
        let d = wait_until("signed doc", T, || watcher.last_desired(node)).await;
        let sig = d.signature.as_ref().expect("signed");
        assert_eq!(sig.key_id, "site-key");
        assert_eq!(sign::verify(&d, &key.verifying_key()), Ok(()), "{node}");
        // What an agent with another key would see: refused.
        let other = sign::Ed25519SigningKey::from_bytes(&[6u8; 32]);
        assert_eq!(
            sign::verify(&d, &other.verifying_key()),
            Err(sign::SignatureError::Invalid)
        );
    }
    lo.stop().await;
}
