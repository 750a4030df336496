//! The site plan: a pure function of (desired site, observed nodes) giving, per node, the
//! actions the seeds' vocabulary names, each with its reason. No I/O, no MQTT or Git types;
//! deterministic (`BTreeMap` order).
//!
//! Deployments: `install` (desired, not running), `update` (running, spec differs),
//! `delete` (running, no longer desired), `restart` (same spec, unhealthy / failed / not
//! running), `noop`. Components: `add`, `update` (image changes), `replace` (same image,
//! other settings change: the container is recreated), `remove`. An offline node's actions
//! are computed all the same and the node is marked `waiting`.

use schemas::state::{Health, State};
use schemas::{DeploymentStatus, DesiredDeployment, NodeStatus};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

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

/// One component step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStep {
    /// Component name.
    pub component: String,
    /// Action.
    pub action: ComponentAction,
    /// Why.
    pub reason: String,
}

/// One deployment step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentStep {
    /// Deployment name.
    pub deployment: String,
    /// Action.
    pub action: DeploymentAction,
    /// Why.
    pub reason: String,
    /// Component steps (empty for `noop`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStep>,
}

/// The plan of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePlan {
    /// Node name.
    pub node: String,
    /// Whether the node is online.
    pub online: bool,
    /// Set when the node's actions wait: `waiting for node (offline)`, or rollout pacing.
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
    let mut summary = BTreeMap::new();
    let mut out = Vec::new();
    let mut sorted: Vec<(&str, NodeInput<'_>)> = nodes.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (name, input) in sorted {
        let p = plan_node(name, input);
        for d in &p.deployments {
            *summary.entry(d.action).or_insert(0) += 1;
        }
        out.push(p);
    }
    Plan {
        site: site.to_owned(),
        commit: commit.to_owned(),
        nodes: out,
        summary,
    }
}

/// Plans one node.
pub fn plan_node(node: &str, input: NodeInput<'_>) -> NodePlan {
    let observed: BTreeMap<&str, &DeploymentStatus> = input
        .observed
        .map(|s| {
            s.deployments
                .iter()
                .filter(|d| d.state != State::Removed)
                .map(|d| (d.name.as_str(), d))
                .collect()
        })
        .unwrap_or_default();
    let desired: BTreeMap<&str, &DesiredDeployment> = input
        .desired
        .iter()
        .map(|d| (d.name.as_str(), *d))
        .collect();
    let mut steps = Vec::with_capacity(desired.len() + observed.len());
    for (name, d) in &desired {
        steps.push(match observed.get(name) {
            None => install(d),
            Some(o) => compare(d, o),
        });
    }
    for (name, o) in &observed {
        if !desired.contains_key(name) {
            steps.push(DeploymentStep {
                deployment: (*name).to_owned(),
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
            });
        }
    }
    steps.sort_by(|a, b| a.deployment.cmp(&b.deployment));
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

fn install(d: &DesiredDeployment) -> DeploymentStep {
    DeploymentStep {
        deployment: d.name.clone(),
        action: DeploymentAction::Install,
        reason: "desired but not on the node".into(),
        components: d
            .components
            .iter()
            .map(|c| ComponentStep {
                component: c.name.clone(),
                action: ComponentAction::Add,
                reason: format!("new container from {}", c.image),
            })
            .collect(),
    }
}

fn compare(d: &DesiredDeployment, o: &DeploymentStatus) -> DeploymentStep {
    let mut comps = Vec::new();
    let mut restart = Vec::new();
    for c in &d.components {
        match o
            .components
            .iter()
            .find(|oc| oc.name == c.name && oc.state != State::Removed)
        {
            None => comps.push(ComponentStep {
                component: c.name.clone(),
                action: ComponentAction::Add,
                reason: format!("new container from {}", c.image),
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
                        ),
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
                let why = if oc.state == State::Failed {
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
                };
                if let Some(reason) = why {
                    restart.push(ComponentStep {
                        component: c.name.clone(),
                        action: ComponentAction::Restart,
                        reason,
                    });
                }
            }
        }
    }
    for oc in &o.components {
        if oc.state != State::Removed && !d.components.iter().any(|c| c.name == oc.name) {
            comps.push(ComponentStep {
                component: oc.name.clone(),
                action: ComponentAction::Remove,
                reason: "no longer in the deployment".into(),
            });
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
            deployment: d.name.clone(),
            action: DeploymentAction::Update,
            reason,
            components: comps,
        }
    } else if !restart.is_empty() {
        let reason = restart
            .iter()
            .map(|s| format!("{}: {}", s.component, s.reason))
            .collect::<Vec<_>>()
            .join("; ");
        DeploymentStep {
            deployment: d.name.clone(),
            action: DeploymentAction::Restart,
            reason,
            components: restart,
        }
    } else {
        DeploymentStep {
            deployment: d.name.clone(),
            action: DeploymentAction::Noop,
            reason: format!("{} at the desired spec", o.state),
            components: Vec::new(),
        }
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
