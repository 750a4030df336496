//! Property tests of the rollout state machine: random strategies, fleets, presence and
//! reports, stepped over time; the invariants of issue #11 hold after every step.

use super::tests::{dep, report, Says};
use super::*;
use proptest::prelude::*;
use schemas::site::{Amount, Wave};

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        (1u32..8).prop_map(Amount::Count),
        (1u8..=100).prop_map(Amount::Percent)
    ]
}

fn threshold() -> impl Strategy<Value = Amount> {
    prop_oneof![
        (0u32..3).prop_map(Amount::Count),
        (0u8..=60).prop_map(Amount::Percent)
    ]
}

fn strategy() -> impl Strategy<Value = RolloutStrategy> {
    (
        prop::collection::vec((amount(), 0u64..3, prop::option::of(threshold())), 1..4),
        prop::option::of(0u32..3),
        threshold(),
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(waves, max_parallel, failure_threshold, pause, paused)| RolloutStrategy {
                max_parallel,
                waves: waves
                    .into_iter()
                    .map(|(nodes, soak, t)| Wave {
                        nodes,
                        soak_ms: soak * 10_000,
                        failure_threshold: t,
                    })
                    .collect(),
                failure_threshold,
                wave_timeout_ms: 60_000,
                on_halt: if pause {
                    OnHalt::Pause
                } else {
                    OnHalt::Rollback
                },
                paused,
            },
        )
}

/// One step of the world: presence and what each node says, time passing, and now and
/// then a new commit of the deployment.
#[derive(Debug, Clone)]
struct Tick {
    online: Vec<bool>,
    says: Vec<u8>,
    advance_ms: u64,
    new_commit: bool,
}

fn ticks(n: usize) -> impl Strategy<Value = Vec<Tick>> {
    prop::collection::vec(
        (
            prop::collection::vec(prop::bool::weighted(0.85), n),
            prop::collection::vec(0u8..7, n),
            0u64..40_000,
            prop::bool::weighted(0.05),
        )
            .prop_map(|(online, says, advance_ms, new_commit)| Tick {
                online,
                says,
                advance_ms,
                new_commit,
            }),
        1..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rollout_invariants_hold(
        (n, strategy, ticks, has_promoted) in (1usize..25)
            .prop_flat_map(|n| (Just(n), strategy(), ticks(n), any::<bool>()))
    ) {
        let names: Vec<String> = (0..n).map(|i| format!("n{i:02}")).collect();
        let promoted0 = dep("web:0", "c0", false);
        let mut version = 1u32;
        let mut served = dep(&format!("web:{version}"), &format!("c{version}"), false);
        let mut rollout: Option<Rollout> = has_promoted.then(|| Rollout::idle(Some(promoted0.clone())));
        let mut now = 1_000u64;
        for tick in &ticks {
            if tick.new_commit {
                version += 1;
                served = dep(&format!("web:{version}"), &format!("c{version}"), false);
            }
            now += tick.advance_ms;
            let prev = rollout.clone();
            // Nodes holding the candidate report on it; the others on what they run.
            let reports: Vec<Option<DeploymentStatus>> = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let holds = prev.as_ref().is_some_and(|r| r.choice(name) == Choice::Served);
                    let d = if holds { &served } else { &promoted0 };
                    match tick.says[i] {
                        0 => None,
                        1 | 2 => Some(report(d, Says::Healthy(0))),
                        3 => Some(report(d, Says::Healthy(1))),
                        4 => Some(report(d, Says::Installing)),
                        5 => Some(report(d, Says::Retrying)),
                        _ => Some(report(d, Says::Failed)),
                    }
                })
                .collect();
            let nodes: Vec<NodeIn<'_>> = names
                .iter()
                .enumerate()
                .map(|(i, name)| NodeIn { name, online: tick.online[i], known: true, report: reports[i].as_ref() })
                .collect();
            let (next, _) = step(prev.as_ref(), &StepIn {
                served: &served,
                strategy: &strategy,
                nodes: &nodes,
                now_ms: now,
                fallback_promoted: None,
            });
            let same_candidate = prev.as_ref().and_then(|p| p.candidate.as_ref()).map(|c| &c.spec_hash)
                == next.candidate.as_ref().map(|c| &c.spec_hash);
            if let Some(p) = prev.as_ref().filter(|_| same_candidate) {
                // After a halt no node is handed the candidate.
                if matches!(p.phase, RolloutPhase::Halted | RolloutPhase::RolledBack) {
                    prop_assert!(next.nodes.keys().all(|k| p.nodes.contains_key(k)));
                    prop_assert_eq!(next.phase, p.phase);
                }
                // Waves only move forward for one candidate.
                if next.candidate.is_some() {
                    prop_assert!(next.wave >= p.wave);
                }
            }
            // Never more nodes than the waves reached so far.
            if next.candidate.is_some() {
                prop_assert!(next.nodes.len() <= strategy.reach(next.wave, n));
            }
            // Every node is handed the promoted or the candidate version, nothing else;
            // nothing only while there is no promoted version.
            for name in &names {
                match next.choice(name) {
                    Choice::Served => prop_assert!(next.phase != RolloutPhase::RolledBack || next.candidate.is_none()),
                    Choice::Promoted(d) => prop_assert_eq!(
                        Some(&d.spec_hash),
                        next.promoted.as_ref().map(|p| &p.spec_hash)
                    ),
                    Choice::Omit => prop_assert!(next.promoted.is_none()),
                }
            }
            if next.phase == RolloutPhase::Complete {
                prop_assert!(next.candidate.is_none());
                prop_assert_eq!(next.promoted.as_ref().map(|p| &p.spec_hash), Some(&served.spec_hash));
            }
            // A paused rollout hands nothing new.
            if strategy.paused && same_candidate {
                if let Some(p) = &prev {
                    prop_assert!(next.nodes.len() <= p.nodes.len());
                }
            }
            rollout = Some(next);
        }
    }
}
