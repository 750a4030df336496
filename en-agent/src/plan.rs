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
    /// Container the crash counters are about (its restart count is the baseline).
    pub crash_container: String,
    /// Docker's restart count of `crash_container` when last observed.
    pub crash_restarts_seen: u32,
    /// `crash_container` was seen stopped and that exit was counted (cleared once it
    /// is seen running again).
    pub crash_exit_seen: bool,
    /// Crashes observed (Docker restarts of the container, or exits of a container
    /// that should keep running) since the component was last up for [`STABLE_AFTER`].
    pub crashes: u32,
    /// When the last crash was observed.
    pub last_crash: Option<Instant>,
    /// Exit code of the last crash, when Docker showed it.
    pub crash_exit_code: Option<i64>,
    /// The agent starts a crashed, stopped container again no earlier than this.
    pub crash_restart_at: Option<Instant>,
}

impl CompMemory {
    fn reset_crashes(&mut self) {
        self.crashes = 0;
        self.last_crash = None;
        self.crash_exit_code = None;
        self.crash_restart_at = None;
    }
}

/// A container that restarted (or exited) counts as installed again only after it has
/// stayed up this long since the last crash: Docker's own restart manager also treats a
/// container that ran for 10 s as successfully started.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// A crash [`Memory::observe_crashes`] counted, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash {
    /// Component.
    pub key: CompKey,
    /// Container id.
    pub container: String,
    /// Crashes counted so far, this one included.
    pub crashes: u32,
    /// Exit code, when Docker showed it.
    pub exit_code: Option<i64>,
    /// The deployment's attempt limit.
    pub limit: u32,
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
            // The crash baseline (container, restart count) stays: only crashes seen from
            // now on count against the new generation's limit.
            m.reset_crashes();
        }
    }

    /// Counts crashes of the current container of every desired component, measured from
    /// the engine: Docker's restart count going up (restart policy at work), or a container
    /// whose policy keeps it running seen stopped. A container seen for the first time is
    /// the baseline (its earlier restarts are not counted). `jitter` in `[0, 1)` spreads the
    /// agent's own restart of a stopped container (exponential backoff per crash).
    pub fn observe_crashes(
        &mut self,
        desired: &DesiredState,
        observed: &Observed,
        id: &Identity,
        now: Instant,
        jitter: f64,
    ) -> Vec<Crash> {
        let mut out = Vec::new();
        for dep in &desired.deployments {
            for c in &dep.components {
                let key: CompKey = (dep.name.clone(), c.name.clone());
                let same: Vec<&ContainerInfo> = observed
                    .containers
                    .iter()
                    .filter(|k| {
                        id.classify(k) == Ownership::Mine(key.clone())
                            && k.label(label::SPEC_HASH) == Some(c.spec_hash.as_str())
                    })
                    .collect();
                let Some(cur) = pick_current(&same) else {
                    continue;
                };
                let m = self.entry(&key, &c.spec_hash);
                if m.crash_container != cur.id {
                    m.crash_container = cur.id.clone();
                    m.crash_restarts_seen = cur.restart_count;
                    m.crash_exit_seen = false;
                }
                // Docker may reset its count on a manual start: a lower value is a new base.
                let mut new = cur.restart_count.saturating_sub(m.crash_restarts_seen);
                m.crash_restarts_seen = cur.restart_count;
                let stopped = matches!(cur.status.as_str(), "exited" | "dead");
                if stopped && keeps_running(c.restart, cur.exit_code) {
                    if !m.crash_exit_seen {
                        m.crash_exit_seen = true;
                        new += 1;
                    }
                } else if !stopped {
                    m.crash_exit_seen = false;
                }
                if new == 0 {
                    continue;
                }
                m.crashes = m.crashes.saturating_add(new);
                m.last_crash = Some(now);
                if !cur.is_running() && cur.exit_code.is_some() {
                    m.crash_exit_code = cur.exit_code;
                }
                if stopped {
                    m.crash_restart_at =
                        Some(now + backoff(dep.policy.backoff_ms, m.crashes, jitter));
                }
                out.push(Crash {
                    key,
                    container: cur.id.clone(),
                    crashes: m.crashes,
                    exit_code: m.crash_exit_code,
                    limit: dep.policy.attempts,
                });
            }
        }
        out
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
                    m.reset_crashes();
                }
            }
        }
    }
}

