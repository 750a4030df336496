//! A site signed both ways on real Docker, with the real `lo`, `en-agent` and `broker`
//! binaries: the LO signs desired documents, every agent signs its reports with its own key
//! (public key in its Node document), and a hostile publisher with broker access cannot
//! move a node. Mandatory with CI=true; skipped with a one-line notice where Docker is missing.

use harness::site::{BrokerKind, Site, CONVERGE};
use harness::{bin, require_docker_registry, Proc};
use schemas::sign::{Ed25519SigningKey, Ed25519VerifyingKey};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

const NODES: [&str; 2] = ["node-a", "node-b"];

/// Demo keys for a test: distinct fixed seeds (secrecy does not matter here).
fn key(n: u8) -> Ed25519SigningKey {
    Ed25519SigningKey::from_bytes(&[n; 32])
}

fn b64_public(k: &Ed25519SigningKey) -> String {
    schemas::sign::verifying_key_to_base64(&k.verifying_key())
}

/// `site.yaml` with signed reports required and `nodes.yaml` with each node's public key.
fn write_signed_inventory(site: &Site, nodes: &BTreeMap<&str, Ed25519SigningKey>) {
    let name = &site.name;
    site.repo.write(
        &format!("sites/{name}/site.yaml"),
        &format!(
            "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: {name}\nspec:\n  allowEmpty: true\n  maxDeletePercent: 100\n  policy:\n    attempts: 2\n    backoff: 1s\n  security:\n    requireSignedReports: true\n"
        ),
    );
    let docs: Vec<String> = nodes
        .iter()
        .map(|(n, k)| {
            format!(
                "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: {n}\n  labels:\n    role: gateway\nspec:\n  publicKey: {}\n",
                b64_public(k)
            )
        })
        .collect();
    site.repo
        .write(&format!("sites/{name}/nodes.yaml"), &docs.join("---\n"));
}

fn start_signing_lo(site: &mut Site, lo_key: &Ed25519SigningKey) {
    let mut cmd = Command::new(bin("lo"));
    cmd.args(["run", "--site", &site.name, "--repo", &site.repo.url()])
        .args(["--broker", &format!("mqtt://127.0.0.1:{}", site.port)])
        .arg("--state-dir")
        .arg(site.dir().join("lo-state"))
        .args(["--http-listen", &format!("127.0.0.1:{}", site.lo_http)])
        .env("LO_POLL_INTERVAL", "1s")
        .env("LO_HEARTBEAT_TIMEOUT", "10s")
        // Test only: the key in the environment of a short-lived test process.
        .env(
            "LO_SIGNING_KEY",
            schemas::sign::signing_key_to_base64(lo_key),
        )
        .env("RUST_LOG", "info,lo=debug");
    site.lo = Some(Proc::spawn("lo", cmd, &site.dir()));
}

fn start_signing_agent(site: &mut Site, node: &str, key: &Ed25519SigningKey, lo_public: &str) {
    let key_file = site.dir().join(format!("{node}.key"));
    std::fs::write(&key_file, schemas::sign::signing_key_to_base64(key)).expect("key file");
    let mut cmd = Command::new(bin("en-agent"));
    cmd.args(["run", "--site", &site.name, "--node", node])
        .args(["--broker", &format!("mqtt://127.0.0.1:{}", site.port)])
        .arg("--state-dir")
        .arg(site.dir().join(format!("agent-{node}")))
        .args(["--heartbeat", "2s", "--resync", "5s"])
        .args(["--public-key", lo_public])
        .args([
            "--set",
            &format!("report_signing_key_file={}", key_file.display()),
        ])
        // Tests of several sites share one engine and reuse node names.
        .args([
            "--set",
            &format!("container_prefix=ef-{}-{node}", site.name),
        ])
        .env("RUST_LOG", "info,en_agent=debug");
    site.agents.insert(
        node.to_owned(),
        Proc::spawn(&format!("agent-{node}"), cmd, &site.dir()),
    );
}

/// Every retained or latest report of `node` verifies with its key; returns (epoch, seq)
/// per channel.
fn verify_reports(
    site: &Site,
    node: &str,
    key: &Ed25519VerifyingKey,
) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for channel in ["status", "online", "heartbeat"] {
        let topic = format!("fleet/{}/nodes/{node}/{channel}", site.name);
        let v = site
            .watcher
            .get(&topic)
            .unwrap_or_else(|| panic!("no {channel} report of {node}"));
        let signed = schemas::sign::verify_report(&v, &topic, key)
            .unwrap_or_else(|e| panic!("{topic}: {e}: {v}"));
        out.insert(channel.to_owned(), signed);
    }
    out
}

