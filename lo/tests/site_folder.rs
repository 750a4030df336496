//! A missing or empty site folder is a rejected commit, never "zero deployments".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use schemas::{NodeChannel, Topics};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn site_files() -> Vec<(&'static str, Option<String>)> {
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

fn commit(repo: &Repo, files: &[(&str, Option<String>)], msg: &str) -> String {
    let refs: Vec<(&str, Option<&str>)> = files.iter().map(|(p, c)| (*p, c.as_deref())).collect();
    repo.commit(&refs, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_empty_site_folder_is_rejected_and_keeps_what_runs() {
    let broker = start_broker();
    let repo = Repo::new();
    // No site folder at all at the first commit: an error, nothing served.
    let c0 = commit(
        &repo,
        &[(
            "sites/other/web.yaml",
            Some(deployment_doc("web", "reg/web:1", "")),
        )],
        "another site only",
    );
    let state = tempfile::tempdir().unwrap();
    let lo = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
    let s = wait_until("missing folder reported", T, || {
        lo.status()
            .filter(|s| s.last_error.as_ref().is_some_and(|e| e.commit == c0))
    })
    .await;
    assert!(s.revision.is_none(), "nothing served");
    let err = s.last_error.unwrap();
    assert_eq!(err.problems[0].file, "sites/s1");
    assert!(err.message.contains("missing"), "{}", err.message);
    assert!(lo.running.shared.served_commit().is_none());

    // The folder appears: served, the error clears.
    let c1 = commit(&repo, &site_files(), "site");
    let t = Topics::default();
    let node = Client::connect(broker.connect_addr(), "n1", None).await;
    node.client
        .subscribe(
            t.node(SITE, "n1", NodeChannel::Desired),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let d1 = wait_until("served", T, || {
        node.last_desired("n1").filter(|d| d.revision.commit == c1)
    })
    .await;
    assert_eq!(d1.deployments.len(), 1);
    wait_until("error cleared", T, || {
        lo.status()
            .filter(|s| s.last_error.is_none() && s.revision.is_some())
    })
    .await;

    // The folder is renamed away (deleted here): rejected like an invalid commit, the last
    // good revision stays served and nothing new is published.
    let c2 = commit(
        &repo,
        &[("sites/s1/nodes.yaml", None), ("sites/s1/web.yaml", None)],
        "rename the site folder by mistake",
    );
    let s = wait_until("deleted folder rejected", T, || {
        lo.status()
            .filter(|s| s.last_error.as_ref().is_some_and(|e| e.commit == c2))
    })
    .await;
    assert_eq!(s.revision.unwrap().commit, c1, "last good revision served");

    // A folder with no YAML document is the same.
    let c3 = commit(
        &repo,
        &[(
            "sites/s1/README.md",
            Some("moved to sites/plant-1\n".into()),
        )],
        "only a readme",
    );
    let s = wait_until("empty folder rejected", T, || {
        lo.status()
            .filter(|s| s.last_error.as_ref().is_some_and(|e| e.commit == c3))
    })
    .await;
    assert_eq!(s.revision.unwrap().commit, c1);
    assert_eq!(
        node.last_desired("n1").unwrap(),
        d1,
        "what runs is not touched"
    );
    let m = lo.running.shared.metrics.encode();
    assert!(m.contains("lo_rejected_commits_total 3"), "{m}");
    lo.stop().await;
    let h = lo::audit::history(&state.path().join("audit"), None, None, 50).unwrap();
    assert_eq!(
        h.iter().filter(|e| e.kind == "rejected").count(),
        3,
        "{h:?}"
    );
}
