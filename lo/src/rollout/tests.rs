//! Table tests of the rollout state machine: every transition, one scenario each.

use super::*;
use schemas::component::{Component, Healthcheck};
use schemas::site::{Amount, Wave};
use schemas::{ComponentStatus, DesiredDeployment, FailurePolicy, Health, State};

pub(super) fn dep(image: &str, commit: &str, healthcheck: bool) -> Dep {
    Dep::new(DesiredDeployment {
        name: "web".into(),
        commit: commit.into(),
        policy: FailurePolicy::default(),
        components: vec![Component {
            name: "web".into(),
            image: image.into(),
            healthcheck: healthcheck.then(|| Healthcheck {
                test: vec!["CMD".into(), "true".into()],
                interval_ms: 1_000,
                timeout_ms: 1_000,
                retries: 1,
                start_period_ms: 0,
            }),
            ..Component::default()
        }
        .with_hash()],
    })
}

/// What a node reports about the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Says {
    /// Installed and healthy, with this many restarts.
    Healthy(u32),
    /// Installed, healthcheck not passing yet.
    Starting,
    /// Still installing.
    Installing,
    /// Failed for good.
    Failed,
    /// Failed, the agent retries.
    Retrying,
}

pub(super) fn report(d: &Dep, says: Says) -> DeploymentStatus {
    let c = &d.spec.components[0];
    let (state, health, restarts, retrying) = match says {
        Says::Healthy(r) => (State::Installed, Health::Healthy, r, false),
        Says::Starting => (State::Installing, Health::Starting, 0, false),
        Says::Installing => (State::Installing, Health::None, 0, false),
        Says::Failed => (State::Failed, Health::None, 0, false),
        Says::Retrying => (State::Failed, Health::None, 0, true),
    };
    let failed = state == State::Failed;
    DeploymentStatus {
        name: d.spec.name.clone(),
        state,
        commit: Some(d.spec.commit.clone()),
        components: vec![ComponentStatus {
            name: c.name.clone(),
            state,
            spec_hash: Some(c.spec_hash.clone()),
            container_id: None,
            container_status: None,
            health,
            restart_count: restarts,
            image: Some(c.image.clone()),
            image_id: None,
            repo_digest: None,
            attempts: u32::from(failed) * 3,
            error: failed.then(|| schemas::ErrorInfo::new("pull_failed", "registry down")),
            retrying,
            next_attempt_at: None,
        }],
    }
}

fn waves(spec: &[(Amount, u64)]) -> RolloutStrategy {
    RolloutStrategy {
        waves: spec
            .iter()
            .map(|(nodes, soak_ms)| Wave {
                nodes: *nodes,
                soak_ms: *soak_ms,
                failure_threshold: None,
            })
            .collect(),
        ..RolloutStrategy::default()
    }
}

/// A small fleet: names, online flags and reports, stepped against one served version.
struct Fleet {
    names: Vec<String>,
    online: Vec<bool>,
    says: Vec<Option<DeploymentStatus>>,
}

impl Fleet {
    fn new(n: usize) -> Self {
        Fleet {
            names: (1..=n).map(|i| format!("n{i}")).collect(),
            online: vec![true; n],
            says: vec![None; n],
        }
    }

    fn say(&mut self, i: usize, d: &Dep, s: Says) {
        self.says[i] = Some(report(d, s));
    }

    fn step(
        &self,
        prev: Option<&Rollout>,
        served: &Dep,
        strategy: &RolloutStrategy,
        now_ms: u64,
    ) -> (Rollout, Vec<RolloutEventKind>) {
        let nodes: Vec<NodeIn<'_>> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| NodeIn {
                name: n,
                online: self.online[i],
                known: true,
                report: self.says[i].as_ref(),
            })
            .collect();
        let (r, ev) = step(
            prev,
            &StepIn {
                served,
                strategy,
                nodes: &nodes,
                now_ms,
                fallback_promoted: None,
            },
        );
        (r, ev.into_iter().map(|h| h.kind).collect())
    }
}

