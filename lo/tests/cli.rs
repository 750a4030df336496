//! `lo validate` and `lo plan` as a person runs them: exit codes and output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use schemas::NodeChannel;
use std::process::Command;
use std::time::Duration;

fn lo(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lo"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn good_repo() -> Repo {
    let repo = Repo::new();
    repo.commit(
        &[
            ("sites/s1/n.yaml", Some(&node_doc("n1", "    role: gw\n"))),
            ("sites/s1/a.yaml", Some(&deployment_doc("a", "reg/a:1", ""))),
        ],
        "one",
    );
    repo
}

#[test]
fn validate_exit_codes() {
    let repo = good_repo();
    let p = repo.path().to_string_lossy().into_owned();
    let (code, out, _) = lo(&["validate", "--repo", &p, "--site", "s1"]);
    assert_eq!(code, 0, "{out}");
    std::fs::write(repo.path().join("sites/s1/bad.yaml"), "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: b\nspec:\n  components:\n    - name: x\n      imagee: y\n").unwrap();
    let (code, _, err) = lo(&["validate", "--repo", &p, "--site", "s1"]);
    assert_eq!(code, 1);
    assert!(err.contains("sites/s1/bad.yaml:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_exit_codes_against_nothing_and_against_a_converged_broker() {
    let repo = good_repo();
    let p = repo.path().to_string_lossy().into_owned();
    let (code, out, err) = lo(&["plan", "--repo", &p, "--site", "s1"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("+ install a"), "{out}");
    let (code, out, _) = lo(&["plan", "--repo", &p, "--site", "s1", "--format", "json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["nodes"][0]["deployments"][0]["action"], "install");

    // Against a broker where n1 runs exactly this: no changes.
    let broker = start_broker();
    let state = tempfile::tempdir().unwrap();
    let running = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
    let t = schemas::Topics::default();
    let node = Client::connect(broker.connect_addr(), "n1", None).await;
    node.client
        .subscribe(
            t.node(SITE, "n1", NodeChannel::Desired),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let doc = wait_until("doc", Duration::from_secs(20), || node.last_desired("n1")).await;
    node.publish(
        t.node(SITE, "n1", NodeChannel::Online),
        true,
        presence(true, 1),
    )
    .await;
    node.publish(
        t.node(SITE, "n1", NodeChannel::Status),
        true,
        serde_json::to_vec(&status_for(&doc, None)).unwrap(),
    )
    .await;
    wait_until("converged", Duration::from_secs(20), || {
        running
            .status()
            .filter(|s| s.nodes.iter().any(|n| n.converged))
    })
    .await;
    let url = format!("mqtt://{}", broker.connect_addr());
    let p2 = p.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        lo(&["plan", "--repo", &p2, "--site", "s1", "--broker", &url])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("noop a"), "{out}");
    running.stop().await;
}

#[test]
fn validate_and_plan_refuse_a_missing_site_folder() {
    let repo = good_repo();
    let p = repo.path().to_string_lossy().into_owned();
    let (code, out, err) = lo(&["validate", "--repo", &p, "--site", "s2"]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("sites/s2: site folder is missing"), "{err}");
    let (code, _, err) = lo(&["plan", "--repo", &p, "--site", "s2"]);
    assert_eq!(code, 1);
    assert!(err.contains("sites/s2: site folder is missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_against_a_running_lo() {
    let broker = start_broker();
    let repo = good_repo();
    let state = tempfile::tempdir().unwrap();
    let running = Lo::start(lo_config(repo.path(), state.path(), broker.connect_addr())).await;
    let addr = running.running.http_addr;
    wait_until("ready", Duration::from_secs(20), || {
        (running.running.shared.served_commit().is_some()
            && running
                .running
                .shared
                .mqtt_connected
                .load(std::sync::atomic::Ordering::SeqCst))
        .then_some(())
    })
    .await;
    let hc = |args: Vec<String>, env: Option<String>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lo"));
        c.arg("healthcheck").args(args).env_remove("LO_HTTP_LISTEN");
        if let Some(v) = env {
            c.env("LO_HTTP_LISTEN", v);
        }
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let url = format!("http://{addr}/readyz");
    let (code, err) = tokio::task::spawn_blocking(move || hc(vec!["--url".into(), url], None))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    // The default URL comes from LO_HTTP_LISTEN, 0.0.0.0 meaning loopback.
    let listen = format!("0.0.0.0:{}", addr.port());
    let (code, err) = tokio::task::spawn_blocking(move || hc(vec![], Some(listen)))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    // Not 2xx: exit 1 and one line.
    let url = format!("http://{addr}/nothing-here");
    let (code, err) = tokio::task::spawn_blocking(move || hc(vec!["--url".into(), url], None))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("HTTP 404"), "{err}");
    running.stop().await;
    // Nothing listens: exit 1 quickly.
    let url = format!("http://{addr}/readyz");
    let (code, err) = tokio::task::spawn_blocking(move || {
        hc(
            vec!["--url".into(), url, "--timeout".into(), "1s".into()],
            None,
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(err.starts_with("healthcheck: "), "{err}");
}

#[test]
fn keygen_prints_a_key_pair_the_agent_can_verify_with() {
    let (code, out, _) = lo(&["keygen"]);
    assert_eq!(code, 0);
    let value = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{key} in {out}"))
            .to_owned()
    };
    let signing = schemas::sign::signing_key_from_base64(&value("signing_key")).expect("seed");
    let public = schemas::sign::verifying_key_from_base64(&value("public_key")).expect("public");
    assert_eq!(signing.verifying_key(), public);
    // Two runs give two different keys.
    let (_, again, _) = lo(&["keygen"]);
    assert_ne!(out, again);
}

/// `lo validate` and `lo plan` apply the LO's `[limits]` when given its configuration (file
/// or `LO_LIMITS__*`), so a check in CI refuses what `lo run` with that file would refuse,
/// and accepts what it would accept.
#[test]
fn validate_and_plan_apply_the_configured_limits() {
    let repo = Repo::new();
    let nodes: String = (1..=3)
        .map(|i| format!("---\n{}", node_doc(&format!("n{i}"), "    role: gw\n")))
        .collect();
    repo.commit(
        &[
            ("sites/s1/n.yaml", Some(&nodes)),
            ("sites/s1/a.yaml", Some(&deployment_doc("a", "reg/a:1", ""))),
        ],
        "three nodes in one file",
    );
    let p = repo.path().to_string_lossy().into_owned();
    let conf = repo.path().join("lo.toml");
    std::fs::write(
        &conf,
        "site = \"s1\"\nrepo = \"/r\"\n[limits]\nmax_docs_per_file = 2\n",
    )
    .unwrap();
    let c = conf.to_string_lossy().into_owned();

    let (code, out, err) = lo(&["validate", "--repo", &p, "--site", "s1"]);
    assert_eq!(code, 0, "defaults admit three nodes in a file: {out}{err}");
    let (code, _, err) = lo(&["validate", "--repo", &p, "--site", "s1", "--config", &c]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("sites/s1/n.yaml") && err.contains("max_docs_per_file"),
        "{err}"
    );
    let (code, _, err) = lo(&["plan", "--repo", &p, "--site", "s1", "-c", &c]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("max_docs_per_file"), "{err}");

    // The environment layer, as `lo run` reads it.
    let out = Command::new(env!("CARGO_BIN_EXE_lo"))
        .args(["validate", "--repo", &p, "--site", "s1"])
        .env("LO_LIMITS__MAX_DOCS_PER_FILE", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    // A configuration whose limits cannot work is a configuration error (exit 2).
    std::fs::write(&conf, "[limits]\nmax_docs_per_file = 0\n").unwrap();
    let (code, _, err) = lo(&["validate", "--repo", &p, "--site", "s1", "--config", &c]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("limits.max_docs_per_file must be positive"),
        "{err}"
    );
}

/// The site of the rollout test: five nodes (`n3` a canary), `web` rolled out in waves
/// [1, 50%, 100%] with image `web_image`, `db` with the default strategy.
fn rollout_site(repo: &Repo, web_image: &str, msg: &str) -> String {
    let nodes: String = (1..=5)
        .map(|i| {
            let canary = if i == 3 {
                "    edgefleet.io/canary: \"true\"\n"
            } else {
                ""
            };
            format!(
                "---\n{}",
                node_doc(&format!("n{i}"), &format!("    role: gw\n{canary}"))
            )
        })
        .collect();
    let waves = "  rollout:\n    waves:\n      - nodes: 1\n      - nodes: \"50%\"\n      - nodes: \"100%\"\n";
    let apps = format!(
        "{}---\n{}",
        deployment_doc("web", web_image, waves),
        deployment_doc("db", "reg/db:1", "")
    );
    repo.commit(
        &[
            ("sites/s1/n.yaml", Some(&nodes)),
            ("sites/s1/a.yaml", Some(&apps)),
        ],
        msg,
    )
}

/// `lo plan` shows, for every deployment a node would get a new spec of, the node's wave in
/// that deployment's rollout and whether it gets it now (text and JSON), against nothing
/// running and against the retained statuses and presence on a broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_the_wave_of_each_node() {
    let repo = Repo::new();
    let c1 = rollout_site(&repo, "reg/web:1", "web 1");
    let p = repo.path().to_string_lossy().into_owned();
    // What commit 1 hands every node.
    let docs = lo::cli::validate(repo.path(), SITE, "sites/s1").unwrap();
    let v1: Vec<schemas::DesiredDeployment> = lo::render::site_deployments(&docs, &c1)
        .into_values()
        .map(|(d, _)| (*d.spec).clone())
        .collect();
    let c2 = rollout_site(&repo, "reg/web:2", "web 2");
    let (s1, s2) = (&c1[..12], &c2[..12]);

    // Against nothing running: every node online, its current version unknown; the canary
    // gets web now, the others in their wave; db (one wave) everywhere now.
    let (code, out, err) = lo(&["plan", "--repo", &p, "--site", "s1"]);
    assert_eq!(code, 2, "{out}{err}");
    for want in [
        format!("node n3 (online)\n  + install db: desired but not on the node\n    wave 1/1: gets db@{s2} now\n"),
        format!("  + install web: desired but not on the node\n    wave 1/3 (canary): gets web@{s2} now\n      add main: new container from reg/web:2\n"),
        "node n1 (online)\n".to_owned(),
        "wave 2/3: keeps its current web (unknown: no status) until wave 1 passes\n".to_owned(),
        "wave 3/3: keeps its current web (unknown: no status) until wave 2 passes\n".to_owned(),
    ] {
        assert!(out.contains(&want), "{want}\nin\n{out}");
    }
    // Every node gets db now: none waits as a whole.
    assert!(!out.contains("waiting"), "{out}");

    // Against a broker: n1, n2, n3, n4 run commit 1 (n4 offline), n5 is online without a
    // status.
    let broker = start_broker();
    let t = schemas::Topics::default();
    let node = Client::connect(broker.connect_addr(), "nodes", None).await;
    for (i, n) in ["n1", "n2", "n3", "n4"].iter().enumerate() {
        let doc = schemas::DesiredState {
            schema: schemas::DesiredSchema::V1,
            site: SITE.into(),
            node: (*n).into(),
            generation: 1,
            revision: schemas::Revision {
                commit: c1.clone(),
                path: "sites/s1".into(),
            },
            issued_at: schemas::now_rfc3339(),
            deployments: v1.clone(),
            signature: None,
        };
        node.publish(
            t.node(SITE, n, NodeChannel::Status),
            true,
            serde_json::to_vec(&status_for(&doc, None)).unwrap(),
        )
        .await;
        node.publish(
            t.node(SITE, n, NodeChannel::Online),
            true,
            presence(*n != "n4", i as u64 + 1),
        )
        .await;
    }
    node.publish(
        t.node(SITE, "n5", NodeChannel::Online),
        true,
        presence(true, 1),
    )
    .await;
    // Every retained message is on the broker before `lo plan` reads it.
    let watch = Client::connect(broker.connect_addr(), "watch", None).await;
    for c in [NodeChannel::Status, NodeChannel::Online] {
        watch
            .client
            .subscribe(t.all_nodes(SITE, c), rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    wait_until("retained", Duration::from_secs(20), || {
        let g = watch.inbox.lock().unwrap();
        (g.other.len() >= 9).then_some(())
    })
    .await;

    let url = format!("mqtt://{}", broker.connect_addr());
    let (p2, url2) = (p.clone(), url.clone());
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        lo(&["plan", "--repo", &p2, "--site", "s1", "--broker", &url2])
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{out}{err}");
    // Rollout order: n3 (canary), n1, n2, n4 (offline: skipped), n5; 50% of 5 nodes is 3.
    for want in [
        format!("node n3 (online)\n    noop db: installed at the desired spec\n  ~ update web: spec changed ({s1} -> {s2})\n    wave 1/3 (canary): gets web@{s2} now\n"),
        format!("node n1 (online) — waiting for its turn (rollout wave 2/3)\n    noop db: installed at the desired spec\n  ~ update web: spec changed ({s1} -> {s2})\n    wave 2/3: keeps web@{s1} until wave 1 passes\n"),
        "node n2 (online) — waiting for its turn (rollout wave 2/3)\n".to_owned(),
        format!("node n4 (offline) — waiting for node (offline)\n    noop db: installed at the desired spec\n  ~ update web: spec changed ({s1} -> {s2})\n    no wave (offline, skipped): keeps web@{s1}; its turn comes when back online\n"),
        format!("node n5 (online)\n  + install db: desired but not on the node\n    wave 1/1: gets db@{s2} now\n"),
        "  + install web: desired but not on the node\n    wave 3/3: keeps its current web (unknown: no status) until wave 2 passes\n".to_owned(),
    ] {
        assert!(out.contains(&want), "{want}\nin\n{out}");
    }
    assert!(
        !out.contains("noop db: installed at the desired spec\n    wave"),
        "{out}"
    );

    let (code, out, err) = tokio::task::spawn_blocking(move || {
        lo(&[
            "plan", "--repo", &p, "--site", "s1", "--broker", &url, "--format", "json",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let view = |node: &str, dep: &str| {
        let n = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node)
            .unwrap();
        let d = n["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["deployment"] == dep)
            .unwrap();
        d.get("rollout").cloned()
    };
    let j = |wave: Option<u64>, waves: u64, now: bool| {
        Some(serde_json::json!({"wave": wave, "waves": waves, "now": now}))
    };
    assert_eq!(view("n3", "web"), j(Some(1), 3, true));
    assert_eq!(view("n1", "web"), j(Some(2), 3, false));
    assert_eq!(view("n2", "web"), j(Some(2), 3, false));
    assert_eq!(view("n4", "web"), j(None, 3, false));
    assert_eq!(view("n5", "web"), j(Some(3), 3, false));
    assert_eq!(view("n5", "db"), j(Some(1), 1, true));
    for n in ["n1", "n2", "n3", "n4"] {
        assert_eq!(view(n, "db"), None, "{n}: db unchanged");
    }
}
