//! The rollout view: the exact wave of every node for a table of strategies, the same
//! waves and "now" as [`rollout::step`] hands out on random sites, and the plan annotated.
use super::*;
use crate::preview::{plan, NodeInput};
use crate::render::{self, Dep, Labels};
use crate::rollout::{step, NodeIn, StepIn};
use schemas::component::Component;
use schemas::site::{Amount, Wave};
use schemas::state::Health;
use schemas::wire::{AgentInfo, RuntimeInfo, StatusSchema};
use schemas::{ComponentStatus, DeploymentStatus, DesiredDeployment, FailurePolicy, Revision};

fn strategy(waves: &[Amount], max_parallel: Option<u32>) -> RolloutStrategy {
    RolloutStrategy {
        max_parallel,
        waves: waves
            .iter()
            .map(|&nodes| Wave {
                nodes,
                soak_ms: 0,
                failure_threshold: None,
            })
            .collect(),
        ..RolloutStrategy::default()
    }
}

/// Ten nodes `n00`…`n09`, `n07` a canary, `n02` and `n05` offline: in rollout order.
fn ten_nodes() -> Vec<(String, Labels, bool)> {
    (0..10)
        .map(|i| {
            let mut l = Labels::new();
            if i == 7 {
                l.insert(rollout::CANARY_LABEL.into(), "true".into());
            }
            (format!("n{i:02}"), l, i != 2 && i != 5)
        })
        .collect()
}

fn ordered(nodes: &[(String, Labels, bool)]) -> Vec<(&str, bool)> {
    let online: BTreeMap<&str, bool> = nodes.iter().map(|(n, _, o)| (n.as_str(), *o)).collect();
    rollout::order(nodes.iter().map(|(n, l, _)| (n.as_str(), l)))
        .into_iter()
        .map(|n| (n, online[n]))
        .collect()
}

/// Per node in rollout order: (1-based wave, 0 for none; gets it now).
type Want = [(usize, bool); 10];

