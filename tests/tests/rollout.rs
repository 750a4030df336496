//! Rollouts on real Docker (issue #11): waves with a health gate, a registry outage that a
//! rollout waits out and heals from by itself, a canary whose healthcheck fails and is
//! rolled back before any other node gets it, and an LO killed with SIGKILL mid-wave.
//! Three agents on one engine, a real registry, a real Git repository, watched over MQTT.
//! Mandatory with CI=true; skipped with a one-line notice where Docker or the registry is
//! missing.

use harness::rollout::{deployment_rollout, images};
use harness::site::{component, BrokerKind, Site};
use harness::{require_docker_registry, wait_for};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// A site of [`NODES`] converged on `web:1.0`. `rollout`: the lines under the Site's
/// `rollout:` (indented four spaces); `canary`: the node labelled `edgefleet.io/canary`;
/// `agent`: extra agent settings. Returns the site and the first commit.
fn converged_site(rollout: &str, canary: Option<&str>, agent: &[&str]) -> (Site, String) {
    let mut site = Site::new(BrokerKind::Ours);
    let name = site.name.clone();
    site.repo.write(
        &format!("sites/{name}/site.yaml"),
        &format!(
            "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: {name}\nspec:\n  allowEmpty: true\n  maxDeletePercent: 100\n  policy:\n    attempts: 2\n    backoff: 1s\n  rollout:\n{rollout}"
        ),
    );
    let nodes: Vec<String> = NODES
        .iter()
        .map(|n| {
            let label = if canary == Some(*n) {
                "    edgefleet.io/canary: \"true\"\n"
            } else {
                ""
            };
            format!("apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: {n}\n  labels:\n    role: gateway\n{label}")
        })
        .collect();
    site.repo
        .write(&format!("sites/{name}/nodes.yaml"), &nodes.join("---\n"));
    site.write_web("1.0");
    let c1 = site.repo.commit("web 1.0");
    site.start_lo();
    for n in NODES {
        site.start_agent_with(n, agent);
    }
    site.wait_converged(&c1, &NODES);
    // The first revision an LO serves is promoted as is: no rollout to run.
    let r = site
        .watcher
        .wait_until("web 1.0 promoted", Duration::from_secs(30), |l| {
            let s = l.get(&format!("fleet/{name}/lo/status"))?;
            let r = deployment_rollout(s, "web")?;
            (r["promoted"]["commit"] == c1.as_str()).then(|| r.clone())
        });
    assert_eq!(r["phase"], "complete", "{r}");
    assert!(r.get("candidate").is_none(), "{r}");
    (site, c1)
}

fn desired(site: &Site, node: &str) -> Value {
    site.get(&format!("nodes/{node}/desired"))
        .unwrap_or_else(|| panic!("{node} has a desired document"))
}

fn generation(doc: &Value) -> u64 {
    doc["generation"].as_u64().expect("generation")
}

fn rollout_now(site: &Site) -> Value {
    let s = site.get("lo/status").expect("lo/status");
    deployment_rollout(&s, "web")
        .unwrap_or_else(|| panic!("web has a rollout in {s}"))
        .clone()
}

/// True when every component image of `doc` is `image` (and there is at least one).
fn all_images(doc: &Value, image: &str) -> bool {
    let i = images(doc);
    !i.is_empty() && i.iter().all(|i| i == image)
}

/// `node` reports, at its current desired generation, `converged` with every component of
/// `web` installed from `image` (and `api` healthy).
fn runs(l: &BTreeMap<String, Value>, site: &str, node: &str, image: &str) -> bool {
    let (Some(d), Some(s)) = (
        l.get(&format!("fleet/{site}/nodes/{node}/desired")),
        l.get(&format!("fleet/{site}/nodes/{node}/status")),
    ) else {
        return false;
    };
    let installed = |c: &str| {
        component(s, "web", c).is_some_and(|c| c["state"] == "installed" && c["image"] == image)
    };
    all_images(d, image)
        && s["observedGeneration"] == d["generation"]
        && s["converged"] == true
        && installed("api")
        && installed("web")
        && component(s, "web", "api").is_some_and(|c| c["health"] == "healthy")
}

