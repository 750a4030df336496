//! The pure decision: desired document + observed engine + retry memory → what to do next.
//!
//! [`plan`] imports no tokio, MQTT or Docker types. It is level-triggered: it never
//! knows why it runs, it re-derives every component's state from what the engine shows
//! and from [`Memory`] (attempt counts, backoff deadlines, health restarts), and lists the
//! actions that are due now, most urgent first. The reconciler executes the first one and
//! plans again.

use crate::runtime::{label, ContainerInfo, ContainerSpec, ImageInfo, Mount};
use schemas::component::{RestartPolicy, UpdateOrder, VolumeKind};
use schemas::wire::{error_code, DesiredState, ErrorInfo};
use schemas::{Component, Health, State};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// `(deployment, component)`.
pub type CompKey = (String, String);

/// Who this agent is on a (possibly shared) engine, and how it names things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Site.
    pub site: String,
    /// Node.
    pub node: String,
    /// Prefix of container and network names (default `ef-<node>`).
    pub prefix: String,
}

/// Whose a container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Created by this agent (same site and node).
    Mine(CompKey),
    /// Created by another edgefleet agent sharing the engine: ignored entirely.
    OtherAgent,
    /// Not created by edgefleet: reported, never touched.
    Unmanaged,
}

impl Identity {
    /// An identity with the default prefix `ef-<node>`.
    pub fn new(site: &str, node: &str) -> Self {
        Identity {
            site: site.to_owned(),
            node: node.to_owned(),
            prefix: format!("ef-{node}"),
        }
    }

    /// `<prefix>-<deployment>-<component>`.
    pub fn container_name(&self, deployment: &str, component: &str) -> String {
        format!("{}-{deployment}-{component}", self.prefix)
    }

    /// `<prefix>-<deployment>`: the deployment's user network.
    pub fn network_name(&self, deployment: &str) -> String {
        format!("{}-{deployment}", self.prefix)
    }

    /// `<prefix>_<deployment>_<source>`: a named volume (`ef-<node>_web_data` by default).
    pub fn volume_name(&self, deployment: &str, source: &str) -> String {
        format!("{}_{deployment}_{source}", self.prefix)
    }

    /// The labels marking something as this agent's.
    pub fn owner_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (label::MANAGED.to_owned(), "true".to_owned()),
            (label::SITE.to_owned(), self.site.clone()),
            (label::NODE.to_owned(), self.node.clone()),
        ])
    }

    /// Classifies a container by its labels.
    pub fn classify(&self, c: &ContainerInfo) -> Ownership {
        if c.label(label::MANAGED) != Some("true") {
            return Ownership::Unmanaged;
        }
        if c.label(label::SITE) != Some(&self.site) || c.label(label::NODE) != Some(&self.node) {
            return Ownership::OtherAgent;
        }
        match (c.label(label::DEPLOYMENT), c.label(label::COMPONENT)) {
            (Some(d), Some(n)) => Ownership::Mine((d.to_owned(), n.to_owned())),
            _ => Ownership::OtherAgent,
        }
    }

    /// The container spec of a component.
    pub fn container_spec(
        &self,
        deployment: &str,
        c: &Component,
        generation: u64,
        name: String,
    ) -> ContainerSpec {
        let mut labels = c.labels.clone();
        labels.retain(|k, _| !k.starts_with("io.edgefleet."));
        labels.extend(self.owner_labels());
        labels.insert(label::DEPLOYMENT.into(), deployment.to_owned());
        labels.insert(label::COMPONENT.into(), c.name.clone());
        labels.insert(label::SPEC_HASH.into(), c.spec_hash.clone());
        labels.insert(label::GENERATION.into(), generation.to_string());
        if !c.depends_on.is_empty() {
            labels.insert(label::DEPENDS_ON.into(), c.depends_on.join(","));
        }
        ContainerSpec {
            name,
            image: c.image.clone(),
            command: c.command.clone(),
            entrypoint: c.entrypoint.clone(),
            env: c.env.clone(),
            ports: c.ports.clone(),
            mounts: c
                .volumes
                .iter()
                .map(|v| Mount {
                    kind: v.kind,
                    source: match v.kind {
                        VolumeKind::Volume => self.volume_name(deployment, &v.source),
                        _ => v.source.clone(),
                    },
                    target: v.target.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            restart: c.restart,
            healthcheck: c.healthcheck.clone(),
            resources: c.resources,
            labels,
            network: self.network_name(deployment),
            aliases: vec![c.name.clone()],
        }
    }
}

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

/// Retry and health memory of one component (or of a leftover being removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompMemory {
    /// The spec hash this memory is about; another hash starts afresh.
    pub spec_hash: String,
    /// Failed attempts of the current operation.
    pub attempts: u32,
    /// No new attempt before this.
    pub next_try: Option<Instant>,
    /// Last error.
    pub last_error: Option<ErrorInfo>,
    /// Gave up (attempt limit reached) until a new generation.
    pub failed: bool,
    /// The tag was pulled once for this spec (picks up a moved tag).
    pub refreshed: bool,
    /// Container the health counters are about.
    pub health_container: String,
    /// Restarts by the agent for health, of `health_container`.
    pub health_restarts: u32,
    /// Restarts for health without becoming healthy in between.
    pub unhealthy_streak: u32,
    /// No health restart before this.
    pub next_health_restart: Option<Instant>,
}