/// True when a container with this restart policy that stopped with `exit_code` was
/// meant to keep running (so the stop is a crash the agent reacts to): every policy but
/// `no`, and `on-failure` only for a non-zero exit (exit 0 there means "completed").
fn keeps_running(policy: RestartPolicy, exit_code: Option<i64>) -> bool {
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure => exit_code != Some(0),
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
    }
}

fn exit_code_text(code: Option<i64>) -> String {
    code.map_or_else(|| "unknown".to_owned(), |c| c.to_string())
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
            let crashes = m.map_or(0, |m| m.crashes);
            let last_crash = m.and_then(|m| m.last_crash);
            let crash_recent = crashes > 0 && last_crash.is_some_and(|t| now < t + STABLE_AFTER);
            let crash_failed = crashes > 0 && crashes >= policy.attempts;
            // The exit code of the last crash: Docker shows it while the container is
            // restarting or stopped; once it runs again, the one remembered.
            let crash_code = |cur: &ContainerInfo| {
                if cur.is_running() || cur.status == "created" {
                    m.and_then(|m| m.crash_exit_code)
                } else {
                    cur.exit_code.or(m.and_then(|m| m.crash_exit_code))
                }
            };
            if crashes > 0 {
                view.attempts = view.attempts.max(crashes);
            }
            match current {
                Some(cur)
                    if cur.is_running()
                        && (!has_hc || cur.health == Health::Healthy)
                        && !crash_recent =>
                {
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
                Some(cur) if crash_failed => {
                    // Docker may keep restarting it (its policy); the agent no longer does.
                    view.state = State::Failed;
                    view.reason = "crash loop".into();
                    view.error = err(
                        error_code::START_FAILED,
                        format!(
                            "container keeps crashing: {crashes} crashes without staying up {} s (last exit code {})",
                            STABLE_AFTER.as_secs(),
                            exit_code_text(crash_code(cur))
                        ),
                    );
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
                Some(cur) if cur.is_running() && crash_recent => {
                    view.reason = "restarted, waiting until it stays up".into();
                    view.error = err(
                        error_code::START_FAILED,
                        format!(
                            "container crashed {crashes} of {} allowed times (last exit code {}); installed once it stays up {} s",
                            policy.attempts,
                            exit_code_text(crash_code(cur)),
                            STABLE_AFTER.as_secs()
                        ),
                    );
                    wake(last_crash.map(|t| t + STABLE_AFTER), &mut out);
                }
                Some(cur) if cur.is_running() => {
                    view.reason = "waiting for healthy".into();
                }
                Some(cur) if cur.status == "restarting" => {
                    view.reason = "restarting".into();
                    view.error = err(
                        error_code::START_FAILED,
                        format!(
                            "container keeps restarting: crashed {crashes} of {} allowed times (last exit code {})",
                            policy.attempts,
                            exit_code_text(crash_code(cur))
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
                Some(cur)
                    if cur.status != "created"
                        && c.restart == RestartPolicy::OnFailure
                        && cur.exit_code == Some(0) =>
                {
                    // `on-failure` does not restart a clean exit: the job is done.
                    view.state = State::Installed;
                    view.reason = "completed".into();
                    view.error = None;
                }
                Some(cur)
                    if crashes > 0
                        && m.and_then(|m| m.crash_restart_at).is_some_and(|t| t > now)
                        && matches!(cur.status.as_str(), "exited" | "dead") =>
                {
                    view.reason = "crashed, restarting after a pause".into();
                    view.error = err(
                        error_code::START_FAILED,
                        format!(
                            "container exited with code {} ({crashes} of {} allowed crashes)",
                            exit_code_text(crash_code(cur)),
                            policy.attempts
                        ),
                    );
                    wake(m.and_then(|m| m.crash_restart_at), &mut out);
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
                        if crashes > 0 && cur.status != "created" {
                            view.error = err(
                                error_code::START_FAILED,
                                format!(
                                    "container exited with code {} ({crashes} of {} allowed crashes)",
                                    exit_code_text(crash_code(cur)),
                                    policy.attempts
                                ),
                            );
                        }
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
    fn crashes_are_counted_from_docker_with_a_baseline_and_reset_by_a_new_generation() {
        let id = Identity::new("s", "n");
        let t0 = Instant::now();
        let web = comp("web", "r/web:1", &[]);
        let d = doc(vec![web.clone()]);
        let key = ("d".to_owned(), "web".to_owned());
        let seen = |restarts: u32, status: &str, exit: Option<i64>| {
            let mut c = container(&id, &web, status);
            c.restart_count = restarts;
            c.exit_code = exit;
            Observed {
                containers: vec![c],
                images: images(&["r/web:1"]),
                ..Observed::default()
            }
        };
        let state = |m: &Memory, o: &Observed, now: Instant| {
            plan(Some(&d), o, m, &id, now).components[0].clone()
        };
        let mut m = Memory::default();
        m.new_generation(1);
        // Adopted with 7 restarts behind it: the baseline, nothing counted.
        let o = seen(7, "running", Some(0));
        assert!(m.observe_crashes(&d, &o, &id, t0, 0.0).is_empty());
        assert_eq!(state(&m, &o, t0).state, State::Installed);
        // Docker restarted it twice since: two crashes, installing with the exit code.
        let o = seen(9, "restarting", Some(1));
        let crashes = m.observe_crashes(&d, &o, &id, t0, 0.0);
        assert_eq!(crashes.len(), 1);
        assert_eq!(crashes[0].crashes, 2);
        let v = state(&m, &o, t0);
        assert_eq!(v.state, State::Installing);
        assert!(v.error.as_ref().is_some_and(
            |e| e.code == error_code::START_FAILED && e.message.contains("exit code 1")
        ));
        // Up again, but not for long enough: still installing, with a wake-up.
        let o = seen(9, "running", Some(0));
        assert!(m.observe_crashes(&d, &o, &id, t0, 0.0).is_empty());
        let p = plan(Some(&d), &o, &m, &id, t0 + Duration::from_secs(1));
        assert_eq!(p.components[0].state, State::Installing);
        assert_eq!(p.wake_at, Some(t0 + STABLE_AFTER));
        // A third crash reaches the limit (3): failed, and no action from the agent.
        let o = seen(10, "restarting", Some(1));
        m.observe_crashes(&d, &o, &id, t0, 0.0);
        let p = plan(Some(&d), &o, &m, &id, t0);
        assert_eq!(p.components[0].state, State::Failed);
        assert!(p.actions.is_empty());
        assert_eq!(m.comps[&key].crashes, 3);
        // A new generation resets the count but keeps the baseline.
        m.new_generation(2);
        assert!(m.observe_crashes(&d, &o, &id, t0, 0.0).is_empty());
        assert_eq!(state(&m, &o, t0).state, State::Installing);
        // Running for 10 s after the last crash: installed, counts settle to zero.
        let o = seen(10, "running", Some(0));
        m.observe_crashes(&d, &o, &id, t0, 0.0);
        let p = plan(Some(&d), &o, &m, &id, t0 + STABLE_AFTER);
        assert_eq!(p.components[0].state, State::Installed);
        m.settle(&p);
        assert_eq!(m.comps[&key].crashes, 0);
        // Stopped while its policy should keep it running: one crash, restarted by the
        // agent only after the backoff.
        let o = seen(10, "exited", Some(137));
        m.observe_crashes(&d, &o, &id, t0, 0.0);
        assert!(
            m.observe_crashes(&d, &o, &id, t0, 0.0).is_empty(),
            "counted once"
        );
        let p = plan(Some(&d), &o, &m, &id, t0);
        assert!(p.actions.is_empty());
        assert_eq!(p.components[0].state, State::Installing);
        let after = m.comps[&key].crash_restart_at.expect("restart deadline");
        assert!(after > t0);
        let p = plan(Some(&d), &o, &m, &id, after);
        assert_eq!(kinds(&p), vec!["start web"]);
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
