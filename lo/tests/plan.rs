//! Table tests of the pure core: plan actions, targeting, offline nodes, rollback choice,
//! deletion guard.
#![allow(clippy::type_complexity)]

use lo::policy::{decide, deletion_guard, Decision, GuardFlags, RollbackMark};
use lo::preview::{plan, plan_node, ComponentAction as C, DeploymentAction as A, NodeInput};
use lo::render::{self, Dep, NodeDesired, RollbackOverride};
use schemas::component::Component;
use schemas::site::SiteSpec;
use schemas::state::{Health, State};
use schemas::{
    AgentInfo, ComponentStatus, DeploymentStatus, DesiredDeployment, FailurePolicy, NodeStatus,
    OnFailure, Revision, RuntimeInfo, StatusSchema,
};
use std::collections::{BTreeMap, BTreeSet};

fn comp(name: &str, image: &str, env: &[(&str, &str)]) -> Component {
    let mut c: Component =
        serde_json::from_value(serde_json::json!({"name": name, "image": image}))
            .expect("component");
    for (k, v) in env {
        c.env.insert((*k).into(), (*v).into());
    }
    c.with_hash()
}

fn dep(name: &str, commit: &str, comps: Vec<Component>) -> DesiredDeployment {
    DesiredDeployment {
        name: name.into(),
        commit: commit.into(),
        policy: FailurePolicy::default(),
        components: comps,
    }
}

fn running(c: &Component) -> ComponentStatus {
    ComponentStatus {
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
    }
}

fn dstatus(
    name: &str,
    commit: &str,
    state: State,
    comps: Vec<ComponentStatus>,
) -> DeploymentStatus {
    DeploymentStatus {
        name: name.into(),
        state,
        commit: Some(commit.into()),
        components: comps,
    }
}

