//! Rollouts, pure: how a new version of a deployment reaches the site's nodes, wave by wave,
//! and what happens when it fails. No I/O, no clock: the engine passes `now`.
//!
//! Per deployment the LO keeps a [`Rollout`]: the **promoted** version (the last one that
//! passed on the site; what a rollback hands back) and, while the served spec differs from
//! it, the **candidate** (the served spec) with the nodes it was handed to ([`Track`]).
//! [`step`] advances it from what the nodes report:
//!
//! - Nodes are taken in a stable order ([`order`]: `edgefleet.io/canary: "true"` first, then
//!   by name). Wave `i` brings the candidate to [`RolloutStrategy::reach`]`(i)` nodes in all,
//!   at most `maxParallel` applying it at once; offline nodes are skipped (their turn goes
//!   to the next online node) and keep the promoted version. The default strategy (one
//!   wave, no `maxParallel`) hands every node the candidate at once, offline ones too.
//! - A node passes its gate ([`gate`]) when the candidate is installed, healthy and has not
//!   restarted for the wave's soak; it fails on a permanent failure or when it has not
//!   passed `waveTimeout` after it was handed the candidate (a transient failure the agent
//!   keeps retrying holds the wave until then).
//! - A wave passes when its online nodes passed or failed within the threshold (and at
//!   least one node passed or failed so far: a candidate nobody ran is never promoted); the last
//!   wave passing makes the candidate the promoted version (`complete`).
//! - More failures in a wave than its threshold halt the rollout: with `onHalt: rollback`
//!   (and a promoted version to go back to) every node that received the candidate is
//!   handed the promoted version (`rolledBack`); otherwise the nodes stay where they are
//!   (`halted`). Nothing more happens until Git changes the deployment; a commit whose spec
//!   equals the promoted version ends the rollout, any other spec starts again at wave 1.
//!
//! Everything a rollout needs to resume after an LO restart is in [`Rollout`] (persisted by
//! the store): the same wave, the same nodes, no generation handed twice.

pub mod gate;
mod summary;

pub use summary::{site_summary, status, RolloutSummary, WAITING};

use crate::render::{Dep, Labels};
use gate::Gate;
use schemas::site::{OnHalt, RolloutStrategy};
use schemas::{DeploymentStatus, HaltReason, RolloutEventKind, RolloutPhase, WaveStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A node labelled `edgefleet.io/canary: "true"` comes first in every rollout it is part of.
pub const CANARY_LABEL: &str = "edgefleet.io/canary";

/// Where a node stands with the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Handed the candidate, gate not passed yet.
    InFlight,
    /// Passed the health gate.
    Passed,
    /// Failed (permanent failure, or the gate not reached within `waveTimeout`).
    Failed,
}

/// A node that was handed the candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Track {
    /// The wave (0-based) it was handed the candidate in.
    pub wave: usize,
    /// When the gate clock started (ms since the Unix epoch): when it was handed the
    /// candidate, or when it came back online after being seen offline.
    pub since_ms: u64,
    /// Its outcome so far.
    pub outcome: Outcome,
    /// Since when it has been healthy at `restarts` restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since_ms: Option<u64>,
    /// Restart total when `healthy_since_ms` was set.
    #[serde(default)]
    pub restarts: u32,
    /// Seen offline since `since_ms`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub was_offline: bool,
    /// Seen online since it was handed the candidate (a node handed it while offline may
    /// never have applied it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seen_online: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<HaltReason>,
}

/// The rollout state of one deployment (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The last version that passed on the site.
    pub promoted: Option<Dep>,
    /// The version being rolled out (the served spec), while it differs from `promoted`.
    pub candidate: Option<Dep>,
    /// Phase.
    pub phase: RolloutPhase,
    /// Current wave, 0-based.
    pub wave: usize,
    /// When the current wave started (ms since the Unix epoch).
    pub wave_started_ms: u64,
    /// Nodes handed the candidate.
    pub nodes: BTreeMap<String, Track>,
    /// Why it halted.
    pub halt: Option<HaltReason>,
    /// The waves of the last rollout that completed, as they ended (for the site status).
    pub last_waves: Vec<WaveStatus>,
}

