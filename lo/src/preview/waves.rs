//! The rollout view of `lo plan`: for every deployment step that changes a node's spec
//! (`install`, `update`), which wave of the deployment's rollout the node is in and whether
//! it gets the new spec now, for a rollout that starts now. Pure.
//!
//! The waves are the LO's ([`crate::rollout`]): nodes in [`rollout::order`] (canaries
//! first, then by name), wave `i` bringing the candidate to
//! [`RolloutStrategy::reach`]`(i)` of the deployment's targeted nodes, offline nodes
//! skipped (their turn goes to the next online node; they have no wave), at most
//! `maxParallel` applying it at once inside the first wave. The default strategy (one wave,
//! no `maxParallel`) hands every node the new spec at once, offline ones too. A paused
//! rollout hands nobody anything.
//!
//! Not modelled: a rollout already under way on the LO (its wave, the nodes it handed the
//! candidate to, the promoted version) is not read; the view is what a rollout starting
//! from the planned commit would do.

use super::{short, DeploymentAction, Plan};
use crate::render::Inventory;
use crate::rollout;
use schemas::site::{RolloutStrategy, SiteDocs};
use schemas::state::State;
use schemas::NodeStatus;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Where one node stands in one deployment's rollout (`deployments[].rollout` in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaveView {
    /// The node's wave, 1-based (`None`: offline, skipped by the rollout).
    pub wave: Option<usize>,
    /// Waves of the deployment's rollout.
    pub waves: usize,
    /// The node is handed the new spec now.
    pub now: bool,
    /// The line the text output prints.
    #[serde(skip)]
    pub text: String,
}

impl fmt::Display for WaveView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A node's place in a rollout that starts now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Wave, 0-based (`None`: offline, skipped).
    pub wave: Option<usize>,
    /// Handed the candidate now.
    pub now: bool,
}

/// One deployment's rollout: its strategy and its targeted nodes in rollout order, each
/// with whether it is online.
#[derive(Debug, Clone)]
pub struct DeploymentWaves<'a> {
    /// The resolved strategy.
    pub strategy: &'a RolloutStrategy,
    /// Targeted nodes, in [`rollout::order`], with presence.
    pub nodes: Vec<(&'a str, bool)>,
}

/// The slot of each node of `nodes` (in rollout order, with presence), as
/// [`rollout::step`] hands the candidate out for a rollout that starts now: the `k`-th node
/// it takes (offline nodes are not taken, except by the default strategy) is in the first
/// wave `i` with `reach(i) > k`; the first `maxParallel` of the first wave get it now.
pub fn slots(strategy: &RolloutStrategy, nodes: &[(&str, bool)]) -> Vec<Slot> {
    let total = nodes.len();
    let waves = strategy.waves.len().max(1);
    let cap = strategy.max_parallel.map(|m| m.max(1) as usize);
    let all_at_once = strategy.waves.len() == 1 && cap.is_none();
    let mut taken = 0usize;
    nodes
        .iter()
        .map(|&(_, online)| {
            if !online && !all_at_once {
                return Slot {
                    wave: None,
                    now: false,
                };
            }
            let wave = (0..waves)
                .find(|&i| strategy.reach(i, total) > taken)
                .unwrap_or(waves - 1);
            let now = !strategy.paused && wave == 0 && cap.is_none_or(|c| taken < c);
            taken += 1;
            Slot {
                wave: Some(wave),
                now,
            }
        })
        .collect()
}

/// Every deployment of the site with its targeted nodes in rollout order; `online` says
/// whether a node is online.
pub fn deployments<'a>(
    docs: &'a SiteDocs,
    inv: &'a Inventory,
    online: impl Fn(&str) -> bool,
) -> BTreeMap<&'a str, DeploymentWaves<'a>> {
    docs.deployments
        .iter()
        .map(|(name, d)| {
            let order = rollout::order(
                inv.nodes
                    .iter()
                    .filter(|(n, l)| d.targets.matches(n, l))
                    .map(|(n, l)| (n.as_str(), l)),
            );
            let nodes = order.into_iter().map(|n| (n, online(n))).collect();
            (
                name.as_str(),
                DeploymentWaves {
                    strategy: &d.rollout,
                    nodes,
                },
            )
        })
        .collect()
}

/// What a node runs of a deployment now, as its status says.
enum Current<'a> {
    /// No status from the node.
    Unknown,
    /// The status does not list it.
    Absent,
    /// Running, at this commit if reported.
    Running(Option<&'a str>),
}

