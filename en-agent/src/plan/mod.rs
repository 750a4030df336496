//! The pure decision: desired document + observed engine + retry memory → what to do next.
//!
//! [`plan`] imports no tokio, MQTT or Docker types. It is level-triggered: it never
//! knows why it runs, it re-derives every component's state from what the engine shows
//! and from [`Memory`] (attempt counts, backoff deadlines, health restarts), and lists the
//! actions that are due now, most urgent first. The reconciler executes the first one and
//! plans again.
//!
//! ## Layout
//! - this file: the plan of a whole document — leftovers first (reverse dependency
//!   order), then each desired deployment in start order, then networks nobody needs;
//! - `component`: the decision for one desired component (keep, start, pull, replace,
//!   create, restart when unhealthy, wait for a dependency or a retry, give up);
//! - [`memory`]: the failure memory the decisions read (attempts, crashes, health
//!   restarts); its retry deadlines come from [`crate::retry`].

mod component;
pub mod memory;
#[cfg(test)]
mod tests;

pub use memory::{CompMemory, Crash, Memory, STABLE_AFTER};

use crate::runtime::spec::{CompKey, Identity, Ownership};
use crate::runtime::{label, ContainerInfo, ContainerSpec, ImageInfo};
use schemas::wire::{DesiredDeployment, DesiredState, ErrorInfo};
use schemas::{Component, State};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// What the engine looks like now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every container.
    pub containers: Vec<ContainerInfo>,
    /// Local images by reference or id (absent: not present locally).
    pub images: BTreeMap<String, ImageInfo>,
    /// This agent's networks.
    pub networks: BTreeSet<String>,
}

/// One thing to do against the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pull an image. `refresh`: the image is present, the tag is pulled once per spec.
    Pull {
        /// Component.
        key: CompKey,
        /// Reference.
        image: String,
        /// Present already (a failure is not fatal).
        refresh: bool,
    },
    /// Create a container (ensuring its network and volumes first).
    Create {
        /// Component.
        key: CompKey,
        /// What to create.
        spec: Box<ContainerSpec>,
    },
    /// Start a created or stopped container.
    Start {
        /// Component.
        key: CompKey,
        /// Container id.
        id: String,
    },
    /// Restart a container that stays unhealthy.
    RestartUnhealthy {
        /// Component.
        key: CompKey,
        /// Container id.
        id: String,
    },
    /// Stop and remove a container.
    Remove {
        /// Component (or leftover).
        key: CompKey,
        /// Container id.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// Remove a network no longer used.
    RemoveNetwork {
        /// Network name.
        name: String,
    },
}

impl Action {
    /// The component the action is about.
    pub fn key(&self) -> Option<&CompKey> {
        match self {
            Action::Pull { key, .. }
            | Action::Create { key, .. }
            | Action::Start { key, .. }
            | Action::RestartUnhealthy { key, .. }
            | Action::Remove { key, .. } => Some(key),
            Action::RemoveNetwork { .. } => None,
        }
    }
}

/// The derived state of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompView {
    /// Deployment and component.
    pub key: CompKey,
    /// Desired (false: a leftover being removed, or removed).
    pub desired: bool,
    /// State.
    pub state: State,
    /// Why, in a few words.
    pub reason: String,
    /// Error to report.
    pub error: Option<ErrorInfo>,
    /// The container that counts.
    pub container: Option<ContainerInfo>,
    /// Attempts spent.
    pub attempts: u32,
    /// Restarts by the agent for health.
    pub agent_restarts: u32,
    /// `failed` for a transient cause (its own, or a dependency's) that is still retried.
    pub retrying: bool,
    /// When, while `retrying` (RFC 3339).
    pub next_attempt_at: Option<String>,
}

/// The result of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Due now, most urgent first.
    pub actions: Vec<Action>,
    /// Every desired component in document order, then leftovers and removed ones.
    pub components: Vec<CompView>,
    /// Plan again at this time at the latest (a backoff ends).
    pub wake_at: Option<Instant>,
}

