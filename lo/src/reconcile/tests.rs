//! Table tests of the pure decisions: generations, pacing, rollback, removed nodes, and
//! what is republished after a CONNACK. Each row states its inputs and the outputs that
//! must follow; a broken rule fails its row.

use super::*;
use crate::policy;
use schemas::{NodeStatus, Presence, State};

const SITE: &str = "s1";
const T0: u64 = 1_000;

fn node_doc(name: &str) -> String {
    format!("apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    role: gw\n")
}

/// `on_failure` may end in `+pause`: the deployment's rollout then halts without a
/// site-wide rollback (`onHalt: pause`), so the per-node policy is seen alone.
fn deployment_doc(name: &str, image: &str, on_failure: &str) -> String {
    let (on_failure, rollout) = match on_failure.strip_suffix("+pause") {
        Some(f) => (f, "  rollout:\n    onHalt: pause\n"),
        None => (on_failure, ""),
    };
    format!(
        "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  policy:\n    onFailure: {on_failure}\n{rollout}  components:\n    - name: main\n      image: {image}\n"
    )
}

fn site_doc(max_parallel: u32) -> String {
    format!("apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: {SITE}\nspec:\n  rollout:\n    maxParallel: {max_parallel}\n")
}

/// A site with `nodes`, one deployment `web` at `image`, and optionally pacing.
fn site(nodes: &[&str], image: &str, on_failure: &str, max_parallel: Option<u32>) -> SiteDocs {
    let mut files = vec![(
        "sites/s1/web.yaml".to_owned(),
        deployment_doc("web", image, on_failure),
    )];
    for n in nodes {
        files.push((format!("sites/s1/{n}.yaml"), node_doc(n)));
    }
    if let Some(m) = max_parallel {
        files.push(("sites/s1/site.yaml".to_owned(), site_doc(m)));
    }
    schemas::site::load_site(SITE, files.iter().map(|(p, c)| (p.as_str(), c.as_str())))
        .expect("valid site")
}

fn status(node: &str, generation: u64, converged: bool, web: State) -> NodeStatus {
    let mut s: NodeStatus =
        serde_json::from_str(include_str!("../../../schemas/examples/status.json"))
            .expect("example status");
    s.site = SITE.into();
    s.node = node.into();
    s.observed_generation = generation;
    s.converged = converged;
    s.state = Some(web);
    s.deployments.truncate(1);
    s.deployments[0].name = "web".into();
    s.deployments[0].state = web;
    s
}

fn presence(online: bool) -> Presence {
    serde_json::from_value(serde_json::json!({
        "schema": "fleet.presence/v1", "online": online, "epoch": 1
    }))
    .expect("presence")
}

/// The engine's state as far as reconcile reads and writes it; `step` performs one
/// reconcile and applies what it returns, as the engine does.
#[derive(Default)]
struct World {
    fleet: Option<Fleet>,
    records: BTreeMap<String, PublishedRecord>,
    floors: BTreeMap<String, u64>,
    handed: BTreeMap<String, NodeDesired>,
    book: Bookkeeping,
    rollouts: BTreeMap<String, Rollout>,
    settled: bool,
}

impl World {
    fn new() -> Self {
        World {
            fleet: Some(Fleet::new(10_000)),
            settled: true,
            ..World::default()
        }
    }

    fn fleet(&mut self) -> &mut Fleet {
        self.fleet.get_or_insert_with(|| Fleet::new(10_000))
    }

    fn online(&mut self, node: &str) {
        self.fleet().presence(node, &presence(true), T0, false, "w");
    }

    fn report(&mut self, s: NodeStatus) {
        let node = s.node.clone();
        self.fleet().status(&node, s, T0, false, "w");
    }

    fn step(&mut self, docs: &SiteDocs, commit: &str) -> Reconciled {
        let revision = Revision {
            commit: commit.into(),
            path: "sites/s1".into(),
        };
        let fleet = self.fleet.take().unwrap_or_else(|| Fleet::new(10_000));
        let out = reconcile(&ReconcileInput {
            docs,
            revision: &revision,
            fleet: &fleet,
            mono_ms: T0,
            settled: self.settled,
            records: &self.records,
            floors: &self.floors,
            handed: &self.handed,
            rollbacks: &self.book.rollbacks,
            rollouts: &self.rollouts,
            now_ms: 42,
            issued_at: "2026-01-01T00:00:00.000Z",
        });
        self.fleet = Some(fleet);
        self.records.extend(out.records.clone());
        self.handed = out.handed.clone();
        self.rollouts = out.rollouts.clone();
        out
    }

