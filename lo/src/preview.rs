//! The preview behind `lo plan`: a pure function of (desired site, observed nodes) giving,
//! per node, the actions the seeds' vocabulary names, each with its reason. It shows what
//! the agents would do; it does not decide what the LO publishes. No I/O, no MQTT or Git
//! types; deterministic (`BTreeMap` order).
//!
//! Deployments: `install` (desired, not running), `update` (running, spec differs),
//! `delete` (running, no longer desired), `restart` (same spec, unhealthy / failed / not
//! running), `noop`. Components: `add`, `update` (image changes), `replace` (same image,
//! other settings change: the container is recreated), `remove`. An offline node's actions
//! are computed all the same and the node is marked `waiting`. [`waves`] adds the rollout
//! view: which wave of its deployment's rollout a node is in for each step that changes
//! its spec, and whether it gets the new spec now.

use schemas::component::Component;
use schemas::state::{Health, State};
use schemas::{ComponentStatus, DeploymentStatus, DesiredDeployment, NodeStatus};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;
use std::sync::Arc;

pub mod waves;

/// What happens to a deployment on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentAction {
    /// Desired, not on the node.
    Install,
    /// On the node with another spec.
    Update,
    /// On the node, no longer desired.
    Delete,
    /// Same spec, but failed, unhealthy or not running.
    Restart,
    /// Nothing to do.
    Noop,
}

impl DeploymentAction {
    /// Every action, in order.
    pub const ALL: [DeploymentAction; 5] = [
        DeploymentAction::Install,
        DeploymentAction::Update,
        DeploymentAction::Delete,
        DeploymentAction::Restart,
        DeploymentAction::Noop,
    ];
    const COUNT: usize = Self::ALL.len();

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentAction::Install => "install",
            DeploymentAction::Update => "update",
            DeploymentAction::Delete => "delete",
            DeploymentAction::Restart => "restart",
            DeploymentAction::Noop => "noop",
        }
    }
}

/// What happens to a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentAction {
    /// New container.
    Add,
    /// New image.
    Update,
    /// Same image, other settings: recreated.
    Replace,
    /// Container removed.
    Remove,
    /// Restarted as it is.
    Restart,
}

impl ComponentAction {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentAction::Add => "add",
            ComponentAction::Update => "update",
            ComponentAction::Replace => "replace",
            ComponentAction::Remove => "remove",
            ComponentAction::Restart => "restart",
        }
    }
}

/// A deployment name in a plan. Every step of a plan that names the same deployment shares
/// one string (a plan of 10,000 nodes × 20 deployments holds 20 names, not 150,000). Reads,
/// prints, compares and serialises as the string it holds.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

impl Name {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(Arc::from(s))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name(Arc::from(s))
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// One component step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStep {
    /// Component name.
    pub component: String,
    /// Action.
    pub action: ComponentAction,
    /// Why (most reasons are fixed texts, not allocated per step).
    pub reason: Cow<'static, str>,
}

/// One deployment step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentStep {
    /// Deployment name.
    pub deployment: Name,
    /// Action.
    pub action: DeploymentAction,
    /// Why (most reasons are fixed texts, not allocated per step).
    pub reason: Cow<'static, str>,
    /// Component steps (empty for `noop`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStep>,
    /// The node's wave in the deployment's rollout, for a step that changes its spec
    /// (set by [`waves::annotate`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<waves::WaveView>,
}

/// The plan of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePlan {
    /// Node name.
    pub node: String,
    /// Whether the node is online.
    pub online: bool,
    /// Set when the node's actions wait: `waiting for node (offline)`, or its turn in a
    /// rollout (pacing, a later wave: see [`waves::annotate`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Steps, by deployment name.
    pub deployments: Vec<DeploymentStep>,
}

impl NodePlan {
    /// True when some step is not `noop`.
    pub fn has_changes(&self) -> bool {
        self.deployments
            .iter()
            .any(|d| d.action != DeploymentAction::Noop)
    }
}

/// The site plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Site.
    pub site: String,
    /// Commit planned.
    pub commit: String,
    /// Nodes, by name.
    pub nodes: Vec<NodePlan>,
    /// Number of deployment steps per action.
    pub summary: BTreeMap<DeploymentAction, usize>,
}

