//! The decision for one desired component: from its containers on the engine, its
//! memory and its dependencies' states, its [`CompView`] and the actions due now.
//!
//! [`decide`] asks each case in turn, most settled first; the first that applies
//! decides. Every case is a small function.

use super::memory::exit_code_text;
use super::{err, short_hash, Action, CompMemory, CompView, Site, STABLE_AFTER};
use crate::runtime::spec::CompKey;
use crate::runtime::{is_digest_reference, ContainerInfo};
use schemas::component::{RestartPolicy, UpdateOrder};
use schemas::wire::{error_code, DesiredDeployment};
use schemas::{Component, Health, State};
use std::time::Instant;

/// Everything one component's decision reads.
pub(super) struct Ctx<'a> {
    pub(super) site: &'a Site<'a>,
    pub(super) dep: &'a DesiredDeployment,
    pub(super) c: &'a Component,
    pub(super) key: CompKey,
    /// Its memory, when about its current spec hash.
    pub(super) memory: Option<&'a CompMemory>,
    /// The container with the desired spec that counts (running first).
    pub(super) current: Option<&'a ContainerInfo>,
    /// Every other container of the component (an older spec, duplicates).
    pub(super) others: Vec<&'a ContainerInfo>,
    /// A dependency already decided failed (its view: retrying or not).
    pub(super) dep_failed: Option<&'a CompView>,
    /// A dependency not installed (yet).
    pub(super) dep_waiting: Option<&'a str>,
}

impl Ctx<'_> {
    fn now(&self) -> Instant {
        self.site.now
    }

    fn attempts_allowed(&self) -> u32 {
        self.dep.policy.attempts
    }

    fn crashes(&self) -> u32 {
        self.memory.map_or(0, |m| m.crashes)
    }

    fn last_crash(&self) -> Option<Instant> {
        self.memory.and_then(|m| m.last_crash)
    }

    /// Crashed, and not up for [`STABLE_AFTER`] since.
    fn crash_recent(&self) -> bool {
        self.crashes() > 0
            && self
                .last_crash()
                .is_some_and(|t| self.now() < t + STABLE_AFTER)
    }

    /// As many crashes as the deployment allows attempts.
    fn crash_failed(&self) -> bool {
        self.crashes() > 0 && self.crashes() >= self.attempts_allowed()
    }

    /// Waiting for the retry deadline of a failed operation.
    fn retry_gated(&self) -> bool {
        self.memory
            .and_then(|m| m.next_try)
            .is_some_and(|t| t > self.now())
    }

    /// The exit code of the last crash: Docker shows it while the container is
    /// restarting or stopped; once it runs again, the one remembered.
    fn crash_code(&self, cur: &ContainerInfo) -> Option<i64> {
        let remembered = self.memory.and_then(|m| m.crash_exit_code);
        if cur.is_running() || cur.status == "created" {
            remembered
        } else {
            cur.exit_code.or(remembered)
        }
    }
}

/// What one component adds to the plan.
pub(super) struct Step {
    pub(super) view: CompView,
    pub(super) actions: Vec<Action>,
    pub(super) wake_at: Option<Instant>,
    now: Instant,
}

impl Step {
    fn new(cx: &Ctx<'_>) -> Self {
        let m = cx.memory;
        let agent_restarts = match (m, cx.current) {
            (Some(m), Some(cur)) if m.health_container == cur.id => m.health_restarts,
            _ => 0,
        };
        let mut view = CompView {
            key: cx.key.clone(),
            desired: true,
            state: State::Installing,
            reason: String::new(),
            error: m.and_then(|m| m.last_error.clone()),
            container: cx
                .current
                .cloned()
                .or_else(|| cx.others.first().map(|c| (*c).clone())),
            attempts: m.map_or(0, |m| m.attempts),
            agent_restarts,
            retrying: false,
            next_attempt_at: None,
        };
        if cx.crashes() > 0 {
            view.attempts = view.attempts.max(cx.crashes());
        }
        Step {
            view,
            actions: Vec::new(),
            wake_at: None,
            now: cx.now(),
        }
    }

    /// Plans again at `t` at the latest, when `t` is still ahead.
    fn wake(&mut self, t: Option<Instant>) {
        if let Some(t) = t.filter(|t| *t > self.now) {
            self.wake_at = Some(self.wake_at.map_or(t, |w| w.min(t)));
        }
    }

    /// Sets the state, and clears `retrying`: only [`gave_up`] and [`dependency_failed`]
    /// mark a failure as still retried, after setting it.
    fn set(&mut self, state: State, reason: impl Into<String>) {
        self.view.state = state;
        self.view.reason = reason.into();
        self.view.retrying = false;
        self.view.next_attempt_at = None;
    }
}