fn current<'a>(status: Option<&'a NodeStatus>, deployment: &str) -> Current<'a> {
    let Some(s) = status else {
        return Current::Unknown;
    };
    match s
        .deployments
        .iter()
        .find(|d| d.name == deployment && d.state != State::Removed)
    {
        Some(d) => Current::Running(d.commit.as_deref()),
        None => Current::Absent,
    }
}

/// The text of a slot: `wave 1/3 (canary): gets web@<commit> now`, `wave 2/3: keeps
/// web@<commit> until wave 1 passes`, …
fn text(
    slot: Slot,
    waves: usize,
    strategy: &RolloutStrategy,
    deployment: &str,
    commit: &str,
    current: Current<'_>,
) -> String {
    let keeps = match current {
        Current::Unknown => format!("keeps its current {deployment} (unknown: no status)"),
        Current::Absent => format!("runs no {deployment}"),
        Current::Running(Some(c)) => format!("keeps {deployment}@{}", short(c)),
        Current::Running(None) => format!("keeps its current {deployment}"),
    };
    let Some(wave) = slot.wave else {
        return format!("no wave (offline, skipped): {keeps}; its turn comes when back online");
    };
    let canary = if wave == 0 && waves > 1 {
        " (canary)"
    } else {
        ""
    };
    let head = format!("wave {}/{waves}{canary}", wave + 1);
    if slot.now {
        format!("{head}: gets {deployment}@{} now", short(commit))
    } else if strategy.paused {
        format!("{head}: {keeps} while the rollout is paused")
    } else if wave == 0 {
        let cap = strategy.max_parallel.map_or(1, |m| m.max(1));
        format!("{head}: {keeps} until a slot frees (maxParallel {cap})")
    } else {
        format!("{head}: {keeps} until wave {wave} passes")
    }
}

/// Marks every `install` and `update` step of `plan` with the node's wave in its
/// deployment's rollout (`deployments`, from [`deployments`]; `status` gives each node's
/// last status), and sets `waiting` on an online node none of whose changes happen now.
pub fn annotate<'a>(
    plan: &mut Plan,
    deployments: &BTreeMap<&str, DeploymentWaves<'_>>,
    status: impl Fn(&str) -> Option<&'a NodeStatus>,
) {
    let mut slots_of: BTreeMap<&str, BTreeMap<&str, Slot>> = BTreeMap::new();
    for (name, d) in deployments {
        let s = slots(d.strategy, &d.nodes);
        slots_of.insert(name, d.nodes.iter().map(|(n, _)| *n).zip(s).collect());
    }
    for node in &mut plan.nodes {
        let st = status(&node.node);
        for step in &mut node.deployments {
            if !matches!(
                step.action,
                DeploymentAction::Install | DeploymentAction::Update
            ) {
                continue;
            }
            let (Some(d), Some(slot)) = (
                deployments.get(step.deployment.as_str()),
                slots_of
                    .get(step.deployment.as_str())
                    .and_then(|s| s.get(node.node.as_str())),
            ) else {
                continue;
            };
            let waves = d.strategy.waves.len().max(1);
            step.rollout = Some(WaveView {
                wave: slot.wave.map(|w| w + 1),
                waves,
                now: slot.now,
                text: text(
                    *slot,
                    waves,
                    d.strategy,
                    &step.deployment,
                    &plan.commit,
                    current(st, &step.deployment),
                ),
            });
        }
        if node.waiting.is_some() || !node.online {
            continue;
        }
        let mut changes = node
            .deployments
            .iter()
            .filter(|s| s.action != DeploymentAction::Noop)
            .peekable();
        if changes.peek().is_none() {
            continue;
        }
        let mut first_wait = None;
        for s in changes {
            match &s.rollout {
                Some(r) if !r.now => {
                    first_wait.get_or_insert((r, deployments.get(s.deployment.as_str())));
                }
                // Something happens now.
                _ => {
                    first_wait = None;
                    break;
                }
            }
        }
        node.waiting = first_wait.map(|(r, d)| waiting(r, d));
    }
}

/// The `waiting` marker of an online node whose first change waits as `r` says.
fn waiting(r: &WaveView, d: Option<&DeploymentWaves<'_>>) -> String {
    if d.is_some_and(|d| d.strategy.paused) {
        "waiting for the rollout to resume (paused)".to_owned()
    } else if r.wave == Some(1) {
        rollout::WAITING.to_owned()
    } else {
        match r.wave {
            Some(w) => format!("waiting for its turn (rollout wave {w}/{})", r.waves),
            None => "waiting for its turn (rollout)".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
