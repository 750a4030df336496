//! Pure report building: the full [`NodeStatus`] and the [`Event`]s of state transitions.

use crate::plan::{CompView, Observed, Plan};
use crate::runtime::repo_digest_for;
use crate::runtime::spec::{CompKey, Identity, Ownership};
use schemas::wire::{
    AgentInfo, ComponentStatus, DeploymentStatus, DesiredState, ErrorInfo, Event, EventSchema,
    NodeStatus, RuntimeInfo, StatusSchema, UnmanagedContainer,
};
use schemas::{rollup, Health, State};
use std::collections::BTreeMap;

/// Builds the status report. `observed` is `None` when the engine was unreachable: the
/// components then keep the last known views.
#[allow(clippy::too_many_arguments)]
pub fn build_status(
    id: &Identity,
    desired: Option<&DesiredState>,
    plan: &Plan,
    observed: &Observed,
    runtime: &RuntimeInfo,
    agent: AgentInfo,
    rejected: Option<ErrorInfo>,
    reported_at: String,
) -> NodeStatus {
    let mut deployments: Vec<DeploymentStatus> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    if let Some(d) = desired {
        for dep in &d.deployments {
            index.insert(dep.name.clone(), deployments.len());
            deployments.push(DeploymentStatus {
                name: dep.name.clone(),
                state: State::Pending,
                commit: Some(dep.commit.clone()),
                components: Vec::new(),
            });
        }
    }
    for v in &plan.components {
        let i = *index.entry(v.key.0.clone()).or_insert_with(|| {
            deployments.push(DeploymentStatus {
                name: v.key.0.clone(),
                state: State::Removing,
                commit: None,
                components: Vec::new(),
            });
            deployments.len() - 1
        });
        deployments[i]
            .components
            .push(component_status(v, observed));
    }
    for d in &mut deployments {
        d.state = rollup(d.components.iter().map(|c| c.state)).unwrap_or(State::Installed);
    }
    let unmanaged = observed
        .containers
        .iter()
        .filter(|c| id.classify(c) == Ownership::Unmanaged)
        .map(|c| UnmanagedContainer {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            status: c.status.clone(),
        })
        .collect();
    let observed_generation = desired.map_or(0, |d| d.generation);
    let all_desired_installed = desired.is_some_and(|d| {
        d.deployments.iter().all(|dep| {
            deployments
                .iter()
                .any(|s| s.name == dep.name && s.state == State::Installed)
        })
    });
    let leftovers = plan
        .components
        .iter()
        .any(|v| !v.desired && v.state != State::Removed);
    NodeStatus {
        signature: None,
        schema: StatusSchema::V1,
        site: id.site.clone(),
        node: id.node.clone(),
        observed_generation,
        revision: desired.map(|d| d.revision.clone()),
        state: rollup(deployments.iter().map(|d| d.state)),
        converged: all_desired_installed && !leftovers && runtime.reachable,
        reported_at,
        deployments,
        unmanaged,
        runtime: runtime.clone(),
        agent,
        rejected,
    }
}

fn component_status(v: &CompView, observed: &Observed) -> ComponentStatus {
    let c = v.container.as_ref();
    let image = c.and_then(|c| observed.images.get(&c.image_id));
    ComponentStatus {
        name: v.key.1.clone(),
        state: v.state,
        spec_hash: c.and_then(|c| c.label(crate::runtime::label::SPEC_HASH).map(str::to_owned)),
        container_id: c.map(|c| c.id.clone()),
        container_status: c.map(|c| c.status.clone()),
        health: c.map_or(Health::None, |c| c.health),
        restart_count: c.map_or(0, |c| c.restart_count) + v.agent_restarts,
        image: c.map(|c| c.image.clone()),
        image_id: c.map(|c| c.image_id.clone()).filter(|s| !s.is_empty()),
        repo_digest: c.and_then(|c| image.and_then(|i| repo_digest_for(&c.image, i))),
        attempts: v.attempts,
        error: v.error.clone(),
        retrying: v.retrying,
        next_attempt_at: v.next_attempt_at.clone(),
    }
}

/// The states an event diff compares: per deployment (component `None`) and component.
pub type StateMap = BTreeMap<(String, Option<String>), State>;

/// The states of a status report.
pub fn states_of(status: &NodeStatus) -> StateMap {
    let mut m = StateMap::new();
    for d in &status.deployments {
        m.insert((d.name.clone(), None), d.state);
        for c in &d.components {
            m.insert((d.name.clone(), Some(c.name.clone())), c.state);
        }
    }
    m
}

/// Events for every transition from `before` to `status`; `seq` is advanced.
pub fn diff_events(
    before: &StateMap,
    status: &NodeStatus,
    plan: &Plan,
    seq: &mut u64,
    at: &str,
) -> Vec<Event> {
    let reasons: BTreeMap<&CompKey, &CompView> =
        plan.components.iter().map(|v| (&v.key, v)).collect();
    let mut out = Vec::new();
    for d in &status.deployments {
        let mut push =
            |component: Option<&str>, to: State, reason: String, error: Option<ErrorInfo>| {
                let from = before
                    .get(&(d.name.clone(), component.map(str::to_owned)))
                    .copied();
                if from == Some(to) {
                    return;
                }
                *seq += 1;
                out.push(Event {
                    signature: None,
                    schema: EventSchema::V1,
                    seq: *seq,
                    at: at.to_owned(),
                    generation: status.observed_generation,
                    deployment: d.name.clone(),
                    component: component.map(str::to_owned),
                    from,
                    to,
                    reason,
                    error,
                });
            };
        for c in &d.components {
            let key = (d.name.clone(), c.name.clone());
            let reason = reasons
                .get(&key)
                .map_or_else(String::new, |v| v.reason.clone());
            push(Some(&c.name), c.state, reason, c.error.clone());
        }
        let error = d
            .components
            .iter()
            .find(|c| c.state == d.state)
            .and_then(|c| c.error.clone());
        push(
            None,
            d.state,
            format!("most severe component is {}", d.state),
            error,
        );
    }
    out
}

/// A copy without the fields that change on their own (time, uptime), to decide
/// whether a status is worth publishing.
pub fn comparable(status: &NodeStatus) -> NodeStatus {
    let mut s = status.clone();
    s.reported_at.clear();
    s.agent.uptime_s = 0;
    s
}
