//! Failures that heal (#11) against the real Docker engine and Debian's `docker-registry`:
//! a registry stopped before the first pull makes the component `failed` + `retrying`; the
//! same registry started again on the same port makes it `installed` by itself, with no
//! new generation and no agent restart. A tag missing from a reachable registry is failed
//! for good. Mandatory when `CI=true`; skipped with one line otherwise. Everything a test
//! creates (containers, networks, images, the registry) is removed, also on failure.

#[macro_use]
mod common;

use common::*;
use en_agent::runtime::docker::DockerRuntime;
use en_agent::runtime::label;
use en_agent::{AgentHandle, Config};
use harness::{must_docker as must, DockerGuard, Proc, ScratchImage};
use schemas::wire::{error_code, ComponentStatus, DesiredDeployment, NodeStatus};
use schemas::State;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A `docker-registry` on a fixed loopback port with its storage in a temp dir, that can be
/// stopped and started again on the same port with the same content.
struct StoppableRegistry {
    port: u16,
    config: PathBuf,
    logs: PathBuf,
    proc: Option<Proc>,
    _dir: tempfile::TempDir,
}

impl StoppableRegistry {
    fn start(logs: &Path) -> StoppableRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = harness::free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let mut r = StoppableRegistry {
            port,
            config,
            logs: logs.to_owned(),
            proc: None,
            _dir: dir,
        };
        r.up();
        r
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let bin = ["/usr/bin/docker-registry", "/usr/local/bin/docker-registry"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or("docker-registry");
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&self.config);
        self.proc = Some(Proc::spawn("registry", cmd, &self.logs));
        harness::wait_port(self.port);
    }

    fn down(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
        harness::wait_for("registry port closed", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .is_err()
                .then_some(())
        });
    }
}

/// One test's world; dropped in order: containers, networks and images, then the registry.
struct Lab {
    node: String,
    repo: String,
    docker: DockerGuard,
    registry: StoppableRegistry,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let node = format!("heal{tag}{:06x}", fastrand::u32(..0xff_ffff));
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = StoppableRegistry::start(dir.path());
        let repo = format!("{}/ef-heal-{node}/app", registry.addr());
        let docker = DockerGuard::by_label(label::NODE, &node);
        docker.image(&repo);
        Lab {
            node,
            repo,
            docker,
            registry,
            dir,
        }
    }

    /// Builds and pushes `<repo>:<tag>`, removes the local copy (the agent really pulls).
    fn image(&self, tag: &str) -> String {
        let reference = format!("{}:{tag}", self.repo);
        ScratchImage::busybox_at("/busybox")
            .file("/version", tag)
            .cmd(&SLEEP_LOOP)
            .build(&reference)
            .expect("pushed image has a digest");
        must(&["rmi", &reference]);
        reference
    }

    fn spawn(&self, stop: &CancellationToken) -> AgentHandle {
        let mut c = Config::new("ht", &self.node);
        c.state_dir = self.dir.path().join("state");
        c.stop_timeout = Duration::from_secs(2);
        c.resync = Duration::from_secs(5);
        c.container_prefix = Some(format!("ef-{}", self.node));
        c.retry_max_backoff = Duration::from_secs(2);
        let rt = DockerRuntime::new("unix:///var/run/docker.sock", None).expect("runtime");
        en_agent::spawn(c, Arc::new(rt), stop.clone()).expect("agent")
    }

    fn doc(&self, generation: u64, deployments: Vec<DesiredDeployment>) -> Vec<u8> {
        let mut d = doc(generation, deployments);
        d.site = "ht".into();
        d.node = self.node.clone();
        bytes(&d)
    }
}

/// Two attempts, 300 ms apart, before the budget is spent.
fn quick(mut d: DesiredDeployment) -> DesiredDeployment {
    d.policy.attempts = 2;
    d.policy.backoff_ms = 300;
    d
}