/// Every generation in `docs` (desired documents in arrival order) is at least the one
/// before, and one generation is one document: a republish of it (after an LO restart, a
/// reconnect) is identical, `issuedAt` included.
fn assert_generations_sound(node: &str, docs: &[Value]) {
    let mut content: BTreeMap<u64, &Value> = BTreeMap::new();
    let mut last = 0;
    for d in docs {
        let g = generation(d);
        assert!(
            g >= last,
            "{node}: generation {g} published after {last}: {docs:?}"
        );
        last = g;
        let seen = content.entry(g).or_insert(d);
        assert_eq!(
            *seen, d,
            "{node}: generation {g} published with different content"
        );
    }
}

/// The components of `node`'s containers, all running `image`: exactly one per component.
fn assert_one_container_per_component(site: &Site, node: &str, image: &str) {
    let containers = site.node_containers(node);
    let components: BTreeSet<&str> = containers.iter().map(|c| c.component.as_str()).collect();
    assert_eq!(
        containers.len(),
        2,
        "{node}: one container per component: {containers:?}"
    );
    assert_eq!(
        components,
        BTreeSet::from(["api", "web"]),
        "{node}: {containers:?}"
    );
    for c in &containers {
        assert_eq!(c.image, image, "{node}: {c:?}");
        assert_eq!(c.state, "running", "{node}: {c:?}");
    }
}