    /// A status of `node` at its current generation that reports the `web` it was handed,
    /// in `state` (components with the handed spec hashes, healthy when installed).
    fn status_now(&self, node: &str, state: State) -> NodeStatus {
        let mut s = status(
            node,
            self.generation(node),
            state == State::Installed,
            state,
        );
        let dep = self.handed[node].get("web").expect("web handed");
        let template = s.deployments[0].components[0].clone();
        s.deployments[0].components = dep
            .spec
            .components
            .iter()
            .map(|c| schemas::ComponentStatus {
                name: c.name.clone(),
                state,
                spec_hash: Some(c.spec_hash.clone()),
                health: schemas::Health::None,
                restart_count: 0,
                error: (state == State::Failed)
                    .then(|| schemas::ErrorInfo::new("image_not_found", "no such tag")),
                retrying: false,
                ..template.clone()
            })
            .collect();
        s
    }

    fn generation(&self, node: &str) -> u64 {
        self.records.get(node).map_or(0, |r| r.generation)
    }

    fn image(&self, node: &str) -> Option<String> {
        let d = self.handed.get(node)?.get("web")?;
        Some(d.spec.components[0].image.clone())
    }
}

fn names(out: &Reconciled) -> Vec<&str> {
    out.records.keys().map(String::as_str).collect()
}

#[test]
fn generations_are_never_reused() {
    // (name, persisted generation of n1 or 0, floor read back, images served in turn,
    //  generation after each step)
    type Row = (
        &'static str,
        u64,
        u64,
        &'static [&'static str],
        &'static [u64],
    );
    let rows: [Row; 6] = [
        ("first publish", 0, 0, &["reg/web:1"], &[1]),
        (
            "same content, same generation",
            0,
            0,
            &["reg/web:1", "reg/web:1"],
            &[1, 1],
        ),
        (
            "content changes",
            0,
            0,
            &["reg/web:1", "reg/web:2"],
            &[1, 2],
        ),
        (
            "content back and forth: never an old generation",
            0,
            0,
            &["reg/web:1", "reg/web:2", "reg/web:1", "reg/web:2"],
            &[1, 2, 3, 4],
        ),
        ("persisted record continues", 7, 0, &["reg/web:2"], &[8]),
        (
            "floor read back from the broker is exceeded",
            7,
            20,
            &["reg/web:2"],
            &[21],
        ),
    ];
    for (name, persisted, floor, images, want) in rows {
        let mut w = World::new();
        if persisted > 0 {
            // A record persisted by an earlier process, for other content.
            w.records.insert(
                "n1".into(),
                PublishedRecord {
                    generation: persisted,
                    content_hash: "older".into(),
                    issued_at: "t".into(),
                    published_ms: 1,
                },
            );
        }
        if floor > 0 {
            w.floors.insert("n1".into(), floor);
        }
        for (i, (image, want)) in images.iter().zip(want.iter()).enumerate() {
            // The commit follows the content: the same image is the same document.
            let out = w.step(&site(&["n1"], image, "hold", None), &format!("c-{image}"));
            assert_eq!(w.generation("n1"), *want, "{name}: step {i}");
            assert_eq!(
                out.records.get("n1").map(|r| r.generation),
                (i == 0 || images[i - 1] != *image).then_some(*want),
                "{name}: step {i}: a record only when the content changed"
            );
            if let Some(r) = out.records.get("n1") {
                assert_eq!(r.issued_at, "2026-01-01T00:00:00.000Z", "{name}");
                assert_eq!(r.published_ms, 42, "{name}");
            }
        }
    }
}

#[test]
fn a_floor_from_a_read_back_generation_forces_a_new_generation_for_the_same_content() {
    let mut w = World::new();
    let docs = site(&["n1"], "reg/web:1", "hold", None);
    w.step(&docs, "c1");
    assert_eq!(w.generation("n1"), 1);
    w.floors.insert("n1".into(), 5);
    let out = w.step(&docs, "c1");
    assert_eq!(names(&out), ["n1"]);
    assert_eq!(w.generation("n1"), 6);
    // Once above the floor, the same content keeps its generation.
    let out = w.step(&docs, "c1");
    assert!(out.records.is_empty());
}

