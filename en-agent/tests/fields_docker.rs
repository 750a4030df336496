//! The host-access component fields against the real Docker engine, read back with
//! `docker inspect`: devices, privileged, capAdd/capDrop, networkMode host and none, a
//! read-only root (a write fails), user, workingDir, tmpfs, init, stopSignal,
//! stopGracePeriod (the agent stops with it), extraHosts, shmSize, sysctls and ulimits.
//! The components are resolved from Git documents by the LO's loader, which first refuses
//! them under a Site without the allowances. `gpus` is not here: this engine has no GPU
//! (its mapping is a unit test of `runtime/host.rs`). Mandatory when `CI=true`; skipped
//! with one line otherwise. Every container, network and image is removed by a guard.

mod common;

use common::*;
use en_agent::runtime::docker::DockerRuntime;
use en_agent::runtime::label;
use en_agent::{AgentHandle, Config};
use harness::{must_docker as must, DockerGuard, Registry, ScratchImage};
use schemas::wire::{DesiredDeployment, NodeStatus};
use schemas::Component;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);

/// Exits 0 on SIGTERM.
const LOOP: &str = "trap 'exit 0' TERM; while true; do /busybox sleep 1; done";

fn inspect(id: &str, path: &str) -> serde_json::Value {
    let json = must(&["inspect", "--format", &format!("{{{{json {path}}}}}"), id]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{path}: {e}: {json}"))
}

const SITE_OPEN: &str = "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: s1\nspec:\n  security:\n    allowPrivileged: true\n    allowHostNetwork: true\n    allowedDevices: [/dev/null]\n    allowedCapabilities: [NET_ADMIN]\n";

fn deployment_yaml(image: &str, with_privileged: bool) -> String {
    let cmd = |script: &str| format!("      command: [/busybox, sh, -c, \"{script}\"]\n");
    let mut y = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  components:\n".to_owned();
    // Devices, capabilities, working directory, extra hosts, shm, ulimits, sysctls.
    y.push_str(&format!(
        "    - name: dev\n      image: {image}\n{}      devices: [\"/dev/null:/dev/xnull:rw\"]\n      capAdd: [net_admin]\n      capDrop: [MKNOD]\n      workingDir: /srv/app\n      extraHosts: [\"gw.example:10.1.2.3\"]\n      shmSize: 16m\n      ulimits:\n        nofile: {{soft: 1024, hard: 2048}}\n      sysctls: {{net.ipv4.ip_forward: 1, kernel.shmmax: 65536}}\n",
        cmd(LOOP)
    ));
    // Host network, read-only root with a tmpfs, another user.
    y.push_str(&format!(
        "    - name: hostnet\n      image: {image}\n{}      networkMode: host\n      readOnly: true\n      tmpfs: [\"/scratch:size=1m,mode=1777\"]\n      user: \"1000:1000\"\n",
        cmd(LOOP)
    ));
    // No network, init, a stop signal it ignores: only the 2s grace period stops it.
    y.push_str(&format!(
        "    - name: isolated\n      image: {image}\n{}      networkMode: none\n      init: true\n      stopSignal: SIGUSR1\n      stopGracePeriod: 2s\n",
        cmd("trap '' USR1 TERM INT; while true; do /busybox sleep 1; done")
    ));
    if with_privileged {
        y.push_str(&format!(
            "    - name: priv\n      image: {image}\n{}      privileged: true\n",
            cmd(LOOP)
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
async fn docker_applies_host_access_fields() {
    if !harness::require_docker_registry() {
        return;
    }
    let node = format!("fld{:06x}", fastrand::u32(..0xff_ffff));
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(dir.path());
    let repo = format!("{}/ef-test-{node}/app", registry.addr);
    let guard = DockerGuard::by_label(label::NODE, &node);
    guard.image(&repo);
    let image = format!("{repo}:v1");
    ScratchImage::busybox_at("/busybox")
        .cmd(&["/busybox", "sleep", "3600"])
        .build(&image)
        .expect("pushed");

    // The LO refuses every privileged field until the Site allows it.
    let dep = deployment_yaml(&image, true);
    let refused = schemas::site::load_site("s1", [("sites/s1/app.yaml", dep.as_str())])
        .expect_err("refused without the Site's allowances");
    let mut fields: Vec<String> = refused.iter().filter_map(|p| p.field.clone()).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "spec.components[0].capAdd[0]",
            "spec.components[0].devices[0]",
            "spec.components[1].networkMode",
            "spec.components[3].privileged",
        ],
        "{refused:#?}"
    );
    let resolve = |dep: &str| -> Vec<Component> {
        let docs = schemas::site::load_site(
            "s1",
            [
                ("sites/s1/site.yaml", SITE_OPEN),
                ("sites/s1/app.yaml", dep),
            ],
        )
        .unwrap_or_else(|p| panic!("allowed by the Site: {p:#?}"));
        docs.deployments["app"].components.to_vec()
    };
    let components = resolve(&deployment_yaml(&image, false));

    let mut config = Config::new("dt", &node);
    config.state_dir = dir.path().join("state");
    // Far above `isolated`'s own 2s grace period: removal time tells which one was used.
    config.stop_timeout = Duration::from_secs(40);
    config.resync = Duration::from_secs(5);
    let rt = DockerRuntime::new("unix:///var/run/docker.sock", None).expect("runtime");
    let stop = CancellationToken::new();
    let agent = en_agent::spawn(config, Arc::new(rt), stop.clone()).expect("agent");
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
    submit(1, Some(components));
    let s = converged(&agent, 1).await;

    let dev = container_id(&s, "dev");
    assert_eq!(
        inspect(&dev, ".HostConfig.Devices"),
        serde_json::json!([{"PathOnHost": "/dev/null", "PathInContainer": "/dev/xnull", "CgroupPermissions": "rw"}])
    );
    // The device works inside: writing to it succeeds.
    must(&["exec", &dev, "/busybox", "sh", "-c", "echo x > /dev/xnull"]);
    assert_eq!(
        inspect(&dev, ".HostConfig.CapAdd"),
        serde_json::json!(["CAP_NET_ADMIN"])
    );
    assert_eq!(
        inspect(&dev, ".HostConfig.CapDrop"),
        serde_json::json!(["CAP_MKNOD"])
    );
    assert_eq!(inspect(&dev, ".Config.WorkingDir"), "/srv/app");
    assert_eq!(must(&["exec", &dev, "/busybox", "pwd"]), "/srv/app");
    assert_eq!(
        inspect(&dev, ".HostConfig.ExtraHosts"),
        serde_json::json!(["gw.example:10.1.2.3"])
    );
    let hosts = must(&["exec", &dev, "/busybox", "cat", "/etc/hosts"]);
    assert!(hosts.contains("10.1.2.3\tgw.example"), "{hosts}");
    assert_eq!(inspect(&dev, ".HostConfig.ShmSize"), 16 << 20);
    assert_eq!(
        inspect(&dev, ".HostConfig.Ulimits"),
        serde_json::json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}])
    );
    assert_eq!(
        must(&["exec", &dev, "/busybox", "sh", "-c", "ulimit -n"]),
        "1024"
    );
    assert_eq!(
        inspect(&dev, ".HostConfig.Sysctls"),
        serde_json::json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "65536"})
    );
    assert_eq!(
        must(&[
            "exec",
            &dev,
            "/busybox",
            "cat",
            "/proc/sys/net/ipv4/ip_forward"
        ]),
        "1"
    );
    assert_eq!(inspect(&dev, ".HostConfig.Privileged"), false);
    assert_eq!(inspect(&dev, ".HostConfig.ReadonlyRootfs"), false);

    let hostnet = container_id(&s, "hostnet");
    assert_eq!(inspect(&hostnet, ".HostConfig.NetworkMode"), "host");
    assert_eq!(inspect(&hostnet, ".HostConfig.ReadonlyRootfs"), true);
    assert_eq!(
        inspect(&hostnet, ".HostConfig.Tmpfs"),
        serde_json::json!({"/scratch": "size=1m,mode=1777"})
    );
    assert_eq!(inspect(&hostnet, ".Config.User"), "1000:1000");
    assert_eq!(must(&["exec", &hostnet, "/busybox", "id", "-u"]), "1000");
    let write = harness::docker(&["exec", &hostnet, "/busybox", "touch", "/written"]);
    assert!(
        write.is_err(),
        "the root filesystem is read-only: {write:?}"
    );
    must(&["exec", &hostnet, "/busybox", "touch", "/scratch/ok"]);
    // The host's network namespace: the same interfaces as a `--network host` container.
    let by_hand = must(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "/busybox",
        &image,
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(
        must(&["exec", &hostnet, "/busybox", "ls", "/sys/class/net"]),
        by_hand
    );

    let isolated = container_id(&s, "isolated");
    assert_eq!(inspect(&isolated, ".HostConfig.NetworkMode"), "none");
    assert_eq!(
        must(&["exec", &isolated, "/busybox", "ls", "/sys/class/net"]),
        "lo"
    );
    assert_eq!(inspect(&isolated, ".HostConfig.Init"), true);
    assert_eq!(inspect(&isolated, ".Config.StopSignal"), "SIGUSR1");
    assert_eq!(inspect(&isolated, ".Config.StopTimeout"), 2);
    // With init, PID 1 is docker-init, not the command.
    let pid1 = must(&["exec", &isolated, "/busybox", "cat", "/proc/1/comm"]);
    assert!(pid1.contains("init"), "PID 1 is {pid1}");

    // Privileged: some engines (this one inside a restricted sandbox) cannot start a
    // privileged container at all; the container is still created as asked.
    let engine_can = harness::docker(&[
        "run",
        "--rm",
        "--privileged",
        "--entrypoint",
        "/busybox",
        &image,
        "true",
    ]);
    submit(2, Some(resolve(&deployment_yaml(&image, true))));
    let s = agent
        .wait_status(WAIT, |s| {
            s.observed_generation == 2
                && s.deployments.iter().flat_map(|d| &d.components).any(|c| {
                    c.name == "priv"
                        && c.container_id.is_some()
                        && (c.container_status.as_deref() == Some("running") || c.error.is_some())
                })
        })
        .await
        .expect("a container for priv");
    let privileged = container_id(&s, "priv");
    assert_eq!(inspect(&privileged, ".HostConfig.Privileged"), true);
    match engine_can {
        Ok(_) => {
            converged(&agent, 2).await;
        }
        Err(e) => eprintln!("note: this engine cannot run privileged containers ({e}); only the created container was checked"),
    }
    assert_eq!(
        container_id(&s, "isolated"),
        isolated,
        "unchanged spec, same container"
    );

    // Removal: `isolated` ignores its stop signal, so the agent's 40s stop_timeout would
    // hold it 40s; its own 2s grace period is what the agent uses.
    let started = Instant::now();
    submit(3, None);
    converged(&agent, 3).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(25),
        "removal took {took:?}: the component's stopGracePeriod (2s) was not used"
    );
    let filter = format!("label={}={node}", label::NODE);
    assert_eq!(must(&["ps", "-aq", "--filter", &filter]), "");
    stop.cancel();
    agent.wait().await.expect("agent stops");
    drop(guard);
    drop(registry);
}