#[test]
fn a_registry_outage_holds_the_rollout_at_the_first_node_and_heals_without_a_commit() {
    if !require_docker_registry() {
        return;
    }
    let started = Instant::now();
    // One node at a time; a generous waveTimeout; agents retrying a transient failure at
    // most 3 s apart, with an attempt budget (2 × 1 s) spent early in the outage.
    let (mut site, _c1) = converged_site(
        "    maxParallel: 1\n    waveTimeout: 5m\n",
        None,
        &["retry_max_backoff=3s"],
    );
    let name = site.name.clone();
    let (v1, v2) = (site.image("1.0"), site.image("2.0"));
    let gen1: BTreeMap<&str, u64> = NODES
        .iter()
        .map(|n| (*n, generation(&desired(&site, n))))
        .collect();
    let mark = site.watcher.mark();

    site.registry.stop();
    let stopped = Instant::now();
    site.write_web("2.0");
    let c2 = site.commit("web 2.0 while the registry is down");

    // The first node (by name) gets it, cannot pull, spends its budget: failed + retrying.
    let failure =
        site.watcher
            .wait_until("node-a failed and retrying", Duration::from_secs(20), |l| {
                let d = l.get(&format!("fleet/{name}/nodes/node-a/desired"))?;
                let s = l.get(&format!("fleet/{name}/nodes/node-a/status"))?;
                if d["revision"]["commit"] != c2.as_str()
                    || s["observedGeneration"] != d["generation"]
                {
                    return None;
                }
                s["deployments"][0]["components"]
                    .as_array()?
                    .iter()
                    .find(|c| c["state"] == "failed" && c["retrying"] == true)
                    .cloned()
            });
    assert_eq!(failure["error"]["code"], "pull_failed", "{failure}");
    assert!(failure["nextAttemptAt"].is_string(), "{failure}");
    eprintln!(
        "node-a failed + retrying {:?} after the registry stopped",
        stopped.elapsed()
    );

    // 20 s of outage: the rollout holds at node-a, nobody else is handed 2.0.
    while stopped.elapsed() < Duration::from_secs(20) {
        for n in ["node-b", "node-c"] {
            let d = desired(&site, n);
            assert_eq!(
                generation(&d),
                gen1[n],
                "{n} was handed a new document: {d}"
            );
            assert!(all_images(&d, &v1), "{n}: {d}");
        }
        let r = rollout_now(&site);
        if r["candidate"]["commit"] == c2.as_str() {
            assert_eq!(r["phase"], "progressing", "{r}");
            assert_eq!(r["received"], 1, "{r}");
            assert_eq!(
                r["waves"][0]["failed"], 0,
                "a retrying node is not failed: {r}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let s = site.get("nodes/node-a/status").expect("node-a status");
    assert!(
        s["deployments"][0]["components"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["state"] == "failed" && c["retrying"] == true),
        "node-a still retrying at the end of the outage: {s}"
    );
    let r = rollout_now(&site);
    assert_eq!(r["candidate"]["commit"], c2.as_str(), "{r}");
    assert_eq!(r["phase"], "progressing", "{r}");

    site.registry.restart();
    let back = Instant::now();
    site.watcher.wait_until(
        "every node on 2.0 and the rollout complete, within 60 s of the registry's return",
        Duration::from_secs(60),
        |l| {
            for n in NODES {
                if !runs(l, &name, n, &v2) {
                    return None;
                }
            }
            let s = l.get(&format!("fleet/{name}/lo/status"))?;
            let r = deployment_rollout(s, "web")?;
            (r["phase"] == "complete" && r["promoted"]["commit"] == c2.as_str()).then_some(())
        },
    );
    eprintln!(
        "converged {:?} after the registry came back (test {:?} so far)",
        back.elapsed(),
        started.elapsed()
    );

    // By itself: no new commit, no process restarted.
    assert_eq!(site.repo.git(&["rev-parse", "HEAD"]), c2);
    assert_eq!(
        site.get("lo/status").expect("status")["revision"]["commit"],
        c2.as_str()
    );
    assert!(
        site.lo.as_mut().is_some_and(|p| p.running()),
        "LO restarted"
    );
    for (n, p) in site.agents.iter_mut() {
        assert!(p.running(), "agent {n} restarted");
    }
    // One new generation per node, handed one node at a time: node-b and node-c got 2.0
    // only after node-a ran it.
    let history = site.watcher.history();
    let after = &history[mark..];
    let first = |pred: &dyn Fn(&str, &Value) -> bool| after.iter().position(|(t, v)| pred(t, v));
    let a_runs = first(&|t, v| {
        t == format!("fleet/{name}/nodes/node-a/status")
            && v["converged"] == true
            && images(v).iter().all(|i| *i == v2)
    })
    .expect("node-a reported 2.0");
    for n in NODES {
        let docs = site.desired_history(n);
        assert_generations_sound(n, &docs);
        assert_eq!(generation(&desired(&site, n)), gen1[n] + 1, "{n}");
        if n != "node-a" {
            let handed =
                first(&|t, v| t == format!("fleet/{name}/nodes/{n}/desired") && all_images(v, &v2))
                    .expect("handed 2.0");
            assert!(handed > a_runs, "{n} was handed 2.0 before node-a ran it");
        }
        assert_one_container_per_component(&site, n, &v2);
    }
    eprintln!("registry outage scenario took {:?}", started.elapsed());
}

#[test]
fn a_canary_whose_healthcheck_fails_is_rolled_back_and_no_other_node_gets_it() {
    if !require_docker_registry() {
        return;
    }
    let started = Instant::now();
    // node-c is the canary (the label puts it before node-a and node-b).
    let (site, c1) = converged_site(
        "    waves:\n      - nodes: 1\n        soak: 3s\n      - nodes: 100%\n    waveTimeout: 30s\n",
        Some("node-c"),
        &[],
    );
    let name = site.name.clone();
    let (v1, bad) = (site.image("1.0"), site.image("bad"));
    let gen1: BTreeMap<&str, u64> = NODES
        .iter()
        .map(|n| (*n, generation(&desired(&site, n))))
        .collect();
    site.push_unhealthy_image("bad");
    site.write_web("bad");
    let c2 = site.commit("web: an image whose healthcheck fails");
    let committed = Instant::now();

    let r = site
        .watcher
        .wait_until("the rollout rolled back", Duration::from_secs(90), |l| {
            let s = l.get(&format!("fleet/{name}/lo/status"))?;
            let r = deployment_rollout(s, "web")?;
            (r["phase"] == "rolledBack").then(|| r.clone())
        });
    eprintln!(
        "rolled back {:?} after the commit: {r}",
        committed.elapsed()
    );
    assert_eq!(r["haltReason"]["node"], "node-c", "{r}");
    assert_eq!(r["wave"], 1, "{r}");
    assert_eq!(r["received"], 1, "{r}");
    assert_eq!(r["promoted"]["commit"], c1.as_str(), "{r}");
    assert_eq!(r["candidate"]["commit"], c2.as_str(), "{r}");
    assert_eq!(r["waves"][0]["failed"], 1, "{r}");

    let event = wait_for("a rolledBack event", Duration::from_secs(15), || {
        site.lo_events()
            .into_iter()
            .find(|e| e["kind"] == "rolledBack")
    });
    assert_eq!(event["schema"], "fleet.lo-event/v1", "{event}");
    assert_eq!(event["deployment"], "web", "{event}");
    assert_eq!(event["wave"], 1, "{event}");
    assert_eq!(event["haltReason"]["node"], "node-c", "{event}");
    assert_eq!(event["candidate"]["commit"], c2.as_str(), "{event}");
    assert_eq!(event["promoted"]["commit"], c1.as_str(), "{event}");
    let kinds: Vec<Value> = site
        .lo_events()
        .iter()
        .filter(|e| e["candidate"]["commit"] == c2.as_str())
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, ["started", "rolledBack"], "events");

    // The canary runs 1.0 again, by itself.
    site.watcher
        .wait_until("the canary back on 1.0", harness::site::CONVERGE, |l| {
            runs(l, &name, "node-c", &v1).then_some(())
        });
    eprintln!(
        "canary back on 1.0 {:?} after the commit",
        committed.elapsed()
    );
    let canary = site.desired_history("node-c");
    assert_generations_sound("node-c", &canary);
    assert!(
        canary.iter().any(|d| all_images(d, &bad)),
        "the canary was handed the candidate"
    );
    assert_eq!(
        generation(&desired(&site, "node-c")),
        gen1["node-c"] + 2,
        "one generation for the candidate, one for the rollback"
    );
    assert!(
        site.status_history("node-c")
            .iter()
            .any(|s| images(s).contains(&bad)),
        "the canary ran the candidate"
    );
    assert_one_container_per_component(&site, "node-c", &v1);

    // The other two never had it: not in a document, not in a status, not in a container.
    for n in ["node-a", "node-b"] {
        for d in site.desired_history(n) {
            assert!(
                !images(&d).contains(&bad),
                "{n} was handed the candidate: {d}"
            );
        }
        assert_eq!(generation(&desired(&site, n)), gen1[n], "{n}");
        for s in site.status_history(n) {
            assert!(
                !images(&s).contains(&bad),
                "{n} reported the candidate: {s}"
            );
        }
        assert_one_container_per_component(&site, n, &v1);
    }
    // Still rolled back, nothing more happened.
    let r = rollout_now(&site);
    assert_eq!(r["phase"], "rolledBack", "{r}");
    eprintln!("canary scenario took {:?}", started.elapsed());
}

#[test]
fn waves_pass_one_by_one_and_an_lo_killed_mid_wave_resumes_without_duplicates() {
    if !require_docker_registry() {
        return;
    }
    let started = Instant::now();
    let (mut site, _c1) = converged_site(
        "    waves:\n      - nodes: 1\n        soak: 10s\n      - nodes: 100%\n",
        None,
        &[],
    );
    let name = site.name.clone();
    let (v1, v2) = (site.image("1.0"), site.image("2.0"));
    let gen1: BTreeMap<&str, u64> = NODES
        .iter()
        .map(|n| (*n, generation(&desired(&site, n))))
        .collect();
    site.write_web("2.0");
    let c2 = site.commit("web 2.0");

    // The canary (node-a, first by name) runs 2.0 and soaks; the others wait.
    site.watcher
        .wait_until("the canary runs 2.0", harness::site::CONVERGE, |l| {
            runs(l, &name, "node-a", &v2).then_some(())
        });
    let healthy = Instant::now();
    let canary_gen = generation(&desired(&site, "node-a"));
    assert_eq!(canary_gen, gen1["node-a"] + 1);
    for n in ["node-b", "node-c"] {
        let d = desired(&site, n);
        assert_eq!(generation(&d), gen1[n], "{n} waits for wave 2: {d}");
        assert!(all_images(&d, &v1), "{n}: {d}");
    }
    let r = rollout_now(&site);
    assert_eq!(r["phase"], "progressing", "{r}");
    assert_eq!(r["wave"], 1, "{r}");
    assert_eq!(r["received"], 1, "{r}");

    // SIGKILL mid-wave (the soak runs 10 s), then the same state directory again.
    site.kill_lo();
    let mark = site.watcher.mark();
    site.start_lo();
    let topic = format!("fleet/{name}/lo/status");
    let first = wait_for(
        "a site status with the rollout from the restarted LO",
        Duration::from_secs(30),
        || {
            site.watcher
                .history_of_since(&topic, mark)
                .into_iter()
                .find_map(|s| deployment_rollout(&s, "web").cloned())
        },
    );
    eprintln!(
        "restarted LO's first rollout status {:?} after the canary ran 2.0: {first}",
        healthy.elapsed()
    );
    assert_eq!(first["phase"], "progressing", "same wave: {first}");
    assert_eq!(first["wave"], 1, "same wave: {first}");
    assert_eq!(first["received"], 1, "same canary: {first}");
    assert_eq!(first["candidate"]["commit"], c2.as_str(), "{first}");

    // Wave 2 starts once the canary soaked 10 s (not before), then the rollout completes.
    let handed = site.watcher.wait_until(
        "node-b or node-c handed 2.0",
        harness::site::CONVERGE,
        |l| {
            ["node-b", "node-c"]
                .iter()
                .any(|n| {
                    l.get(&format!("fleet/{name}/nodes/{n}/desired"))
                        .is_some_and(|d| all_images(d, &v2))
                })
                .then(Instant::now)
        },
    );
    let soaked = handed.duration_since(healthy);
    eprintln!("wave 2 started {soaked:?} after the canary ran 2.0 (soak 10 s)");
    assert!(
        soaked >= Duration::from_secs(9),
        "wave 2 started {soaked:?} after the canary ran 2.0 (soak 10 s)"
    );
    let statuses = site.wait_converged(&c2, &NODES);
    site.watcher
        .wait_until("the rollout complete", Duration::from_secs(30), |l| {
            let r = deployment_rollout(l.get(&topic)?, "web")?;
            (r["phase"] == "complete" && r["promoted"]["commit"] == c2.as_str()).then_some(())
        });
    let events: Vec<Value> = wait_for("the complete event", Duration::from_secs(15), || {
        let e: Vec<Value> = site
            .lo_events()
            .into_iter()
            .filter(|e| e["candidate"]["commit"] == c2.as_str())
            .collect();
        e.iter().any(|e| e["kind"] == "complete").then_some(e)
    });
    let kinds: Vec<(Value, Value)> = events
        .iter()
        .map(|e| (e["kind"].clone(), e["wave"].clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("started".into(), 1.into()),
            ("wavePassed".into(), 1.into()),
            ("complete".into(), 2.into())
        ],
        "no second start after the restart: {events:?}"
    );

    // No generation twice, none for nothing: one new generation per node, the canary's the
    // same before and after the restart; one container per component.
    for n in NODES {
        let docs = site.desired_history(n);
        assert_generations_sound(n, &docs);
        let g = generation(&desired(&site, n));
        assert_eq!(g, gen1[n] + 1, "{n}: one content change, one generation");
        assert_eq!(statuses[n]["observedGeneration"], g, "{n}");
        assert!(
            docs.iter().all(|d| generation(d) <= g),
            "{n}: a generation above the final one"
        );
        assert_one_container_per_component(&site, n, &v2);
    }
    eprintln!("wave scenario took {:?}", started.elapsed());
}