#[test]
fn pacing_hands_new_documents_to_at_most_max_parallel_nodes() {
    // Three nodes at web:1 (commit c1), then web:2 (commit c2) with maxParallel 1.
    // (name, online nodes, settled, reports before the second reconcile,
    //  nodes on web:2 after c2, waiting, in flight)
    type Row = (
        &'static str,
        &'static [&'static str],
        bool,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );
    let rows: [Row; 4] = [
        (
            "one at a time, in name order",
            &["n1", "n2", "n3"],
            true,
            &["n1"],
            &["n2", "n3"],
            &["n1"],
        ),
        (
            "offline nodes are skipped, not waited for",
            &["n2", "n3"],
            true,
            &["n2"],
            &["n1", "n3"],
            &["n2"],
        ),
        (
            "before presence settles, unheard nodes are not handed paced documents",
            &["n3"],
            false,
            &["n3"],
            &["n1", "n2"],
            &["n3"],
        ),
        (
            "nobody online: everybody waits",
            &[],
            true,
            &[],
            &["n1", "n2", "n3"],
            &[],
        ),
    ];
    for (name, online, settled, updated, waiting, in_flight) in rows {
        let mut w = World::new();
        w.settled = settled;
        for n in online {
            w.online(n);
        }
        let nodes = ["n1", "n2", "n3"];
        w.step(&site(&nodes, "reg/web:1", "hold", Some(1)), "c1");
        let out = w.step(&site(&nodes, "reg/web:2", "hold", Some(1)), "c2");
        let on_new: Vec<&str> = nodes
            .iter()
            .copied()
            .filter(|n| w.image(n).as_deref() == Some("reg/web:2"))
            .collect();
        assert_eq!(on_new, updated, "{name}: handed web:2");
        let r = out.rollout.clone().expect("paced");
        assert_eq!(r.max_parallel, 1, "{name}");
        assert_eq!(r.waiting, waiting, "{name}: waiting");
        assert_eq!(r.in_flight, in_flight, "{name}: in flight");
        // Only the granted nodes get a new generation; waiting ones keep their document
        // and generation.
        assert_eq!(names(&out), updated, "{name}: new records");
        for n in waiting {
            assert_eq!(w.generation(n), 1, "{name}: {n} keeps generation 1");
            assert_eq!(
                out.target[*n]
                    .get("web")
                    .map(|d| d.spec.components[0].image.as_str()),
                Some("reg/web:2"),
                "{name}: target of {n}"
            );
        }
    }
}

#[test]
fn the_next_node_is_granted_once_the_one_in_flight_passes() {
    let nodes = ["n1", "n2"];
    // (name, report of n1 at its generation, n2 granted, n1's image after)
    let rows = [
        (
            "still installing: n2 waits",
            Some(State::Installing),
            false,
            "reg/web:2",
        ),
        ("no report: n2 waits", None, false, "reg/web:2"),
        (
            "installed: n2 goes",
            Some(State::Installed),
            true,
            "reg/web:2",
        ),
        (
            "failed: the rollout rolls back, n2 never gets it",
            Some(State::Failed),
            false,
            "reg/web:1",
        ),
    ];
    for (name, report, granted, n1_image) in rows {
        let mut w = World::new();
        w.online("n1");
        w.online("n2");
        w.step(&site(&nodes, "reg/web:1", "hold", Some(1)), "c1");
        let v2 = site(&nodes, "reg/web:2", "hold", Some(1));
        w.step(&v2, "c2");
        assert_eq!(w.image("n1").as_deref(), Some("reg/web:2"), "{name}");
        if let Some(state) = report {
            let s = w.status_now("n1", state);
            w.report(s);
        }
        let out = w.step(&v2, "c2");
        assert_eq!(
            w.image("n2").as_deref() == Some("reg/web:2"),
            granted,
            "{name}: n2 handed web:2"
        );
        assert_eq!(out.records.contains_key("n2"), granted, "{name}: n2 record");
        assert_eq!(w.image("n1").as_deref(), Some(n1_image), "{name}: n1");
        assert_eq!(
            out.records.contains_key("n1"),
            n1_image == "reg/web:1",
            "{name}: n1 gets a new generation only when rolled back"
        );
    }
}