/// Decides one desired component.
pub(super) fn decide(cx: &Ctx<'_>) -> Step {
    let mut s = Step::new(cx);
    let decided = keep_running(cx, &mut s)
        || gave_up(cx, &mut s)
        || crash_loop(cx, &mut s)
        || running(cx, &mut s)
        || stopped(cx, &mut s)
        || retry_later(cx, &mut s)
        || dependency_failed(cx, &mut s);
    if !decided {
        match cx.current {
            Some(cur) => start(cx, cur, &mut s),
            None => install(cx, &mut s),
        }
    }
    if s.view.state == State::Pending && s.view.error.is_none() && cx.memory.is_none() {
        s.view.attempts = 0;
    }
    if s.view.state != State::Failed {
        s.view.retrying = false;
        s.view.next_attempt_at = None;
    }
    s
}

/// Running (healthy, when it has a healthcheck) and stable: installed; containers of an
/// older spec go.
fn keep_running(cx: &Ctx<'_>, s: &mut Step) -> bool {
    let Some(cur) = cx.current else {
        return false;
    };
    let healthy = cx.c.healthcheck.is_none() || cur.health == Health::Healthy;
    if !cur.is_running() || !healthy || cx.crash_recent() {
        return false;
    }
    s.set(State::Installed, "running");
    s.view.error = None;
    s.view.attempts = 0;
    for o in &cx.others {
        s.actions.push(Action::Remove {
            key: cx.key.clone(),
            id: o.id.clone(),
            reason: "replaced",
        });
    }
    true
}

/// The attempt budget is spent: failed. For a permanent cause, until a new generation
/// (no action). For a transient one, the component stays failed (`retrying`) while it is
/// tried again at each capped-backoff deadline: nothing until then, then the cases below
/// act as for a first attempt; it becomes installed by itself once an attempt succeeds.
fn gave_up(cx: &Ctx<'_>, s: &mut Step) -> bool {
    let Some(m) = cx.memory.filter(|m| m.failed) else {
        return false;
    };
    if !m.retrying {
        s.set(State::Failed, "attempt limit reached");
        return true;
    }
    s.set(State::Failed, "attempt limit reached, retrying");
    s.view.retrying = true;
    s.view.next_attempt_at = m.next_attempt_at.clone();
    if cx.retry_gated() {
        s.wake(m.next_try);
        return true;
    }
    false
}

/// Crashed as often as attempts are allowed: failed. Docker may keep restarting it (its
/// policy); the agent no longer does.
fn crash_loop(cx: &Ctx<'_>, s: &mut Step) -> bool {
    let Some(cur) = cx.current.filter(|_| cx.crash_failed()) else {
        return false;
    };
    s.set(State::Failed, "crash loop");
    s.view.error = err(
        error_code::START_FAILED,
        format!(
            "container keeps crashing: {} crashes without staying up {} s (last exit code {})",
            cx.crashes(),
            STABLE_AFTER.as_secs(),
            exit_code_text(cx.crash_code(cur))
        ),
    );
    true
}

/// Running but not installed: unhealthy, recently crashed, or not healthy yet.
fn running(cx: &Ctx<'_>, s: &mut Step) -> bool {
    let Some(cur) = cx.current.filter(|c| c.is_running()) else {
        return false;
    };
    if cur.health == Health::Unhealthy {
        restart_unhealthy(cx, cur, s);
    } else if cx.crash_recent() {
        s.view.reason = "restarted, waiting until it stays up".into();
        s.view.error = err(
            error_code::START_FAILED,
            format!(
                "container crashed {} of {} allowed times (last exit code {}); installed once it stays up {} s",
                cx.crashes(),
                cx.attempts_allowed(),
                exit_code_text(cx.crash_code(cur)),
                STABLE_AFTER.as_secs()
            ),
        );
        s.wake(cx.last_crash().map(|t| t + STABLE_AFTER));
    } else {
        s.view.reason = "waiting for healthy".into();
    }
    true
}

/// Unhealthy: restarted by the agent after a growing pause, failed after as many
/// restarts in a row as attempts are allowed.
fn restart_unhealthy(cx: &Ctx<'_>, cur: &ContainerInfo, s: &mut Step) {
    s.view.reason = "unhealthy".into();
    let streak = cx.memory.map_or(0, |m| m.unhealthy_streak);
    if streak >= cx.attempts_allowed() {
        s.set(State::Failed, "stays unhealthy");
        s.view.error = err(
            error_code::UNHEALTHY,
            format!("container stays unhealthy after {streak} restarts"),
        );
        return;
    }
    s.view.error = err(error_code::UNHEALTHY, "container is unhealthy");
    let t = cx.memory.and_then(|m| m.next_health_restart);
    if t.is_some_and(|t| t > cx.now()) {
        s.wake(t);
    } else {
        s.actions.push(Action::RestartUnhealthy {
            key: cx.key.clone(),
            id: cur.id.clone(),
        });
    }
}