impl Plan {
    /// True when some node has a step that is not `noop` (the `2` exit code).
    pub fn has_changes(&self) -> bool {
        self.nodes.iter().any(NodePlan::has_changes)
    }
}

/// The input for one node.
#[derive(Debug, Clone, Copy)]
pub struct NodeInput<'a> {
    /// Desired deployments (empty: the node must run nothing).
    pub desired: &'a [&'a DesiredDeployment],
    /// The node's last full report.
    pub observed: Option<&'a NodeStatus>,
    /// Whether the node is online.
    pub online: bool,
    /// Rollout pacing holds this node back.
    pub paced: bool,
}

/// Plans a site.
pub fn plan<'a>(
    site: &str,
    commit: &str,
    nodes: impl IntoIterator<Item = (&'a str, NodeInput<'a>)>,
) -> Plan {
    let mut sorted: Vec<(&str, NodeInput<'_>)> = nodes.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut counts = [0usize; DeploymentAction::COUNT];
    let mut out = Vec::with_capacity(sorted.len());
    let mut scratch = Scratch::default();
    for (name, input) in sorted {
        let p = plan_node_with(name, input, &mut scratch);
        for d in &p.deployments {
            counts[d.action as usize] += 1;
        }
        out.push(p);
    }
    Plan {
        site: site.to_owned(),
        commit: commit.to_owned(),
        nodes: out,
        summary: summary_of(&counts),
    }
}

/// The number of deployment steps per action a [`plan`] of the same input would give (its
/// `summary`), without building the plan: no steps, no names, no reasons. For callers that
/// need only the counts, e.g. the `lo_plan_*` metrics re-computed while statuses change.
pub fn count<'a>(
    nodes: impl IntoIterator<Item = (&'a str, NodeInput<'a>)>,
) -> BTreeMap<DeploymentAction, usize> {
    let mut counts = [0usize; DeploymentAction::COUNT];
    let mut scratch = Scratch::default();
    for (_, input) in nodes {
        scratch.fill(input);
        let Scratch {
            desired, observed, ..
        } = &scratch;
        merge(desired, observed, |step| {
            let action = match step {
                Step::Install(_) => DeploymentAction::Install,
                Step::Compare(d, o) => compare_action(d, o),
                Step::Delete(..) => DeploymentAction::Delete,
            };
            counts[action as usize] += 1;
        });
    }
    summary_of(&counts)
}

fn summary_of(counts: &[usize; DeploymentAction::COUNT]) -> BTreeMap<DeploymentAction, usize> {
    DeploymentAction::ALL
        .into_iter()
        .filter(|a| counts[*a as usize] > 0)
        .map(|a| (a, counts[a as usize]))
        .collect()
}

/// Plans one node.
pub fn plan_node(node: &str, input: NodeInput<'_>) -> NodePlan {
    plan_node_with(node, input, &mut Scratch::default())
}

/// A node's desired and observed deployments by name (name order, one per name: the last of
/// equal names, as collecting into a `BTreeMap` keeps). Reused from node to node.
#[derive(Default)]
struct Scratch<'a> {
    desired: Vec<(&'a str, &'a DesiredDeployment)>,
    observed: Vec<(&'a str, &'a DeploymentStatus)>,
    names: Names<'a>,
}

/// The deployment names of a plan, each allocated once.
#[derive(Default)]
struct Names<'a>(HashMap<&'a str, Name, BuildHasherDefault<NameHasher>>);

impl<'a> Names<'a> {
    fn get(&mut self, name: &'a str) -> Name {
        self.0
            .entry(name)
            .or_insert_with(|| Name::from(name))
            .clone()
    }
}

/// FNV-1a: deployment names are short, and the map is private to one plan (no untrusted
/// keys choose its layout to any effect but speed).
struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        NameHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl<'a> Scratch<'a> {
    fn fill(&mut self, input: NodeInput<'a>) {
        by_name(
            &mut self.desired,
            input.desired.iter().map(|d| (d.name.as_str(), *d)),
        );
        by_name(
            &mut self.observed,
            input
                .observed
                .into_iter()
                .flat_map(|s| s.deployments.iter())
                .filter(|d| d.state != State::Removed)
                .map(|d| (d.name.as_str(), d)),
        );
    }
}