#[test]
fn an_offline_node_in_flight_holds_its_slot_only_until_presence_settles() {
    // (name, settled, n2 granted)
    let rows = [
        ("not settled: n1 may just not be heard yet", false, false),
        ("n1 is known offline: it frees its slot", true, true),
    ];
    for (name, settled, granted) in rows {
        let mut w = World::new();
        w.online("n1");
        w.online("n2");
        let nodes = ["n1", "n2"];
        w.step(&site(&nodes, "reg/web:1", "hold", Some(1)), "c1");
        let v2 = site(&nodes, "reg/web:2", "hold", Some(1));
        w.step(&v2, "c2");
        assert!(
            w.rollouts["web"].nodes.contains_key("n1"),
            "{name}: n1 in flight"
        );
        if settled {
            w.fleet().presence("n1", &presence(false), T0, false, "w");
        } else {
            // Just after an LO restart: nothing heard of n1 yet.
            w.fleet = Some(Fleet::new(10_000));
            w.online("n2");
        }
        w.settled = settled;
        let out = w.step(&v2, "c2");
        assert_eq!(
            w.image("n2").as_deref() == Some("reg/web:2"),
            granted,
            "{name}: n2 handed web:2"
        );
        let r = out.rollout.clone().expect("paced");
        assert_eq!(
            r.in_flight.contains(&"n1".to_owned()),
            !settled,
            "{name}: n1 slot"
        );
    }
}

#[test]
fn a_node_removed_from_the_site_gets_an_empty_document_once() {
    let mut w = World::new();
    w.step(&site(&["n1", "n2"], "reg/web:1", "hold", None), "c1");
    assert_eq!(w.generation("n2"), 1);
    // (step, commit, n2 record in the output, n2 generation after)
    let rows = [
        ("removed", "c2", true, 2),
        ("still removed", "c3", false, 2),
    ];
    for (name, commit, record, generation) in rows {
        let out = w.step(&site(&["n1"], "reg/web:1", "hold", None), commit);
        let doc = &out.handed["n2"];
        assert!(doc.deployments.is_empty(), "{name}: empty document");
        assert_eq!(out.target["n2"].deployments.len(), 0, "{name}: target");
        assert_eq!(out.records.contains_key("n2"), record, "{name}: record");
        assert_eq!(w.generation("n2"), generation, "{name}: generation");
        assert!(
            !out.inventory.nodes.contains_key("n2"),
            "{name}: not enrolled"
        );
    }
    // n1 keeps running web throughout (a new generation per commit: its revision changed).
    assert_eq!(w.generation("n1"), 3);
    assert_eq!(w.image("n1").as_deref(), Some("reg/web:1"));
}

/// The policy's decisions on a status report of n1, performed as the engine does.
fn decide(w: &mut World, s: &NodeStatus) -> DecisionOutcome {
    let g = w.generation("n1");
    let decisions = policy::decide(
        &w.handed["n1"],
        g,
        s,
        w.book.installed.get("n1").unwrap_or(&BTreeMap::new()),
        w.book.rollbacks.get("n1").unwrap_or(&BTreeMap::new()),
        w.book.held.get("n1").unwrap_or(&BTreeMap::new()),
    );
    let out = decided("n1", w.handed.get("n1"), decisions, "at");
    for c in out.changes.clone() {
        c.apply_to(&mut w.book, "n1");
    }
    out
}