impl Rollout {
    /// A deployment with nothing rolled out yet: `promoted` (if any) and no candidate.
    pub fn idle(promoted: Option<Dep>) -> Self {
        Rollout {
            promoted,
            candidate: None,
            phase: RolloutPhase::Complete,
            wave: 0,
            wave_started_ms: 0,
            nodes: BTreeMap::new(),
            halt: None,
            last_waves: Vec::new(),
        }
    }

    /// A rollout still handing out or gating the candidate.
    pub fn active(&self) -> bool {
        self.candidate.is_some()
            && matches!(self.phase, RolloutPhase::Progressing | RolloutPhase::Paused)
    }

    /// Whether `other` commits to the same things: versions, phase, wave, halt and the
    /// nodes handed the candidate. Only a change of these must be on disk before the
    /// documents it decides go out; outcomes and soak clocks are re-derived from the
    /// nodes' reports after a restart, so they are saved lazily.
    pub fn same_commitments(&self, other: &Rollout) -> bool {
        let hash = |d: &Option<Dep>| d.as_ref().map(|d| d.hash.clone());
        hash(&self.promoted) == hash(&other.promoted)
            && hash(&self.candidate) == hash(&other.candidate)
            && self.phase == other.phase
            && self.wave == other.wave
            && self.halt == other.halt
            && self.nodes.len() == other.nodes.len()
            && self.nodes.keys().eq(other.nodes.keys())
    }

    /// What `node` gets of this deployment.
    pub fn choice(&self, node: &str) -> Choice<'_> {
        if self.candidate.is_none() {
            return Choice::Served;
        }
        if self.phase != RolloutPhase::RolledBack && self.nodes.contains_key(node) {
            return Choice::Served;
        }
        match &self.promoted {
            Some(p) => Choice::Promoted(p),
            None => Choice::Omit,
        }
    }
}

/// What a node is handed of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice<'a> {
    /// The served version (the candidate, or the promoted one when they are the same).
    Served,
    /// The promoted version, not the served one.
    Promoted(&'a Dep),
    /// Nothing: a new deployment the node's turn has not come for.
    Omit,
}

/// One targeted node as a step sees it.
#[derive(Debug, Clone, Copy)]
pub struct NodeIn<'a> {
    /// Name.
    pub name: &'a str,
    /// Online now.
    pub online: bool,
    /// The LO knows whether it is online: presence was read back after it connected (the
    /// engine's settle time), or the node was heard from since. An unknown node in flight
    /// still holds its `maxParallel` slot, and a wave does not pass over an unknown node.
    pub known: bool,
    /// Its report of this deployment, from a status at the node's current generation.
    pub report: Option<&'a DeploymentStatus>,
}

/// Everything one step of one deployment's rollout reads.
#[derive(Debug, Clone, Copy)]
pub struct StepIn<'a> {
    /// The served version of the deployment.
    pub served: &'a Dep,
    /// Its resolved strategy.
    pub strategy: &'a RolloutStrategy,
    /// The nodes it targets, in rollout order ([`order`]).
    pub nodes: &'a [NodeIn<'a>],
    /// Wall-clock now, ms since the Unix epoch.
    pub now_ms: u64,
    /// The promoted version when there is no rollout record yet (the version most nodes
    /// were last handed, after an upgrade of the LO), if any.
    pub fallback_promoted: Option<&'a Dep>,
}

/// A rollout event: what happened, at which wave (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Happened {
    /// What.
    pub kind: RolloutEventKind,
    /// The wave concerned, 0-based.
    pub wave: usize,
}