/// Components of a deployment in start order: dependencies first, document order
/// otherwise; members of a cycle come last.
pub fn start_order(components: &[Component]) -> Vec<usize> {
    let mut done: Vec<usize> = Vec::with_capacity(components.len());
    let mut placed = vec![false; components.len()];
    loop {
        let next = (0..components.len()).find(|&i| {
            !placed[i]
                && components[i].depends_on.iter().all(|d| {
                    components
                        .iter()
                        .position(|c| &c.name == d)
                        .is_none_or(|j| placed[j])
                })
        });
        match next {
            Some(i) => {
                placed[i] = true;
                done.push(i);
            }
            None => break,
        }
    }
    done.extend((0..components.len()).filter(|&i| !placed[i]));
    done
}

fn short_hash(h: &str) -> &str {
    let h = h.strip_prefix("sha256:").unwrap_or(h);
    &h[..h.len().min(8)]
}

fn pick_current<'a>(candidates: &[&'a ContainerInfo]) -> Option<&'a ContainerInfo> {
    let rank = |c: &ContainerInfo| match c.status.as_str() {
        "running" => 0,
        "restarting" => 1,
        "created" => 2,
        _ => 3,
    };
    candidates
        .iter()
        .copied()
        .min_by_key(|c| (rank(c), c.id.clone()))
}

fn err(code: &str, message: impl Into<String>) -> Option<ErrorInfo> {
    Some(ErrorInfo::new(code, message))
}

impl Plan {
    /// Plans again at `t` at the latest, when `t` is still ahead.
    fn wake(&mut self, t: Option<Instant>, now: Instant) {
        if let Some(t) = t.filter(|t| *t > now) {
            self.wake_at = Some(self.wake_at.map_or(t, |w| w.min(t)));
        }
    }
}

/// This agent's containers by component.
type Mine<'a> = BTreeMap<CompKey, Vec<&'a ContainerInfo>>;

/// Plans the next actions. Pure and deterministic.
pub fn plan(
    desired: Option<&DesiredState>,
    observed: &Observed,
    memory: &Memory,
    id: &Identity,
    now: Instant,
) -> Plan {
    let mut out = Plan::default();
    let Some(desired) = desired else {
        return out;
    };
    let mut mine: Mine<'_> = BTreeMap::new();
    for c in &observed.containers {
        if let Ownership::Mine(key) = id.classify(c) {
            mine.entry(key).or_default().push(c);
        }
    }
    let desired_keys: BTreeSet<CompKey> = desired
        .deployments
        .iter()
        .flat_map(|d| {
            d.components
                .iter()
                .map(move |c| (d.name.clone(), c.name.clone()))
        })
        .collect();

    // 1. Leftovers: managed containers of components no longer desired, reverse order.
    let leftover_views = leftovers(&mine, &desired_keys, memory, now, &mut out);

    // 2. Desired deployments, components in start order; reported in document order.
    let names: BTreeSet<&str> = observed
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let site = Site {
        id,
        generation: desired.generation,
        names: &names,
        images: &observed.images,
        now,
    };
    for dep in &desired.deployments {
        let views = deployment(dep, &site, &mine, memory, &mut out);
        out.components.extend(views);
    }
    out.components.extend(leftover_views);
    out.components.extend(removed(memory, &desired_keys, &mine));

    // 3. Networks no container of ours needs any more.
    let wanted: BTreeSet<String> = desired
        .deployments
        .iter()
        .map(|d| id.network_name(&d.name))
        .chain(mine.keys().map(|k| id.network_name(&k.0)))
        .collect();
    for n in &observed.networks {
        if !wanted.contains(n) {
            out.actions.push(Action::RemoveNetwork { name: n.clone() });
        }
    }
    out
}

/// What every component decision of one plan shares.
struct Site<'a> {
    id: &'a Identity,
    generation: u64,
    /// Names of every container on the engine (a new one must not take one).
    names: &'a BTreeSet<&'a str>,
    images: &'a BTreeMap<String, ImageInfo>,
    now: Instant,
}