#[test]
fn failures_lead_to_hold_rollback_or_rollback_failed() {
    // web:1 installs at generation 1; web:2 fails at generation 2.
    // (name, onFailure, whether web:1 was installed first, decisions, re-render, image
    //  handed after re-rendering)
    type Row = (
        &'static str,
        &'static str,
        bool,
        &'static [&'static str],
        bool,
        &'static str,
    );
    let rows: [Row; 3] = [
        (
            "policy hold",
            "hold+pause",
            true,
            &["hold"],
            false,
            "reg/web:2",
        ),
        (
            "rollback to the installed version",
            "rollback+pause",
            true,
            &["rollback"],
            true,
            "reg/web:1",
        ),
        (
            "rollback with nothing installed: held",
            "rollback+pause",
            false,
            &["hold"],
            false,
            "reg/web:2",
        ),
    ];
    for (name, on_failure, installed, kinds, rerender, image) in rows {
        let mut w = World::new();
        w.step(&site(&["n1"], "reg/web:1", on_failure, None), "c1");
        if installed {
            let out = decide(&mut w, &status("n1", 1, true, State::Installed));
            assert!(out.decided.is_empty(), "{name}: installed is no decision");
            assert!(
                matches!(out.changes[..], [BookChange::Installed { .. }]),
                "{name}"
            );
        }
        let v2 = site(&["n1"], "reg/web:2", on_failure, None);
        w.step(&v2, "c2");
        assert_eq!(w.generation("n1"), 2, "{name}");
        let out = decide(&mut w, &status("n1", 2, false, State::Failed));
        let got: Vec<&str> = out.decided.iter().map(|d| d.kind).collect();
        assert_eq!(got, kinds, "{name}: decisions");
        assert_eq!(out.rerender, rerender, "{name}: re-render");
        for d in &out.decided {
            assert_eq!(d.audit.kind, "decided", "{name}");
            assert_eq!(d.audit.node.as_deref(), Some("n1"), "{name}");
            assert_eq!(d.audit.deployment.as_deref(), Some("web"), "{name}");
            assert_eq!(d.audit.at, "at", "{name}");
        }
        let out = w.step(&v2, "c2");
        assert_eq!(
            w.image("n1").as_deref(),
            Some(image),
            "{name}: handed after"
        );
        assert_eq!(
            out.records.contains_key("n1"),
            rerender,
            "{name}: new generation"
        );
        // The same failure reported again is not decided twice.
        let again = decide(&mut w, &status("n1", 2, false, State::Failed));
        assert!(again.decided.is_empty(), "{name}: decided once");
    }
}

#[test]
fn a_failed_rollback_is_reported_once_and_nothing_more_is_tried() {
    let mut w = World::new();
    w.step(&site(&["n1"], "reg/web:1", "rollback+pause", None), "c1");
    decide(&mut w, &status("n1", 1, true, State::Installed));
    let v2 = site(&["n1"], "reg/web:2", "rollback+pause", None);
    w.step(&v2, "c2");
    decide(&mut w, &status("n1", 2, false, State::Failed));
    w.step(&v2, "c2");
    assert_eq!(w.generation("n1"), 3);
    assert_eq!(w.image("n1").as_deref(), Some("reg/web:1"));
    // (report at generation 3, decisions, rollback marked failed again)
    let rows = [
        ("rolled-back version fails", &["rollback_failed"][..], true),
        ("fails again: nothing new", &[][..], true),
    ];
    for (name, kinds, failed_again) in rows {
        let out = decide(&mut w, &status("n1", 3, false, State::Failed));
        let got: Vec<&str> = out.decided.iter().map(|d| d.kind).collect();
        assert_eq!(got, kinds, "{name}");
        assert!(!out.rerender, "{name}");
        assert_eq!(
            w.book.rollbacks["n1"]["web"].failed_again, failed_again,
            "{name}"
        );
        // The override stays: the node keeps the rolled-back version and generation.
        let out = w.step(&v2, "c2");
        assert!(out.records.is_empty(), "{name}: no new generation");
        assert_eq!(w.image("n1").as_deref(), Some("reg/web:1"), "{name}");
    }
}

#[test]
fn after_a_connack_everything_or_only_the_unsent_is_published() {
    let handed: BTreeMap<String, NodeDesired> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| {
            (
                (*n).to_owned(),
                NodeDesired::empty(Revision {
                    commit: "c".into(),
                    path: "p".into(),
                }),
            )
        })
        .collect();
    let unsent: BTreeSet<String> = ["n2".to_owned()].into();
    let all = || Republish::All(vec!["n1".into(), "n2".into(), "n3".into()]);
    // (name, first connection, session present, what is published)
    let rows = [
        ("first connection, no session", true, false, all()),
        (
            "first connection of a new process on a kept session",
            true,
            true,
            all(),
        ),
        ("reconnect, session lost", false, false, all()),
        (
            "reconnect, session kept: only the unsent",
            false,
            true,
            Republish::Unsent(vec!["n2".into()]),
        ),
    ];
    for (name, first, present, want) in rows {
        assert_eq!(
            after_connect(first, present, &handed, &unsent),
            want,
            "{name}"
        );
    }
}

