//! Failure memory: what the planner remembers between runs about each component —
//! attempts and the retry deadline of the current operation (as [`retry::after_failure`]
//! decides), health restarts, and crashes counted from what Docker shows.
//!
//! In memory only: after an agent restart everything is re-derived from the engine, and
//! a new generation starts every count afresh.

use super::{pick_current, Observed, Plan};
use crate::retry::{self, Limits, Retry};
use crate::runtime::spec::{CompKey, Identity, Ownership};
use crate::runtime::{label, ContainerInfo, RuntimeError};
use schemas::component::RestartPolicy;
use schemas::wire::{DesiredState, ErrorInfo, FailurePolicy};
use schemas::State;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

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
    /// The attempt limit is reached: reported `failed` until it succeeds (transient cause,
    /// `retrying`) or until a new generation (permanent cause).
    pub failed: bool,
    /// Failed for a transient cause, and still tried again at `next_try` (with a backoff
    /// capped at the agent's `retry_max_backoff`).
    pub retrying: bool,
    /// `next_try` on the wall clock (RFC 3339), for the report, while `retrying`.
    pub next_attempt_at: Option<String>,
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
    /// Forgets attempts, failures, backoffs, the unhealthy streak and crash counts (not
    /// the baselines: which container, its restart count, its health restarts).
    fn start_afresh(&mut self) {
        self.attempts = 0;
        self.next_try = None;
        self.last_error = None;
        self.failed = false;
        self.retrying = false;
        self.next_attempt_at = None;
        self.unhealthy_streak = 0;
        self.next_health_restart = None;
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
            // The crash baseline (container, restart count) stays: only crashes seen from
            // now on count against the new generation's limit.
            m.start_afresh();
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
                        Some(now + retry::backoff(dep.policy.backoff_ms, m.crashes, jitter));
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

    /// Records a failed engine call of `key` (at `spec_hash`) as the retry policy
    /// ([`retry::after_failure`]) decides: attempts, last error, next try, `failed` and
    /// `retrying`. `wall` is the wall clock at `now` (for the report's `nextAttemptAt`).
    /// Nothing is recorded when the failure does not count (the engine is down).
    #[allow(clippy::too_many_arguments)]
    pub fn record_failure(
        &mut self,
        key: &CompKey,
        spec_hash: &str,
        error: &RuntimeError,
        limits: Limits,
        now: Instant,
        wall: SystemTime,
        jitter: f64,
    ) -> Retry {
        let spent = self.get(key, spec_hash).map_or(0, |m| m.attempts);
        let retry = retry::after_failure(error.kind(), spent, limits, now, jitter);
        let (attempts, next_try, failed, retrying) = match retry {
            Retry::NotCounted => return retry,
            Retry::At { attempts, at, .. } => (attempts, Some(at), false, false),
            Retry::Retrying { attempts, at, .. } => (attempts, Some(at), true, true),
            Retry::GiveUp { attempts } => (attempts, None, true, false),
        };
        let m = self.entry(key, spec_hash);
        m.attempts = attempts;
        m.last_error = Some(error.to_info());
        m.next_try = next_try;
        // Once failed, failed until it succeeds or a new generation; a permanent error
        // while retrying ends the retries.
        m.failed |= failed;
        m.retrying = retrying;
        m.next_attempt_at = match retry {
            Retry::Retrying { delay, .. } => Some(schemas::rfc3339(wall + delay)),
            _ => None,
        };
        retry
    }

    /// Records that the agent restarts `container` of `key` for health; returns the
    /// restarts of that container so far. The next health restart waits a backoff that
    /// grows while the container does not become healthy in between.
    pub fn record_health_restart(
        &mut self,
        key: &CompKey,
        spec_hash: &str,
        container: &str,
        policy: FailurePolicy,
        now: Instant,
        jitter: f64,
    ) -> u32 {
        let m = self.entry(key, spec_hash);
        if m.health_container != container {
            m.health_container = container.to_owned();
            m.health_restarts = 0;
        }
        m.health_restarts += 1;
        m.unhealthy_streak += 1;
        m.next_health_restart =
            Some(now + retry::backoff(policy.backoff_ms, m.unhealthy_streak, jitter));
        m.health_restarts
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

    /// The memory of `key` if it is about `spec_hash`.
    pub fn get(&self, key: &CompKey, spec_hash: &str) -> Option<&CompMemory> {
        self.comps.get(key).filter(|m| m.spec_hash == spec_hash)
    }

    /// Folds a plan's observations back: installed components start afresh.
    pub fn settle(&mut self, plan: &Plan) {
        for v in &plan.components {
            if v.state == State::Installed && v.desired {
                if let Some(m) = self.comps.get_mut(&v.key) {
                    m.start_afresh();
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

pub(super) fn exit_code_text(code: Option<i64>) -> String {
    code.map_or_else(|| "unknown".to_owned(), |c| c.to_string())
}