/// Leftovers (managed containers of components no longer desired): each is removed once
/// no other leftover of its deployment depends on it.
fn leftovers(
    mine: &Mine<'_>,
    desired_keys: &BTreeSet<CompKey>,
    memory: &Memory,
    now: Instant,
    out: &mut Plan,
) -> Vec<CompView> {
    let gated = |m: Option<&CompMemory>| m.and_then(|m| m.next_try).is_some_and(|t| t > now);
    let leftovers: BTreeMap<&CompKey, &Vec<&ContainerInfo>> = mine
        .iter()
        .filter(|(k, _)| !desired_keys.contains(*k))
        .collect();
    let mut views = Vec::new();
    for (key, containers) in &leftovers {
        // Wait while another leftover of the same deployment depends on this one.
        let needed_by = leftovers.iter().find(|(k, cs)| {
            k.0 == key.0
                && k.1 != key.1
                && cs.iter().any(|c| {
                    c.label(label::DEPENDS_ON)
                        .is_some_and(|d| d.split(',').any(|n| n == key.1))
                })
        });
        let m = memory.get(key, "");
        let mut view = CompView {
            key: (*key).clone(),
            desired: false,
            state: State::Removing,
            reason: "no longer desired".into(),
            error: m.and_then(|m| m.last_error.clone()),
            container: pick_current(containers).cloned(),
            attempts: m.map_or(0, |m| m.attempts),
            agent_restarts: 0,
            retrying: false,
            next_attempt_at: None,
        };
        let failed = m.is_some_and(|m| m.failed);
        if failed {
            view.state = State::Failed;
            view.retrying = m.is_some_and(|m| m.retrying);
            view.next_attempt_at = m.and_then(|m| m.next_attempt_at.clone());
        }
        if failed && !view.retrying {
            // Failed for good (until a new generation).
        } else if gated(m) {
            out.wake(m.and_then(|m| m.next_try), now);
        } else if let Some((k, _)) = needed_by {
            view.reason = format!("waiting for {} to be removed first", k.1);
        } else if let Some(c) = containers.first() {
            out.actions.push(Action::Remove {
                key: (*key).clone(),
                id: c.id.clone(),
                reason: "no longer desired",
            });
        }
        views.push(view);
    }
    views
}

/// One desired deployment: its components decided in start order (a dependency's view
/// is known before its dependents'), returned in document order.
fn deployment(
    dep: &DesiredDeployment,
    site: &Site<'_>,
    mine: &Mine<'_>,
    memory: &Memory,
    out: &mut Plan,
) -> Vec<CompView> {
    let mut views: BTreeMap<String, CompView> = BTreeMap::new();
    for i in start_order(&dep.components) {
        let c = &dep.components[i];
        let key: CompKey = (dep.name.clone(), c.name.clone());
        let containers = mine.get(&key).cloned().unwrap_or_default();
        let (same, others): (Vec<&ContainerInfo>, Vec<&ContainerInfo>) = containers
            .iter()
            .partition(|k| k.label(label::SPEC_HASH) == Some(c.spec_hash.as_str()));
        let current = pick_current(&same);
        let mut others: Vec<&ContainerInfo> = others;
        others.extend(
            same.iter()
                .filter(|k| Some(k.id.as_str()) != current.map(|c| c.id.as_str())),
        );
        let dep_failed = c
            .depends_on
            .iter()
            .find_map(|d| views.get(d).filter(|v| v.state == State::Failed));
        let dep_waiting = c
            .depends_on
            .iter()
            .find(|d| !views.get(*d).is_some_and(|v| v.state == State::Installed));
        let step = component::decide(&component::Ctx {
            site,
            dep,
            c,
            memory: memory.get(&key, &c.spec_hash),
            key,
            current,
            others,
            dep_failed,
            dep_waiting: dep_waiting.map(String::as_str),
        });
        out.actions.extend(step.actions);
        out.wake(step.wake_at, site.now);
        views.insert(c.name.clone(), step.view);
    }
    dep.components
        .iter()
        .filter_map(|c| views.remove(&c.name))
        .collect()
}

/// Components removed during this generation and gone from the engine.
fn removed(memory: &Memory, desired_keys: &BTreeSet<CompKey>, mine: &Mine<'_>) -> Vec<CompView> {
    let mut views = Vec::new();
    for (dep, comps) in &memory.removed {
        for comp in comps {
            let key = (dep.clone(), comp.clone());
            if !desired_keys.contains(&key) && !mine.contains_key(&key) {
                views.push(CompView {
                    key,
                    desired: false,
                    state: State::Removed,
                    reason: "removed".into(),
                    error: None,
                    container: None,
                    attempts: 0,
                    agent_restarts: 0,
                    retrying: false,
                    next_attempt_at: None,
                });
            }
        }
    }
    views
}
