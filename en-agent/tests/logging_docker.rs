//! Logs that cannot fill a card, against the real Docker engine: the log configuration
//! the agent gives containers, read back with `docker inspect` (`HostConfig.LogConfig`).
//! The components are resolved from Git documents by the same loader the LO uses, so a
//! Site's `spec.logging` default goes the whole way. Mandatory when `CI=true`; skipped
//! with one line otherwise. Every container, network and image is removed by a guard.

mod common;

use common::*;
use en_agent::runtime::docker::DockerRuntime;
use en_agent::runtime::label;
use en_agent::{AgentHandle, Config};
use harness::{must_docker as must, DockerGuard, Registry, ScratchImage};
use schemas::wire::{DesiredDeployment, NodeStatus};
use schemas::Component;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);

/// A loop that exits 0 on SIGTERM and writes a line a second (so logs exist).
const CHATTY: [&str; 4] = [
    "/busybox",
    "sh",
    "-c",
    "trap 'exit 0' TERM; while true; do echo tick; /busybox sleep 1; done",
];

/// `(Type, Config)` of a container's `HostConfig.LogConfig`.
fn log_config(id: &str) -> (String, BTreeMap<String, String>) {
    let json = must(&["inspect", "--format", "{{json .HostConfig.LogConfig}}", id]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("LogConfig json");
    let typ = v["Type"].as_str().expect("Type").to_owned();
    let config = serde_json::from_value(v["Config"].clone()).unwrap_or_default();
    (typ, config)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The components of deployment `app` of a site made of `files`, as the LO resolves them.
fn resolve(files: &[(&str, String)]) -> Vec<Component> {
    let docs = schemas::site::load_site("s1", files.iter().map(|(p, s)| (*p, s.as_str())))
        .unwrap_or_else(|p| panic!("site must load: {p:#?}"));
    docs.deployments["app"].components.to_vec()
}

fn deployment_yaml(image: &str, components: &[(&str, &str)]) -> String {
    let mut y = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  components:\n".to_owned();
    for (name, extra) in components {
        y.push_str(&format!(
            "    - name: {name}\n      image: {image}\n{extra}"
        ));
    }
    y
}

async fn converged(agent: &AgentHandle, generation: u64) -> NodeStatus {
    match agent
        .wait_status(WAIT, |s| s.converged && s.observed_generation == generation)
        .await
    {
        Some(s) => s,
        None => panic!(
            "timed out waiting for generation {generation}; last status: {}",
            serde_json::to_string_pretty(&*agent.status().borrow()).unwrap_or_default()
        ),
    }
}

fn container_id(s: &NodeStatus, comp: &str) -> String {
    s.deployments
        .iter()
        .flat_map(|d| d.components.iter())
        .find(|c| c.name == comp)
        .and_then(|c| c.container_id.clone())
        .unwrap_or_else(|| panic!("no container for {comp}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_containers_get_bounded_logs_by_default_and_what_git_says() {
    if !harness::require_docker_registry() {
        return;
    }
    let node = format!("log{:06x}", fastrand::u32(..0xff_ffff));
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(dir.path());
    let repo = format!("{}/ef-test-{node}/app", registry.addr);
    let guard = DockerGuard::by_label(label::NODE, &node);
    guard.image(&repo);
    let image = format!("{repo}:v1");
    ScratchImage::busybox_at("/busybox")
        .cmd(&CHATTY)
        .build(&image)
        .expect("pushed");
    // What the engine itself gives a container created without log options: on a stock
    // engine unbounded json-file; an engine configured with bounded `log-opts` (daemon.json)
    // already matches the agent's default, and then step 1's first check proves less.
    let by_hand = format!("by-hand-{node}");
    guard.container(&by_hand);
    must(&["create", "--name", &by_hand, &image]);
    let engine_default = log_config(&by_hand);
    must(&["rm", &by_hand]);
    must(&["rmi", &image]);
    let ours = (
        "json-file".to_owned(),
        map(&[("max-size", "10m"), ("max-file", "3")]),
    );
    if engine_default == ours {
        eprintln!(
            "note: this engine's own default log config is already {ours:?} (daemon.json); \
             the no-logging case cannot tell the agent's default from the engine's here"
        );
    }

    let mut config = Config::new("dt", &node);
    config.state_dir = dir.path().join("state");
    config.stop_timeout = Duration::from_secs(2);
    config.resync = Duration::from_secs(5);
    let rt = DockerRuntime::new("unix:///var/run/docker.sock", None).expect("runtime");
    let stop = CancellationToken::new();
    let agent = en_agent::spawn(config, Arc::new(rt), stop.clone()).expect("agent");
    // `components` of deployment `app`; `None`: no deployment at all.
    let submit = |generation: u64, components: Option<Vec<Component>>| {
        let deployments = components.map(|components| DesiredDeployment {
            policy: schemas::wire::FailurePolicy {
                backoff_ms: 300,
                ..deployment("app", vec![]).policy
            },
            ..deployment("app", components)
        });
        let mut d = doc(generation, deployments.into_iter().collect());
        d.site = "dt".into();
        d.node = node.clone();
        agent.submit_desired(bytes(&d));
    };

    // 1. No Site document: a component without logging gets the agent's bounded default;
    //    one with its own logging gets that (completed with the default file count).
    let dep = deployment_yaml(
        &image,
        &[
            ("plain", ""),
            (
                "small",
                "      logging: {driver: local, options: {max-size: 1m}}\n",
            ),
        ],
    );
    let components = resolve(&[("sites/s1/app.yaml", dep.clone())]);
    assert_eq!(
        components[0].logging, None,
        "nothing in the spec, nothing in the hash"
    );
    submit(1, Some(components));
    let s = converged(&agent, 1).await;
    assert_eq!(log_config(&container_id(&s, "plain")), ours);
    assert_eq!(
        log_config(&container_id(&s, "small")),
        (
            "local".to_owned(),
            map(&[("max-size", "1m"), ("max-file", "3")])
        )
    );
    let plain_v1 = container_id(&s, "plain");
    let small_v1 = container_id(&s, "small");

    // 2. A Site default: `plain` gets it (its spec changed, so it is recreated); `small`
    //    keeps its own logging and its container.
    let site = "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: s1\nspec:\n  logging:\n    driver: json-file\n    options:\n      max-size: 2m\n      max-file: 2\n".to_owned();
    let components = resolve(&[("sites/s1/site.yaml", site), ("sites/s1/app.yaml", dep)]);
    submit(2, Some(components));
    let s = converged(&agent, 2).await;
    let plain_v2 = container_id(&s, "plain");
    assert_ne!(plain_v2, plain_v1, "the site default is a spec change");
    assert_eq!(
        container_id(&s, "small"),
        small_v1,
        "own logging: untouched"
    );
    assert_eq!(
        log_config(&plain_v2),
        (
            "json-file".to_owned(),
            map(&[("max-size", "2m"), ("max-file", "2")])
        )
    );
    // The engine really writes within those bounds: the container's log file exists.
    let path = must(&["inspect", "--format", "{{.LogPath}}", &plain_v2]);
    assert!(path.ends_with("-json.log"), "json-file log path: {path}");

    submit(3, None);
    converged(&agent, 3).await;
    let filter = format!("label={}={node}", label::NODE);
    assert_eq!(must(&["ps", "-aq", "--filter", &filter]), "");
    stop.cancel();
    agent.wait().await.expect("agent stops");
    drop(guard);
    drop(registry);
}
