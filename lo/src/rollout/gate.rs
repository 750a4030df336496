//! The health gate of one node for one deployment, read from its status report: pure.
//!
//! A node passes when every component of the candidate is `installed`, runs the candidate's
//! spec (the container's spec-hash label), is `healthy` where the component has a
//! healthcheck, and has not restarted for the wave's soak. It fails on a `failed` component
//! that the agent does not retry (a permanent cause: image not found, pull denied, crash
//! loop past the attempt budget), or when it has not passed within `waveTimeout`. A
//! component `failed` with `retrying: true` (a transient cause) holds the node pending.

use crate::render::Dep;
use schemas::{DeploymentStatus, HaltReason, Health, State};

/// Longest `message` kept in a halt reason (bytes).
pub const MAX_REASON_BYTES: usize = 256;

/// What one report says about the candidate on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Not there yet (no report at the node's current generation, installing, retrying a
    /// transient failure, starting, or running another spec).
    Pending,
    /// Every component runs the candidate, installed and healthy; `restarts` is their total
    /// restart count (a change restarts the soak).
    Healthy {
        /// Sum of the components' restart counts.
        restarts: u32,
    },
    /// A permanent failure: the node counts as failed.
    Failed(HaltReason),
}

/// Reads the gate of `node` from its report of the deployment (`None`: no report at the
/// node's current generation).
pub fn observe(node: &str, report: Option<&DeploymentStatus>, candidate: &Dep) -> Gate {
    let Some(report) = report else {
        return Gate::Pending;
    };
    let mut failed = report
        .components
        .iter()
        .filter(|c| c.state == State::Failed);
    if let Some(c) = failed.clone().find(|c| !c.retrying) {
        let (code, message) = match &c.error {
            Some(e) => (e.code.clone(), e.message.clone()),
            None => ("failed".to_owned(), format!("component {} failed", c.name)),
        };
        return Gate::Failed(reason(node, Some(&c.name), &code, &message));
    }
    if failed.next().is_some() {
        // Every failed component is being retried (a transient cause).
        return Gate::Pending;
    }
    if report.state == State::Failed {
        return Gate::Failed(reason(node, None, "failed", "deployment failed"));
    }
    let mut restarts: u32 = 0;
    for want in &candidate.spec.components {
        let Some(c) = report.components.iter().find(|c| c.name == want.name) else {
            return Gate::Pending;
        };
        let healthy = want.healthcheck.is_none() || c.health == Health::Healthy;
        if c.state != State::Installed
            || c.spec_hash.as_deref() != Some(want.spec_hash.as_str())
            || !healthy
        {
            return Gate::Pending;
        }
        restarts = restarts.saturating_add(c.restart_count);
    }
    Gate::Healthy { restarts }
}

/// A deployment reported `failed` only because of components the agent keeps retrying (a
/// transient cause that may heal): no decision is taken on it yet.
pub fn only_retrying(report: &DeploymentStatus) -> bool {
    let mut failed = report
        .components
        .iter()
        .filter(|c| c.state == State::Failed)
        .peekable();
    failed.peek().is_some() && failed.all(|c| c.retrying)
}

/// A bounded halt reason.
pub fn reason(node: &str, component: Option<&str>, code: &str, message: &str) -> HaltReason {
    HaltReason {
        node: node.to_owned(),
        component: component.map(|c| schemas::shorten(c, 64)),
        code: schemas::shorten(code, 64),
        message: schemas::shorten(message, MAX_REASON_BYTES),
    }
}
