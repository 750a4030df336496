//! Pure policy decisions: the deletion guard on new commits, and what a `failed` deployment
//! leads to (hold or roll back), without loops.

use crate::render::{Dep, NodeDesired, RollbackOverride};
use schemas::site::SiteSpec;
use schemas::state::State;
use schemas::{NodeStatus, OnFailure};
use std::collections::{BTreeMap, BTreeSet};

/// Operator overrides of the deletion guard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardFlags {
    /// Allow a commit that removes every deployment.
    pub allow_empty: bool,
    /// Allow a commit that removes more than `maxDeletePercent` of the deployments.
    pub allow_mass_delete: bool,
}

/// Checks a new revision against the one served. `None`: accept; `Some(reason)`: hold.
/// The first revision ever served (`previous` = `None`) is never held.
pub fn deletion_guard(
    previous: Option<&BTreeSet<String>>,
    next: &BTreeSet<String>,
    spec: &SiteSpec,
    flags: GuardFlags,
) -> Option<String> {
    let prev = previous?;
    if prev.is_empty() {
        return None;
    }
    let removed = prev.difference(next).count();
    if next.is_empty() {
        if spec.allow_empty || flags.allow_empty {
            return None;
        }
        return Some(format!(
            "commit removes all {} deployments; set `allowEmpty: true` in the Site or run with --allow-empty",
            prev.len()
        ));
    }
    let max = u64::from(spec.max_delete_percent.unwrap_or(50));
    let pct = removed as u64 * 100 / prev.len() as u64;
    if max < 100 && removed as u64 * 100 > max * prev.len() as u64 && !flags.allow_mass_delete {
        return Some(format!(
            "commit removes {removed} of {} deployments ({pct}% > maxDeletePercent {max}%); run with --allow-mass-delete to accept",
            prev.len()
        ));
    }
    None
}

/// A rollback decided for one node and deployment, with whether it failed as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackMark {
    /// The override in force.
    pub over: RollbackOverride,
    /// The commit that failed.
    pub failed_commit: String,
    /// The rolled-back version failed too: nothing more is tried.
    pub failed_again: bool,
}

/// What a status report leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The deployment is installed at this version: remember it as a rollback target.
    Installed {
        /// Deployment.
        deployment: String,
        /// The installed version.
        dep: Dep,
    },
    /// Failed and held (policy `hold`, or nothing to roll back to).
    Hold {
        /// Deployment.
        deployment: String,
        /// Commit that failed.
        commit: String,
        /// Why.
        reason: String,
    },
    /// Roll back to the last installed version.
    Rollback {
        /// Deployment.
        deployment: String,
        /// The rollback.
        mark: RollbackMark,
    },
    /// The rolled-back version failed too: stop and report.
    RollbackFailed {
        /// Deployment.
        deployment: String,
        /// Commit of the rolled-back version.
        commit: String,
    },
}

/// Decides from a node's status report. Only reports that acknowledge the generation the
/// LO published (`generation`) count: an older report says nothing about the current
/// document. `installed`: last installed version per deployment on this node; `rollbacks`:
/// those in force on this node; `held`: failures already reported (deployment → spec hash),
/// so a failure is reported once.
pub fn decide(
    desired: &NodeDesired,
    generation: u64,
    status: &NodeStatus,
    installed: &BTreeMap<String, Dep>,
    rollbacks: &BTreeMap<String, RollbackMark>,
    held: &BTreeMap<String, String>,
) -> Vec<Decision> {
    let mut out = Vec::new();
    if status.observed_generation != generation {
        return out;
    }
    for ds in &status.deployments {
        let Some(dep) = desired.get(&ds.name) else {
            continue;
        };
        match ds.state {
            State::Installed if installed.get(&ds.name).map(|d| &d.hash) != Some(&dep.hash) => {
                out.push(Decision::Installed {
                    deployment: ds.name.clone(),
                    dep: dep.clone(),
                });
            }
            // A failure the agent keeps retrying (a transient cause) may heal by itself:
            // no decision until it is permanent.
            State::Failed if crate::rollout::gate::only_retrying(ds) => {}
            State::Failed => {
                if let Some(mark) = rollbacks.get(&ds.name) {
                    if mark.over.to.hash == dep.hash {
                        if !mark.failed_again {
                            out.push(Decision::RollbackFailed {
                                deployment: ds.name.clone(),
                                commit: dep.spec.commit.clone(),
                            });
                        }
                        continue;
                    }
                }
                if held.get(&ds.name) == Some(&dep.spec_hash) {
                    continue;
                }
                let target = installed
                    .get(&ds.name)
                    .filter(|d| d.spec_hash != dep.spec_hash);
                match (dep.spec.policy.on_failure, target) {
                    (OnFailure::Rollback, Some(to)) => out.push(Decision::Rollback {
                        deployment: ds.name.clone(),
                        mark: RollbackMark {
                            over: RollbackOverride {
                                from_spec_hash: dep.spec_hash.clone(),
                                to: to.clone(),
                            },
                            failed_commit: dep.spec.commit.clone(),
                            failed_again: false,
                        },
                    }),
                    (OnFailure::Rollback, None) => out.push(Decision::Hold {
                        deployment: ds.name.clone(),
                        commit: dep.spec.commit.clone(),
                        reason: "failed; no earlier installed version on this node to roll back to"
                            .into(),
                    }),
                    (OnFailure::Hold, _) => out.push(Decision::Hold {
                        deployment: ds.name.clone(),
                        commit: dep.spec.commit.clone(),
                        reason: "failed; policy is hold".into(),
                    }),
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{DesiredDeployment, FailurePolicy};

    #[test]
    fn a_failure_the_agent_retries_is_no_decision_until_it_is_permanent() {
        let dep = Dep::new(DesiredDeployment {
            name: "web".into(),
            commit: "c2".into(),
            policy: FailurePolicy {
                on_failure: OnFailure::Rollback,
                ..FailurePolicy::default()
            },
            components: vec![],
        });
        let desired = NodeDesired {
            revision: schemas::Revision {
                commit: "c2".into(),
                path: "sites/s1".into(),
            },
            deployments: vec![dep].into(),
        };
        let mut status: NodeStatus =
            serde_json::from_str(include_str!("../../schemas/examples/status.json"))
                .expect("example status");
        status.observed_generation = 2;
        status.deployments.truncate(1);
        let d = &mut status.deployments[0];
        d.name = "web".into();
        d.state = State::Failed;
        for c in &mut d.components {
            c.state = State::Failed;
            c.retrying = true;
        }
        let decide_now = |s: &NodeStatus| {
            decide(
                &desired,
                2,
                s,
                &BTreeMap::new(),
                &BTreeMap::new(),
                &BTreeMap::new(),
            )
        };
        assert!(decide_now(&status).is_empty(), "retrying: no decision");
        status.deployments[0].components[0].retrying = false;
        assert!(
            matches!(decide_now(&status)[..], [Decision::Hold { .. }]),
            "permanent: decided"
        );
    }
}
