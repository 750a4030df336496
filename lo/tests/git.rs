//! The Git source on real repositories made in temp dirs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lo::source::{DesiredSource, GitSource};
use std::time::Duration;

#[test]
fn fetch_over_file_url_reads_site_and_detects_changes() {
    let repo = Repo::new();
    let c1 = repo.commit(
        &[
            ("sites/s1/a.yaml", Some(&deployment_doc("a", "reg/a:1", ""))),
            (
                "sites/s1/sub/b.yml",
                Some(&deployment_doc("b", "reg/b:1", "")),
            ),
            ("sites/s1/README.md", Some("not yaml")),
            ("sites/other/x.yaml", Some("x: 1")),
        ],
        "one",
    );
    let mirror = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.path().display());
    let mut src = GitSource::open(
        &mirror.path().join("m.git"),
        &url,
        "main",
        Default::default(),
    )
    .unwrap();
    let head = src.fetch().unwrap().expect("branch exists");
    assert_eq!(head.id, c1);
    let files = src.read_site(&c1, "sites/s1").unwrap().files;
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, vec!["sites/s1/a.yaml", "sites/s1/sub/b.yml"]);

    let c2 = repo.commit(&[("sites/other/x.yaml", Some("x: 2"))], "other site");
    assert_eq!(src.fetch().unwrap().unwrap().id, c2);
    assert!(
        !src.changed(&c1, &c2, "sites/s1").unwrap(),
        "another site's commit is ignored"
    );
    assert!(src.changed(&c1, &c2, "sites/other").unwrap());
    let c3 = repo.commit(&[("sites/s1/sub/b.yml", None)], "remove b");
    src.fetch().unwrap();
    assert!(src.changed(&c2, &c3, "sites/s1").unwrap());
    assert_eq!(src.read_site(&c3, "sites/s1").unwrap().files.len(), 1);
    assert!(src.read_site(&c3, "sites/missing").unwrap().is_empty());
}

#[test]
fn missing_branch_and_unreachable_repo_are_errors_not_panics() {
    let repo = Repo::new();
    repo.commit(&[("f.yaml", Some("a: 1"))], "one");
    let mirror = tempfile::tempdir().unwrap();
    let mut src = GitSource::open(
        &mirror.path().join("m.git"),
        &repo.path().to_string_lossy(),
        "nope",
        Default::default(),
    )
    .unwrap();
    assert!(src.fetch().is_err() || src.fetch().unwrap().is_none());
    let mut gone = GitSource::open(
        &mirror.path().join("m2.git"),
        "/nonexistent/repo",
        "main",
        Default::default(),
    )
    .unwrap();
    assert!(gone.fetch().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_source_keeps_serving_and_reports() {
    let broker = start_broker();
    let repo = Repo::new();
    let c1 = repo.commit(
        &[
            ("sites/s1/n.yaml", Some(&node_doc("n1", "    role: gw\n"))),
            ("sites/s1/a.yaml", Some(&deployment_doc("a", "reg/a:1", ""))),
        ],
        "one",
    );
    let state = tempfile::tempdir().unwrap();
    let moved = tempfile::tempdir().unwrap();
    let lo = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
    wait_until("served", Duration::from_secs(20), || {
        lo.running.shared.served_commit()
    })
    .await;
    // The repository disappears.
    let away = moved.path().join("r");
    std::fs::rename(repo.path(), &away).unwrap();
    let s = wait_until("source error", Duration::from_secs(20), || {
        lo.status()
            .filter(|s| s.last_error.as_ref().is_some_and(|e| e.commit.is_empty()))
    })
    .await;
    assert_eq!(s.revision.unwrap().commit, c1);
    std::fs::rename(&away, repo.path()).unwrap();
    wait_until("error cleared", Duration::from_secs(20), || {
        lo.status().filter(|s| s.last_error.is_none())
    })
    .await;
    lo.stop().await;
}