/// Everything the planner remembers between runs (in memory only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The generation the counters are about.
    pub generation: u64,
    /// Per component.
    pub comps: BTreeMap<CompKey, CompMemory>,
    /// Components removed during this generation (reported as `removed`).
    pub removed: BTreeMap<String, BTreeSet<String>>,
}

impl Memory {
    /// Starts a new generation: attempt counts, failures and backoffs reset.
    pub fn new_generation(&mut self, generation: u64) {
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        self.removed.clear();
        for m in self.comps.values_mut() {
            m.attempts = 0;
            m.next_try = None;
            m.last_error = None;
            m.failed = false;
            m.unhealthy_streak = 0;
            m.next_health_restart = None;
        }
    }

    /// The memory of `key` for `spec_hash`, reset when the hash changed.
    pub fn entry(&mut self, key: &CompKey, spec_hash: &str) -> &mut CompMemory {
        let m = self.comps.entry(key.clone()).or_default();
        if m.spec_hash != spec_hash {
            *m = CompMemory {
                spec_hash: spec_hash.to_owned(),
                health_container: std::mem::take(&mut m.health_container),
                health_restarts: m.health_restarts,
                ..CompMemory::default()
            };
        }
        m
    }

    fn get(&self, key: &CompKey, spec_hash: &str) -> Option<&CompMemory> {
        self.comps.get(key).filter(|m| m.spec_hash == spec_hash)
    }

    /// Folds a plan's observations back: installed components start afresh.
    pub fn settle(&mut self, plan: &Plan) {
        for v in &plan.components {
            if v.state == State::Installed && v.desired {
                if let Some(m) = self.comps.get_mut(&v.key) {
                    m.attempts = 0;
                    m.next_try = None;
                    m.last_error = None;
                    m.failed = false;
                    m.unhealthy_streak = 0;
                    m.next_health_restart = None;
                }
            }
        }
    }
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

/// Backoff before attempt `attempt + 1`: `base · 2^(attempt-1)`, capped at 5 minutes,
/// before jitter. `jitter` in `[0, 1)` takes up to half of it away.
pub fn backoff(base_ms: u64, attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let ms = base_ms.max(1).saturating_mul(1u64 << exp).min(300_000);
    let cut = (ms as f64 * 0.5 * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_millis(ms - cut)
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
    let mut mine: BTreeMap<CompKey, Vec<&ContainerInfo>> = BTreeMap::new();
    for c in &observed.containers {
        if let Ownership::Mine(key) = id.classify(c) {
            mine.entry(key).or_default().push(c);
        }
    }
    let names: BTreeSet<&str> = observed
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let wake = |t: Option<Instant>, out: &mut Plan| {
        if let Some(t) = t.filter(|t| *t > now) {
            out.wake_at = Some(out.wake_at.map_or(t, |w| w.min(t)));
        }
    };
    let gated = |m: Option<&CompMemory>| m.and_then(|m| m.next_try).is_some_and(|t| t > now);

    // 1. Leftovers: managed containers of components no longer desired, reverse order.
    let desired_keys: BTreeSet<CompKey> = desired
        .deployments
        .iter()
        .flat_map(|d| {
            d.components
                .iter()
                .map(move |c| (d.name.clone(), c.name.clone()))
        })
        .collect();
    let leftovers: BTreeMap<&CompKey, &Vec<&ContainerInfo>> = mine
        .iter()
        .filter(|(k, _)| !desired_keys.contains(*k))
        .collect();
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
        };
        if m.is_some_and(|m| m.failed) {
            view.state = State::Failed;
        } else if gated(m) {
            wake(m.and_then(|m| m.next_try), &mut out);
        } else if let Some((k, _)) = needed_by {
            view.reason = format!("waiting for {} to be removed first", k.1);
        } else if let Some(c) = containers.first() {
            out.actions.push(Action::Remove {
                key: (*key).clone(),
                id: c.id.clone(),
                reason: "no longer desired",
            });
        }
        out.components.push(view);
    }

