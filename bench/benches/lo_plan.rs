//! The LO's pure core on a 10,000-node × 20-deployment site (3 components each; half the
//! deployments target every node, half `role: gateway`, so a node runs 15 on average).
//!
//! - `load_site`: parse and validate the YAML of the whole site (what a new commit costs
//!   before anything is rendered).
//! - `render`: site + inventory → one desired document per node (hashes included).
//! - `plan/converged`: desired vs observed for every node when every node reports converged
//!   (the steady state the LO re-plans every second while statuses change).
//! - `plan/fresh`: the same with no observation (the plan of a first rollout).
//! - `site_plan`: render + plan/converged, the whole "site plan" figure of BENCHMARKS.md.
//! - `serialize_desired`: the 10,000 wire documents (what publishing costs in CPU).
//! - `reconcile_steady`: `lo::reconcile::reconcile` (render, step every rollout, choose what
//!   each node is handed, generations) on a converged fleet with no rollout running.
//! - `reconcile_mid_rollout`: the same with every deployment mid-rollout (waves 1 %, 10 %,
//!   100 %): the candidate handed to the first 10 % of each deployment's nodes, which report
//!   it installed (soak running), the rest on the promoted version.
//! - `content_hash_every_node`, `run_hash_every_node`: two parts of a reconcile (the hash of
//!   every node's handed document; the run hash, computed twice per node a rollout holds).
//!
//! `cargo bench -p edgefleet-bench --bench lo_plan`; `BENCH_NODES` / `BENCH_DEPLOYMENTS`
//! change the size.

use bench::SynthSite;
use criterion::{criterion_group, criterion_main, Criterion};
use lo::observe::Fleet;
use lo::preview::{self, NodeInput};
use lo::reconcile::{reconcile, ReconcileInput, Reconciled};
use lo::render::{self, NodeDesired, PublishedRecord};
use lo::rollout::Rollout;
use schemas::wire::{
    AgentInfo, ComponentStatus, DeploymentStatus, NodeStatus, Presence, PresenceSchema,
    RuntimeInfo, StatusSchema,
};
use schemas::{DesiredDeployment, Health, Revision, State};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The converged status a node would report for `nd`.
fn converged_status(site: &str, node: &str, nd: &NodeDesired) -> NodeStatus {
    converged_status_at(site, node, nd, 1)
}

/// The converged status a node would report for `nd` at `generation`.
fn converged_status_at(site: &str, node: &str, nd: &NodeDesired, generation: u64) -> NodeStatus {
    NodeStatus {
        signature: None,
        schema: StatusSchema::V1,
        site: site.to_owned(),
        node: node.to_owned(),
        observed_generation: generation,
        revision: Some(nd.revision.clone()),
        state: Some(State::Installed),
        converged: true,
        reported_at: "2025-01-01T00:00:00.000Z".to_owned(),
        deployments: nd
            .deployments
            .iter()
            .map(|d| DeploymentStatus {
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
                        container_id: Some("0123456789ab".to_owned()),
                        container_status: Some("running".to_owned()),
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
            })
            .collect(),
        unmanaged: Vec::new(),
        runtime: RuntimeInfo {
            kind: "fake".to_owned(),
            version: None,
            reachable: true,
            error: None,
        },
        agent: AgentInfo {
            rejected_documents: 0,
            images_removed: 0,
            image_bytes_freed: 0,
            version: "0.1.0".to_owned(),
            uptime_s: 1,
        },
        rejected: None,
    }
}

