//! Against the real Docker engine, with tiny images built here from Debian's
//! `busybox-static` and served by a local `docker-registry` on loopback, so pulls and
//! digests are real. Mandatory when `CI=true`; skipped with one line otherwise when no
//! engine answers. Every container, network, volume and image a test creates is removed
//! by a guard, also on failure.

#[macro_use]
mod common;

use common::*;
use en_agent::runtime::docker::DockerRuntime;
use en_agent::runtime::label;
use en_agent::{AgentHandle, Config};
use harness::{docker, must_docker as must, DockerGuard, Registry, ScratchImage};
use schemas::wire::{error_code, NodeStatus};
use schemas::{Health, State};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);

/// One test's world: a registry, images, an agent identity; removes all of it on drop.
struct Lab {
    node: String,
    repo: String,
    // Dropped in this order: containers, networks and images first, the registry last.
    docker: DockerGuard,
    _registry: Registry,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let id = format!("{tag}{:06x}", fastrand::u32(..0xff_ffff));
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::start(dir.path());
        let repo = format!("{}/ef-test-{id}/app", registry.addr);
        let docker = DockerGuard::by_label(label::NODE, &id);
        docker.image(&repo);
        Lab {
            node: id,
            repo,
            docker,
            _registry: registry,
            dir,
        }
    }

    /// Builds `<repo>:<tag>` from scratch with busybox at `/busybox` and `/version` saying
    /// `tag`, pushes it, removes the local copy (so the agent really pulls); returns the
    /// reference and its repo digest.
    fn image(&self, tag: &str) -> (String, String) {
        let reference = format!("{}:{tag}", self.repo);
        let digest = ScratchImage::busybox_at("/busybox")
            .file("/version", tag)
            .cmd(&SLEEP_LOOP)
            .build(&reference)
            .expect("pushed image has a digest");
        must(&["rmi", &reference]);
        (reference, digest)
    }

    fn config(&self) -> Config {
        let mut c = Config::new("dt", &self.node);
        c.state_dir = self.dir.path().join("state");
        c.stop_timeout = Duration::from_secs(2);
        c.resync = Duration::from_secs(5);
        c
    }

    fn spawn(&self, stop: &CancellationToken) -> AgentHandle {
        let rt = DockerRuntime::new("unix:///var/run/docker.sock", None).expect("runtime");
        en_agent::spawn(self.config(), Arc::new(rt), stop.clone()).expect("agent")
    }

    fn doc(&self, generation: u64, deployments: Vec<schemas::wire::DesiredDeployment>) -> Vec<u8> {
        let mut d = doc(generation, deployments);
        d.site = "dt".into();
        d.node = self.node.clone();
        bytes(&d)
    }
}

async fn until(
    agent: &AgentHandle,
    what: &str,
    pred: impl FnMut(&NodeStatus) -> bool,
) -> NodeStatus {
    match agent.wait_status(WAIT, pred).await {
        Some(s) => s,
        None => panic!(
            "timed out waiting for {what}; last status: {}",
            serde_json::to_string_pretty(&*agent.status().borrow()).unwrap_or_default()
        ),
    }
}

fn component<'a>(s: &'a NodeStatus, dep: &str, comp: &str) -> &'a schemas::wire::ComponentStatus {
    s.deployments
        .iter()
        .find(|d| d.name == dep)
        .and_then(|d| d.components.iter().find(|c| c.name == comp))
        .unwrap_or_else(|| panic!("no {dep}/{comp}"))
}

