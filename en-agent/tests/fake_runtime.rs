//! Convergence paths against the fake runtime, on paused tokio time.

mod common;

use common::*;
use en_agent::runtime::fake::{FakeRuntime, Op};
use en_agent::runtime::{label, RuntimeError};
use en_agent::{AgentHandle, Config, Counters};
use schemas::component::UpdateOrder;
use schemas::wire::{error_code, NodeStatus};
use schemas::{Health, State};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(600);

struct Rig {
    fake: FakeRuntime,
    dir: tempfile::TempDir,
    agent: Option<AgentHandle>,
    stop: CancellationToken,
}

impl Rig {
    fn new() -> Self {
        let fake = FakeRuntime::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rig = Rig {
            fake,
            dir,
            agent: None,
            stop: CancellationToken::new(),
        };
        rig.start();
        rig
    }

    fn config(&self) -> Config {
        let mut c = Config::new(SITE, NODE);
        c.state_dir = self.dir.path().to_owned();
        c
    }

    fn start(&mut self) {
        self.start_with(self.config());
    }

    fn start_with(&mut self, config: Config) {
        self.stop = CancellationToken::new();
        let agent =
            en_agent::spawn(config, Arc::new(self.fake.clone()), self.stop.clone()).expect("spawn");
        self.agent = Some(agent);
    }

    async fn restart(&mut self) {
        self.stop.cancel();
        if let Some(a) = self.agent.take() {
            a.wait().await.expect("agent stops");
        }
        self.start();
    }

    fn agent(&self) -> &AgentHandle {
        self.agent.as_ref().expect("agent")
    }

    fn submit(&self, d: &schemas::DesiredState) {
        self.agent().submit_desired(bytes(d));
    }

    async fn until(&self, what: &str, pred: impl FnMut(&NodeStatus) -> bool) -> NodeStatus {
        match self.agent().wait_status(WAIT, pred).await {
            Some(s) => s,
            None => panic!(
                "timed out waiting for {what}; last status: {:#?}\ncalls: {:?}",
                self.agent().status().borrow().clone(),
                self.fake.calls()
            ),
        }
    }

    async fn converged(&self, generation: u64) -> NodeStatus {
        self.until(&format!("convergence at generation {generation}"), |s| {
            s.converged && s.observed_generation == generation
        })
        .await
    }
}

fn component<'a>(s: &'a NodeStatus, dep: &str, comp: &str) -> &'a schemas::wire::ComponentStatus {
    s.deployments
        .iter()
        .find(|d| d.name == dep)
        .and_then(|d| d.components.iter().find(|c| c.name == comp))
        .unwrap_or_else(|| panic!("no {dep}/{comp} in {s:#?}"))
}

fn position(calls: &[String], call: &str) -> usize {
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("{call} not in {calls:?}"))
}

#[tokio::test(start_paused = true)]
async fn fresh_install_pulls_creates_and_starts_with_labels_and_digest() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.submit(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    let s = rig.converged(1).await;
    let c = component(&s, "app", "web");
    assert_eq!(c.state, State::Installed);
    assert_eq!(c.container_status.as_deref(), Some("running"));
    assert_eq!(c.image.as_deref(), Some("reg/web:v1"));
    assert!(c
        .repo_digest
        .as_deref()
        .is_some_and(|d| d.starts_with("reg/web@sha256:")));
    assert!(c.image_id.is_some());
    assert_eq!(
        s.revision.as_ref().map(|r| r.commit.as_str()),
        Some("commit-1")
    );
    let ctr = rig
        .fake
        .container_named("ef-n1-app-web")
        .expect("container");
    for (k, v) in [
        (label::SITE, SITE),
        (label::NODE, NODE),
        (label::DEPLOYMENT, "app"),
        (label::COMPONENT, "web"),
        (label::GENERATION, "1"),
        (label::MANAGED, "true"),
    ] {
        assert_eq!(ctr.info.label(k), Some(v), "label {k}");
    }
    assert_eq!(ctr.info.label(label::SPEC_HASH), c.spec_hash.as_deref());
    assert_eq!(rig.fake.networks(), vec!["ef-n1-app".to_owned()]);
    let spec = ctr.spec.expect("spec");
    assert_eq!(spec.aliases, vec!["web".to_owned()]);
    assert!(std::fs::metadata(rig.dir.path().join("desired.json")).is_ok());
}