fn benches(c: &mut Criterion) {
    let nodes = env_usize("BENCH_NODES", 10_000);
    let deployments = env_usize("BENCH_DEPLOYMENTS", 20);
    let synth = SynthSite::new("bench", nodes, deployments, 3);
    let files = synth.files("1");
    let load = || {
        schemas::site::load_site("bench", files.iter().map(|(p, t)| (p.as_str(), t.as_str())))
            .expect("synthetic site is valid")
    };
    let docs = load();
    let revision = Revision {
        commit: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        path: "sites/bench".to_owned(),
    };
    let inventory = render::inventory(&docs, std::iter::empty());
    let no_rollbacks = BTreeMap::new();
    let rendered = render::render(&docs, &revision, &inventory, &no_rollbacks);
    let statuses: BTreeMap<String, NodeStatus> = rendered
        .iter()
        .map(|(n, nd)| (n.clone(), converged_status("bench", n, nd)))
        .collect();
    let total: usize = rendered.values().map(|d| d.deployments.len()).sum();
    eprintln!(
        "site: {nodes} nodes x {deployments} deployments (3 components each); {total} node-deployments rendered"
    );

    let plan_with = |rendered: &BTreeMap<String, NodeDesired>, observed: bool| {
        let desired: Vec<(&str, Vec<&DesiredDeployment>)> = rendered
            .iter()
            .map(|(n, d)| (n.as_str(), d.deployments.iter().map(|x| &*x.spec).collect()))
            .collect();
        preview::plan(
            "bench",
            &revision.commit,
            desired.iter().map(|(n, ds)| {
                (
                    *n,
                    NodeInput {
                        desired: ds.as_slice(),
                        observed: if observed { statuses.get(*n) } else { None },
                        online: true,
                        paced: false,
                    },
                )
            }),
        )
    };
    // Sanity: a converged fleet plans no change.
    assert!(!plan_with(&rendered, true).has_changes());

    let mut g = c.benchmark_group(format!("lo_{nodes}x{deployments}"));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("load_site", |b| b.iter(|| black_box(load())));
    g.bench_function("render", |b| {
        b.iter(|| black_box(render::render(&docs, &revision, &inventory, &no_rollbacks)))
    });
    g.bench_function("plan_converged", |b| {
        b.iter(|| black_box(plan_with(&rendered, true)))
    });
    g.bench_function("plan_fresh", |b| {
        b.iter(|| black_box(plan_with(&rendered, false)))
    });
    // What the running LO does once a second: the per-action counts, no plan built.
    let desired: Vec<(&str, Vec<&DesiredDeployment>)> = rendered
        .iter()
        .map(|(n, d)| (n.as_str(), d.deployments.iter().map(|x| &*x.spec).collect()))
        .collect();
    g.bench_function("plan_count", |b| {
        b.iter(|| {
            black_box(preview::count(desired.iter().map(|(n, ds)| {
                (
                    *n,
                    NodeInput {
                        desired: ds.as_slice(),
                        observed: statuses.get(*n),
                        online: true,
                        paced: false,
                    },
                )
            })))
        })
    });
    g.bench_function("site_plan", |b| {
        b.iter(|| {
            let r = render::render(&docs, &revision, &inventory, &no_rollbacks);
            black_box(plan_with(&r, true))
        })
    });
    g.bench_function("serialize_desired", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for (n, nd) in &rendered {
                let doc = nd.to_state("bench", n, 2, "2025-01-01T00:00:00.000Z");
                bytes += serde_json::to_vec(&doc).map(|v| v.len()).unwrap_or(0);
            }
            black_box(bytes)
        })
    });
    g.finish();
    reconcile_benches(c, nodes, deployments);
}

/// Waves 1 %, 10 %, 100 %; a soak long enough that the 10 % wave stays mid-flight.
const ROLLOUT: &str = "waves:\n  - nodes: \"1%\"\n    soak: 10m\n  - nodes: \"10%\"\n    soak: 10m\n  - nodes: \"100%\"\nwaveTimeout: 1h\n";

/// What one reconcile reads, owned.
struct State0 {
    fleet: Fleet,
    records: BTreeMap<String, PublishedRecord>,
    handed: BTreeMap<String, NodeDesired>,
    rollouts: BTreeMap<String, Rollout>,
}

impl State0 {
    fn run(&self, docs: &schemas::site::SiteDocs, revision: &Revision, now_ms: u64) -> Reconciled {
        let empty_floors = BTreeMap::new();
        let no_rollbacks = BTreeMap::new();
        reconcile(&ReconcileInput {
            docs,
            revision,
            fleet: &self.fleet,
            mono_ms: MONO_MS,
            settled: true,
            records: &self.records,
            floors: &empty_floors,
            handed: &self.handed,
            rollbacks: &no_rollbacks,
            rollouts: &self.rollouts,
            now_ms,
            issued_at: "2025-01-01T00:00:00.000Z",
        })
    }

    /// Takes in what a reconcile decided, and every node that got a new generation reports
    /// it converged.
    fn apply(&mut self, out: Reconciled) {
        for (node, rec) in &out.records {
            if let Some(nd) = out.handed.get(node) {
                let st = converged_status_at("bench", node, nd, rec.generation);
                self.fleet
                    .status(node, st, MONO_MS, false, "2025-01-01T00:00:00.000Z");
            }
        }
        self.records.extend(out.records);
        self.handed = out.handed;
        self.rollouts = out.rollouts;
    }
}