async fn until(
    agent: &AgentHandle,
    what: &str,
    within: Duration,
    pred: impl FnMut(&NodeStatus) -> bool,
) -> NodeStatus {
    match agent.wait_status(within, pred).await {
        Some(s) => s,
        None => panic!(
            "timed out after {within:?} waiting for {what}; last status: {}",
            serde_json::to_string_pretty(&*agent.status().borrow()).unwrap_or_default()
        ),
    }
}

fn web(s: &NodeStatus) -> &ComponentStatus {
    s.deployments
        .iter()
        .flat_map(|d| &d.components)
        .find(|c| c.name == "web")
        .unwrap_or_else(|| panic!("no web in {s:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_registry_down_before_the_first_pull_heals_without_a_new_generation() {
    require_docker!();
    let mut lab = Lab::new("rd");
    let image = lab.image("v1");
    // The registry goes away before the agent ever pulls.
    lab.registry.down();
    let stop = CancellationToken::new();
    let agent = lab.spawn(&stop);
    agent.submit_desired(lab.doc(1, vec![quick(deployment("app", vec![comp("web", &image)]))]));

    let s = until(&agent, "failed + retrying", Duration::from_secs(90), |s| {
        s.state == Some(State::Failed) && web(s).retrying
    })
    .await;
    let c = web(&s);
    assert!(c.attempts >= 2, "{c:?}");
    assert!(c.next_attempt_at.is_some(), "{c:?}");
    let e = c.error.clone().expect("error");
    assert_eq!(e.code, error_code::PULL_FAILED, "{e:?}");
    assert!(
        e.message.contains("connection refused"),
        "Docker's own words: {}",
        e.message
    );
    // Still retrying a few seconds later (the cap is 2 s): attempts keep counting.
    let attempts = c.attempts;
    let s = until(&agent, "more retries", Duration::from_secs(30), |s| {
        web(s).attempts >= attempts + 2
    })
    .await;
    assert!(web(&s).retrying && web(&s).state == State::Failed);

    // The registry is back on the same port: installed by itself, same generation, same
    // agent.
    lab.registry.up();
    let t0 = Instant::now();
    let s = until(
        &agent,
        "installed once the registry is back",
        Duration::from_secs(60),
        |s| s.converged && s.observed_generation == 1,
    )
    .await;
    assert!(t0.elapsed() < Duration::from_secs(60));
    let c = web(&s);
    assert_eq!(c.state, State::Installed);
    assert!(!c.retrying && c.next_attempt_at.is_none() && c.error.is_none());
    assert_eq!(c.container_status.as_deref(), Some("running"));
    assert_eq!(c.image.as_deref(), Some(image.as_str()));
    assert_eq!(lab.docker.containers().len(), 1, "one container");

    stop.cancel();
    agent.wait().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_missing_tag_on_a_reachable_registry_is_failed_for_good() {
    require_docker!();
    let lab = Lab::new("nf");
    // The repository exists, the tag does not.
    lab.image("v1");
    let missing = format!("{}:nope", lab.repo);
    let stop = CancellationToken::new();
    let agent = lab.spawn(&stop);
    agent.submit_desired(lab.doc(
        1,
        vec![quick(deployment("app", vec![comp("web", &missing)]))],
    ));
    let s = until(&agent, "failed", Duration::from_secs(90), |s| {
        s.state == Some(State::Failed)
    })
    .await;
    let c = web(&s);
    let e = c.error.clone().expect("error");
    assert_eq!(e.code, error_code::IMAGE_NOT_FOUND, "{e:?}");
    assert!(e.message.contains("manifest unknown"), "{}", e.message);
    assert!(!c.retrying && c.next_attempt_at.is_none(), "{c:?}");
    assert_eq!(c.attempts, 2);
    // No attempt after the budget: the count stays (it would grow every 2 s if retried).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = agent.status().borrow().clone().expect("status");
    assert_eq!(web(&s).attempts, 2);
    assert!(!web(&s).retrying);
    stop.cancel();
    agent.wait().await.expect("agent stops");
}