fn fast(mut d: schemas::wire::DesiredDeployment) -> schemas::wire::DesiredDeployment {
    d.policy.backoff_ms = 300;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_install_update_and_remove_with_real_pulls_and_digests() {
    require_docker!();
    let lab = Lab::new("iur");
    let (v1, d1) = lab.image("v1");
    let (v2, d2) = lab.image("v2");
    let stop = CancellationToken::new();
    let agent = lab.spawn(&stop);

    agent.submit_desired(lab.doc(1, vec![fast(deployment("app", vec![comp("web", &v1)]))]));
    let s = until(&agent, "v1 installed", |s| {
        s.converged && s.observed_generation == 1
    })
    .await;
    let c = component(&s, "app", "web");
    assert_eq!(c.container_status.as_deref(), Some("running"));
    assert_eq!(c.image.as_deref(), Some(v1.as_str()));
    assert_eq!(c.repo_digest.as_deref(), Some(d1.as_str()));
    assert!(s.runtime.reachable && s.runtime.version.is_some());
    let id = c.container_id.clone().expect("container id");
    let labels = must(&["inspect", "--format", "{{json .Config.Labels}}", &id]);
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&labels).expect("labels");
    assert_eq!(
        labels.get(label::DEPLOYMENT).map(String::as_str),
        Some("app")
    );
    assert_eq!(
        labels.get(label::COMPONENT).map(String::as_str),
        Some("web")
    );
    assert_eq!(labels.get(label::GENERATION).map(String::as_str), Some("1"));
    assert_eq!(labels.get(label::SPEC_HASH), c.spec_hash.as_ref());
    assert_eq!(labels.get(label::NODE), Some(&lab.node));

    agent.submit_desired(lab.doc(2, vec![fast(deployment("app", vec![comp("web", &v2)]))]));
    let s = until(&agent, "v2 installed", |s| {
        s.converged && s.observed_generation == 2
    })
    .await;
    let c = component(&s, "app", "web");
    assert_eq!(c.repo_digest.as_deref(), Some(d2.as_str()));
    assert_ne!(c.container_id.as_deref(), Some(id.as_str()));
    assert!(docker(&["inspect", &id]).is_err(), "old container is gone");

    agent.submit_desired(lab.doc(3, vec![]));
    until(&agent, "everything removed", |s| {
        s.converged && s.observed_generation == 3
    })
    .await;
    let filter = format!("label={}={}", label::NODE, lab.node);
    assert_eq!(must(&["ps", "-aq", "--filter", &filter]), "");
    assert_eq!(must(&["network", "ls", "-q", "--filter", &filter]), "");
    stop.cancel();
    agent.wait().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_killed_container_comes_back_and_unmanaged_is_left_alone() {
    require_docker!();
    let lab = Lab::new("kill");
    let (v1, _) = lab.image("v1");
    // An unmanaged container from the same image, started by hand.
    must(&["pull", "-q", &v1]);
    let unmanaged = format!("by-hand-{}", lab.node);
    lab.docker.container(&unmanaged);
    must(&["run", "-d", "--name", &unmanaged, &v1]);
    let stop = CancellationToken::new();
    let agent = lab.spawn(&stop);
    agent.submit_desired(lab.doc(1, vec![fast(deployment("app", vec![comp("web", &v1)]))]));
    let s = until(&agent, "installed", |s| s.converged).await;
    assert!(
        s.unmanaged.iter().any(|u| u.name == unmanaged),
        "unmanaged reported"
    );
    let id = component(&s, "app", "web")
        .container_id
        .clone()
        .expect("id");

    must(&["kill", &id]);
    // Wait until the agent has seen the kill, then until it is back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = until(&agent, "running again", |s| {
        s.converged && component(s, "app", "web").container_status.as_deref() == Some("running")
    })
    .await;
    assert_eq!(
        must(&["inspect", "--format", "{{.State.Running}}", &id]),
        "true"
    );
    assert!(s.unmanaged.iter().any(|u| u.name == unmanaged));
    assert_eq!(
        must(&["inspect", "--format", "{{.State.Running}}", &unmanaged]),
        "true"
    );

    // Removed by hand: recreated.
    must(&["rm", "-f", &id]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = until(&agent, "recreated", |s| {
        s.converged && component(s, "app", "web").container_id.as_deref() != Some(id.as_str())
    })
    .await;
    assert!(component(&s, "app", "web").container_id.is_some());
    stop.cancel();
    agent.wait().await.expect("agent stops");
    // The agent leaves workloads running when it stops.
    assert_eq!(
        must(&[
            "inspect",
            "--format",
            "{{.State.Running}}",
            &format!("ef-{}-app-web", lab.node)
        ]),
        "true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_unhealthy_container_is_restarted_then_failed() {
    require_docker!();
    let lab = Lab::new("hc");
    let (v1, _) = lab.image("v1");
    let stop = CancellationToken::new();
    let agent = lab.spawn(&stop);
    let mut web = comp("web", &v1);
    web.healthcheck = Some(schemas::component::Healthcheck {
        test: vec!["CMD".into(), "/busybox".into(), "false".into()],
        interval_ms: 500,
        timeout_ms: 1_000,
        retries: 1,
        start_period_ms: 0,
    });
    let mut d = fast(deployment("app", vec![web.with_hash()]));
    d.policy.attempts = 2;
    agent.submit_desired(lab.doc(1, vec![d]));
    let s = until(&agent, "failed as unhealthy", |s| {
        s.state == Some(State::Failed)
    })
    .await;
    let c = component(&s, "app", "web");
    assert_eq!(
        c.error.as_ref().map(|e| e.code.as_str()),
        Some(error_code::UNHEALTHY)
    );
    assert!(c.restart_count >= 2, "restart count {}", c.restart_count);
    assert_eq!(c.health, Health::Unhealthy);
    stop.cancel();
    agent.wait().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_missing_image_fails_after_the_attempt_limit_with_the_reason() {
    require_docker!();
    let lab = Lab::new("nf");
    let stop = CancellationToken::new();
    let agent = lab.spawn(&stop);
    let missing = format!("{}:does-not-exist", lab.repo);
    agent.submit_desired(lab.doc(
        1,
        vec![fast(deployment("app", vec![comp("web", &missing)]))],
    ));
    let s = until(&agent, "failed", |s| s.state == Some(State::Failed)).await;
    let c = component(&s, "app", "web");
    assert_eq!(c.attempts, 3);
    let e = c.error.clone().expect("error");
    assert_eq!(e.code, error_code::IMAGE_NOT_FOUND, "{}", e.message);
    assert!(!e.message.is_empty());
    stop.cancel();
    agent.wait().await.expect("agent stops");
}

fn error_of(s: &NodeStatus, dep: &str, comp: &str) -> schemas::ErrorInfo {
    component(s, dep, comp)
        .error
        .clone()
        .unwrap_or_else(|| panic!("no error on {dep}/{comp}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_crash_loops_end_failed_with_the_exit_code_and_a_new_generation_resets() {
    require_docker!();
    let lab = Lab::new("crash");
    let (v1, _) = lab.image("v1");
    let stop = CancellationToken::new();
    let agent = lab.spawn(&stop);
    // `boom` exits 1 at once, forever; Docker restarts it (restart: always).
    let mut boom = comp("boom", &v1);
    boom.command = Some(vec![
        "/busybox".into(),
        "sh".into(),
        "-c".into(),
        "exit 1".into(),
    ]);
    boom.restart = schemas::component::RestartPolicy::Always;
    // `later` runs until /crash exists, then exits 3 at every start (unless-stopped).
    let mut later = comp("later", &v1);
    later.command = Some(vec![
        "/busybox".into(),
        "sh".into(),
        "-c".into(),
        "trap 'exit 0' TERM; while true; do if /busybox test -f /crash; then exit 3; fi; /busybox sleep 0.2; done"
            .into(),
    ]);
    let d = fast(deployment("app", vec![boom.with_hash(), later.with_hash()]));
    agent.submit_desired(lab.doc(1, vec![d.clone()]));
    let s = until(&agent, "boom failed, later installed", |s| {
        s.deployments
            .iter()
            .flat_map(|d| &d.components)
            .any(|c| c.name == "boom" && c.state == State::Failed)
            && component(s, "app", "later").state == State::Installed
    })
    .await;
    let e = error_of(&s, "app", "boom");
    assert_eq!(e.code, error_code::START_FAILED, "{}", e.message);
    assert!(e.message.contains("exit code 1"), "{}", e.message);
    let c = component(&s, "app", "boom");
    assert_eq!(c.attempts, 3);
    assert!(c.restart_count >= 3, "restart count {}", c.restart_count);

    // `later` ran and was installed; now it crash-loops: reported, then failed.
    let later_id = component(&s, "app", "later")
        .container_id
        .clone()
        .expect("id");
    must(&["exec", &later_id, "/busybox", "touch", "/crash"]);
    let s = until(&agent, "later failed", |s| {
        component(s, "app", "later").state == State::Failed
    })
    .await;
    let e = error_of(&s, "app", "later");
    assert_eq!(e.code, error_code::START_FAILED, "{}", e.message);
    assert!(e.message.contains("exit code 3"), "{}", e.message);
    assert_eq!(
        component(&s, "app", "later").container_id.as_deref(),
        Some(later_id.as_str()),
        "measured on the same container, not recreated"
    );

    // A new generation resets the counts: installing again, then failed again.
    agent.submit_desired(lab.doc(2, vec![d]));
    until(&agent, "boom counts afresh", |s| {
        s.observed_generation == 2 && component(s, "app", "boom").state == State::Installing
    })
    .await;
    let s = until(&agent, "boom failed again", |s| {
        s.observed_generation == 2 && component(s, "app", "boom").state == State::Failed
    })
    .await;
    assert!(error_of(&s, "app", "boom").message.contains("exit code 1"));
    stop.cancel();
    agent.wait().await.expect("agent stops");
}