/// Fills `out` with `items` in name order, the last of equal names kept. Items that already
/// come in strictly increasing name order (what the LO renders and agents report) are taken
/// as they are, without a map.
fn by_name<'a, T: Copy>(out: &mut Vec<(&'a str, T)>, items: impl Iterator<Item = (&'a str, T)>) {
    out.clear();
    out.extend(items);
    if !out.windows(2).all(|w| w[0].0 < w[1].0) {
        let map: BTreeMap<&str, T> = out.drain(..).collect();
        out.extend(map);
    }
}

/// One deployment of a node, as the merge of desired and observed by name finds it.
enum Step<'a> {
    Install(&'a DesiredDeployment),
    Compare(&'a DesiredDeployment, &'a DeploymentStatus),
    Delete(&'a str, &'a DeploymentStatus),
}

/// Walks desired and observed (both in name order, unique names) together, calling `f` for
/// every deployment name in order.
fn merge<'a>(
    desired: &[(&'a str, &'a DesiredDeployment)],
    observed: &[(&'a str, &'a DeploymentStatus)],
    mut f: impl FnMut(Step<'a>),
) {
    let (mut i, mut j) = (0, 0);
    loop {
        match (desired.get(i), observed.get(j)) {
            (Some(&(dn, d)), Some(&(on, o))) => match dn.cmp(on) {
                std::cmp::Ordering::Less => {
                    f(Step::Install(d));
                    i += 1;
                }
                std::cmp::Ordering::Equal => {
                    f(Step::Compare(d, o));
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Greater => {
                    f(Step::Delete(on, o));
                    j += 1;
                }
            },
            (Some(&(_, d)), None) => {
                f(Step::Install(d));
                i += 1;
            }
            (None, Some(&(on, o))) => {
                f(Step::Delete(on, o));
                j += 1;
            }
            (None, None) => break,
        }
    }
}

fn plan_node_with<'a>(node: &str, input: NodeInput<'a>, scratch: &mut Scratch<'a>) -> NodePlan {
    scratch.fill(input);
    let Scratch {
        desired,
        observed,
        names,
    } = scratch;
    // Desired steps and deletions, merged by name: the steps come out in name order.
    let mut steps = Vec::with_capacity(desired.len().max(observed.len()));
    merge(desired, observed, |step| {
        steps.push(match step {
            Step::Install(d) => install(d, names.get(&d.name)),
            Step::Compare(d, o) => compare(d, o, names.get(&d.name)),
            Step::Delete(name, o) => delete(o, names.get(name)),
        })
    });
    let has_changes = steps.iter().any(|s| s.action != DeploymentAction::Noop);
    let waiting = if !has_changes {
        None
    } else if !input.online {
        Some("waiting for node (offline)".to_owned())
    } else if input.paced {
        Some("waiting for its turn (rollout maxParallel)".to_owned())
    } else {
        None
    };
    NodePlan {
        node: node.to_owned(),
        online: input.online,
        waiting,
        deployments: steps,
    }
}

fn delete(o: &DeploymentStatus, name: Name) -> DeploymentStep {
    DeploymentStep {
        deployment: name,
        action: DeploymentAction::Delete,
        reason: "running but no longer desired".into(),
        components: o
            .components
            .iter()
            .filter(|c| c.state != State::Removed)
            .map(|c| ComponentStep {
                component: c.name.clone(),
                action: ComponentAction::Remove,
                reason: "deployment deleted".into(),
            })
            .collect(),
        rollout: None,
    }
}

fn install(d: &DesiredDeployment, name: Name) -> DeploymentStep {
    DeploymentStep {
        deployment: name,
        action: DeploymentAction::Install,
        reason: "desired but not on the node".into(),
        components: d
            .components
            .iter()
            .map(|c| ComponentStep {
                component: c.name.clone(),
                action: ComponentAction::Add,
                reason: format!("new container from {}", c.image).into(),
            })
            .collect(),
        rollout: None,
    }
}