#[tokio::test(start_paused = true)]
async fn spec_change_pulls_first_then_replaces_stop_first() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.fake.add_registry_image("reg/web:v2");
    rig.submit(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    let s1 = rig.converged(1).await;
    let old_id = component(&s1, "app", "web").container_id.clone();
    rig.submit(&doc(
        2,
        vec![deployment("app", vec![comp("web", "reg/web:v2")])],
    ));
    let s2 = rig.converged(2).await;
    let c = component(&s2, "app", "web");
    assert_eq!(c.image.as_deref(), Some("reg/web:v2"));
    assert_ne!(c.container_id, old_id);
    let calls = rig.fake.calls();
    let pull = position(&calls, "pull reg/web:v2");
    let removed = position(&calls, "remove ef-n1-app-web");
    let created = calls
        .iter()
        .rposition(|c| c == "create ef-n1-app-web")
        .expect("create");
    assert!(pull < removed && removed < created, "{calls:?}");
    assert_eq!(rig.fake.containers().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn start_first_update_starts_the_new_container_before_removing_the_old() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.fake.add_registry_image("reg/web:v2");
    let mut v1 = comp("web", "reg/web:v1");
    v1.update_order = UpdateOrder::StartFirst;
    let v1 = v1.with_hash();
    let mut v2 = comp("web", "reg/web:v2");
    v2.update_order = UpdateOrder::StartFirst;
    let v2 = v2.with_hash();
    rig.submit(&doc(1, vec![deployment("app", vec![v1])]));
    rig.converged(1).await;
    rig.submit(&doc(2, vec![deployment("app", vec![v2.clone()])]));
    rig.converged(2).await;
    let calls = rig.fake.calls();
    let new_name = format!("ef-n1-app-web-{}", &v2.spec_hash[7..15]);
    let started = position(&calls, &format!("start {new_name}"));
    let removed = position(&calls, "remove ef-n1-app-web");
    assert!(started < removed, "{calls:?}");
    assert_eq!(rig.fake.containers().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn removed_deployment_goes_in_reverse_dependency_order_and_reports_removed() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/db:1");
    rig.fake.add_registry_image("reg/web:1");
    rig.fake.add_registry_image("reg/other:1");
    let app = deployment(
        "app",
        vec![
            depends(comp("web", "reg/web:1"), &["db"]),
            comp("db", "reg/db:1"),
        ],
    );
    let other = deployment("other", vec![comp("x", "reg/other:1")]);
    rig.submit(&doc(1, vec![app, other.clone()]));
    rig.converged(1).await;
    rig.submit(&doc(2, vec![other]));
    let s = rig.converged(2).await;
    let calls = rig.fake.calls();
    assert!(position(&calls, "remove ef-n1-app-web") < position(&calls, "remove ef-n1-app-db"));
    assert!(
        calls.contains(&"remove-network ef-n1-app".to_owned()),
        "{calls:?}"
    );
    let app = s
        .deployments
        .iter()
        .find(|d| d.name == "app")
        .expect("app reported");
    assert_eq!(app.state, State::Removed);
    assert_eq!(rig.fake.containers().len(), 1);
    // An empty document removes everything managed.
    rig.submit(&doc(3, vec![]));
    rig.converged(3).await;
    assert!(rig.fake.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn dependencies_start_first_and_healthy_when_they_have_a_healthcheck() {
    let rig = Rig::new();
    for i in ["reg/db:1", "reg/api:1", "reg/web:1"] {
        rig.fake.add_registry_image(i);
    }
    let d = deployment(
        "app",
        vec![
            depends(comp("web", "reg/web:1"), &["api"]),
            depends(comp("api", "reg/api:1"), &["db"]),
            with_hc(comp("db", "reg/db:1"), &["CMD", "true"]),
        ],
    );
    rig.submit(&doc(1, vec![d]));
    let s = rig.converged(1).await;
    assert_eq!(component(&s, "app", "db").health, Health::Healthy);
    let calls = rig.fake.calls();
    assert!(position(&calls, "start ef-n1-app-db") < position(&calls, "create ef-n1-app-api"));
    assert!(position(&calls, "start ef-n1-app-api") < position(&calls, "create ef-n1-app-web"));
    // The report keeps document order.
    let names: Vec<&str> = s.deployments[0]
        .components
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["web", "api", "db"]);
}

#[tokio::test(start_paused = true)]
async fn dependent_waits_while_its_dependency_is_unhealthy() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/db:1");
    rig.fake.add_registry_image("reg/web:1");
    rig.fake.make_image_unhealthy("reg/db:1");
    let d = deployment(
        "app",
        vec![
            depends(comp("web", "reg/web:1"), &["db"]),
            with_hc(comp("db", "reg/db:1"), &["CMD", "false"]),
        ],
    );
    rig.submit(&doc(1, vec![d]));
    let s = rig
        .until("web pending on db", |s| {
            s.deployments.first().is_some_and(|d| {
                d.components
                    .iter()
                    .any(|c| c.name == "web" && c.state == State::Pending)
            })
        })
        .await;
    assert_eq!(component(&s, "app", "web").container_id, None);
}

#[tokio::test(start_paused = true)]
async fn restarted_agent_adopts_running_containers_instead_of_recreating() {
    let mut rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.submit(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    let before = rig.converged(1).await;
    rig.restart().await;
    let after = rig.converged(1).await;
    assert_eq!(rig.fake.count_calls("create"), 1, "{:?}", rig.fake.calls());
    assert_eq!(
        component(&after, "app", "web").container_id,
        component(&before, "app", "web").container_id
    );
}

#[tokio::test(start_paused = true)]
async fn converges_from_the_state_directory_with_no_broker_and_no_message() {
    let mut rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.submit(&doc(
        4,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    rig.converged(4).await;
    // A fresh engine (say, the node was re-imaged but kept its state directory).
    rig.stop.cancel();
    rig.agent.take().expect("agent").wait().await.expect("stop");
    rig.fake = FakeRuntime::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.start();
    let s = rig.converged(4).await;
    assert_eq!(component(&s, "app", "web").state, State::Installed);
}

#[tokio::test(start_paused = true)]
async fn container_killed_or_removed_by_hand_is_brought_back() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.submit(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    let s = rig.converged(1).await;
    let id = component(&s, "app", "web")
        .container_id
        .clone()
        .expect("id");
    rig.fake.kill(&id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = rig.converged(1).await;
    assert_eq!(rig.fake.count_calls("start ef-n1-app-web"), 2);
    assert_eq!(
        component(&s, "app", "web").container_id.as_deref(),
        Some(id.as_str())
    );
    rig.fake.remove_by_hand(&id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = rig.converged(1).await;
    assert_ne!(
        component(&s, "app", "web").container_id.as_deref(),
        Some(id.as_str())
    );
    assert_eq!(rig.fake.count_calls("create"), 2);
}

#[tokio::test(start_paused = true)]
async fn unhealthy_container_is_restarted_with_backoff_then_failed() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.fake.make_image_unhealthy("reg/web:v1");
    let t0 = tokio::time::Instant::now();
    rig.submit(&doc(
        1,
        vec![deployment(
            "app",
            vec![with_hc(comp("web", "reg/web:v1"), &["CMD", "false"])],
        )],
    ));
    let s = rig
        .until("failed unhealthy", |s| s.state == Some(State::Failed))
        .await;
    let c = component(&s, "app", "web");
    assert_eq!(
        c.error.as_ref().map(|e| e.code.as_str()),
        Some(error_code::UNHEALTHY)
    );
    assert_eq!(c.restart_count, 3);
    assert_eq!(rig.fake.count_calls("restart"), 3);
    // Backoff 1 s then 2 s (at least half of each, with jitter) between restarts.
    assert!(
        t0.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        t0.elapsed()
    );
    // A healthy container afterwards is installed again.
    let id = c.container_id.clone().expect("id");
    rig.fake.set_health(&id, Health::Healthy);
    rig.converged(1).await;
}

#[tokio::test(start_paused = true)]
async fn missing_image_fails_after_the_attempt_limit_and_a_new_generation_resets() {
    let rig = Rig::new();
    let mut events = rig.agent().events();
    rig.submit(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/nope:1")])],
    ));
    let s = rig
        .until("failed", |s| s.state == Some(State::Failed))
        .await;
    let c = component(&s, "app", "web");
    assert_eq!(
        c.error.as_ref().map(|e| e.code.as_str()),
        Some(error_code::IMAGE_NOT_FOUND)
    );
    assert_eq!(c.attempts, 3);
    assert_eq!(rig.fake.count_calls("pull reg/nope:1"), 3);
    // Nothing more happens: no tight loop.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(rig.fake.count_calls("pull reg/nope:1"), 3);
    let mut saw_failed = false;
    while let Ok(e) = events.try_recv() {
        if e.component.as_deref() == Some("web") && e.to == State::Failed {
            saw_failed = true;
            assert_eq!(e.generation, 1);
            assert!(e.error.is_some());
        }
    }
    assert!(saw_failed, "no failed event");
    rig.fake.add_registry_image("reg/nope:1");
    rig.submit(&doc(
        2,
        vec![deployment("app", vec![comp("web", "reg/nope:1")])],
    ));
    rig.converged(2).await;
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_then_succeed() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.fake.fail(
        Op::Start,
        None,
        RuntimeError::PortInUse("port is already allocated".into()),
        Some(2),
    );
    rig.submit(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    rig.converged(1).await;
    assert_eq!(rig.fake.count_calls("start"), 3);
}

#[tokio::test(start_paused = true)]
async fn stale_generation_is_rejected_and_replay_is_a_no_op() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.fake.add_registry_image("reg/web:v0");
    rig.submit(&doc(
        5,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    rig.converged(5).await;
    let counters = rig.agent().counters().clone();
    rig.submit(&doc(
        5,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    rig.submit(&doc(
        4,
        vec![deployment("app", vec![comp("web", "reg/web:v0")])],
    ));
    let s = rig
        .until("rejection reported", |s| s.rejected.is_some())
        .await;
    assert!(s
        .rejected
        .as_ref()
        .is_some_and(|r| r.message.contains("stale generation 4")));
    assert_eq!(s.observed_generation, 5);
    assert_eq!(Counters::get(&counters.documents_rejected), 1);
    assert_eq!(Counters::get(&counters.documents_accepted), 1);
    assert!(!rig.fake.calls().iter().any(|c| c.contains("v0")));
}

#[tokio::test(start_paused = true)]
async fn foreign_malformed_and_inconsistent_documents_change_nothing() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    let mut foreign = doc(1, vec![deployment("app", vec![comp("web", "reg/web:v1")])]);
    foreign.node = "other".into();
    rig.submit(&foreign);
    rig.agent().submit_desired(b"{not json".to_vec());
    let mut bad_hash = doc(1, vec![deployment("app", vec![comp("web", "reg/web:v1")])]);
    bad_hash.deployments[0].components[0].spec_hash = "sha256:00".into();
    rig.submit(&bad_hash);
    let cycle = doc(
        1,
        vec![deployment(
            "app",
            vec![
                depends(comp("a", "reg/web:v1"), &["b"]),
                depends(comp("b", "reg/web:v1"), &["a"]),
            ],
        )],
    );
    rig.submit(&cycle);
    let counters = rig.agent().counters().clone();
    rig.until("four rejections", |_| {
        Counters::get(&counters.documents_rejected) == 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(Counters::get(&counters.documents_rejected), 4);
    assert!(rig.fake.calls().is_empty());
    assert!(std::fs::metadata(rig.dir.path().join("desired.json")).is_err());
}

#[tokio::test(start_paused = true)]
async fn unsigned_document_is_refused_when_a_key_is_configured() {
    let mut rig = Rig::new();
    let key = schemas::sign::Ed25519SigningKey::from_bytes(&[3u8; 32]);
    let mut config = rig.config();
    config.public_key = Some(schemas::sign::verifying_key_to_base64(&key.verifying_key()));
    rig.stop.cancel();
    rig.start_with(config);
    rig.fake.add_registry_image("reg/web:v1");
    let unsigned = doc(1, vec![deployment("app", vec![comp("web", "reg/web:v1")])]);
    rig.submit(&unsigned);
    let s = rig.until("rejected", |s| s.rejected.is_some()).await;
    assert!(s
        .rejected
        .as_ref()
        .is_some_and(|r| r.message.contains("not signed")));
    let mut signed = unsigned.clone();
    schemas::sign::sign(&mut signed, &key, "k1");
    rig.submit(&signed);
    rig.converged(1).await;
}

#[tokio::test(start_paused = true)]
async fn unmanaged_and_other_agents_containers_are_never_touched() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    let mine = rig
        .fake
        .add_foreign_container("by-hand", "nginx:1", BTreeMap::new());
    let other_labels = BTreeMap::from([
        (label::MANAGED.to_owned(), "true".to_owned()),
        (label::SITE.to_owned(), SITE.to_owned()),
        (label::NODE.to_owned(), "n2".to_owned()),
        (label::DEPLOYMENT.to_owned(), "app".to_owned()),
        (label::COMPONENT.to_owned(), "web".to_owned()),
    ]);
    rig.fake
        .add_foreign_container("ef-n2-app-web", "reg/web:v1", other_labels);
    rig.submit(&doc(1, vec![]));
    let s = rig.converged(1).await;
    assert_eq!(s.unmanaged.len(), 1);
    assert_eq!(s.unmanaged[0].id, mine);
    rig.submit(&doc(
        2,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    rig.converged(2).await;
    assert_eq!(rig.fake.containers().len(), 3);
    assert!(!rig
        .fake
        .calls()
        .iter()
        .any(|c| c.contains("by-hand") || c.contains("n2")));
}

#[tokio::test(start_paused = true)]
async fn docker_unreachable_is_reported_and_the_agent_recovers() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.fake.set_unreachable(true);
    rig.submit(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    let s = rig
        .until("unreachable reported", |s| {
            !s.runtime.reachable && s.runtime.error.is_some()
        })
        .await;
    assert!(!s.converged);
    tokio::time::sleep(Duration::from_secs(120)).await;
    rig.fake.set_unreachable(false);
    let s = rig.converged(1).await;
    assert!(s.runtime.reachable);
    assert_eq!(component(&s, "app", "web").attempts, 0);
}

#[tokio::test(start_paused = true)]
async fn pull_that_cannot_fit_on_disk_is_refused_with_a_clear_error() {
    let rig = Rig::new();
    rig.fake.add_registry_image_sized("reg/big:1", 900 << 20);
    rig.fake.set_free_disk(Some(1 << 30));
    rig.submit(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/big:1")])],
    ));
    let s = rig
        .until("failed", |s| s.state == Some(State::Failed))
        .await;
    let e = component(&s, "app", "web").error.clone().expect("error");
    assert_eq!(e.code, error_code::NO_DISK);
    assert!(
        e.message.contains("refusing to pull reg/big:1"),
        "{}",
        e.message
    );
    assert_eq!(rig.fake.count_calls("pull"), 0);
}

#[tokio::test(start_paused = true)]
async fn events_report_each_transition_once() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    let mut events = rig.agent().events();
    rig.submit(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    rig.converged(1).await;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push((e.component.clone(), e.from, e.to));
    }
    let web: Vec<_> = seen
        .iter()
        .filter(|e| e.0.as_deref() == Some("web"))
        .collect();
    assert_eq!(web.first().map(|e| e.1), Some(None));
    assert_eq!(web.last().map(|e| e.2), Some(State::Installed));
    for pair in web.windows(2) {
        assert_eq!(pair[0].2, pair[1].1.expect("from"), "{web:?}");
    }
}

fn error_of(s: &NodeStatus, dep: &str, comp: &str) -> (String, String) {
    let e = component(s, dep, comp)
        .error
        .clone()
        .unwrap_or_else(|| panic!("no error on {dep}/{comp}: {s:#?}"));
    (e.code, e.message)
}

#[tokio::test(start_paused = true)]
async fn crash_looping_container_ends_failed_with_its_exit_code_and_a_new_generation_resets() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    // Exits 1 right after every start; the default policy (unless-stopped) makes the
    // engine restart it over and over.
    rig.fake.set_image_crash("reg/web:v1", Some(1));
    let d = |g| doc(g, vec![deployment("app", vec![comp("web", "reg/web:v1")])]);
    rig.submit(&d(1));
    let s = rig
        .until("crash loop counted while installing", |s| {
            s.state == Some(State::Installing)
                && s.deployments
                    .iter()
                    .flat_map(|d| &d.components)
                    .any(|c| c.error.is_some())
        })
        .await;
    assert_eq!(error_of(&s, "app", "web").0, error_code::START_FAILED);
    let s = rig
        .until("failed after the attempt limit", |s| {
            s.state == Some(State::Failed)
        })
        .await;
    let (code, message) = error_of(&s, "app", "web");
    assert_eq!(code, error_code::START_FAILED);
    assert!(message.contains("exit code 1"), "{message}");
    let c = component(&s, "app", "web");
    assert_eq!(c.attempts, 3);
    assert!(c.restart_count >= 3, "restart count {}", c.restart_count);
    assert!(!s.converged);
    // The engine restarts it (its policy), the agent started it once and no more.
    assert_eq!(rig.fake.count_calls("start"), 1);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let s = rig.agent().status().borrow().clone().expect("status");
    assert_eq!(s.state, Some(State::Failed));
    assert_eq!(rig.fake.count_calls("start"), 1);
    assert_eq!(rig.fake.count_calls("create"), 1);

    // A new generation resets the count: installing again, then failed again.
    rig.submit(&d(2));
    rig.until("generation 2 counts afresh", |s| {
        s.observed_generation == 2 && s.state == Some(State::Installing)
    })
    .await;
    let s = rig
        .until("generation 2 failed", |s| {
            s.observed_generation == 2 && s.state == Some(State::Failed)
        })
        .await;
    assert_eq!(component(&s, "app", "web").attempts, 3);

    // Fixed (the next restart stays up): installed once it stayed up long enough.
    rig.fake.set_image_crash("reg/web:v1", None);
    let t0 = tokio::time::Instant::now();
    let s = rig.converged(2).await;
    assert!(t0.elapsed() >= en_agent::plan::STABLE_AFTER);
    let c = component(&s, "app", "web");
    assert_eq!(c.attempts, 0);
    assert!(c.error.is_none());
    assert_eq!(rig.fake.count_calls("create"), 1);
}

#[tokio::test(start_paused = true)]
async fn installed_container_that_starts_crash_looping_is_reported_then_failed() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.submit(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    let s = rig.converged(1).await;
    let id = component(&s, "app", "web")
        .container_id
        .clone()
        .expect("id");
    let mut events = rig.agent().events();
    // From now on it exits 2 at every start; it crashes once by itself.
    rig.fake.set_image_crash("reg/web:v1", Some(2));
    rig.fake.crash(&id, 2);
    let s = rig
        .until("back to installing", |s| {
            s.state == Some(State::Installing) && !s.converged
        })
        .await;
    assert_eq!(error_of(&s, "app", "web").0, error_code::START_FAILED);
    let s = rig
        .until("failed", |s| s.state == Some(State::Failed))
        .await;
    let (code, message) = error_of(&s, "app", "web");
    assert_eq!(code, error_code::START_FAILED);
    assert!(message.contains("exit code 2"), "{message}");
    assert_eq!(
        component(&s, "app", "web").container_id.as_deref(),
        Some(id.as_str())
    );
    let mut path = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.component.as_deref() == Some("web") {
            path.push((e.from, e.to));
        }
    }
    assert_eq!(
        path.first(),
        Some(&(Some(State::Installed), State::Installing)),
        "{path:?}"
    );
    assert_eq!(path.last().map(|p| p.1), Some(State::Failed), "{path:?}");
    assert_eq!(rig.fake.count_calls("create"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_single_crash_is_reported_and_installed_again_once_it_stays_up() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.submit(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    ));
    let s = rig.converged(1).await;
    let id = component(&s, "app", "web")
        .container_id
        .clone()
        .expect("id");
    rig.fake.crash(&id, 139);
    let s = rig
        .until("crash seen", |s| {
            s.deployments
                .iter()
                .flat_map(|d| &d.components)
                .any(|c| c.error.is_some())
        })
        .await;
    assert_eq!(component(&s, "app", "web").state, State::Installing);
    let s = rig.converged(1).await;
    let c = component(&s, "app", "web");
    assert!(c.error.is_none() && c.attempts == 0, "{c:?}");
    assert_eq!(c.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(rig.fake.count_calls("start"), 1);
}
