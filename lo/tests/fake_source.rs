//! `app::start` takes any `DesiredSource`: an in-memory one (no Git at all) drives the LO
//! to publish desired documents on a real broker, and a new head is picked up on `POST
//! /sync`-style polling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use lo::source::{Commit, DesiredSource, SiteFiles, SourceError};
use schemas::{NodeChannel, Topics};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// Commits in memory: id → site files; the head is the last one pushed.
#[derive(Default)]
struct Commits {
    head: Option<Commit>,
    files: BTreeMap<String, Vec<(String, String)>>,
}

#[derive(Clone, Default)]
struct FakeSource(Arc<Mutex<Commits>>);

impl FakeSource {
    fn push(&self, id: &str, files: &[(&str, String)]) {
        let mut c = self.0.lock().unwrap();
        c.files.insert(
            id.to_owned(),
            files
                .iter()
                .map(|(p, s)| ((*p).to_owned(), s.clone()))
                .collect(),
        );
        c.head = Some(Commit {
            id: id.to_owned(),
            time: 0,
        });
    }
}

impl DesiredSource for FakeSource {
    fn fetch(&mut self) -> Result<Option<Commit>, SourceError> {
        Ok(self.0.lock().unwrap().head.clone())
    }

    fn read_site(&self, commit: &str, site_path: &str) -> Result<SiteFiles, SourceError> {
        let c = self.0.lock().unwrap();
        let prefix = format!("{}/", site_path.trim_matches('/'));
        let files = c
            .files
            .get(commit)
            .map(|fs| {
                fs.iter()
                    .filter(|(p, _)| p.starts_with(&prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(SiteFiles {
            files,
            problems: Vec::new(),
        })
    }

    fn changed(&self, a: &str, b: &str, path: &str) -> Result<bool, SourceError> {
        Ok(self.read_site(a, path)? != self.read_site(b, path)?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_with_an_in_memory_source_publishes_desired_documents() {
    let broker = start_broker();
    let state = tempfile::tempdir().unwrap();
    let source = FakeSource::default();
    let node = node_doc("n1", "    role: gw\n");
    source.push(
        "c1",
        &[
            ("sites/s1/n1.yaml", node.clone()),
            ("sites/s1/web.yaml", deployment_doc("web", "reg/web:1", "")),
        ],
    );
    // No repository anywhere: the configured URL is never opened.
    let cfg = lo_config(
        &state.path().join("no-such-repo"),
        state.path(),
        broker.connect_addr(),
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = lo::app::start(cfg, Box::new(source.clone()), shutdown.clone())
        .await
        .expect("lo starts");

    let t = Topics::default();
    let n1 = Client::connect(broker.connect_addr(), "n1", None).await;
    n1.client
        .subscribe(
            t.node(SITE, "n1", NodeChannel::Desired),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let d1 = wait_until("desired of c1", T, || {
        n1.last_desired("n1").filter(|d| d.revision.commit == "c1")
    })
    .await;
    assert_eq!(d1.generation, 1);
    assert_eq!(d1.deployments.len(), 1);
    assert_eq!(d1.deployments[0].components[0].image, "reg/web:1");
    assert_eq!(running.shared.served_commit().as_deref(), Some("c1"));

    // A new head from the same source is served and published with the next generation.
    source.push(
        "c2",
        &[
            ("sites/s1/n1.yaml", node),
            ("sites/s1/web.yaml", deployment_doc("web", "reg/web:2", "")),
        ],
    );
    running.shared.sync.notify_one();
    let d2 = wait_until("desired of c2", T, || {
        n1.last_desired("n1").filter(|d| d.revision.commit == "c2")
    })
    .await;
    assert_eq!(d2.generation, 2);
    assert_eq!(d2.deployments[0].components[0].image, "reg/web:2");

    shutdown.cancel();
    let _ = running.join.await;
}