/// The observed component each desired one is compared with (the first of its name that is
/// not removed), and whether some observed component is not in the desired deployment.
///
/// An agent reports a deployment's components in the desired order, so the observed
/// component at the same index is tried first: while the names agree index by index, the
/// first observed component of a name is at its desired index (unless the desired
/// deployment repeats the name, checked on the desired side), and when all agree no observed
/// component is extra. Anything else falls back to a search by name.
fn match_components<'o>(
    d: &DesiredDeployment,
    o: &'o DeploymentStatus,
    mut f: impl FnMut(&Component, Option<&'o ComponentStatus>) -> ControlFlow<()>,
) -> ControlFlow<(), bool> {
    // `o.components[j].name == d.components[j].name` for every `j` before the current one.
    let mut aligned = true;
    for (i, c) in d.components.iter().enumerate() {
        let at_index = o.components.get(i).filter(|oc| oc.name == c.name);
        let oc = match at_index {
            Some(oc)
                if aligned
                    && oc.state != State::Removed
                    && !d.components[..i].iter().any(|e| e.name == c.name) =>
            {
                Some(oc)
            }
            _ => o
                .components
                .iter()
                .find(|oc| oc.name == c.name && oc.state != State::Removed),
        };
        aligned &= at_index.is_some();
        f(c, oc)?;
    }
    let extra = !(aligned && o.components.len() == d.components.len())
        && o.components.iter().any(|oc| is_extra(d, oc));
    ControlFlow::Continue(extra)
}

/// An observed component that is not (or no longer) in the desired deployment.
fn is_extra(d: &DesiredDeployment, oc: &ComponentStatus) -> bool {
    oc.state != State::Removed && !d.components.iter().any(|c| c.name == oc.name)
}

/// Whether an observed component at the desired spec must be restarted: what
/// [`restart_reason`] gives a reason for.
fn needs_restart(oc: &ComponentStatus) -> bool {
    oc.state == State::Failed
        || oc.health == Health::Unhealthy
        || oc
            .container_status
            .as_deref()
            .is_some_and(|s| s != "running" && oc.state == State::Installed)
}

fn restart_reason(oc: &ComponentStatus) -> Option<String> {
    if oc.state == State::Failed {
        Some(match &oc.error {
            Some(e) => format!("failed: {} ({})", e.code, e.message),
            None => "failed".to_owned(),
        })
    } else if oc.health == Health::Unhealthy {
        Some("unhealthy".to_owned())
    } else if oc
        .container_status
        .as_deref()
        .is_some_and(|s| s != "running" && oc.state == State::Installed)
    {
        Some(format!(
            "container {}",
            oc.container_status.as_deref().unwrap_or("?")
        ))
    } else {
        None
    }
}

/// The action [`compare`] decides, without its steps and reasons.
fn compare_action(d: &DesiredDeployment, o: &DeploymentStatus) -> DeploymentAction {
    let mut restart = false;
    let extra = match_components(d, o, |c, oc| match oc {
        Some(oc) if oc.spec_hash.as_deref() == Some(c.spec_hash.as_str()) => {
            restart |= needs_restart(oc);
            ControlFlow::Continue(())
        }
        _ => ControlFlow::Break(()),
    });
    match extra {
        ControlFlow::Break(()) | ControlFlow::Continue(true) => DeploymentAction::Update,
        ControlFlow::Continue(false) if restart => DeploymentAction::Restart,
        ControlFlow::Continue(false) => DeploymentAction::Noop,
    }
}