#[test]
fn the_wave_of_every_node_and_who_gets_it_now() {
    let nodes = ten_nodes();
    let order = ordered(&nodes);
    let names: Vec<&str> = order.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["n07", "n00", "n01", "n02", "n03", "n04", "n05", "n06", "n08", "n09"],
        "the canary first, then by name"
    );
    let (c, p) = (Amount::Count, Amount::Percent);
    let paused = RolloutStrategy {
        paused: true,
        ..strategy(&[c(1), p(50), p(100)], None)
    };
    // (case, strategy, per node in rollout order: (1-based wave, 0 = none; now)).
    let cases: Vec<(&str, RolloutStrategy, Want)> = vec![
        (
            "waves [1, 50%, 100%], maxParallel 1: the canary alone now; 50% of 10 is 5 nodes \
             reached, the offline ones skipped",
            strategy(&[c(1), p(50), p(100)], Some(1)),
            [
                (1, true),
                (2, false),
                (2, false),
                (0, false),
                (2, false),
                (2, false),
                (0, false),
                (3, false),
                (3, false),
                (3, false),
            ],
        ),
        (
            "waves [40%, 100%], maxParallel 2: four nodes in the first wave, two of them now",
            strategy(&[p(40), p(100)], Some(2)),
            [
                (1, true),
                (1, true),
                (1, false),
                (0, false),
                (1, false),
                (2, false),
                (0, false),
                (2, false),
                (2, false),
                (2, false),
            ],
        ),
        (
            "maxParallel 0 behaves like 1",
            strategy(&[p(40), p(100)], Some(0)),
            [
                (1, true),
                (1, false),
                (1, false),
                (0, false),
                (1, false),
                (2, false),
                (0, false),
                (2, false),
                (2, false),
                (2, false),
            ],
        ),
        (
            "the default: one wave, everyone now, offline nodes too",
            RolloutStrategy::default(),
            [(1, true); 10],
        ),
        (
            "one wave with maxParallel 3: offline nodes skipped, three now",
            strategy(&[p(100)], Some(3)),
            [
                (1, true),
                (1, true),
                (1, true),
                (0, false),
                (1, false),
                (1, false),
                (0, false),
                (1, false),
                (1, false),
                (1, false),
            ],
        ),
        (
            "paused: the same waves, nobody now",
            paused,
            [
                (1, false),
                (2, false),
                (2, false),
                (0, false),
                (2, false),
                (2, false),
                (0, false),
                (3, false),
                (3, false),
                (3, false),
            ],
        ),
    ];
    for (name, s, want) in cases {
        let got: Vec<(usize, bool)> = slots(&s, &order)
            .into_iter()
            .map(|s| (s.wave.map_or(0, |w| w + 1), s.now))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

fn component(image: &str) -> Component {
    let c: Component = serde_json::from_value(serde_json::json!({"name": "main", "image": image}))
        .expect("component");
    c.with_hash()
}

fn installed(d: &Dep) -> DeploymentStatus {
    DeploymentStatus {
        name: d.spec.name.clone(),
        state: State::Installed,
        commit: Some(d.spec.commit.clone()),
        components: d
            .spec
            .components
            .iter()
            .map(|c| ComponentStatus {
                name: c.name.clone(),
                state: State::Installed,
                spec_hash: Some(c.spec_hash.clone()),
                container_id: Some("id".into()),
                container_status: Some("running".into()),
                health: Health::None,
                restart_count: 0,
                image: Some(c.image.clone()),
                image_id: None,
                repo_digest: None,
                attempts: 0,
                error: None,
                retrying: false,
                next_attempt_at: None,
            })
            .collect(),
    }
}

/// What [`rollout::step`] does with a new deployment whose nodes all pass at once: per
/// node, the 0-based wave it was handed the candidate in (`None`: never), and whether it
/// was handed it by the first step.
fn stepped(s: &RolloutStrategy, order: &[(&str, bool)]) -> Vec<(Option<usize>, bool)> {
    let served = Dep::new(DesiredDeployment {
        name: "web".into(),
        commit: "c2".into(),
        policy: FailurePolicy::default(),
        components: vec![component("reg/web:2")],
    });
    let report = installed(&served);
    let nodes: Vec<NodeIn<'_>> = order
        .iter()
        .map(|&(name, online)| NodeIn {
            name,
            online,
            known: true,
            report: online.then_some(&report),
        })
        .collect();
    let mut prev = None;
    let mut wave: BTreeMap<String, usize> = BTreeMap::new();
    let mut now = Vec::new();
    for round in 0..100 {
        let (next, _) = step(
            prev.as_ref(),
            &StepIn {
                served: &served,
                strategy: s,
                nodes: &nodes,
                now_ms: 1000 + round,
                fallback_promoted: None,
            },
        );
        for (n, t) in &next.nodes {
            wave.entry(n.clone()).or_insert(t.wave);
            if round == 0 {
                now.push(n.clone());
            }
        }
        if next.candidate.is_none() || s.paused {
            break;
        }
        prev = Some(next);
    }
    order
        .iter()
        .map(|(n, _)| (wave.get(*n).copied(), now.iter().any(|m| m == n)))
        .collect()
}

#[test]
fn the_same_waves_as_the_rollout_hands_out() {
    let mut rng = fastrand::Rng::with_seed(11);
    for case in 0..400 {
        let nodes: Vec<(String, Labels, bool)> = (0..rng.usize(0..13))
            .map(|i| {
                let mut l = Labels::new();
                if rng.u8(0..4) == 0 {
                    l.insert(rollout::CANARY_LABEL.into(), "true".into());
                }
                (format!("n{i:02}"), l, rng.u8(0..4) != 0)
            })
            .collect();
        let waves: Vec<Amount> = (0..rng.usize(1..5))
            .map(|_| match rng.bool() {
                true => Amount::Count(rng.u32(1..8)),
                false => Amount::Percent(rng.u8(1..=100)),
            })
            .collect();
        let s = RolloutStrategy {
            paused: rng.u8(0..8) == 0,
            ..strategy(&waves, rng.bool().then(|| rng.u32(0..4)))
        };
        let order = ordered(&nodes);
        let want = stepped(&s, &order);
        let got = slots(&s, &order);
        for ((n, _), (slot, (wave, now))) in order.iter().zip(got.iter().zip(want)) {
            assert_eq!(slot.now, now, "case {case} node {n}: {s:?} {order:?}");
            if !s.paused {
                assert_eq!(slot.wave, wave, "case {case} node {n}: {s:?} {order:?}");
            }
        }
    }
}

const OLD: &str = "1111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222";

fn node_status(node: &str, deployments: Vec<DeploymentStatus>) -> NodeStatus {
    NodeStatus {
        signature: None,
        schema: StatusSchema::V1,
        site: "s1".into(),
        node: node.into(),
        observed_generation: 1,
        revision: None,
        state: None,
        converged: false,
        reported_at: "t".into(),
        deployments,
        unmanaged: vec![],
        runtime: RuntimeInfo {
            kind: "fake".into(),
            version: None,
            reachable: true,
            error: None,
        },
        agent: AgentInfo {
            rejected_documents: 0,
            images_removed: 0,
            image_bytes_freed: 0,
            version: "0".into(),
            uptime_s: 1,
        },
        rejected: None,
    }
}

/// The site of the table: ten nodes, `web` rolled out in waves [1, 50%, 100%] with
/// maxParallel 1, `db` with the default strategy.
fn site() -> SiteDocs {
    let nodes: String = (0..10)
        .map(|i| {
            let canary = if i == 7 {
                "    edgefleet.io/canary: \"true\"\n"
            } else {
                ""
            };
            format!("---\napiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: n{i:02}\n  labels:\n    role: gw\n{canary}")
        })
        .collect();
    let apps = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  rollout:\n    maxParallel: 1\n    waves:\n      - nodes: 1\n      - nodes: \"50%\"\n      - nodes: \"100%\"\n  components:\n    - name: main\n      image: reg/web:2\n---\napiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: db\nspec:\n  components:\n    - name: main\n      image: reg/db:1\n";
    schemas::site::load_site(
        "s1",
        [
            ("sites/s1/nodes.yaml", nodes.as_str()),
            ("sites/s1/apps.yaml", apps),
        ],
    )
    .expect("valid site")
}

#[test]
fn the_plan_shows_the_wave_of_each_changed_deployment() {
    let docs = site();
    let inv = render::inventory(&docs, []);
    let revision = Revision {
        commit: NEW.into(),
        path: "sites/s1".into(),
    };
    let rendered = render::render(&docs, &revision, &inv, &BTreeMap::new());
    let served = render::site_deployments(&docs, NEW);
    let (web, db) = (&served["web"].0, &served["db"].0);
    let old_web = Dep::new(DesiredDeployment {
        name: "web".into(),
        commit: OLD.into(),
        policy: FailurePolicy::default(),
        components: vec![component("reg/web:1")],
    });
    let offline = ["n02", "n05"];
    // n03 already runs the new web; n09 sent no status; the others run the old web.
    let statuses: BTreeMap<String, NodeStatus> = inv
        .nodes
        .keys()
        .filter(|n| *n != "n09")
        .map(|n| {
            let w = if n == "n03" { web } else { &old_web };
            (n.clone(), node_status(n, vec![installed(db), installed(w)]))
        })
        .collect();
    let desired: BTreeMap<&str, Vec<&DesiredDeployment>> = rendered
        .iter()
        .map(|(n, d)| (n.as_str(), d.deployments.iter().map(|x| &*x.spec).collect()))
        .collect();
    let online = |n: &str| !offline.contains(&n);
    let mut p = plan(
        "s1",
        NEW,
        desired.iter().map(|(n, ds)| {
            (
                *n,
                NodeInput {
                    desired: ds,
                    observed: statuses.get(*n),
                    online: online(n),
                    paced: false,
                },
            )
        }),
    );
    annotate(&mut p, &deployments(&docs, &inv, online), |n| {
        statuses.get(n)
    });

    let view = |node: &str, dep: &str| {
        let n = p.nodes.iter().find(|x| x.node == node).expect("node");
        let d = n.deployments.iter().find(|d| d.deployment == dep);
        d.and_then(|d| d.rollout.as_ref())
            .map(|r| (r.wave, r.waves, r.now, r.text.as_str()))
    };
    let waiting = |node: &str| {
        let n = p.nodes.iter().find(|x| x.node == node).expect("node");
        n.waiting.clone()
    };
    assert_eq!(
        view("n07", "web"),
        Some((
            Some(1),
            3,
            true,
            "wave 1/3 (canary): gets web@222222222222 now"
        ))
    );
    assert_eq!(waiting("n07"), None);
    for n in ["n00", "n01", "n04"] {
        assert_eq!(
            view(n, "web"),
            Some((
                Some(2),
                3,
                false,
                "wave 2/3: keeps web@111111111111 until wave 1 passes"
            )),
            "{n}"
        );
        assert_eq!(
            waiting(n).as_deref(),
            Some("waiting for its turn (rollout wave 2/3)"),
            "{n}"
        );
    }
    for n in ["n06", "n08"] {
        assert_eq!(
            view(n, "web"),
            Some((
                Some(3),
                3,
                false,
                "wave 3/3: keeps web@111111111111 until wave 2 passes"
            )),
            "{n}"
        );
    }
    for n in offline {
        assert_eq!(
            view(n, "web"),
            Some((
                None,
                3,
                false,
                "no wave (offline, skipped): keeps web@111111111111; its turn comes when back online"
            )),
            "{n}"
        );
        assert_eq!(waiting(n).as_deref(), Some("waiting for node (offline)"));
    }
    // Unchanged: no wave, nothing waits.
    assert_eq!(view("n03", "web"), None);
    assert_eq!(waiting("n03"), None);
    for n in inv.nodes.keys().filter(|n| *n != "n09") {
        assert_eq!(view(n, "db"), None, "{n}: db is unchanged");
    }
    // No status: the current version is unknown; db (default strategy) installs now, so
    // the node does not wait as a whole.
    assert_eq!(
        view("n09", "web"),
        Some((
            Some(3),
            3,
            false,
            "wave 3/3: keeps its current web (unknown: no status) until wave 2 passes"
        ))
    );
    assert_eq!(
        view("n09", "db"),
        Some((Some(1), 1, true, "wave 1/1: gets db@222222222222 now"))
    );
    assert_eq!(waiting("n09"), None);

    let text = p.to_string();
    assert!(
        text.contains("  ~ update web: spec changed (111111111111 -> 222222222222)\n    wave 2/3: keeps web@111111111111 until wave 1 passes\n      update main: image reg/web:1 -> reg/web:2\n"),
        "{text}"
    );
    assert!(
        text.contains("node n00 (online) — waiting for its turn (rollout wave 2/3)"),
        "{text}"
    );
    let json = serde_json::to_value(&p).expect("json");
    let n00 = &json["nodes"][0];
    assert_eq!(n00["node"], "n00");
    assert_eq!(n00["deployments"][0]["deployment"], "db");
    assert!(n00["deployments"][0].get("rollout").is_none());
    assert_eq!(
        n00["deployments"][1]["rollout"],
        serde_json::json!({"wave": 2, "waves": 3, "now": false})
    );
    assert_eq!(
        json["nodes"][2]["deployments"][1]["rollout"],
        serde_json::json!({"wave": null, "waves": 3, "now": false}),
        "n02 offline"
    );
}

fn two_nodes(s: &RolloutStrategy) -> DeploymentWaves<'_> {
    DeploymentWaves {
        strategy: s,
        nodes: vec![("a", true), ("b", true)],
    }
}

