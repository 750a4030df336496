//! Rollout pacing (`Site.spec.rollout.maxParallel`) against the in-process broker, with three
//! scripted nodes, across an LO restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use schemas::{DesiredState, NodeChannel, Topics};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const NODES: [&str; 3] = ["n1", "n2", "n3"];

fn files(image: &str) -> Vec<(String, Option<String>)> {
    let nodes: Vec<String> = NODES
        .iter()
        .map(|n| node_doc(n, "    role: gw\n"))
        .collect();
    vec![
        (
            format!("sites/{SITE}/site.yaml"),
            Some(format!(
                "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: {SITE}\nspec:\n  rollout:\n    maxParallel: 1\n"
            )),
        ),
        (format!("sites/{SITE}/nodes.yaml"), Some(nodes.join("---\n"))),
        (
            format!("sites/{SITE}/web.yaml"),
            Some(deployment_doc("web", image, "")),
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

async fn report(nodes: &Client, doc: &DesiredState, failed: Option<&str>) {
    let t = Topics::default();
    nodes
        .publish(
            t.node(SITE, &doc.node, NodeChannel::Status),
            true,
            serde_json::to_vec(&status_for(doc, failed)).unwrap(),
        )
        .await;
}

async fn desired_at(nodes: &Client, node: &str, commit: &str) -> DesiredState {
    wait_until(&format!("{node} gets {commit}"), T, || {
        nodes
            .last_desired(node)
            .filter(|d| d.revision.commit == commit)
    })
    .await
}

/// Every document `node` received since `from` (index in the inbox).
fn received(nodes: &Client, node: &str, from: usize) -> Vec<DesiredState> {
    let g = nodes.inbox.lock().unwrap();
    g.desired[from..]
        .iter()
        .filter(|d| d.node == node)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_one_rolls_out_node_by_node_across_a_restart() {
    let broker = start_broker();
    let repo = Repo::new();
    let c1 = commit(&repo, &files("reg/web:1"), "v1");
    let state = tempfile::tempdir().unwrap();
    let cfg = || lo::config::Config {
        // Liveness from the presence below must outlast the test.
        heartbeat_timeout: Duration::from_secs(120),
        ..lo_config(repo.path(), state.path(), broker.connect_addr())
    };
    let lo = Lo::start(cfg()).await;
    let t = Topics::default();
    let nodes = Client::connect(broker.connect_addr(), "nodes", None).await;
    nodes
        .client
        .subscribe(
            t.all_nodes(SITE, NodeChannel::Desired),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    for n in NODES {
        nodes
            .publish(
                t.node(SITE, n, NodeChannel::Online),
                true,
                presence(true, 1),
            )
            .await;
    }

    // First documents are not paced: every node gets one and converges.
    let mut v1 = Vec::new();
    for n in NODES {
        let d = desired_at(&nodes, n, &c1).await;
        report(&nodes, &d, None).await;
        v1.push(d);
    }
    wait_until("all converged at v1", T, || {
        lo.status()
            .filter(|s| s.nodes.len() == 3 && s.nodes.iter().all(|n| n.converged && n.online))
    })
    .await;

    // A new revision: n1 first, the others wait with their current document.
    let c2 = commit(&repo, &files("reg/web:2"), "v2");
    let n1 = desired_at(&nodes, "n1", &c2).await;
    assert_eq!(n1.generation, v1[0].generation + 1);
    let r = wait_until("n2 and n3 waiting", T, || {
        lo.running
            .shared
            .rollout()
            .filter(|r| r.waiting == ["n2", "n3"] && r.in_flight == ["n1"])
    })
    .await;
    assert_eq!(r.max_parallel, 1);
    assert_eq!(nodes.last_desired("n2").unwrap(), v1[1], "n2 keeps v1");
    assert_eq!(nodes.last_desired("n3").unwrap(), v1[2], "n3 keeps v1");
    let json = wait_until("waiting in the site status", T, || {
        lo.running
            .shared
            .site_status_json()
            .filter(|v| v["rollout"]["waitingCount"] == 2)
    })
    .await;
    let waiting: Vec<&str> = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["waiting"].is_string())
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(waiting, ["n2", "n3"], "{json}");
    assert_eq!(
        nodes.last_desired("n2").unwrap(),
        v1[1],
        "n2 still keeps v1"
    );

    // n1 converges: n2 gets its turn, n3 still waits.
    report(&nodes, &n1, None).await;
    let n2 = desired_at(&nodes, "n2", &c2).await;
    assert_eq!(n2.generation, v1[1].generation + 1);
    wait_until("n2 in flight, n3 waiting", T, || {
        lo.running
            .shared
            .rollout()
            .filter(|r| r.waiting == ["n3"] && r.in_flight == ["n2"])
    })
    .await;
    assert_eq!(nodes.last_desired("n3").unwrap(), v1[2], "n3 keeps v1");

    // The LO restarts mid-rollout: it re-derives the pacing from its state and what nodes
    // report, republishes the same documents and issues no new generation.
    lo.stop().await;
    let mark = nodes.inbox.lock().unwrap().desired.len();
    let lo = Lo::start(cfg()).await;
    wait_until("restarted LO sees every node, n3 waiting", T, || {
        let s = lo.status()?;
        let r = lo.running.shared.rollout()?;
        (s.nodes.iter().filter(|n| n.online).count() == 3
            && r.waiting == ["n3"]
            && r.in_flight == ["n2"])
        .then_some(())
    })
    .await;
    for d in received(&nodes, "n2", mark) {
        assert_eq!(d, n2, "n2 republished as it was");
    }
    for d in received(&nodes, "n3", mark) {
        assert_eq!(d, v1[2], "n3 republished as it was");
    }

    // n2 fails the new revision: the rollout halts and rolls back. n1 and n2 are handed
    // v1's spec again (one new generation each), n3 never gets v2.
    let mark = nodes.inbox.lock().unwrap().desired.len();
    report(&nodes, &n2, Some("web")).await;
    let back = |node: &'static str, after: u64| {
        let nodes = &nodes;
        async move {
            wait_until(&format!("{node} rolled back"), T, || {
                nodes.last_desired(node).filter(|d| {
                    d.generation == after + 1 && d.deployments[0].components[0].image == "reg/web:1"
                })
            })
            .await
        }
    };
    let n1_back = back("n1", n1.generation).await;
    let n2_back = back("n2", n2.generation).await;
    assert_eq!(
        n1_back.revision.commit, c2,
        "the served revision, v1's spec"
    );
    assert_eq!(
        n2_back.deployments[0].commit, c1,
        "the promoted version of web"
    );
    let json = wait_until("rolled back in the site status", T, || {
        lo.running
            .shared
            .site_status_json()
            .filter(|v| v["deployments"][0]["rollout"]["phase"] == "rolledBack")
    })
    .await;
    let rollout = &json["deployments"][0]["rollout"];
    assert_eq!(rollout["haltReason"]["node"], "n2", "{json}");
    assert_eq!(rollout["received"], 2, "{json}");
    assert_eq!(rollout["promoted"]["commit"], c1.as_str(), "{json}");
    assert_eq!(rollout["candidate"]["commit"], c2.as_str(), "{json}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for d in received(&nodes, "n3", mark) {
        assert_eq!(d, v1[2], "n3 never gets v2");
    }
    for (node, d) in [("n1", &n1_back), ("n2", &n2_back)] {
        let got = received(&nodes, node, mark);
        assert!(
            got.iter().all(|x| x == d),
            "{node}: exactly one rollback document: {got:?}"
        );
    }
    lo.stop().await;
}

/// Files of a site with waves: a canary (n4, by label) soaking 1 s, then everyone.
fn wave_files(image: &str) -> Vec<(String, Option<String>)> {
    let nodes: Vec<String> = ["n1", "n2", "n3", "n4"]
        .iter()
        .map(|n| {
            let canary = if *n == "n4" {
                "    edgefleet.io/canary: \"true\"\n"
            } else {
                ""
            };
            node_doc(n, &format!("    role: gw\n{canary}"))
        })
        .collect();
    vec![
        (
            format!("sites/{SITE}/site.yaml"),
            Some(format!(
                "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: {SITE}\nspec:\n  rollout:\n    waves:\n      - nodes: 1\n        soak: 1s\n      - nodes: 100%\n"
            )),
        ),
        (format!("sites/{SITE}/nodes.yaml"), Some(nodes.join("---\n"))),
        (
            format!("sites/{SITE}/web.yaml"),
            Some(deployment_doc("web", image, "")),
        ),
    ]
}

fn events(nodes: &Client) -> Vec<schemas::LoEvent> {
    let topic = Topics::default().lo(SITE, schemas::LoChannel::Events);
    let g = nodes.inbox.lock().unwrap();
    g.other
        .iter()
        .filter(|(t, _)| *t == topic)
        .map(|(_, p)| serde_json::from_slice(p).expect("a LoEvent"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_go_canary_first_skip_an_offline_node_and_announce_themselves() {
    let broker = start_broker();
    let repo = Repo::new();
    let c1 = commit(&repo, &wave_files("reg/web:1"), "v1");
    let state = tempfile::tempdir().unwrap();
    let cfg = lo::config::Config {
        heartbeat_timeout: Duration::from_secs(120),
        ..lo_config(repo.path(), state.path(), broker.connect_addr())
    };
    let lo = Lo::start(cfg).await;
    let t = Topics::default();
    let nodes = Client::connect(broker.connect_addr(), "nodes", None).await;
    for topic in [
        t.all_nodes(SITE, NodeChannel::Desired),
        t.lo(SITE, schemas::LoChannel::Events),
    ] {
        nodes
            .client
            .subscribe(topic, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    // n3 stays offline throughout (its retained Last Will says so).
    for n in ["n1", "n2", "n3", "n4"] {
        nodes
            .publish(
                t.node(SITE, n, NodeChannel::Online),
                true,
                presence(n != "n3", 1),
            )
            .await;
    }
    // The first revision an LO serves is promoted as it is: everybody gets it (offline
    // n3 too, retained).
    for n in ["n1", "n2", "n3", "n4"] {
        let d = desired_at(&nodes, n, &c1).await;
        if n != "n3" {
            report(&nodes, &d, None).await;
        }
    }
    let n3_v1 = nodes.last_desired("n3").unwrap();

    let c2 = commit(&repo, &wave_files("reg/web:2"), "v2");
    let canary = desired_at(&nodes, "n4", &c2).await;
    assert_eq!(canary.deployments[0].components[0].image, "reg/web:2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in ["n1", "n2", "n3"] {
        assert_ne!(
            nodes.last_desired(n).unwrap().revision.commit,
            c2,
            "{n} waits for the canary"
        );
    }
    let json = wait_until("wave 1 in the site status", T, || {
        lo.running
            .shared
            .site_status_json()
            .filter(|v| v["deployments"][0]["rollout"]["phase"] == "progressing")
    })
    .await;
    let rollout = &json["deployments"][0]["rollout"];
    assert_eq!(rollout["wave"], 1, "{json}");
    assert_eq!(rollout["waves"][0]["nodes"], 1, "{json}");
    assert_eq!(rollout["waves"][1]["nodes"], 3, "{json}");

    // The canary passes (installed, soaked 1 s): the online rest get it, n3 does not.
    report(&nodes, &canary, None).await;
    let n1 = desired_at(&nodes, "n1", &c2).await;
    let n2 = desired_at(&nodes, "n2", &c2).await;
    assert_eq!(
        nodes.last_desired("n3").unwrap(),
        n3_v1,
        "offline n3 is skipped"
    );
    report(&nodes, &n1, None).await;
    report(&nodes, &n2, None).await;
    // Complete: v2 is promoted, and offline n3 finds it retained when it is back.
    let n3 = desired_at(&nodes, "n3", &c2).await;
    assert_eq!(n3.deployments[0].components[0].image, "reg/web:2");
    let kinds = wait_until("started, wavePassed, complete on lo/events", T, || {
        let kinds: Vec<String> = events(&nodes)
            .iter()
            .map(|e| e.kind.as_str().to_owned())
            .collect();
        (kinds.len() >= 3).then_some(kinds)
    })
    .await;
    assert_eq!(kinds, ["started", "wavePassed", "complete"]);
    let done = events(&nodes).pop().unwrap();
    assert_eq!(done.candidate.commit, c2);
    assert_eq!(done.wave, 2);
    lo.stop().await;
}