/// Every event seen so far verifies with the key of one node, on that node's topic (the
/// watcher keeps events without their topic).
fn verify_events(site: &Site, keys: &BTreeMap<&str, Ed25519SigningKey>) -> usize {
    // The LO's rollout events (`lo/events`) are not node reports: they carry no node's
    // signature.
    let events: Vec<_> = site
        .watcher
        .events()
        .into_iter()
        .filter(|e| e["schema"] != "fleet.lo-event/v1")
        .collect();
    for e in &events {
        let ok = keys.iter().any(|(n, k)| {
            let topic = format!("fleet/{}/nodes/{n}/events", site.name);
            schemas::sign::verify_report(e, &topic, &k.verifying_key()).is_ok()
        });
        assert!(ok, "event verifies with no node's key: {e}");
    }
    events.len()
}

/// Publishes `payload` retained on `topic` as an anonymous broker client would: a hostile
/// publisher needs nothing but network access to a broker without ACLs.
fn publish_retained(port: u16, topic: &str, payload: String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new(harness::unique("hostile"), "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 10);
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, true, payload)
            .await
            .expect("queue publish");
        let acked = async {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => return,
                    Ok(_) => {}
                    Err(e) => panic!("hostile publisher: {e}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), acked)
            .await
            .expect("PUBACK within 20 s");
    });
}

#[test]
fn signed_site_converges_with_verifiable_reports_and_a_forged_u64_max_document_changes_nothing() {
    if !require_docker_registry() {
        return;
    }
    let lo_key = key(201);
    let node_keys: BTreeMap<&str, Ed25519SigningKey> = NODES
        .iter()
        .zip([key(202), key(203)])
        .map(|(n, k)| (*n, k))
        .collect();
    let mut site = Site::new(BrokerKind::Ours);
    write_signed_inventory(&site, &node_keys);
    site.write_web("1.0");
    let c1 = site.repo.commit("web 1.0, signed site");
    start_signing_lo(&mut site, &lo_key);
    let lo_public = b64_public(&lo_key);
    for (n, k) in &node_keys {
        start_signing_agent(&mut site, n, k, &lo_public);
    }

    // Converged, every desired document signed by the LO, every report by its node.
    site.wait_converged(&c1, &NODES);
    let mut before = BTreeMap::new();
    for (n, k) in &node_keys {
        let desired = site.get(&format!("nodes/{n}/desired")).expect("desired");
        assert_eq!(desired["signature"]["alg"], "ed25519", "{n}: {desired}");
        before.insert(*n, verify_reports(&site, n, &k.verifying_key()));
        // Another node's key does not verify this node's status.
        let other = node_keys
            .values()
            .find(|o| o.verifying_key() != k.verifying_key());
        let topic = format!("fleet/{}/nodes/{n}/status", site.name);
        let status = site.watcher.get(&topic).expect("status");
        assert!(schemas::sign::verify_report(
            &status,
            &topic,
            &other.expect("two nodes").verifying_key()
        )
        .is_err());
    }
    assert!(
        verify_events(&site, &node_keys) > 0,
        "events were published"
    );
    let running_before = site.docker().containers();

    // A hostile publisher (any broker client: ours has no ACLs) replaces node-a's retained
    // desired document with an unsigned copy at generation u64::MAX running web 2.0.
    let target = NODES[0];
    let desired_topic = format!("fleet/{}/nodes/{target}/desired", site.name);
    let mut forged = site.watcher.get(&desired_topic).expect("desired");
    let real_generation = forged["generation"].as_u64().expect("generation");
    forged["generation"] = Value::from(u64::MAX);
    forged.as_object_mut().expect("object").remove("signature");
    let forged_text = forged
        .to_string()
        .replace(&site.image("1.0"), &site.image("2.0"));
    publish_retained(site.port, &desired_topic, forged_text);

    let status_topic = format!("fleet/{}/nodes/{target}/status", site.name);
    let status = site
        .watcher
        .wait_until("the forged document refused", CONVERGE, |l| {
            let s = l.get(&status_topic)?;
            s["rejected"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("signature"))
                .then(|| s.clone())
        });
    assert_eq!(status["observedGeneration"], real_generation, "{status}");
    assert_eq!(status["converged"], true, "{status}");
    // The refusal report is signed too.
    schemas::sign::verify_report(&status, &status_topic, &node_keys[target].verifying_key())
        .expect("signed refusal");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        site.docker().containers(),
        running_before,
        "nothing changed in Docker"
    );

    // The next real document is applied: the agent was not pinned at u64::MAX.
    site.write_web("2.0");
    let c2 = site.commit("web 2.0");
    let statuses = site.wait_converged(&c2, &NODES);
    for (n, status) in &statuses {
        let web = harness::site::component(status, "web", "web").expect("web");
        assert_eq!(web["image"], site.image("2.0").as_str(), "{n}");
        let after = verify_reports(&site, n, &node_keys[n.as_str()].verifying_key());
        // Same session: same epoch, higher sequence numbers than before.
        assert_eq!(after["status"].0, before[n.as_str()]["status"].0, "{n}");
        assert!(after["status"].1 > before[n.as_str()]["status"].1, "{n}");
    }
    assert!(
        statuses[target]["rejected"].is_null(),
        "applied: the refusal is cleared"
    );
    verify_events(&site, &node_keys);
}