fn status(node: &str, generation: u64, deps: Vec<DeploymentStatus>) -> NodeStatus {
    NodeStatus {
        signature: None,
        schema: StatusSchema::V1,
        site: "s1".into(),
        node: node.into(),
        observed_generation: generation,
        revision: None,
        state: None,
        converged: false,
        reported_at: "t".into(),
        deployments: deps,
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

#[test]
fn every_deployment_and_component_action() {
    let web1 = comp("web", "reg/web:1", &[]);
    let web2 = comp("web", "reg/web:2", &[]);
    let web1_env = comp("web", "reg/web:1", &[("A", "1")]);
    let cache = comp("cache", "reg/cache:1", &[]);
    let sidecar = comp("sidecar", "reg/side:1", &[]);

    let mut failed = running(&web1);
    failed.state = State::Failed;
    failed.error = Some(schemas::ErrorInfo::new("start_failed", "exit 1"));
    let mut unhealthy = running(&web1);
    unhealthy.health = Health::Unhealthy;
    let mut removed = running(&web1);
    removed.state = State::Removed;

    struct Case {
        name: &'static str,
        desired: Vec<DesiredDeployment>,
        observed: Vec<DeploymentStatus>,
        want: Vec<(&'static str, A, Vec<(&'static str, C)>)>,
    }
    let cases = vec![
        Case {
            name: "install on an empty node",
            desired: vec![dep("app", "c2", vec![web1.clone(), cache.clone()])],
            observed: vec![],
            want: vec![("app", A::Install, vec![("web", C::Add), ("cache", C::Add)])],
        },
        Case {
            name: "noop when specs match",
            desired: vec![dep("app", "c2", vec![web1.clone()])],
            observed: vec![dstatus("app", "c1", State::Installed, vec![running(&web1)])],
            want: vec![("app", A::Noop, vec![])],
        },
        Case {
            name: "update: new image",
            desired: vec![dep("app", "c2", vec![web2.clone()])],
            observed: vec![dstatus("app", "c1", State::Installed, vec![running(&web1)])],
            want: vec![("app", A::Update, vec![("web", C::Update)])],
        },
        Case {
            name: "update: same image, other settings -> replace",
            desired: vec![dep("app", "c2", vec![web1_env.clone()])],
            observed: vec![dstatus("app", "c1", State::Installed, vec![running(&web1)])],
            want: vec![("app", A::Update, vec![("web", C::Replace)])],
        },
        Case {
            name: "update: component added and removed",
            desired: vec![dep("app", "c2", vec![web1.clone(), cache.clone()])],
            observed: vec![dstatus(
                "app",
                "c1",
                State::Installed,
                vec![running(&web1), running(&sidecar)],
            )],
            want: vec![(
                "app",
                A::Update,
                vec![("cache", C::Add), ("sidecar", C::Remove)],
            )],
        },
        Case {
            name: "delete: no longer desired",
            desired: vec![],
            observed: vec![dstatus("old", "c1", State::Installed, vec![running(&web1)])],
            want: vec![("old", A::Delete, vec![("web", C::Remove)])],
        },
        Case {
            name: "already removed: nothing",
            desired: vec![],
            observed: vec![dstatus("old", "c1", State::Removed, vec![removed.clone()])],
            want: vec![],
        },
        Case {
            name: "restart: failed at the desired spec",
            desired: vec![dep("app", "c1", vec![web1.clone()])],
            observed: vec![dstatus("app", "c1", State::Failed, vec![failed.clone()])],
            want: vec![("app", A::Restart, vec![("web", C::Restart)])],
        },
        Case {
            name: "restart: unhealthy",
            desired: vec![dep("app", "c1", vec![web1.clone()])],
            observed: vec![dstatus(
                "app",
                "c1",
                State::Installed,
                vec![unhealthy.clone()],
            )],
            want: vec![("app", A::Restart, vec![("web", C::Restart)])],
        },
    ];
    for case in cases {
        let refs: Vec<&DesiredDeployment> = case.desired.iter().collect();
        let st = status("n1", 1, case.observed.clone());
        let p = plan_node(
            "n1",
            NodeInput {
                desired: &refs,
                observed: Some(&st),
                online: true,
                paced: false,
            },
        );
        let got: Vec<(&str, A, Vec<(&str, C)>)> = p
            .deployments
            .iter()
            .map(|d| {
                (
                    d.deployment.as_str(),
                    d.action,
                    d.components
                        .iter()
                        .map(|c| (c.component.as_str(), c.action))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(got, case.want, "case: {}", case.name);
        for d in &p.deployments {
            assert!(
                !d.reason.is_empty(),
                "case {}: every step has a reason",
                case.name
            );
        }
        assert_eq!(p.waiting, None, "case: {}", case.name);
    }
}

#[test]
fn offline_node_waits_and_plan_orders_nodes() {
    let web = comp("web", "reg/web:1", &[]);
    let d = [dep("app", "c1", vec![web.clone()])];
    let refs: Vec<&DesiredDeployment> = d.iter().collect();
    let st = status(
        "b",
        1,
        vec![dstatus("app", "c1", State::Installed, vec![running(&web)])],
    );
    let p = plan(
        "s1",
        "c1",
        vec![
            (
                "c",
                NodeInput {
                    desired: &refs,
                    observed: None,
                    online: false,
                    paced: false,
                },
            ),
            (
                "b",
                NodeInput {
                    desired: &refs,
                    observed: Some(&st),
                    online: false,
                    paced: false,
                },
            ),
            (
                "a",
                NodeInput {
                    desired: &refs,
                    observed: None,
                    online: true,
                    paced: true,
                },
            ),
        ],
    );
    let names: Vec<&str> = p.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    assert_eq!(
        p.nodes[0].waiting.as_deref(),
        Some("waiting for its turn (rollout maxParallel)")
    );
    assert_eq!(
        p.nodes[1].waiting, None,
        "nothing to do: nothing to wait for"
    );
    assert_eq!(
        p.nodes[2].waiting.as_deref(),
        Some("waiting for node (offline)")
    );
    assert_eq!(p.summary.get(&A::Install), Some(&2));
    assert_eq!(p.summary.get(&A::Noop), Some(&1));
    assert!(p.has_changes());
    let text = p.to_string();
    assert!(text.contains("+ install app"), "{text}");
    let json = serde_json::to_value(&p).expect("json");
    assert_eq!(json["nodes"][2]["deployments"][0]["action"], "install");
}

#[test]
fn targeting_by_labels_and_node_lists() {
    let files = [
        (
            "sites/s1/nodes.yaml",
            "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: gw-1\n  labels:\n    role: gateway\n---\napiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: gw-2\n  labels:\n    role: gateway\n    zone: b\n---\napiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: cam-1\n  labels:\n    role: camera\n",
        ),
        (
            "sites/s1/apps.yaml",
            "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  nodeSelector:\n    role: gateway\n  components:\n    - name: web\n      image: reg/web:1\n---\napiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: zoneb\nspec:\n  nodeSelector:\n    role: gateway\n    zone: b\n  components:\n    - name: z\n      image: reg/z:1\n---\napiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: pinned\nspec:\n  nodes: [cam-1]\n  components:\n    - name: p\n      image: reg/p:1\n---\napiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: everywhere\nspec:\n  components:\n    - name: e\n      image: reg/e:1\n",
        ),
    ];
    let docs = schemas::site::load_site("s1", files.iter().map(|(a, b)| (*a, *b))).expect("valid");
    let rev = Revision {
        commit: "c1".into(),
        path: "sites/s1".into(),
    };
    let inv = render::inventory(&docs, []);
    let out = render::render(&docs, &rev, &inv, &BTreeMap::new());
    let names = |n: &str| -> Vec<&str> { out[n].deployments.iter().map(|d| d.name()).collect() };
    assert_eq!(names("gw-1"), vec!["everywhere", "web"]);
    assert_eq!(names("gw-2"), vec!["everywhere", "web", "zoneb"]);
    assert_eq!(names("cam-1"), vec!["everywhere", "pinned"]);
}

fn nd(deps: Vec<DesiredDeployment>) -> NodeDesired {
    NodeDesired {
        revision: Revision {
            commit: "c2".into(),
            path: "sites/s1".into(),
        },
        deployments: deps.into_iter().map(Dep::new).collect(),
    }
}

#[test]
fn rollback_choice() {
    let v1 = comp("web", "reg/web:1", &[]);
    let v2 = comp("web", "reg/web:2", &[]);
    let rb_policy = FailurePolicy {
        on_failure: OnFailure::Rollback,
        ..FailurePolicy::default()
    };
    let mut d2 = dep("app", "c2", vec![v2.clone()]);
    d2.policy = rb_policy;
    let mut d1 = dep("app", "c1", vec![v1.clone()]);
    d1.policy = rb_policy;
    let desired = nd(vec![d2.clone()]);
    let installed_v1 = BTreeMap::from([("app".to_owned(), Dep::new(d1.clone()))]);
    let failed = status("n1", 5, vec![dstatus("app", "c2", State::Failed, vec![])]);
    let none = BTreeMap::new();
    let no_rb: BTreeMap<String, RollbackMark> = BTreeMap::new();

    // Policy rollback with an installed earlier version: roll back to it.
    let got = decide(&desired, 5, &failed, &installed_v1, &no_rb, &none);
    let mark = match got.as_slice() {
        [Decision::Rollback { deployment, mark }] if deployment == "app" => mark.clone(),
        other => panic!("expected a rollback, got {other:?}"),
    };
    assert_eq!(mark.over.to.spec.commit, "c1");
    assert_eq!(mark.failed_commit, "c2");

    // A report about an older generation decides nothing.
    assert!(decide(&desired, 6, &failed, &installed_v1, &no_rb, &none).is_empty());

    // Nothing installed before: hold and report.
    assert!(matches!(
        decide(&desired, 5, &failed, &BTreeMap::new(), &no_rb, &none).as_slice(),
        [Decision::Hold { .. }]
    ));

    // Policy hold.
    let mut hold_dep = d2.clone();
    hold_dep.policy.on_failure = OnFailure::Hold;
    let hold_desired = nd(vec![hold_dep]);
    assert!(matches!(
        decide(&hold_desired, 5, &failed, &installed_v1, &no_rb, &none).as_slice(),
        [Decision::Hold { .. }]
    ));
    // Reported once only.
    let held = BTreeMap::from([(
        "app".to_owned(),
        hold_desired.deployments[0].spec_hash.clone(),
    )]);
    assert!(decide(&hold_desired, 5, &failed, &installed_v1, &no_rb, &held).is_empty());

    // The rolled-back version fails too: stop, no loop.
    let rolled = nd(vec![d1.clone()]);
    let rbs = BTreeMap::from([("app".to_owned(), mark.clone())]);
    let failed_again = status("n1", 6, vec![dstatus("app", "c1", State::Failed, vec![])]);
    assert!(matches!(
        decide(&rolled, 6, &failed_again, &installed_v1, &rbs, &none).as_slice(),
        [Decision::RollbackFailed { .. }]
    ));
    let mut stopped = mark.clone();
    stopped.failed_again = true;
    let rbs = BTreeMap::from([("app".to_owned(), stopped)]);
    assert!(decide(&rolled, 6, &failed_again, &installed_v1, &rbs, &none).is_empty());

    // Installed reports are remembered as rollback targets.
    let ok = status(
        "n1",
        5,
        vec![dstatus("app", "c2", State::Installed, vec![running(&v2)])],
    );
    assert!(matches!(
        decide(&desired, 5, &ok, &installed_v1, &no_rb, &none).as_slice(),
        [Decision::Installed { .. }]
    ));

    // The override renders the old version until Git changes the deployment.
    let _ = RollbackOverride {
        from_spec_hash: String::new(),
        to: Dep::new(d1),
    };
}

#[test]
fn mass_deletion_guard() {
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|s| (*s).to_owned()).collect() };
    let spec = SiteSpec::default();
    let allow_empty_site = SiteSpec {
        allow_empty: true,
        ..SiteSpec::default()
    };
    let lenient = SiteSpec {
        max_delete_percent: Some(100),
        ..SiteSpec::default()
    };
    let no = GuardFlags::default();
    let cases: Vec<(
        &str,
        Option<BTreeSet<String>>,
        BTreeSet<String>,
        &SiteSpec,
        GuardFlags,
        bool,
    )> = vec![
        (
            "first revision is never held",
            None,
            set(&[]),
            &spec,
            no,
            false,
        ),
        (
            "N to zero is held",
            Some(set(&["a", "b"])),
            set(&[]),
            &spec,
            no,
            true,
        ),
        (
            "Site allowEmpty",
            Some(set(&["a", "b"])),
            set(&[]),
            &allow_empty_site,
            no,
            false,
        ),
        (
            "flag allow_empty",
            Some(set(&["a"])),
            set(&[]),
            &spec,
            GuardFlags {
                allow_empty: true,
                allow_mass_delete: false,
            },
            false,
        ),
        (
            "removing 3 of 4 is held",
            Some(set(&["a", "b", "c", "d"])),
            set(&["a"]),
            &spec,
            no,
            true,
        ),
        (
            "removing 2 of 4 is fine",
            Some(set(&["a", "b", "c", "d"])),
            set(&["a", "b"]),
            &spec,
            no,
            false,
        ),
        (
            "flag allow_mass_delete",
            Some(set(&["a", "b", "c", "d"])),
            set(&["a"]),
            &spec,
            GuardFlags {
                allow_empty: false,
                allow_mass_delete: true,
            },
            false,
        ),
        (
            "maxDeletePercent 100",
            Some(set(&["a", "b", "c", "d"])),
            set(&["e"]),
            &lenient,
            no,
            false,
        ),
        (
            "renames count as removals",
            Some(set(&["a", "b"])),
            set(&["x", "y"]),
            &spec,
            no,
            true,
        ),
        ("zero to zero", Some(set(&[])), set(&[]), &spec, no, false),
    ];
    for (name, prev, next, spec, flags, held) in cases {
        let got = deletion_guard(prev.as_ref(), &next, spec, flags);
        assert_eq!(got.is_some(), held, "case {name}: {got:?}");
    }
}

#[test]
fn plan_of_ten_thousand_nodes_is_fast() {
    let comps: Vec<Component> = (0..2)
        .map(|i| comp(&format!("c{i}"), "reg/x:1", &[]))
        .collect();
    let deps: Vec<DesiredDeployment> = (0..20)
        .map(|i| dep(&format!("d{i:02}"), "c1", comps.clone()))
        .collect();
    let refs: Vec<&DesiredDeployment> = deps.iter().collect();
    let statuses: Vec<(String, NodeStatus)> = (0..10_000)
        .map(|n| {
            let ds = deps
                .iter()
                .map(|d| {
                    dstatus(
                        &d.name,
                        "c1",
                        State::Installed,
                        d.components.iter().map(running).collect(),
                    )
                })
                .collect();
            (format!("n{n:05}"), status(&format!("n{n:05}"), 1, ds))
        })
        .collect();
    let started = std::time::Instant::now();
    let p = plan(
        "s1",
        "c1",
        statuses.iter().map(|(n, s)| {
            (
                n.as_str(),
                NodeInput {
                    desired: &refs,
                    observed: Some(s),
                    online: true,
                    paced: false,
                },
            )
        }),
    );
    let took = started.elapsed();
    assert_eq!(p.summary.get(&A::Noop), Some(&200_000));
    eprintln!("plan of 10,000 nodes x 20 deployments: {took:?}");
    // Generous bound for unoptimised test builds on 2 cores; the release goal is < 50 ms.
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
}
