//! What a rollout looks like from outside: the `rollout` object of a deployment in the
//! site status, and the site-wide pacing summary (`rollout` of the site status).

use super::{NodeIn, Outcome, Rollout};
use schemas::site::RolloutStrategy;
use schemas::{DeploymentRollout, RolloutPhase, VersionRef, WaveStatus};
use serde::{Deserialize, Serialize};

/// The progress of every wave of `r` (`nodes`: the deployment's nodes in rollout order).
pub fn waves(r: &Rollout, strategy: &RolloutStrategy, nodes: &[NodeIn<'_>]) -> Vec<WaveStatus> {
    let total = nodes.len();
    // Only a rollout with nodes needs their presence (most deployments have none).
    let online: std::collections::HashSet<&str> = if r.nodes.is_empty() {
        Default::default()
    } else {
        // A node not heard from yet (just after an LO restart) is not counted offline.
        nodes
            .iter()
            .filter(|n| n.online || !n.known)
            .map(|n| n.name)
            .collect()
    };
    let mut out: Vec<WaveStatus> = (0..strategy.waves.len())
        .map(|w| {
            let before = if w == 0 {
                0
            } else {
                strategy.reach(w - 1, total)
            };
            WaveStatus {
                nodes: u32::try_from(strategy.reach(w, total).saturating_sub(before))
                    .unwrap_or(u32::MAX),
                ..WaveStatus::default()
            }
        })
        .collect();
    for (name, t) in &r.nodes {
        let Some(ws) = out.get_mut(t.wave) else {
            continue;
        };
        match t.outcome {
            Outcome::Passed => ws.passed += 1,
            Outcome::Failed => ws.failed += 1,
            Outcome::InFlight if online.contains(name.as_str()) => ws.pending += 1,
            Outcome::InFlight => ws.offline += 1,
        }
    }
    if r.active() {
        // Nodes of the current wave not handed the candidate yet: online ones wait for a
        // slot, offline ones are skipped until they are back.
        if let Some(ws) = out.get_mut(r.wave) {
            let reach = strategy.reach(r.wave, total);
            let left = reach.saturating_sub(r.nodes.len());
            let untracked = nodes.iter().filter(|n| !r.nodes.contains_key(n.name));
            let (on, off) = untracked.fold((0usize, 0usize), |(a, b), n| {
                if n.online {
                    (a + 1, b)
                } else {
                    (a, b + 1)
                }
            });
            let waiting = left.min(on);
            ws.pending += waiting as u32;
            ws.offline += left.saturating_sub(waiting).min(off) as u32;
        }
    }
    out
}

fn version(d: &crate::render::Dep) -> VersionRef {
    VersionRef {
        commit: d.spec.commit.clone(),
        spec_hash: d.spec_hash.clone(),
    }
}

/// The `rollout` object of a deployment in the site status.
pub fn status(r: &Rollout, strategy: &RolloutStrategy, nodes: &[NodeIn<'_>]) -> DeploymentRollout {
    let complete = r.phase == RolloutPhase::Complete || r.candidate.is_none();
    DeploymentRollout {
        phase: if complete {
            RolloutPhase::Complete
        } else {
            r.phase
        },
        wave: u32::try_from(if complete {
            strategy.waves.len()
        } else {
            r.wave + 1
        })
        .unwrap_or(u32::MAX),
        // Complete: the last rollout's waves as they ended; none when there was none (a
        // quiet deployment's nodes are not looked at).
        waves: if complete {
            r.last_waves.clone()
        } else {
            waves(r, strategy, nodes)
        },
        promoted: r.promoted.as_ref().map(version),
        candidate: r.candidate.as_ref().map(version),
        received: u32::try_from(r.nodes.len()).unwrap_or(u32::MAX),
        halt_reason: r.halt.clone(),
        wave_started_at: (!complete && r.wave_started_ms > 0).then(|| {
            schemas::rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.wave_started_ms),
            )
        }),
    }
}

/// The site-wide pacing summary (`rollout` in `lo/status`), while the Site sets
/// `rollout.maxParallel`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSummary {
    /// `Site.spec.rollout.maxParallel`.
    pub max_parallel: u32,
    /// Nodes applying a candidate (handed it, gate not passed yet).
    pub in_flight: Vec<String>,
    /// Nodes waiting for their turn (they keep the promoted version; offline ones get
    /// their turn when they are back).
    pub waiting: Vec<String>,
}

/// The marker of a waiting node in the plan and the site status.
pub const WAITING: &str = "waiting for its turn (rollout maxParallel)";

/// Builds the site-wide summary from every deployment's rollout and its nodes: in flight,
/// the nodes applying a candidate (online, or not known yet); waiting, the nodes a
/// candidate has not reached yet.
pub fn site_summary<'a>(
    max_parallel: u32,
    rollouts: impl IntoIterator<Item = (&'a Rollout, &'a [NodeIn<'a>])>,
) -> RolloutSummary {
    let mut in_flight = std::collections::BTreeSet::new();
    let mut waiting = std::collections::BTreeSet::new();
    for (r, nodes) in rollouts {
        if !r.active() {
            continue;
        }
        for n in nodes {
            match r.nodes.get(n.name) {
                Some(t) if t.outcome == Outcome::InFlight && (n.online || !n.known) => {
                    in_flight.insert(n.name.to_owned());
                }
                None => {
                    waiting.insert(n.name.to_owned());
                }
                _ => {}
            }
        }
    }
    waiting.retain(|n| !in_flight.contains(n));
    RolloutSummary {
        max_parallel,
        in_flight: in_flight.into_iter().collect(),
        waiting: waiting.into_iter().collect(),
    }
}
