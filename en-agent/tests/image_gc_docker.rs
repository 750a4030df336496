//! Image garbage collection against the real Docker engine: three versions of a component
//! pulled in turn from a local `docker-registry`; `docker images` before and after. With
//! `image_keep_previous = 1` the first version goes, the second stays (rollback without a
//! pull), the third runs; an image the agent never pulled and the image of an unmanaged
//! container stay. Mandatory when `CI=true`; skipped with one line otherwise when Docker,
//! busybox-static or docker-registry is missing. Everything created is removed by a guard.

mod common;

use common::*;
use en_agent::runtime::docker::DockerRuntime;
use en_agent::runtime::label;
use en_agent::{AgentHandle, Config};
use harness::{must_docker as must, DockerGuard, Registry, ScratchImage};
use schemas::wire::NodeStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(120);

const SLEEP_LOOP: [&str; 4] = [
    "/busybox",
    "sh",
    "-c",
    "trap 'exit 0' TERM; while true; do /busybox sleep 1; done",
];

fn image(tag: &str) -> ScratchImage {
    ScratchImage::busybox_at("/busybox")
        .file("/version", tag)
        .cmd(&SLEEP_LOOP)
}

/// `docker images` of these repositories, as `repo:tag` lines.
fn images(repos: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for r in repos {
        let list = must(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}",
            r,
        ]);
        out.extend(list.lines().map(str::to_owned));
    }
    out
}

fn has(list: &[String], reference: &str) -> bool {
    list.iter().any(|l| l.split(' ').next() == Some(reference))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_image_gc_removes_v1_keeps_v2_runs_v3_and_leaves_other_images_alone() {
    if !harness::require_docker_registry() {
        return;
    }
    let id = format!("gc{:06x}", fastrand::u32(..0xff_ffff));
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(dir.path());
    let repo = format!("{}/ef-test-{id}/app", registry.addr);
    let guard = DockerGuard::by_label(label::NODE, &id);
    guard.image(&repo);
    // v1, v2, v3 in the registry only: the agent really pulls them.
    let mut refs = Vec::new();
    for v in ["v1", "v2", "v3"] {
        let reference = format!("{repo}:{v}");
        image(v).build(&reference).expect("pushed");
        must(&["rmi", &reference]);
        refs.push(reference);
    }
    // The user's own: an image nothing uses, and one an unmanaged (stopped) container uses.
    let unrelated = format!("ef-test-{id}-unrelated:1");
    let user = format!("ef-test-{id}-user:1");
    let user_ctr = format!("ef-test-{id}-user");
    guard.image(&unrelated);
    guard.image(&user);
    guard.container(&user_ctr);
    image("unrelated").build(&unrelated);
    image("user").build(&user);
    must(&["create", "--name", &user_ctr, &user]);

    let stop = CancellationToken::new();
    let mut config = Config::new("dt", &id);
    config.state_dir = dir.path().join("state");
    config.stop_timeout = Duration::from_secs(2);
    config.resync = Duration::from_secs(5);
    assert_eq!(config.image_gc.keep_previous, 1, "the default");
    let rt = DockerRuntime::new("unix:///var/run/docker.sock", None).expect("runtime");
    let agent = en_agent::spawn(config, Arc::new(rt), stop.clone()).expect("agent");
    let deploy = |generation: u64, reference: &str| {
        let mut d = doc(
            generation,
            vec![deployment("app", vec![comp("web", reference)])],
        );
        d.site = "dt".into();
        d.node = id.clone();
        agent.submit_desired(bytes(&d));
    };

    deploy(1, &refs[0]);
    until(&agent, "v1", |s| s.converged && s.observed_generation == 1).await;
    deploy(2, &refs[1]);
    until(&agent, "v2", |s| s.converged && s.observed_generation == 2).await;
    let watched = [repo.as_str(), unrelated.as_str(), user.as_str()];
    let before = images(&watched);
    eprintln!("docker images before v3:\n{}", before.join("\n"));
    assert!(
        has(&before, &refs[0]) && has(&before, &refs[1]),
        "{before:?}"
    );
    assert!(!has(&before, &refs[2]), "{before:?}");

    deploy(3, &refs[2]);
    until(&agent, "v3", |s| s.converged && s.observed_generation == 3).await;
    let s = until(&agent, "v1 removed", |s| s.agent.images_removed >= 1).await;
    let after = images(&watched);
    eprintln!("docker images after v3:\n{}", after.join("\n"));
    assert_eq!(s.agent.images_removed, 1, "only v1");
    assert!(
        s.agent.image_bytes_freed > 100_000,
        "busybox layer freed: {}",
        s.agent.image_bytes_freed
    );
    assert!(!has(&after, &refs[0]), "v1 removed: {after:?}");
    assert!(has(&after, &refs[1]), "v2 kept for a rollback: {after:?}");
    assert!(has(&after, &refs[2]), "v3 runs: {after:?}");
    assert!(
        has(&after, &unrelated),
        "never pulled by the agent: {after:?}"
    );
    assert!(
        has(&after, &user),
        "an unmanaged container's image: {after:?}"
    );
    let web = s.deployments[0].components[0].clone();
    assert_eq!(web.image.as_deref(), Some(refs[2].as_str()));
    assert_eq!(web.container_status.as_deref(), Some("running"));
    // No dangling leftover of v1 either (its layers went with it).
    let v1_id = before
        .iter()
        .find(|l| l.starts_with(&format!("{} ", refs[0])))
        .and_then(|l| l.split(' ').nth(1))
        .expect("v1 id")
        .to_owned();
    assert!(
        harness::docker(&["image", "inspect", &v1_id]).is_err(),
        "v1 ({v1_id}) is gone from the engine"
    );

    // Rollback to v2: no pull needed, it is there; then v3 is the previous version.
    deploy(4, &refs[1]);
    until(&agent, "back on v2", |s| {
        s.converged && s.observed_generation == 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rolled = images(&watched);
    assert!(
        has(&rolled, &refs[1]) && has(&rolled, &refs[2]),
        "{rolled:?}"
    );
    assert_eq!(
        agent
            .status()
            .borrow()
            .as_ref()
            .map(|s| s.agent.images_removed),
        Some(1)
    );

    stop.cancel();
    agent.wait().await.expect("agent stops");
    drop(guard);
    drop(registry);
}
