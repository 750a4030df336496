//! The README's first command: the demo site of `docker-compose.yml` starts, converges and is
//! visible over MQTT, signed both ways and behind broker logins: every node's reports verify
//! with the public key committed for it, desired documents are signed, anonymous clients are
//! refused. Mandatory with CI=true (it builds the images from source: a few
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

    // Every node converged, as the LO's retained site summary says (read as the demo's
    // `viewer` user).
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

    // Signed both ways: each node's retained reports verify with the public key committed
    // for it (docker/demo-keys/node-N.pub = spec.publicKey in nodes.yaml); the desired
    // documents are signed (the agents verify them with the LO's key before applying, so
    // convergence above already proves they verify).
    for n in 1..=3 {
        let public = std::fs::read_to_string(root().join(format!("docker/demo-keys/node-{n}.pub")))
            .expect("demo public key");
        let key = schemas::sign::verifying_key_from_base64(&public).expect("public key");
        for channel in ["status", "online"] {
            let topic = format!("fleet/demo/nodes/node-{n}/{channel}");
            let report = read_retained(&topic).unwrap_or_else(|| panic!("no {topic}"));
            schemas::sign::verify_report(&report, &topic, &key)
                .unwrap_or_else(|e| panic!("{topic}: {e}: {report}"));
        }
        let desired =
            read_retained(&format!("fleet/demo/nodes/node-{n}/desired")).expect("desired");
        assert_eq!(desired["signature"]["alg"], "ed25519", "{desired}");
    }
    // Logins are required: an anonymous client gets no session.
    assert!(
        connect(None).is_err(),
        "the demo broker accepted an anonymous client"
    );
}

/// The demo's `viewer` login (DEMO password, committed).
fn viewer() -> (String, String) {
    let password = std::fs::read_to_string(root().join("docker/demo-keys/viewer.password"))
        .expect("viewer password");
    ("viewer".to_owned(), password.trim().to_owned())
}

/// Connects to the demo broker; with `topic`, returns the first (retained) message on it
/// within 5 s. `Err` when the broker refuses or closes the connection.
fn connect_and_read(
    login: Option<(String, String)>,
    topic: Option<&str>,
) -> Result<Option<serde_json::Value>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut opts =
            rumqttc::MqttOptions::new(harness::unique("compose-test"), "127.0.0.1", 1883);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 10);
        let read = async {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => match topic {
                        Some(t) => client
                            .subscribe(t, rumqttc::QoS::AtLeastOnce)
                            .await
                            .map_err(|e| e.to_string())?,
                        None => return Ok(None),
                    },
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        return Ok(serde_json::from_slice(&p.payload).ok());
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .unwrap_or(Ok(None))
    })
}

fn connect(login: Option<(String, String)>) -> Result<(), String> {
    connect_and_read(login, None).map(|_| ())
}

fn read_retained(topic: &str) -> Option<serde_json::Value> {
    connect_and_read(Some(viewer()), Some(topic)).ok().flatten()
}