/// Restarting, or stopped: Docker restarts it, the job completed, it failed for good
/// (restart policy `no`), or the agent restarts it after a pause.
fn stopped(cx: &Ctx<'_>, s: &mut Step) -> bool {
    let Some(cur) = cx.current else {
        return false;
    };
    let ran = cur.status != "created";
    let restart = cx.c.restart;
    if cur.status == "restarting" {
        s.view.reason = "restarting".into();
        s.view.error = err(
            error_code::START_FAILED,
            format!(
                "container keeps restarting: crashed {} of {} allowed times (last exit code {})",
                cx.crashes(),
                cx.attempts_allowed(),
                exit_code_text(cx.crash_code(cur))
            ),
        );
    } else if ran && restart == RestartPolicy::No && cur.exit_code == Some(0) {
        s.set(State::Installed, "completed");
        s.view.error = None;
    } else if ran && restart == RestartPolicy::No {
        s.set(State::Failed, "exited");
        s.view.error = err(
            error_code::START_FAILED,
            format!("exited with code {}", cur.exit_code.unwrap_or(-1)),
        );
    } else if ran && restart == RestartPolicy::OnFailure && cur.exit_code == Some(0) {
        // `on-failure` does not restart a clean exit: the job is done.
        s.set(State::Installed, "completed");
        s.view.error = None;
    } else if cx.crashes() > 0
        && cx
            .memory
            .and_then(|m| m.crash_restart_at)
            .is_some_and(|t| t > cx.now())
        && matches!(cur.status.as_str(), "exited" | "dead")
    {
        s.view.reason = "crashed, restarting after a pause".into();
        s.view.error = crashed_error(cx, cur);
        s.wake(cx.memory.and_then(|m| m.crash_restart_at));
    } else {
        return false;
    }
    true
}

fn crashed_error(cx: &Ctx<'_>, cur: &ContainerInfo) -> Option<schemas::ErrorInfo> {
    err(
        error_code::START_FAILED,
        format!(
            "container exited with code {} ({} of {} allowed crashes)",
            exit_code_text(cx.crash_code(cur)),
            cx.crashes(),
            cx.attempts_allowed()
        ),
    )
}

/// A failed operation waits for its retry deadline.
fn retry_later(cx: &Ctx<'_>, s: &mut Step) -> bool {
    if !cx.retry_gated() {
        return false;
    }
    s.set(State::Pending, "waiting to retry");
    s.wake(cx.memory.and_then(|m| m.next_try));
    true
}

/// A dependency failed: so does this one, without acting.
fn dependency_failed(cx: &Ctx<'_>, s: &mut Step) -> bool {
    let Some(d) = cx.dep_failed else {
        return false;
    };
    s.set(State::Failed, "dependency failed");
    s.view.error = err(
        error_code::DEPENDENCY_FAILED,
        format!("dependency {} failed", d.key.1),
    );
    // Heals when the dependency heals: retrying as long as it is.
    s.view.retrying = d.retrying;
    s.view.next_attempt_at = d.next_attempt_at.clone();
    true
}

/// Created, exited, dead, paused: started once its dependencies are up.
fn start(cx: &Ctx<'_>, cur: &ContainerInfo, s: &mut Step) {
    if let Some(d) = cx.dep_waiting {
        s.set(State::Pending, format!("waiting for {d}"));
        return;
    }
    let created = cur.status == "created";
    s.view.reason = if created {
        "starting".into()
    } else {
        "container stopped".into()
    };
    if cx.crashes() > 0 && !created {
        s.view.error = crashed_error(cx, cur);
    }
    s.actions.push(Action::Start {
        key: cx.key.clone(),
        id: cur.id.clone(),
    });
}

/// No container with the desired spec: pull the image (once per spec for a tag), then
/// replace the old container (stop-first) or wait for dependencies, then create.
fn install(cx: &Ctx<'_>, s: &mut Step) {
    let c = cx.c;
    let local = cx.site.images.contains_key(&c.image);
    let refreshed = cx.memory.is_some_and(|m| m.refreshed);
    let fixed_ports = c.ports.iter().any(|p| p.host.is_some());
    let start_first = c.update_order == UpdateOrder::StartFirst && !fixed_ports;
    if !local || (!refreshed && !is_digest_reference(&c.image)) {
        s.view.reason = "pulling image".into();
        s.actions.push(Action::Pull {
            key: cx.key.clone(),
            image: c.image.clone(),
            refresh: local,
        });
    } else if !start_first && !cx.others.is_empty() {
        s.view.reason = "spec changed".into();
        s.actions.push(Action::Remove {
            key: cx.key.clone(),
            id: cx.others[0].id.clone(),
            reason: "spec changed",
        });
    } else if let Some(d) = cx.dep_waiting {
        s.set(State::Pending, format!("waiting for {d}"));
    } else {
        s.view.reason = "creating container".into();
        let id = cx.site.id;
        let base = id.container_name(&cx.dep.name, &c.name);
        let name = if cx.site.names.contains(base.as_str()) {
            format!("{base}-{}", short_hash(&c.spec_hash))
        } else {
            base
        };
        s.actions.push(Action::Create {
            key: cx.key.clone(),
            spec: Box::new(id.container_spec(&cx.dep.name, c, cx.site.generation, name)),
        });
    }
}
