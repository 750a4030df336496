//! A whole site on real Docker, driven only through Git commits, watched over MQTT.
//! Mandatory with CI=true; skipped with a one-line notice where Docker is missing.

use harness::site::{component, BrokerKind, Site};
use harness::{require_docker, require_mosquitto};
use serde_json::Value;
use std::collections::BTreeSet;

const NODES: [&str; 2] = ["node-a", "node-b"];

fn running_containers(site: &Site) -> BTreeSet<String> {
    site.docker()
        .containers()
        .into_iter()
        .filter(|(_, state)| state == "running")
        .map(|(name, _)| name)
        .collect()
}

/// install → update → malformed commit → removal, checking measured status each time.
fn lifecycle(kind: BrokerKind) -> Site {
    let mut site = Site::new(kind);
    site.write_inventory(&NODES);
    site.write_web("1.0");
    let c1 = site.repo.commit("web 1.0");
    site.start_lo();
    for n in NODES {
        site.start_agent(n);
    }

    // Commit a deployment → the nodes run it, with real digests in their status.
    let statuses = site.wait_converged(&c1, &NODES);
    for (node, status) in &statuses {
        for c in ["api", "web"] {
            let comp =
                component(status, "web", c).unwrap_or_else(|| panic!("{node}/{c} in status"));
            assert_eq!(comp["state"], "installed", "{node}/{c}: {comp}");
            assert_eq!(comp["containerStatus"], "running", "{node}/{c}");
            assert_eq!(
                comp["repoDigest"],
                site.digests["1.0"].as_str(),
                "{node}/{c} digest"
            );
            assert!(comp["imageId"]
                .as_str()
                .is_some_and(|i| i.starts_with("sha256:")));
        }
        assert_eq!(
            component(status, "web", "api").expect("api")["health"],
            "healthy"
        );
    }
    assert_eq!(running_containers(&site).len(), 4, "2 components × 2 nodes");

    // Commit a new image version → updated on every node.
    site.write_web("2.0");
    let c2 = site.commit("web 2.0");
    let statuses = site.wait_converged(&c2, &NODES);
    for status in statuses.values() {
        let comp = component(status, "web", "web").expect("web");
        assert_eq!(comp["repoDigest"], site.digests["2.0"].as_str());
        assert_eq!(comp["image"], site.image("2.0").as_str());
    }
    assert_eq!(
        running_containers(&site).len(),
        4,
        "old containers replaced, not added"
    );

    // A malformed commit changes nothing that runs; the error is in the site summary.
    let before = running_containers(&site);
    let gens: Vec<Value> = NODES
        .iter()
        .map(|n| site.get(&format!("nodes/{n}/desired")).expect("desired")["generation"].clone())
        .collect();
    site.repo.write(
        &format!("sites/{}/web.yaml", site.name),
        "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  components:\n    - name: web\n      imag: nope\n",
    );
    let bad = site.commit("typo");
    let err = site.watcher.wait_until(
        "the rejected commit in lo/status",
        harness::site::CONVERGE,
        |l| {
            let s = l.get(&format!("fleet/{}/lo/status", site.name))?;
            (s["lastError"]["commit"] == bad.as_str()).then(|| s["lastError"].clone())
        },
    );
    let problem = &err["problems"][0];
    assert_eq!(
        problem["file"],
        format!("sites/{}/web.yaml", site.name).as_str(),
        "{err}"
    );
    assert_eq!(problem["line"], 8, "{err}");
    assert_eq!(problem["field"], "spec.components[0].imag", "{err}");
    let summary = site.get("lo/status").expect("summary");
    assert_eq!(
        summary["revision"]["commit"],
        c2.as_str(),
        "last good revision still served"
    );
    for (n, g) in NODES.iter().zip(&gens) {
        assert_eq!(
            &site.get(&format!("nodes/{n}/desired")).expect("desired")["generation"],
            g
        );
    }
    assert_eq!(running_containers(&site), before, "nothing running changed");

    // Commit the removal → removed everywhere, nothing orphaned.
    site.repo.remove(&format!("sites/{}/web.yaml", site.name));
    let c3 = site.commit("remove web");
    let statuses = site.wait_converged(&c3, &NODES);
    for status in statuses.values() {
        let left: Vec<&Value> = status["deployments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["state"] != "removed")
            .collect();
        assert!(left.is_empty(), "{status}");
    }
    harness::wait_for("containers removed", harness::site::CONVERGE, || {
        site.docker().containers().is_empty().then_some(())
    });
    site
}

#[test]
fn commits_drive_install_update_reject_and_removal_on_our_broker() {
    if !require_docker() {
        return;
    }
    lifecycle(BrokerKind::Ours);
}

#[test]
fn the_same_lifecycle_works_on_mosquitto_and_mosquitto_sub_reads_it() {
    if !require_docker() || !require_mosquitto() {
        return;
    }
    let site = lifecycle(BrokerKind::Mosquitto);
    // A client we did not write reads the retained site summary and a node status.
    let summary =
        harness::mosquitto_sub_retained(site.port, &format!("fleet/{}/lo/status", site.name))
            .expect("mosquitto_sub reads lo/status");
    assert_eq!(summary["schema"], "fleet.site/v1");
    assert!(
        summary["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == NODES.len()),
        "{summary}"
    );
    let status = harness::mosquitto_sub_retained(
        site.port,
        &format!("fleet/{}/nodes/node-a/status", site.name),
    )
    .expect("mosquitto_sub reads node status");
    assert_eq!(status["schema"], "fleet.status/v1");
    assert_eq!(status["converged"], true);
}

#[test]
fn offline_node_and_restarted_broker_converge_on_reconnect() {
    if !require_docker() {
        return;
    }
    let mut site = Site::new(BrokerKind::Ours);
    site.write_inventory(&NODES);
    site.write_web("1.0");
    let c1 = site.repo.commit("web 1.0");
    site.start_lo();
    for n in NODES {
        site.start_agent(n);
    }
    site.wait_converged(&c1, &NODES);

    // Stop one node's agent, commit a change, start it again.
    site.agents.get_mut("node-b").expect("agent").kill();
    site.write_web("2.0");
    let c2 = site.commit("web 2.0 while node-b is away");
    site.wait_converged(&c2, &["node-a"]);
    let b = site.get("nodes/node-b/status").expect("node-b status");
    assert_ne!(
        b["revision"]["commit"],
        c2.as_str(),
        "node-b cannot have it yet"
    );
    site.start_agent("node-b");
    site.wait_converged(&c2, &NODES);

    // Restart the broker: retained state is gone; the LO republishes, every node converges.
    site.restart_broker();
    let fresh = harness::Watcher::start(site.port, &site.name);
    fresh.wait_until(
        "desired documents republished after broker restart",
        harness::site::CONVERGE,
        |l| {
            NODES
                .iter()
                .all(|n| {
                    l.get(&format!("fleet/{}/nodes/{n}/desired", site.name))
                        .is_some_and(|d| d["revision"]["commit"] == c2.as_str())
                })
                .then_some(())
        },
    );
    site.write_web("1.0");
    let c3 = site.commit("back to 1.0 after the broker restart");
    site.wait_converged(&c3, &NODES);
}

#[test]
fn lo_restart_mid_rollout_duplicates_nothing() {
    if !require_docker() {
        return;
    }
    let mut site = Site::new(BrokerKind::Ours);
    site.write_inventory(&NODES);
    site.write_web("1.0");
    let c1 = site.repo.commit("web 1.0");
    site.start_lo();
    for n in NODES {
        site.start_agent(n);
    }
    site.wait_converged(&c1, &NODES);
    let gen1: Vec<u64> = NODES
        .iter()
        .map(|n| {
            site.get(&format!("nodes/{n}/desired")).expect("desired")["generation"]
                .as_u64()
                .expect("gen")
        })
        .collect();

    site.write_web("2.0");
    let c2 = site.commit("web 2.0");
    // Kill the LO as soon as the first node got the new document.
    site.watcher
        .wait_until("rollout started", harness::site::CONVERGE, |l| {
            NODES
                .iter()
                .any(|n| {
                    l.get(&format!("fleet/{}/nodes/{n}/desired", site.name))
                        .is_some_and(|d| d["revision"]["commit"] == c2.as_str())
                })
                .then_some(())
        });
    site.lo.as_mut().expect("lo").kill();
    site.start_lo();
    let statuses = site.wait_converged(&c2, &NODES);

    for (n, g1) in NODES.iter().zip(gen1) {
        let g2 = site.get(&format!("nodes/{n}/desired")).expect("desired")["generation"]
            .as_u64()
            .expect("gen");
        assert_eq!(g2, g1 + 1, "{n}: one content change, one new generation");
        assert_eq!(statuses[*n]["observedGeneration"], g2);
    }
    let names: Vec<String> = site.docker().containers().into_keys().collect();
    assert_eq!(
        names.len(),
        4,
        "one container per component and node: {names:?}"
    );
}