fn handed(r: &Rollout) -> Vec<&str> {
    r.nodes.keys().map(String::as_str).collect()
}

fn promoted(d: &Dep) -> Rollout {
    Rollout::idle(Some(d.clone()))
}

use RolloutEventKind as K;

#[test]
fn one_default_wave_hands_every_node_at_once_and_completes() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(3);
    let s = RolloutStrategy::default();
    let (r, ev) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    assert_eq!(ev, vec![K::Started]);
    assert_eq!(handed(&r), vec!["n1", "n2", "n3"]);
    assert_eq!(r.choice("n1"), Choice::Served);
    for i in 0..3 {
        f.say(i, &v2, Says::Healthy(0));
    }
    let (r, ev) = f.step(Some(&r), &v2, &s, 1_000);
    assert_eq!(ev, vec![K::Complete]);
    assert_eq!(r.phase, RolloutPhase::Complete);
    assert_eq!(
        r.promoted.as_ref().map(|d| &d.spec_hash),
        Some(&v2.spec_hash)
    );
    assert!(r.candidate.is_none() && r.nodes.is_empty());
    assert_eq!(r.last_waves[0].passed, 3);
}

#[test]
fn the_canary_soaks_before_the_next_wave() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(4);
    let s = waves(&[(Amount::Count(1), 60_000), (Amount::Percent(100), 0)]);
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    assert_eq!(handed(&r), vec!["n1"]);
    assert_eq!(r.choice("n2"), Choice::Promoted(&v1));
    f.say(0, &v2, Says::Healthy(0));
    let (r, ev) = f.step(Some(&r), &v2, &s, 10_000);
    assert!(ev.is_empty(), "soaking: {ev:?}");
    assert_eq!(r.nodes["n1"].healthy_since_ms, Some(10_000));
    // A restart during the soak starts it again.
    f.say(0, &v2, Says::Healthy(1));
    let (r, _) = f.step(Some(&r), &v2, &s, 65_000);
    assert_eq!(r.nodes["n1"].outcome, Outcome::InFlight);
    assert_eq!(r.nodes["n1"].healthy_since_ms, Some(65_000));
    let (r, ev) = f.step(Some(&r), &v2, &s, 125_000);
    assert_eq!(ev, vec![K::WavePassed]);
    assert_eq!(r.wave, 1);
    assert_eq!(handed(&r), vec!["n1", "n2", "n3", "n4"]);
}

#[test]
fn a_canary_label_goes_first() {
    let labels = |canary: bool| -> Labels {
        let mut l = Labels::new();
        if canary {
            l.insert(CANARY_LABEL.into(), "true".into());
        }
        l
    };
    let (a, b, c) = (labels(false), labels(true), labels(false));
    assert_eq!(
        order([("a", &a), ("b", &b), ("c", &c)]),
        vec!["b", "a", "c"]
    );
    let off = {
        let mut l = Labels::new();
        l.insert(CANARY_LABEL.into(), "false".into());
        l
    };
    assert_eq!(order([("b", &off), ("a", &a)]), vec!["a", "b"]);
}

#[test]
fn a_failed_canary_rolls_back_and_nobody_else_gets_it() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(3);
    let s = waves(&[(Amount::Count(1), 0), (Amount::Percent(100), 0)]);
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    f.say(0, &v2, Says::Failed);
    let (r, ev) = f.step(Some(&r), &v2, &s, 1_000);
    assert_eq!(ev, vec![K::RolledBack]);
    assert_eq!(r.phase, RolloutPhase::RolledBack);
    let why = r.halt.clone().expect("halt reason");
    assert_eq!(
        (
            why.node.as_str(),
            why.component.as_deref(),
            why.code.as_str()
        ),
        ("n1", Some("web"), "pull_failed")
    );
    for n in ["n1", "n2", "n3"] {
        assert_eq!(r.choice(n), Choice::Promoted(&v1), "{n}");
    }
    // Nothing more happens until Git changes.
    f.say(0, &v1, Says::Healthy(0));
    let (r2, ev) = f.step(Some(&r), &v2, &s, 100_000);
    assert!(ev.is_empty());
    assert_eq!(r2, r);
}