    // 2. Desired deployments, components in start order.
    let mut install_actions = Vec::new();
    let mut desired_views: Vec<CompView> = Vec::new();
    for dep in &desired.deployments {
        let policy = dep.policy;
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
            let m = memory.get(&key, &c.spec_hash);
            let agent_restarts = match (m, current) {
                (Some(m), Some(cur)) if m.health_container == cur.id => m.health_restarts,
                _ => 0,
            };
            let mut view = CompView {
                key: key.clone(),
                desired: true,
                state: State::Installing,
                reason: String::new(),
                error: m.and_then(|m| m.last_error.clone()),
                container: current
                    .cloned()
                    .or_else(|| others.first().map(|c| (*c).clone())),
                attempts: m.map_or(0, |m| m.attempts),
                agent_restarts,
            };
            let has_hc = c.healthcheck.is_some();
            let ready = |v: &CompView| v.state == State::Installed;
            let dep_failed = c
                .depends_on
                .iter()
                .find(|d| views.get(*d).is_some_and(|v| v.state == State::Failed));
            let dep_waiting = c
                .depends_on
                .iter()
                .find(|d| !views.get(*d).is_some_and(ready));
            let mut acts: Vec<Action> = Vec::new();
            match current {
                Some(cur) if cur.is_running() && (!has_hc || cur.health == Health::Healthy) => {
                    view.state = State::Installed;
                    view.reason = "running".into();
                    view.error = None;
                    view.attempts = 0;
                    for o in &others {
                        acts.push(Action::Remove {
                            key: key.clone(),
                            id: o.id.clone(),
                            reason: "replaced",
                        });
                    }
                }
                _ if m.is_some_and(|m| m.failed) => {
                    view.state = State::Failed;
                    view.reason = "attempt limit reached".into();
                }
                Some(cur) if cur.is_running() && cur.health == Health::Unhealthy => {
                    view.reason = "unhealthy".into();
                    let streak = m.map_or(0, |m| m.unhealthy_streak);
                    if streak >= policy.attempts {
                        view.state = State::Failed;
                        view.reason = "stays unhealthy".into();
                        view.error = err(
                            error_code::UNHEALTHY,
                            format!("container stays unhealthy after {streak} restarts"),
                        );
                    } else {
                        view.error = err(error_code::UNHEALTHY, "container is unhealthy");
                        let t = m.and_then(|m| m.next_health_restart);
                        if t.is_some_and(|t| t > now) {
                            wake(t, &mut out);
                        } else {
                            acts.push(Action::RestartUnhealthy {
                                key: key.clone(),
                                id: cur.id.clone(),
                            });
                        }
                    }
                }
                Some(cur) if cur.is_running() => {
                    view.reason = "waiting for healthy".into();
                }
                Some(cur) if cur.status == "restarting" => {
                    view.reason = "restarting".into();
                    view.error = err(
                        error_code::START_FAILED,
                        format!(
                            "container keeps restarting (exit code {})",
                            cur.exit_code.unwrap_or_default()
                        ),
                    );
                }
                Some(cur)
                    if cur.status != "created"
                        && c.restart == RestartPolicy::No
                        && cur.exit_code == Some(0) =>
                {
                    view.state = State::Installed;
                    view.reason = "completed".into();
                    view.error = None;
                }
                Some(cur) if cur.status != "created" && c.restart == RestartPolicy::No => {
                    view.state = State::Failed;
                    view.reason = "exited".into();
                    view.error = err(
                        error_code::START_FAILED,
                        format!("exited with code {}", cur.exit_code.unwrap_or(-1)),
                    );
                }
                _ if gated(m) => {
                    view.state = State::Pending;
                    view.reason = "waiting to retry".into();
                    wake(m.and_then(|m| m.next_try), &mut out);
                }
                _ if dep_failed.is_some() => {
                    view.state = State::Failed;
                    view.reason = "dependency failed".into();
                    view.error = err(
                        error_code::DEPENDENCY_FAILED,
                        format!("dependency {} failed", dep_failed.map_or("", |s| s)),
                    );
                }
                Some(cur) => {
                    // Created, exited, dead, paused: start it once dependencies are up.
                    if let Some(d) = dep_waiting {
                        view.state = State::Pending;
                        view.reason = format!("waiting for {d}");
                    } else {
                        view.reason = if cur.status == "created" {
                            "starting".into()
                        } else {
                            "container stopped".into()
                        };
                        acts.push(Action::Start {
                            key: key.clone(),
                            id: cur.id.clone(),
                        });
                    }
                }
                None => {
                    let local = observed.images.contains_key(&c.image);
                    let fixed_ports = c.ports.iter().any(|p| p.host.is_some());
                    let start_first = c.update_order == UpdateOrder::StartFirst && !fixed_ports;
                    if !local
                        || (!m.is_some_and(|m| m.refreshed)
                            && !crate::runtime::is_digest_reference(&c.image))
                    {
                        view.reason = "pulling image".into();
                        acts.push(Action::Pull {
                            key: key.clone(),
                            image: c.image.clone(),
                            refresh: local,
                        });
                    } else if !start_first && !others.is_empty() {
                        view.reason = "spec changed".into();
                        acts.push(Action::Remove {
                            key: key.clone(),
                            id: others[0].id.clone(),
                            reason: "spec changed",
                        });
                    } else if let Some(d) = dep_waiting {
                        view.state = State::Pending;
                        view.reason = format!("waiting for {d}");
                    } else {
                        view.reason = "creating container".into();
                        let base = id.container_name(&dep.name, &c.name);
                        let name = if names.contains(base.as_str()) {
                            format!("{base}-{}", short_hash(&c.spec_hash))
                        } else {
                            base
                        };
                        acts.push(Action::Create {
                            key: key.clone(),
                            spec: Box::new(id.container_spec(
                                &dep.name,
                                c,
                                desired.generation,
                                name,
                            )),
                        });
                    }
                }
            }
            if view.state == State::Pending && view.error.is_none() && m.is_none() {
                view.attempts = 0;
            }
            install_actions.extend(acts);
            views.insert(c.name.clone(), view);
        }
        // Document order in the report.
        for c in &dep.components {
            if let Some(v) = views.remove(&c.name) {
                desired_views.push(v);
            }
        }
    }
    out.actions.extend(install_actions);
    let leftover_views = std::mem::take(&mut out.components);
    out.components = desired_views;
    out.components.extend(leftover_views);
    for (dep, comps) in &memory.removed {
        for comp in comps {
            let key = (dep.clone(), comp.clone());
            if !desired_keys.contains(&key) && !mine.contains_key(&key) {
                out.components.push(CompView {
                    key,
                    desired: false,
                    state: State::Removed,
                    reason: "removed".into(),
                    error: None,
                    container: None,
                    attempts: 0,
                    agent_restarts: 0,
                });
            }
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::component::{Resources, RestartPolicy, UpdateOrder};
    use schemas::wire::{DesiredDeployment, DesiredSchema, FailurePolicy, Revision};

    fn comp(name: &str, image: &str, deps: &[&str]) -> Component {
        Component {
            name: name.into(),
            image: image.into(),
            command: None,
            entrypoint: None,
            env: BTreeMap::new(),
            ports: vec![],
            volumes: vec![],
            restart: RestartPolicy::default(),
            healthcheck: None,
            depends_on: deps.iter().map(|s| (*s).to_owned()).collect(),
            resources: Resources::default(),
            labels: BTreeMap::new(),
            update_order: UpdateOrder::default(),
            spec_hash: String::new(),
        }
        .with_hash()
    }

    fn doc(components: Vec<Component>) -> DesiredState {
        DesiredState {
            schema: DesiredSchema::V1,
            site: "s".into(),
            node: "n".into(),
            generation: 1,
            revision: Revision::default(),
            issued_at: String::new(),
            deployments: vec![DesiredDeployment {
                name: "d".into(),
                commit: "c".into(),
                policy: FailurePolicy::default(),
                components,
            }],
            signature: None,
        }
    }

    fn container(id: &Identity, c: &Component, status: &str) -> ContainerInfo {
        let spec = id.container_spec("d", c, 1, id.container_name("d", &c.name));
        ContainerInfo {
            id: format!("id-{}-{}", c.name, &c.spec_hash[7..11]),
            name: spec.name,
            image: c.image.clone(),
            image_id: "sha256:img".into(),
            labels: spec.labels,
            status: status.into(),
            ..ContainerInfo::default()
        }
    }

    fn images(refs: &[&str]) -> BTreeMap<String, ImageInfo> {
        refs.iter()
            .map(|r| ((*r).to_owned(), ImageInfo::default()))
            .collect()
    }

    fn refreshed(keys: &[(&str, &Component)]) -> Memory {
        let mut m = Memory::default();
        for (d, c) in keys {
            m.entry(&((*d).into(), c.name.clone()), &c.spec_hash)
                .refreshed = true;
        }
        m
    }

    fn kinds(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::Pull { key, .. } => format!("pull {}", key.1),
                Action::Create { key, .. } => format!("create {}", key.1),
                Action::Start { key, .. } => format!("start {}", key.1),
                Action::RestartUnhealthy { key, .. } => format!("restart {}", key.1),
                Action::Remove { key, .. } => format!("remove {}", key.1),
                Action::RemoveNetwork { name } => format!("rmnet {name}"),
            })
            .collect()
    }

    #[test]
    fn plan_table() {
        let id = Identity::new("s", "n");
        let now = Instant::now();
        let web = comp("web", "r/web:1", &[]);
        let web2 = comp("web", "r/web:2", &[]);
        let db = comp("db", "r/db:1", &[]);
        let api = comp("api", "r/api:1", &["db"]);
        struct Case {
            name: &'static str,
            desired: DesiredState,
            observed: Observed,
            memory: Memory,
            actions: Vec<&'static str>,
            states: Vec<State>,
        }
        let cases = vec![
            Case {
                name: "fresh install pulls first",
                desired: doc(vec![web.clone()]),
                observed: Observed::default(),
                memory: Memory::default(),
                actions: vec!["pull web"],
                states: vec![State::Installing],
            },
            Case {
                name: "image present and refreshed: create",
                desired: doc(vec![web.clone()]),
                observed: Observed {
                    images: images(&["r/web:1"]),
                    ..Observed::default()
                },
                memory: refreshed(&[("d", &web)]),
                actions: vec!["create web"],
                states: vec![State::Installing],
            },
            Case {
                name: "running with the desired hash: nothing to do",
                desired: doc(vec![web.clone()]),
                observed: Observed {
                    containers: vec![container(&id, &web, "running")],
                    images: images(&["r/web:1"]),
                    ..Observed::default()
                },
                memory: Memory::default(),
                actions: vec![],
                states: vec![State::Installed],
            },
            Case {
                name: "created container is started",
                desired: doc(vec![web.clone()]),
                observed: Observed {
                    containers: vec![container(&id, &web, "created")],
                    ..Observed::default()
                },
                memory: Memory::default(),
                actions: vec!["start web"],
                states: vec![State::Installing],
            },
            Case {
                name: "spec change stop-first removes the old one once the image is there",
                desired: doc(vec![web2.clone()]),
                observed: Observed {
                    containers: vec![container(&id, &web, "running")],
                    images: images(&["r/web:2"]),
                    ..Observed::default()
                },
                memory: refreshed(&[("d", &web2)]),
                actions: vec!["remove web"],
                states: vec![State::Installing],
            },
            Case {
                name: "dependent waits for its dependency",
                desired: doc(vec![api.clone(), db.clone()]),
                observed: Observed {
                    images: images(&["r/api:1", "r/db:1"]),
                    ..Observed::default()
                },
                memory: refreshed(&[("d", &api), ("d", &db)]),
                actions: vec!["create db"],
                states: vec![State::Pending, State::Installing],
            },
            Case {
                name: "leftovers go in reverse dependency order, before installs",
                desired: doc(vec![]),
                observed: Observed {
                    containers: vec![
                        container(&id, &api, "running"),
                        container(&id, &db, "running"),
                    ],
                    networks: BTreeSet::from(["ef-n-d".to_owned()]),
                    ..Observed::default()
                },
                memory: Memory::default(),
                actions: vec!["remove api"],
                states: vec![State::Removing, State::Removing],
            },
            Case {
                name: "unused network is removed",
                desired: doc(vec![]),
                observed: Observed {
                    networks: BTreeSet::from(["ef-n-old".to_owned()]),
                    ..Observed::default()
                },
                memory: Memory::default(),
                actions: vec!["rmnet ef-n-old"],
                states: vec![],
            },
            Case {
                name: "another agent's container is ignored",
                desired: doc(vec![]),
                observed: Observed {
                    containers: vec![container(&Identity::new("s", "other"), &web, "running")],
                    ..Observed::default()
                },
                memory: Memory::default(),
                actions: vec![],
                states: vec![],
            },
        ];
        for c in cases {
            let p = plan(Some(&c.desired), &c.observed, &c.memory, &id, now);
            assert_eq!(kinds(&p), c.actions, "{}", c.name);
            let states: Vec<State> = p.components.iter().map(|v| v.state).collect();
            assert_eq!(states, c.states, "{}", c.name);
        }
    }

    #[test]
    fn failed_and_backing_off_components_get_no_action() {
        let id = Identity::new("s", "n");
        let now = Instant::now();
        let web = comp("web", "r/web:1", &[]);
        let d = doc(vec![web.clone()]);
        let key = ("d".to_owned(), "web".to_owned());
        let mut m = Memory::default();
        m.entry(&key, &web.spec_hash).failed = true;
        let p = plan(Some(&d), &Observed::default(), &m, &id, now);
        assert!(p.actions.is_empty());
        assert_eq!(p.components[0].state, State::Failed);

        let mut m = Memory::default();
        m.entry(&key, &web.spec_hash).next_try = Some(now + Duration::from_secs(4));
        let p = plan(Some(&d), &Observed::default(), &m, &id, now);
        assert!(p.actions.is_empty());
        assert_eq!(p.components[0].state, State::Pending);
        assert_eq!(p.wake_at, Some(now + Duration::from_secs(4)));
        // Once the deadline passed, the attempt is due again.
        let p = plan(
            Some(&d),
            &Observed::default(),
            &m,
            &id,
            now + Duration::from_secs(5),
        );
        assert_eq!(kinds(&p), vec!["pull web"]);
        // A new generation resets failures.
        let mut m2 = m.clone();
        m2.entry(&key, &web.spec_hash).failed = true;
        m2.new_generation(2);
        assert!(!m2.comps[&key].failed && m2.comps[&key].next_try.is_none());
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_down() {
        assert_eq!(backoff(1_000, 1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(1_000, 3, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(1_000, 3, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(1_000, 40, 0.0), Duration::from_secs(300));
    }

    #[test]
    fn start_order_puts_dependencies_first_and_cycles_last() {
        let cs = vec![
            comp("web", "i", &["api"]),
            comp("api", "i", &["db"]),
            comp("db", "i", &[]),
        ];
        assert_eq!(start_order(&cs), vec![2, 1, 0]);
        let cyc = vec![
            comp("a", "i", &["b"]),
            comp("b", "i", &["a"]),
            comp("c", "i", &[]),
        ];
        assert_eq!(start_order(&cyc), vec![2, 0, 1]);
    }
}