const MONO_MS: u64 = 1_000_000;

/// `lo::reconcile::reconcile` at 10,000 nodes: steady, and with every deployment mid-rollout.
fn reconcile_benches(c: &mut Criterion, nodes: usize, deployments: usize) {
    let mut synth = SynthSite::new("bench", nodes, deployments, 3);
    synth.rollout = Some(ROLLOUT.to_owned());
    let load = |v: &str| {
        let files = synth.files(v);
        schemas::site::load_site("bench", files.iter().map(|(p, t)| (p.as_str(), t.as_str())))
            .expect("synthetic site is valid")
    };
    let (docs1, docs2) = (load("1"), load("2"));
    let rev1 = Revision {
        commit: "1111111111111111111111111111111111111111".to_owned(),
        path: "sites/bench".to_owned(),
    };
    let rev2 = Revision {
        commit: "2222222222222222222222222222222222222222".to_owned(),
        path: "sites/bench".to_owned(),
    };
    // Every node online and converged on version 1, no rollout record yet.
    let mut fleet = Fleet::new(3_600_000);
    for i in 0..nodes {
        let p = Presence {
            schema: PresenceSchema::V1,
            online: true,
            epoch: 1,
            version: None,
            signature: None,
        };
        fleet.presence(
            &bench::node_name(i),
            &p,
            MONO_MS,
            false,
            "2025-01-01T00:00:00.000Z",
        );
    }
    let mut st = State0 {
        fleet,
        records: BTreeMap::new(),
        handed: BTreeMap::new(),
        rollouts: BTreeMap::new(),
    };
    let t0 = 1_700_000_000_000u64;
    let out = st.run(&docs1, &rev1, t0);
    st.apply(out);
    // Steady: version 1 served and converged everywhere.
    let steady = st.run(&docs1, &rev1, t0 + 1_000);
    assert!(
        steady.records.is_empty(),
        "a converged fleet gets nothing new"
    );
    assert!(steady.happened.is_empty());
    let steady_st = State0 {
        fleet: st.fleet.clone(),
        records: st.records.clone(),
        handed: st.handed.clone(),
        rollouts: st.rollouts.clone(),
    };
    // Version 2: wave 1 (1 %) is handed it and reports it installed; its soak (10 m) runs
    // out, wave 2 (10 %) is handed it and reports it installed too, soak running.
    let mut now = t0 + 2_000;
    for step in [1_000, 1_000, 11 * 60_000, 1_000, 1_000] {
        let out = st.run(&docs2, &rev2, now);
        st.apply(out);
        now += step;
    }
    let mid = st.run(&docs2, &rev2, now);
    let received: usize = mid
        .rollouts
        .values()
        .map(|r| {
            assert!(
                r.candidate.is_some() && r.wave == 1,
                "every deployment in wave 2"
            );
            r.nodes.len()
        })
        .sum();
    assert!(mid.records.is_empty(), "mid-rollout, nothing new to hand");
    let targeted: usize = mid.target.values().map(|d| d.deployments.len()).sum();
    eprintln!(
        "reconcile: {deployments} deployments mid-rollout; candidate handed to {received} of {targeted} node-deployments"
    );

    let mut g = c.benchmark_group(format!("lo_{nodes}x{deployments}"));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("reconcile_steady", |b| {
        b.iter(|| black_box(steady_st.run(&docs1, &rev1, t0 + 1_000)))
    });
    // Two parts of it, to see where the time goes: the content hash of every node's
    // handed document (each reconcile), and the run hash (a held node: twice per reconcile).
    g.bench_function("content_hash_every_node", |b| {
        b.iter(|| {
            black_box(
                mid.handed
                    .values()
                    .map(|d| d.content_hash().len())
                    .sum::<usize>(),
            )
        })
    });
    g.bench_function("run_hash_every_node", |b| {
        b.iter(|| {
            black_box(
                mid.handed
                    .values()
                    .map(|d| d.run_hash().len())
                    .sum::<usize>(),
            )
        })
    });
    g.bench_function("reconcile_mid_rollout", |b| {
        b.iter(|| black_box(st.run(&docs2, &rev2, now)))
    });
    g.finish();
}

criterion_group!(lo_plan, benches);
criterion_main!(lo_plan);
