//! The plan against the straightforward implementation it replaced (two `BTreeMap`s per
//! node, a sort of the steps, `format!`ed reasons), on many generated nodes: the same
//! plans, and [`count`] gives the same summary.
use super::*;
use schemas::component::Component;
use schemas::wire::{AgentInfo, ErrorInfo, RuntimeInfo, StatusSchema};
use schemas::FailurePolicy;

mod reference {
    use super::super::*;

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
        let mut steps = Vec::new();
        for (name, d) in &desired {
            steps.push(match observed.get(name) {
                None => install(d),
                Some(o) => compare(d, o),
            });
        }
        for (name, o) in &observed {
            if !desired.contains_key(name) {
                steps.push(DeploymentStep {
                    deployment: (*name).into(),
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
            deployment: d.name.as_str().into(),
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
                            reason: reason.into(),
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
                deployment: d.name.as_str().into(),
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
                deployment: d.name.as_str().into(),
                action: DeploymentAction::Restart,
                reason: reason.into(),
                components: restart,
                rollout: None,
            }
        } else {
            DeploymentStep {
                deployment: d.name.as_str().into(),
                action: DeploymentAction::Noop,
                reason: format!("{} at the desired spec", o.state).into(),
                components: Vec::new(),
                rollout: None,
            }
        }
    }
}

/// xorshift64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len())]
    }
}

const STATES: [State; 6] = [
    State::Installed,
    State::Installed,
    State::Pending,
    State::Installing,
    State::Removing,
    State::Failed,
];

fn component(rng: &mut Rng) -> Component {
    let name = *rng.pick(&["a", "b", "c", "d"]);
    let image = *rng.pick(&["reg/x:1", "reg/x:2"]);
    let mut c: Component =
        serde_json::from_value(serde_json::json!({"name": name, "image": image}))
            .expect("component");
    if rng.below(3) == 0 {
        c.env.insert("K".into(), "v".into());
    }
    c.with_hash()
}

fn desired(rng: &mut Rng) -> DesiredDeployment {
    DesiredDeployment {
        name: (*rng.pick(&["d1", "d2", "d3", "d4", "d5"])).into(),
        commit: (*rng.pick(&["c1c1c1c1c1c1c1c1", "c2c2c2c2c2c2c2c2"])).into(),
        policy: FailurePolicy::default(),
        components: (0..rng.below(4)).map(|_| component(rng)).collect(),
    }
}

fn observed_component(rng: &mut Rng, like: Option<&Component>) -> ComponentStatus {
    let c = match like {
        Some(c) if rng.below(4) != 0 => c.clone(),
        _ => component(rng),
    };
    let state = if rng.below(8) == 0 {
        State::Removed
    } else {
        *rng.pick(&STATES)
    };
    ComponentStatus {
        name: c.name.clone(),
        state,
        spec_hash: (rng.below(8) != 0).then(|| c.spec_hash.clone()),
        container_id: None,
        container_status: (rng.below(4) != 0)
            .then(|| (*rng.pick(&["running", "running", "exited", "created"])).into()),
        health: *rng.pick(&[Health::None, Health::Healthy, Health::Unhealthy]),
        restart_count: 0,
        image: (rng.below(6) != 0).then(|| c.image.clone()),
        image_id: None,
        repo_digest: None,
        attempts: 0,
        error: (rng.below(2) == 0).then(|| ErrorInfo::new("pull_failed", "no such image")),
        retrying: false,
        next_attempt_at: None,
    }
}

fn status(rng: &mut Rng, desired: &[DesiredDeployment]) -> NodeStatus {
    let mut deployments = Vec::new();
    for d in desired {
        if rng.below(5) == 0 {
            continue;
        }
        let mut components: Vec<ComponentStatus> = d
            .components
            .iter()
            .map(|c| observed_component(rng, Some(c)))
            .collect();
        if rng.below(4) == 0 {
            components.push(observed_component(rng, None));
        }
        if rng.below(4) == 0 {
            components.reverse();
        }
        deployments.push(DeploymentStatus {
            name: d.name.clone(),
            state: if rng.below(8) == 0 {
                State::Removed
            } else {
                *rng.pick(&STATES)
            },
            commit: (rng.below(4) != 0)
                .then(|| (*rng.pick(&["c1c1c1c1c1c1c1c1", "c2c2c2c2c2c2c2c2", "c3"])).into()),
            components,
        });
    }
    if rng.below(3) == 0 {
        let extra = desired_list(rng);
        deployments.extend(status(rng, &extra).deployments);
    }
    if rng.below(4) == 0 {
        deployments.reverse();
    }
    NodeStatus {
        signature: None,
        schema: StatusSchema::V1,
        site: "s".into(),
        node: "n".into(),
        observed_generation: 1,
        revision: None,
        state: None,
        converged: false,
        reported_at: String::new(),
        deployments,
        unmanaged: Vec::new(),
        runtime: RuntimeInfo {
            kind: "fake".into(),
            version: None,
            reachable: true,
            error: None,
        },
        agent: AgentInfo {
            rejected_documents: 0,
            images_removed: 0,
            image_bytes_freed: 0,
            version: "0".into(),
            uptime_s: 0,
        },
        rejected: None,
    }
}

fn desired_list(rng: &mut Rng) -> Vec<DesiredDeployment> {
    let mut list: Vec<DesiredDeployment> = (0..rng.below(5)).map(|_| desired(rng)).collect();
    if rng.below(2) == 0 {
        // Mostly what the LO renders: name order, one per name.
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list.dedup_by(|a, b| a.name == b.name);
    }
    list
}

#[test]
fn same_plans_as_the_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut nodes = Vec::new();
    for i in 0..3000 {
        let desired = desired_list(&mut rng);
        let observed = (rng.below(5) != 0).then(|| status(&mut rng, &desired));
        let desired = if rng.below(6) == 0 {
            desired_list(&mut rng)
        } else {
            desired
        };
        nodes.push((
            format!("n{i:04}"),
            desired,
            observed,
            rng.below(3) != 0,
            rng.below(3) == 0,
        ));
    }
    let refs: Vec<Vec<&DesiredDeployment>> = nodes.iter().map(|n| n.1.iter().collect()).collect();
    let inputs: Vec<(&str, NodeInput<'_>)> = nodes
        .iter()
        .zip(&refs)
        .rev()
        .map(|((name, _, observed, online, paced), refs)| {
            (
                name.as_str(),
                NodeInput {
                    desired: refs.as_slice(),
                    observed: observed.as_ref(),
                    online: *online,
                    paced: *paced,
                },
            )
        })
        .collect();
    let mut summary = BTreeMap::new();
    let mut expected = Vec::new();
    for (name, input) in &inputs {
        let p = reference::plan_node(name, *input);
        assert_eq!(plan_node(name, *input), p, "{name}");
        for d in &p.deployments {
            *summary.entry(d.action).or_insert(0) += 1;
        }
        expected.push(p);
    }
    expected.sort_by(|a, b| a.node.cmp(&b.node));
    let p = plan("s", "c", inputs.iter().copied());
    assert_eq!(p.nodes, expected);
    assert_eq!(p.summary, summary);
    assert_eq!(count(inputs.iter().copied()), summary);
    // Every kind of step occurs.
    assert_eq!(summary.len(), DeploymentAction::ALL.len(), "{summary:?}");
}