#[test]
fn on_halt_pause_keeps_every_node_where_it_is() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(3);
    let s = RolloutStrategy {
        on_halt: OnHalt::Pause,
        ..waves(&[(Amount::Count(1), 0), (Amount::Percent(100), 0)])
    };
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    f.say(0, &v2, Says::Failed);
    let (r, ev) = f.step(Some(&r), &v2, &s, 1_000);
    assert_eq!(ev, vec![K::Halted]);
    assert_eq!(r.choice("n1"), Choice::Served);
    assert_eq!(r.choice("n2"), Choice::Promoted(&v1));
}

#[test]
fn a_new_deployment_that_fails_halts_with_nothing_to_roll_back_to() {
    let v1 = dep("web:1", "c1", false);
    let mut f = Fleet::new(3);
    let s = waves(&[(Amount::Count(1), 0), (Amount::Percent(100), 0)]);
    let (r, ev) = f.step(None, &v1, &s, 0);
    assert_eq!(ev, vec![K::Started]);
    assert_eq!(r.choice("n2"), Choice::Omit);
    f.say(0, &v1, Says::Failed);
    let (r, ev) = f.step(Some(&r), &v1, &s, 1_000);
    assert_eq!(ev, vec![K::Halted]);
    assert_eq!(r.choice("n1"), Choice::Served);
    assert_eq!(r.choice("n2"), Choice::Omit);
}

#[test]
fn a_retrying_node_holds_its_wave_until_the_wave_timeout() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(3);
    let s = RolloutStrategy {
        max_parallel: Some(1),
        wave_timeout_ms: 60_000,
        ..RolloutStrategy::default()
    };
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    assert_eq!(handed(&r), vec!["n1"]);
    f.say(0, &v2, Says::Retrying);
    let (r, ev) = f.step(Some(&r), &v2, &s, 30_000);
    assert!(ev.is_empty());
    assert_eq!(handed(&r), vec!["n1"], "nobody else pulls while n1 retries");
    // The registry comes back: n1 installs, the next node goes.
    let mut healed = f.says.clone();
    healed[0] = Some(report(&v2, Says::Healthy(0)));
    let g = Fleet {
        says: healed,
        ..Fleet::new(3)
    };
    let (ok, _) = g.step(Some(&r), &v2, &s, 40_000);
    assert_eq!(handed(&ok), vec!["n1", "n2"]);
    // Had it not come back: failed at the timeout, and the rollout rolls back.
    let (r, ev) = f.step(Some(&r), &v2, &s, 60_000);
    assert_eq!(ev, vec![K::RolledBack]);
    assert_eq!(
        r.halt.as_ref().map(|h| h.code.as_str()),
        Some("wave_timeout")
    );
}

#[test]
fn offline_nodes_are_skipped_and_join_when_back() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(4);
    f.online[0] = false;
    let s = waves(&[
        (Amount::Count(1), 0),
        (Amount::Count(3), 0),
        (Amount::Percent(100), 0),
    ]);
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    assert_eq!(handed(&r), vec!["n2"], "n1 is offline: n2 is the canary");
    assert_eq!(r.choice("n1"), Choice::Promoted(&v1));
    f.say(1, &v2, Says::Healthy(0));
    let (r, ev) = f.step(Some(&r), &v2, &s, 1_000);
    assert_eq!(ev, vec![K::WavePassed]);
    assert_eq!(handed(&r), vec!["n2", "n3", "n4"]);
    // n1 comes back: it joins the wave that is running.
    f.online[0] = true;
    f.say(2, &v2, Says::Healthy(0));
    f.say(3, &v2, Says::Healthy(0));
    let (r, ev) = f.step(Some(&r), &v2, &s, 2_000);
    assert_eq!(ev, vec![K::WavePassed]);
    assert_eq!(handed(&r), vec!["n1", "n2", "n3", "n4"]);
    assert_eq!(r.nodes["n1"].wave, 2);
}