#[test]
fn paced_and_paused_nodes_are_marked_waiting() {
    let step = |dep: &str| crate::preview::DeploymentStep {
        deployment: dep.into(),
        action: DeploymentAction::Install,
        reason: "desired but not on the node".into(),
        components: vec![],
        rollout: None,
    };
    let node = |n: &str| crate::preview::NodePlan {
        node: n.into(),
        online: true,
        waiting: None,
        deployments: vec![step("web")],
    };
    let paced = strategy(&[Amount::Percent(100)], Some(1));
    let paused = RolloutStrategy {
        paused: true,
        ..RolloutStrategy::default()
    };
    for (s, a_now, want_b, text_b) in [
        (
            &paced,
            true,
            rollout::WAITING,
            "wave 1/1: runs no web until a slot frees (maxParallel 1)",
        ),
        (
            &paused,
            false,
            "waiting for the rollout to resume (paused)",
            "wave 1/1: runs no web while the rollout is paused",
        ),
    ] {
        let mut p = Plan {
            site: "s1".into(),
            commit: NEW.into(),
            nodes: vec![node("a"), node("b")],
            summary: BTreeMap::new(),
        };
        // a sent no status; b runs nothing.
        let empty = node_status("b", vec![]);
        annotate(&mut p, &BTreeMap::from([("web", two_nodes(s))]), |n| {
            (n == "b").then_some(&empty)
        });
        let a = p.nodes[0].deployments[0].rollout.as_ref().expect("view");
        assert_eq!(a.now, a_now);
        assert_eq!(p.nodes[0].waiting.is_none(), a_now);
        assert_eq!(p.nodes[1].waiting.as_deref(), Some(want_b));
        let b = p.nodes[1].deployments[0].rollout.as_ref().expect("view");
        assert_eq!(b.text, text_b);
        assert!(!b.now);
    }
}
