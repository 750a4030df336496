//! The README's first command: the demo site of `docker-compose.yml` starts, converges and is
//! visible over MQTT. Mandatory with CI=true (it builds the images from source: a few
//! minutes); skipped with a one-line notice without Docker, or when the demo's fixed ports
//! (1883, 8080) are taken by something else outside CI.

use harness::{require_docker, wait_for};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn compose() -> Vec<String> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

fn run(cmd: &[String], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Stops the site and removes what its agents created, also when the test fails.
struct Down(Vec<String>);

impl Drop for Down {
    fn drop(&mut self) {
        let mut down = self.0.clone();
        down.extend(["down", "-v", "--remove-orphans"].map(String::from));
        let _ = run(&down, &[]);
        let _ = run(&["scripts/remove-managed.sh".into(), "demo".into()], &[]);
    }
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn docker_compose_up_runs_the_demo_site() {
    if !require_docker() {
        return;
    }
    let demo_ports_free = port_free(1883) && port_free(8080);
    if !harness::in_ci() && !demo_ports_free {
        eprintln!("skipping compose test: 127.0.0.1:1883 or :8080 is taken (a demo already up?)");
        return;
    }
    let out = run(&["scripts/build-images.sh".into()], &[]);
    assert!(
        out.status.success(),
        "build-images.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The LO reads this repository's commits on the checked-out branch.
    let branch = String::from_utf8_lossy(
        &run(
            &[
                "git".into(),
                "rev-parse".into(),
                "--abbrev-ref".into(),
                "HEAD".into(),
            ],
            &[],
        )
        .stdout,
    )
    .trim()
    .to_owned();
    let compose = compose();
    let _down = Down(compose.clone());
    let mut up = compose.clone();
    up.extend(["up", "-d"].map(String::from));
    let out = run(&up, &[("EDGEFLEET_BRANCH", &branch)]);
    assert!(
        out.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every node converged, as the LO's retained site summary says (read with a client we
    // did not write when Mosquitto's is installed, else with ours).
    let summary = wait_for("the demo site converged", Duration::from_secs(180), || {
        let v = read_retained("fleet/demo/lo/status")?;
        let nodes = v["nodes"].as_array()?;
        (nodes.len() == 3 && nodes.iter().all(|n| n["converged"] == true)).then_some(v)
    });
    let web = summary["deployments"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "web"))
        .expect("web deployment")
        .clone();
    assert_eq!(web["counts"]["installed"], 2, "{summary}");

    // The workloads really run, and every edgefleet service reports healthy.
    let ps = Command::new("docker")
        .args([
            "ps",
            "--filter",
            "label=io.edgefleet.site=demo",
            "--format",
            "{{.Names}} {{.Status}}",
        ])
        .output()
        .expect("docker ps");
    let ps = String::from_utf8_lossy(&ps.stdout);
    for name in [
        "ef-node-1-web-web",
        "ef-node-2-web-cache",
        "ef-node-3-sensor-reader",
    ] {
        assert!(
            ps.lines().any(|l| l.starts_with(name) && l.contains("Up")),
            "{name} in\n{ps}"
        );
    }
    wait_for("services healthy", Duration::from_secs(90), || {
        let out = Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{.State.Health.Status}}",
                "edgefleet-broker",
                "edgefleet-lo",
                "edgefleet-node-1",
                "edgefleet-node-2",
                "edgefleet-node-3",
            ])
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout);
        (s.lines().count() == 5 && s.lines().all(|l| l == "healthy")).then_some(())
    });
    let ready = harness::site::http(8080, "GET", "/readyz").expect("GET /readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
}

fn read_retained(topic: &str) -> Option<serde_json::Value> {
    if Command::new("mosquitto_sub").arg("--help").output().is_ok() {
        return harness::mosquitto_sub_retained(1883, topic);
    }
    let w = harness::Watcher::start(1883, "demo");
    std::thread::sleep(Duration::from_secs(2));
    w.get(topic)
}