#[test]
fn a_wave_completes_when_its_online_nodes_pass() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(3);
    f.online[2] = false;
    let s = waves(&[(Amount::Count(1), 0), (Amount::Percent(100), 0)]);
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    f.say(0, &v2, Says::Healthy(0));
    let (r, ev) = f.step(Some(&r), &v2, &s, 1_000);
    assert_eq!(ev, vec![K::WavePassed]);
    assert_eq!(handed(&r), vec!["n1", "n2"], "n3 is offline: not handed");
    assert_eq!(r.choice("n3"), Choice::Promoted(&v1));
    f.say(1, &v2, Says::Healthy(0));
    let (r, ev) = f.step(Some(&r), &v2, &s, 2_000);
    assert_eq!(ev, vec![K::Complete]);
    // The offline node gets the (now promoted) candidate when it is back.
    assert_eq!(r.choice("n3"), Choice::Served);
}

#[test]
fn the_default_strategy_hands_offline_nodes_the_candidate_too() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(2);
    f.online[1] = false;
    let s = RolloutStrategy::default();
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    assert_eq!(handed(&r), vec!["n1", "n2"]);
    // A halt hands the promoted version to the node that never came online to apply it.
    f.say(0, &v2, Says::Failed);
    let (r, ev) = f.step(
        Some(&r),
        &v2,
        &RolloutStrategy {
            on_halt: OnHalt::Pause,
            ..s
        },
        1_000,
    );
    assert_eq!(ev, vec![K::Halted]);
    assert_eq!(r.choice("n1"), Choice::Served);
    assert_eq!(r.choice("n2"), Choice::Promoted(&v1));
}

#[test]
fn an_offline_node_in_flight_does_not_time_out() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(2);
    let s = RolloutStrategy {
        wave_timeout_ms: 10_000,
        ..waves(&[(Amount::Count(1), 0), (Amount::Percent(100), 0)])
    };
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    f.online[0] = false;
    let (r, ev) = f.step(Some(&r), &v2, &s, 5_000);
    assert!(ev.is_empty());
    let (r, ev) = f.step(Some(&r), &v2, &s, 60_000);
    assert!(ev.is_empty(), "offline is no evidence: {ev:?}");
    assert!(handed(&r) == vec!["n1"] || handed(&r) == vec!["n1", "n2"]);
    // Back online: its clock starts again.
    f.online[0] = true;
    let (r, ev) = f.step(Some(&r), &v2, &s, 61_000);
    assert!(ev.is_empty());
    assert_eq!(r.nodes["n1"].since_ms, 61_000);
    let (_, ev) = f.step(Some(&r), &v2, &s, 71_000);
    assert_eq!(ev, vec![K::RolledBack]);
}

#[test]
fn a_new_commit_replaces_the_candidate_and_a_revert_ends_the_rollout() {
    let (v1, v2, v3) = (
        dep("web:1", "c1", false),
        dep("web:2", "c2", false),
        dep("web:3", "c3", false),
    );
    let f = Fleet::new(4);
    let s = waves(&[(Amount::Count(2), 0), (Amount::Percent(100), 0)]);
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    assert_eq!(handed(&r), vec!["n1", "n2"]);
    let (r3, ev) = f.step(Some(&r), &v3, &s, 1_000);
    assert_eq!(ev, vec![K::Started]);
    assert_eq!(r3.wave, 0);
    assert_eq!(
        r3.candidate.as_ref().map(|d| &d.spec_hash),
        Some(&v3.spec_hash)
    );
    assert_eq!(handed(&r3), vec!["n1", "n2"]);
    // Same spec at a newer commit: the same rollout, the newest commit handed.
    let v2b = dep("web:2", "c9", false);
    let (same, ev) = f.step(Some(&r), &v2b, &s, 1_000);
    assert!(ev.is_empty());
    assert_eq!(
        same.candidate.as_ref().map(|d| d.spec.commit.as_str()),
        Some("c9")
    );
    // Reverting to the promoted spec: no rollout, everyone is served.
    let v1b = dep("web:1", "c10", false);
    let (idle, ev) = f.step(Some(&r), &v1b, &s, 2_000);
    assert!(ev.is_empty());
    assert!(idle.candidate.is_none());
    assert_eq!(idle.choice("n3"), Choice::Served);
}