fn compare(d: &DesiredDeployment, o: &DeploymentStatus, name: Name) -> DeploymentStep {
    let mut comps = Vec::new();
    let mut restart = Vec::new();
    let extra = match_components(d, o, |c, oc| {
        match oc {
            None => comps.push(ComponentStep {
                component: c.name.clone(),
                action: ComponentAction::Add,
                reason: format!("new container from {}", c.image).into(),
            }),
            Some(oc) if oc.spec_hash.as_deref() != Some(c.spec_hash.as_str()) => {
                if oc.image.as_deref().is_some_and(|i| i != c.image) {
                    comps.push(ComponentStep {
                        component: c.name.clone(),
                        action: ComponentAction::Update,
                        reason: format!(
                            "image {} -> {}",
                            oc.image.as_deref().unwrap_or("?"),
                            c.image
                        )
                        .into(),
                    });
                } else {
                    comps.push(ComponentStep {
                        component: c.name.clone(),
                        action: ComponentAction::Replace,
                        reason: "spec changed (same image): container recreated".into(),
                    });
                }
            }
            Some(oc) => {
                if let Some(reason) = restart_reason(oc) {
                    restart.push(ComponentStep {
                        component: c.name.clone(),
                        action: ComponentAction::Restart,
                        reason: reason.into(),
                    });
                }
            }
        }
        ControlFlow::Continue(())
    });
    if extra == ControlFlow::Continue(true) {
        for oc in &o.components {
            if is_extra(d, oc) {
                comps.push(ComponentStep {
                    component: oc.name.clone(),
                    action: ComponentAction::Remove,
                    reason: "no longer in the deployment".into(),
                });
            }
        }
    }
    if !comps.is_empty() {
        let reason = match &o.commit {
            Some(c) if *c != d.commit => {
                format!("spec changed ({} -> {})", short(c), short(&d.commit))
            }
            _ => "spec changed".to_owned(),
        };
        DeploymentStep {
            deployment: name,
            action: DeploymentAction::Update,
            reason: reason.into(),
            components: comps,
            rollout: None,
        }
    } else if !restart.is_empty() {
        let reason = restart
            .iter()
            .map(|s| format!("{}: {}", s.component, s.reason))
            .collect::<Vec<_>>()
            .join("; ");
        DeploymentStep {
            deployment: name,
            action: DeploymentAction::Restart,
            reason: reason.into(),
            components: restart,
            rollout: None,
        }
    } else {
        DeploymentStep {
            deployment: name,
            action: DeploymentAction::Noop,
            reason: noop_reason(o.state).into(),
            components: Vec::new(),
            rollout: None,
        }
    }
}

/// `"<state> at the desired spec"`, without formatting.
fn noop_reason(state: State) -> &'static str {
    match state {
        State::Pending => "pending at the desired spec",
        State::Installing => "installing at the desired spec",
        State::Installed => "installed at the desired spec",
        State::Removing => "removing at the desired spec",
        State::Removed => "removed at the desired spec",
        State::Failed => "failed at the desired spec",
    }
}

/// The first 12 characters of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "site {} at {}", self.site, short(&self.commit))?;
        for n in &self.nodes {
            let state = if n.online { "online" } else { "offline" };
            match &n.waiting {
                Some(w) => writeln!(f, "\nnode {} ({state}) — {w}", n.node)?,
                None => writeln!(f, "\nnode {} ({state})", n.node)?,
            }
            if n.deployments.is_empty() {
                writeln!(f, "  (nothing desired, nothing running)")?;
            }
            for d in &n.deployments {
                let sign = match d.action {
                    DeploymentAction::Install => "+",
                    DeploymentAction::Update => "~",
                    DeploymentAction::Delete => "-",
                    DeploymentAction::Restart => "!",
                    DeploymentAction::Noop => " ",
                };
                writeln!(
                    f,
                    "  {sign} {} {}: {}",
                    d.action.as_str(),
                    d.deployment,
                    d.reason
                )?;
                if let Some(r) = &d.rollout {
                    writeln!(f, "    {r}")?;
                }
                for c in &d.components {
                    writeln!(
                        f,
                        "      {} {}: {}",
                        c.action.as_str(),
                        c.component,
                        c.reason
                    )?;
                }
            }
        }
        let parts: Vec<String> = self
            .summary
            .iter()
            .map(|(a, n)| format!("{n} {}", a.as_str()))
            .collect();
        writeln!(
            f,
            "\nplan: {}",
            if parts.is_empty() {
                "no nodes".to_owned()
            } else {
                parts.join(", ")
            }
        )
    }
}

#[cfg(test)]
mod tests;