fn files(list: &[(&str, String)]) -> SiteFiles {
    SiteFiles {
        files: list
            .iter()
            .map(|(p, c)| ((*p).to_owned(), c.clone()))
            .collect(),
        problems: Vec::new(),
    }
}

#[test]
fn a_commit_is_served_rejected_or_held() {
    let web = (
        "sites/s1/web.yaml",
        deployment_doc("web", "reg/web:1", "hold"),
    );
    let api = (
        "sites/s1/api.yaml",
        deployment_doc("api", "reg/api:1", "hold"),
    );
    let n1 = ("sites/s1/n1.yaml", node_doc("n1"));
    let mut refused = files(&[web.clone(), n1.clone()]);
    refused.problems.push(DocProblem {
        file: "sites/s1/link.yaml".into(),
        line: None,
        field: None,
        message: "symbolic link in the site folder: refused".into(),
    });
    let broken = ("sites/s1/bad.yaml", "kind: [".to_owned());
    let both: BTreeSet<String> = ["api".to_owned(), "db".to_owned(), "web".to_owned()].into();
    let tiny = SiteLimits {
        max_desired_bytes: 64,
        ..SiteLimits::default()
    };
    let default = SiteLimits::default();
    // (name, files, limits, served names, restored, outcome: "serve" | "reject: <message
    //  part>, <problem file>" | "hold")
    type Row<'a> = (
        &'a str,
        SiteFiles,
        &'a SiteLimits,
        Option<&'a BTreeSet<String>>,
        bool,
        &'a str,
    );
    let rows: Vec<Row<'_>> = vec![
        (
            "valid",
            files(&[web.clone(), n1.clone()]),
            &default,
            None,
            false,
            "serve",
        ),
        (
            "missing or empty folder",
            files(&[]),
            &default,
            Some(&both),
            false,
            "reject: missing or empty, sites/s1",
        ),
        (
            "a refused entry",
            refused,
            &default,
            None,
            false,
            "reject: invalid, sites/s1/link.yaml",
        ),
        (
            "a document that does not parse",
            files(&[web.clone(), n1.clone(), broken]),
            &default,
            None,
            false,
            "reject: invalid, sites/s1/bad.yaml",
        ),
        (
            "a desired document above the limit",
            files(&[web.clone(), n1.clone()]),
            &tiny,
            None,
            false,
            "reject: invalid, ",
        ),
        (
            "two of three deployments removed (above 50%): held",
            files(&[web.clone(), n1.clone()]),
            &default,
            Some(&both),
            false,
            "hold",
        ),
        (
            "every deployment removed: held",
            files(std::slice::from_ref(&n1)),
            &default,
            Some(&both),
            false,
            "hold",
        ),
        (
            "restored at start: never held",
            files(&[web.clone(), n1.clone()]),
            &default,
            Some(&both),
            true,
            "serve",
        ),
        (
            "one of three removed (within 50%)",
            files(&[web, api, n1]),
            &default,
            Some(&both),
            false,
            "serve",
        ),
    ];
    let fleet = Fleet::new(10_000);
    for (name, files, limits, served, restored, want) in rows {
        let got = check_commit(&CommitInput {
            site: SITE,
            site_path: "sites/s1",
            commit: "c1",
            files: &files,
            limits,
            fleet: &fleet,
            served,
            flags: GuardFlags::default(),
            restored,
        });
        match (got, want) {
            (CommitCheck::Serve(docs), "serve") => {
                assert!(docs.nodes.contains_key("n1"), "{name}");
            }
            (CommitCheck::Hold(reason), "hold") => {
                assert!(reason.contains("removes"), "{name}: {reason}");
            }
            (CommitCheck::Reject { message, problems }, want) if want.starts_with("reject") => {
                let (part, file) = want["reject: ".len()..].split_once(", ").expect("row");
                assert!(message.contains(part), "{name}: {message}");
                assert!(!problems.is_empty(), "{name}");
                assert!(
                    problems.iter().any(|p| p.file.starts_with(file)),
                    "{name}: {problems:?}"
                );
            }
            (got, want) => panic!("{name}: want {want}, got {got:?}"),
        }
    }
}