#[test]
fn max_parallel_paces_inside_a_wave() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(3);
    let s = RolloutStrategy {
        max_parallel: Some(1),
        ..RolloutStrategy::default()
    };
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    assert_eq!(handed(&r), vec!["n1"]);
    f.say(0, &v2, Says::Installing);
    let (r, _) = f.step(Some(&r), &v2, &s, 1_000);
    assert_eq!(handed(&r), vec!["n1"]);
    f.say(0, &v2, Says::Healthy(0));
    let (r, _) = f.step(Some(&r), &v2, &s, 2_000);
    assert_eq!(handed(&r), vec!["n1", "n2"]);
}

#[test]
fn healthchecks_must_pass_and_a_passed_node_that_fails_still_counts() {
    let (v1, v2) = (dep("web:1", "c1", true), dep("web:2", "c2", true));
    let mut f = Fleet::new(4);
    let s = RolloutStrategy {
        failure_threshold: Amount::Count(0),
        ..waves(&[(Amount::Count(2), 0), (Amount::Percent(100), 0)])
    };
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    f.say(0, &v2, Says::Starting);
    f.say(1, &v2, Says::Healthy(0));
    let (r, ev) = f.step(Some(&r), &v2, &s, 1_000);
    assert!(ev.is_empty());
    assert_eq!(r.nodes["n1"].outcome, Outcome::InFlight);
    assert_eq!(r.nodes["n2"].outcome, Outcome::Passed);
    f.say(1, &v2, Says::Failed);
    let (r, ev) = f.step(Some(&r), &v2, &s, 2_000);
    assert_eq!(ev, vec![K::RolledBack]);
    assert_eq!(r.halt.as_ref().map(|h| h.node.as_str()), Some("n2"));
}

#[test]
fn thresholds_tolerate_failures_in_later_waves() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(5);
    let s = RolloutStrategy {
        failure_threshold: Amount::Percent(50),
        ..waves(&[(Amount::Count(1), 0), (Amount::Percent(100), 0)])
    };
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    f.say(0, &v2, Says::Healthy(0));
    let (r, _) = f.step(Some(&r), &v2, &s, 1_000);
    assert_eq!(r.wave, 1);
    // Wave 2 has 4 nodes: 50 % = 2 may fail.
    f.say(1, &v2, Says::Failed);
    f.say(2, &v2, Says::Failed);
    f.say(3, &v2, Says::Healthy(0));
    f.say(4, &v2, Says::Healthy(0));
    let (r, ev) = f.step(Some(&r), &v2, &s, 2_000);
    assert_eq!(ev, vec![K::Complete]);
    assert_eq!(r.last_waves[1].failed, 2);
    assert_eq!(r.last_waves[1].passed, 2);
}

#[test]
fn paused_and_unsettled_rollouts_hand_out_nothing_new() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let f = Fleet::new(2);
    let s = RolloutStrategy {
        paused: true,
        ..RolloutStrategy::default()
    };
    let (r, _) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    assert_eq!(r.phase, RolloutPhase::Paused);
    assert!(r.nodes.is_empty());
}