/// The rollout order of a deployment's nodes: canaries (`edgefleet.io/canary: "true"`)
/// first, then by name. Stable across restarts for the same inventory.
pub fn order<'a>(nodes: impl IntoIterator<Item = (&'a str, &'a Labels)>) -> Vec<&'a str> {
    let mut v: Vec<(bool, &str)> = nodes
        .into_iter()
        .map(|(n, l)| (l.get(CANARY_LABEL).is_none_or(|v| v != "true"), n))
        .collect();
    // Stable sort: linear on input already in name order (the inventory's).
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// Advances one deployment's rollout (see the module doc). `prev`: the rollout as it was
/// (`None`: no record yet). Returns the new rollout and what happened.
pub fn step(prev: Option<&Rollout>, input: &StepIn<'_>) -> (Rollout, Vec<Happened>) {
    let mut r = match prev {
        Some(p) => p.clone(),
        None => Rollout::idle(input.fallback_promoted.cloned()),
    };
    let mut events = Vec::new();
    let served = input.served;
    let now = input.now_ms;
    if r.promoted
        .as_ref()
        .is_some_and(|p| p.spec_hash == served.spec_hash)
    {
        // The served spec is the promoted one (nothing new, or Git reverted the candidate):
        // no rollout. The served commit is handed (same spec, newest commit).
        let last_waves = std::mem::take(&mut r.last_waves);
        r = Rollout::idle(Some(served.clone()));
        r.last_waves = last_waves;
        return (r, events);
    }
    match &r.candidate {
        Some(c) if c.spec_hash == served.spec_hash => r.candidate = Some(served.clone()),
        _ => {
            r.candidate = Some(served.clone());
            r.phase = RolloutPhase::Progressing;
            r.wave = 0;
            r.wave_started_ms = now;
            r.nodes.clear();
            r.halt = None;
            events.push(Happened {
                kind: RolloutEventKind::Started,
                wave: 0,
            });
        }
    }
    if !r.active() {
        return (r, events);
    }
    r.phase = if input.strategy.paused {
        RolloutPhase::Paused
    } else {
        RolloutPhase::Progressing
    };
    let strategy = input.strategy;
    let total = input.nodes.len();
    let index: BTreeMap<&str, &NodeIn<'_>> = input.nodes.iter().map(|n| (n.name, n)).collect();
    // Nodes no longer targeted leave the rollout.
    r.nodes.retain(|n, _| index.contains_key(n.as_str()));
    // The gate of every node holding the candidate.
    let candidate = r.candidate.clone().unwrap_or_else(|| served.clone());
    for (name, t) in r.nodes.iter_mut() {
        let Some(n) = index.get(name.as_str()) else {
            continue;
        };
        if !n.online {
            t.was_offline = true;
            continue;
        }
        if t.was_offline {
            // Back online: its clock starts again (an offline node is no evidence).
            t.was_offline = false;
            t.since_ms = now;
            t.healthy_since_ms = None;
        }
        t.seen_online = true;
        let soak = strategy.waves.get(t.wave).map_or(0, |w| w.soak_ms);
        gate_one(
            t,
            name,
            n.report,
            &candidate,
            soak,
            strategy.wave_timeout_ms,
            now,
        );
    }
    // Halt when a wave has more failures than its threshold.
    if let Some(reason) = over_threshold(&r, strategy, total, input.nodes) {
        r.halt = Some(reason);
        // Nodes handed the candidate while offline and not seen since never applied it:
        // they get the promoted version when back, never a halted candidate.
        if r.promoted.is_some() {
            r.nodes.retain(|_, t| t.seen_online);
        }
        let rollback = strategy.on_halt == OnHalt::Rollback && r.promoted.is_some();
        r.phase = if rollback {
            RolloutPhase::RolledBack
        } else {
            RolloutPhase::Halted
        };
        events.push(Happened {
            kind: if rollback {
                RolloutEventKind::RolledBack
            } else {
                RolloutEventKind::Halted
            },
            wave: r.wave,
        });
        return (r, events);
    }
    if r.phase == RolloutPhase::Paused {
        return (r, events);
    }
    // Hand the candidate to the next nodes, and pass waves, until something must wait. A
    // node in flight whose presence is not known yet still holds its slot.
    loop {
        let reach = strategy.reach(r.wave, total);
        let holds_slot = |name: &str| index.get(name).is_none_or(|n| n.online || !n.known);
        let mut in_flight = r
            .nodes
            .iter()
            .filter(|(n, t)| t.outcome == Outcome::InFlight && holds_slot(n))
            .count();
        let slots = strategy.max_parallel.map(|m| m.max(1) as usize);
        // One wave of every node and no pacing (the default): every node is handed the
        // candidate at once, offline ones too (they find it retained when back).
        let all_at_once = strategy.waves.len() == 1 && slots.is_none();
        for n in input.nodes {
            if r.nodes.len() >= reach || slots.is_some_and(|s| in_flight >= s) {
                break;
            }
            if (!n.online && !all_at_once) || r.nodes.contains_key(n.name) {
                continue;
            }
            r.nodes.insert(
                n.name.to_owned(),
                Track {
                    wave: r.wave,
                    since_ms: now,
                    outcome: Outcome::InFlight,
                    healthy_since_ms: None,
                    restarts: 0,
                    was_offline: !n.online,
                    seen_online: n.online,
                    failure: None,
                },
            );
            in_flight += usize::from(n.online);
        }
        // Short of its size, a wave is full when no node left could take the candidate:
        // none online, none whose presence is still unknown.
        let could_take = input
            .nodes
            .iter()
            .any(|n| (n.online || !n.known) && !r.nodes.contains_key(n.name));
        let full = r.nodes.len() >= reach || !could_take;
        // A candidate no node has tried yet is never promoted: with every node offline,
        // the rollout waits for the first to come back.
        let evidence = total == 0 || r.nodes.values().any(|t| t.outcome != Outcome::InFlight);
        if !full || in_flight > 0 || !evidence {
            break;
        }
        let passed = r.wave;
        if passed + 1 >= strategy.waves.len() {
            r.last_waves = summary::waves(&r, strategy, input.nodes);
            r.promoted = r.candidate.take();
            r.phase = RolloutPhase::Complete;
            r.nodes.clear();
            events.push(Happened {
                kind: RolloutEventKind::Complete,
                wave: passed,
            });
            break;
        }
        r.wave += 1;
        r.wave_started_ms = now;
        events.push(Happened {
            kind: RolloutEventKind::WavePassed,
            wave: passed,
        });
    }
    (r, events)
}

/// Updates one node's gate: pending → healthy (soak running) → passed; any → failed on a
/// permanent failure; in flight past `timeout_ms` → failed.
fn gate_one(
    t: &mut Track,
    node: &str,
    report: Option<&DeploymentStatus>,
    candidate: &Dep,
    soak_ms: u64,
    timeout_ms: u64,
    now: u64,
) {
    if t.outcome == Outcome::Failed {
        return;
    }
    match gate::observe(node, report, candidate) {
        Gate::Failed(why) => {
            t.outcome = Outcome::Failed;
            t.failure = Some(why);
            return;
        }
        Gate::Healthy { restarts } if t.outcome == Outcome::InFlight => {
            let since = match t.healthy_since_ms {
                Some(s) if t.restarts == restarts => s,
                _ => {
                    t.restarts = restarts;
                    t.healthy_since_ms = Some(now);
                    now
                }
            };
            if now.saturating_sub(since) >= soak_ms {
                t.outcome = Outcome::Passed;
            }
        }
        Gate::Pending if t.outcome == Outcome::InFlight => t.healthy_since_ms = None,
        _ => {}
    }
    if t.outcome == Outcome::InFlight && now.saturating_sub(t.since_ms) >= timeout_ms {
        t.outcome = Outcome::Failed;
        t.failure = Some(gate::reason(
            node,
            None,
            schemas::error_code::WAVE_TIMEOUT,
            &format!(
                "did not pass the health gate within {} (waveTimeout)",
                humantime::format_duration(std::time::Duration::from_millis(timeout_ms))
            ),
        ));
    }
}

/// The first failure of the first wave whose failures exceed its threshold, if any.
fn over_threshold(
    r: &Rollout,
    strategy: &RolloutStrategy,
    total: usize,
    order: &[NodeIn<'_>],
) -> Option<HaltReason> {
    for w in 0..=r.wave {
        let size = strategy.reach(w, total).saturating_sub(if w == 0 {
            0
        } else {
            strategy.reach(w - 1, total)
        });
        let failed = r
            .nodes
            .values()
            .filter(|t| t.wave == w && t.outcome == Outcome::Failed)
            .count();
        if failed > strategy.threshold(w, size) {
            return order
                .iter()
                .filter_map(|n| r.nodes.get(n.name))
                .filter(|t| t.wave == w)
                .find_map(|t| t.failure.clone())
                .or_else(|| {
                    Some(gate::reason(
                        "",
                        None,
                        "failed",
                        "failure threshold exceeded",
                    ))
                });
        }
    }
    None
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