#[test]
fn a_node_whose_presence_is_unknown_holds_its_slot_and_its_wave() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let healthy = report(&v2, Says::Healthy(0));
    let node = |name, online, known, report| NodeIn {
        name,
        online,
        known,
        report,
    };
    let s = waves(&[(Amount::Count(1), 0), (Amount::Percent(100), 0)]);
    let step_with = |prev: &Rollout, nodes: &[NodeIn<'_>], strategy: &RolloutStrategy| {
        step(
            Some(prev),
            &StepIn {
                served: &v2,
                strategy,
                nodes,
                now_ms: 0,
                fallback_promoted: None,
            },
        )
    };
    // n2's presence is not read back yet (just after an LO restart), n3 is known offline.
    let nodes = [
        node("n1", true, true, Some(&healthy)),
        node("n2", false, false, None),
        node("n3", false, true, None),
    ];
    let (r, _) = step_with(&promoted(&v1), &nodes, &s);
    assert_eq!(handed(&r), vec!["n1"]);
    let (r, ev) = step_with(&r, &nodes, &s);
    assert_eq!(
        ev.iter().map(|h| h.kind).collect::<Vec<_>>(),
        vec![K::WavePassed]
    );
    let (r, ev) = step_with(&r, &nodes, &s);
    assert!(
        ev.is_empty(),
        "n2 may be online: wave 2 does not pass over it"
    );
    assert_eq!(handed(&r), vec!["n1"]);
    // n2 turns out offline: wave 2 has nobody else to take it and passes.
    let nodes = [
        node("n1", true, true, Some(&healthy)),
        node("n2", false, true, None),
        node("n3", false, true, None),
    ];
    let (_, ev) = step_with(&r, &nodes, &s);
    assert_eq!(
        ev.iter().map(|h| h.kind).collect::<Vec<_>>(),
        vec![K::Complete]
    );
    // With maxParallel 1, an unknown node in flight keeps the slot.
    let paced = RolloutStrategy {
        max_parallel: Some(1),
        ..RolloutStrategy::default()
    };
    let mut held = promoted(&v1);
    held.candidate = Some(v2.clone());
    held.phase = RolloutPhase::Progressing;
    held.nodes.insert(
        "n2".into(),
        Track {
            wave: 0,
            since_ms: 0,
            outcome: Outcome::InFlight,
            healthy_since_ms: None,
            restarts: 0,
            was_offline: false,
            seen_online: true,
            failure: None,
        },
    );
    let nodes = [node("n1", true, true, None), node("n2", false, false, None)];
    let (r, _) = step_with(&held, &nodes, &paced);
    assert_eq!(handed(&r), vec!["n2"], "n1 waits for n2's slot");
}

#[test]
fn with_every_node_offline_nothing_is_promoted() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    let mut f = Fleet::new(2);
    f.online = vec![false, false];
    let s = waves(&[(Amount::Count(1), 0), (Amount::Percent(100), 0)]);
    let (r, ev) = f.step(Some(&promoted(&v1)), &v2, &s, 0);
    assert_eq!(ev, vec![K::Started]);
    assert_eq!(r.phase, RolloutPhase::Progressing);
    assert_eq!(r.choice("n1"), Choice::Promoted(&v1));
}

#[test]
fn a_report_of_another_spec_is_not_a_pass() {
    let (v1, v2) = (dep("web:1", "c1", false), dep("web:2", "c2", false));
    // n1 still runs v1 (its report at the current generation is about v1).
    assert_eq!(
        gate::observe("n1", Some(&report(&v1, Says::Healthy(0))), &v2),
        Gate::Pending
    );
    assert_eq!(
        gate::observe("n1", Some(&report(&v2, Says::Healthy(3))), &v2),
        Gate::Healthy { restarts: 3 }
    );
    assert_eq!(
        gate::observe("n1", Some(&report(&v2, Says::Retrying)), &v2),
        Gate::Pending
    );
    assert!(matches!(
        gate::observe("n1", Some(&report(&v2, Says::Failed)), &v2),
        Gate::Failed(_)
    ));
}
