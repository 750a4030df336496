//! Image garbage collection: removes the images the agent pulled that nothing needs any
//! more, once the node is converged.
//!
//! - **When**: only when the node is settled (every component installed, removed or
//!   failed for good; no action due, no retry pending, the engine reachable) — never while
//!   an install, update or removal is in flight — right after a generation settled, then
//!   at most once per `image_gc_interval` (default 10 min; `off` disables it).
//! - **What goes**: only images in the [`ledger`] (pulled by this agent for a component),
//!   still on the engine, that no container uses (any container: this agent's, another
//!   agent's, unmanaged; running or stopped), no desired component references, and that
//!   are not among the `image_keep_previous` (default 1) latest other images of a
//!   component, so a rollback starts without a pull. An image carrying a tag the agent did
//!   not pull is left alone. Removal is never forced: Docker refusing (409, in use) or not
//!   finding it (404) is fine.
//! - **Report**: `agent.imagesRemoved` / `agent.imageBytesFreed` in the status (since the
//!   agent started); one info line per run that had anything to remove.

pub mod ledger;
pub mod select;

pub use ledger::Ledger;
pub use select::{select, Inputs, Removal, Selection};

use crate::plan::{Observed, Plan};
use crate::runtime::spec::{Identity, Ownership};
use crate::runtime::{ContainerRuntime, RuntimeError};
use schemas::wire::DesiredState;
use schemas::State;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Default `image_gc_interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// Largest `image_keep_previous`.
pub const MAX_KEEP_PREVIOUS: u32 = 100;

/// Image garbage collection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSettings {
    /// At most one run per interval (besides the one right after a generation settled);
    /// `None`: off.
    pub interval: Option<Duration>,
    /// Images kept per component besides the ones in use or desired.
    pub keep_previous: u32,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            interval: Some(DEFAULT_INTERVAL),
            keep_previous: 1,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Images removed.
    pub removed: u64,
    /// Bytes freed.
    pub bytes: u64,
    /// Candidates the engine refused (in use, gone, other errors).
    pub skipped: u64,
    /// Images kept as previous versions.
    pub kept_previous: u64,
}

/// The collector of one agent: its ledger, its schedule and its totals.
#[derive(Debug, Default)]
pub struct ImageGc {
    /// Settings.
    pub settings: GcSettings,
    /// The images the agent pulled.
    pub ledger: Ledger,
    last_run: Option<Instant>,
    collected_generation: Option<u64>,
    /// Images removed since the agent started.
    pub removed_total: u64,
    /// Bytes freed since the agent started.
    pub bytes_total: u64,
}

/// True when nothing is in flight: every component installed, removed or failed for good,
/// no action due and no retry pending.
pub fn settled(plan: &Plan) -> bool {
    plan.actions.is_empty()
        && plan.components.iter().all(|v| match v.state {
            State::Installed | State::Removed => true,
            State::Failed => !v.retrying,
            State::Pending | State::Installing | State::Removing => false,
        })
}

impl ImageGc {
    /// A collector with `settings` and `ledger`.
    pub fn new(settings: GcSettings, ledger: Ledger) -> Self {
        ImageGc {
            settings,
            ledger,
            ..ImageGc::default()
        }
    }

    /// Records a successful pull of `reference` by `key` (image `before` locally before the
    /// pull, `after` now): the image is the agent's when the pull brought it, or when the
    /// agent pulled it before. Saves the ledger when it changed.
    pub fn record_pull(
        &mut self,
        key: &crate::runtime::spec::CompKey,
        reference: &str,
        before: Option<&str>,
        after: &str,
    ) {
        if before == Some(after) && !self.ledger.is_ours(after) {
            // Present before the agent pulled it: someone else's, never removed.
            return;
        }
        if self.ledger.record(key, reference, after) {
            self.save();
        }
    }

    fn save(&self) {
        if let Err(e) = self.ledger.save() {
            tracing::warn!(error = %e, "cannot write the image record");
        }
    }

    /// True when a run is due for `generation` at `now` (the caller checked the node is
    /// [`settled`]).
    pub fn due(&self, generation: u64, now: Instant) -> bool {
        let Some(interval) = self.settings.interval else {
            return false;
        };
        self.collected_generation != Some(generation)
            || self
                .last_run
                .is_none_or(|t| now.saturating_duration_since(t) >= interval)
    }

    /// One collection against the engine. Only an unreachable engine is an error (the run
    /// is then tried again later); refusals of single images are counted as skipped.
    pub async fn run(
        &mut self,
        rt: &dyn ContainerRuntime,
        desired: &DesiredState,
        observed: &Observed,
        id: &Identity,
        now: Instant,
    ) -> Result<Summary, RuntimeError> {
        // A failed run waits for the next one like a finished one.
        self.last_run = Some(now);
        self.collected_generation = Some(desired.generation);
        let images = rt.list_images().await?;
        let mut changed = false;
        // What the agent's containers run now is their component's latest image.
        for c in &observed.containers {
            if let Ownership::Mine(key) = id.classify(c) {
                if c.is_running() {
                    changed |= self.ledger.touch(&key, &c.image_id);
                }
            }
        }
        let present: BTreeSet<&str> = images.iter().map(|m| m.id.as_str()).collect();
        changed |= self.ledger.retain_present(&present);
        let desired_refs: BTreeSet<String> = desired
            .deployments
            .iter()
            .flat_map(|d| d.components.iter().map(|c| c.image.clone()))
            .collect();
        let desired_ids: BTreeSet<String> = desired_refs
            .iter()
            .filter_map(|r| observed.images.get(r).map(|i| i.id.clone()))
            .collect();
        let selection = select(&Inputs {
            images: &images,
            containers: &observed.containers,
            desired_refs: &desired_refs,
            desired_ids: &desired_ids,
            ledger: self.ledger.entries(),
            keep_previous: self.settings.keep_previous as usize,
        });
        let mut summary = Summary {
            kept_previous: selection.kept_previous.len() as u64,
            ..Summary::default()
        };
        let mut result = Ok(());
        for r in &selection.remove {
            match remove(rt, r).await {
                Ok(()) => {
                    tracing::debug!(image = %r.id, tags = ?r.tags, bytes = r.bytes, "removed image");
                    summary.removed += 1;
                    summary.bytes += r.bytes;
                    changed |= self.ledger.forget(&r.id);
                }
                Err(RuntimeError::Unreachable(m)) => {
                    result = Err(RuntimeError::Unreachable(m));
                    break;
                }
                Err(e) => {
                    tracing::debug!(image = %r.id, error = %e, "image not removed");
                    summary.skipped += 1;
                    if matches!(e, RuntimeError::NotFound(_)) {
                        changed |= self.ledger.forget(&r.id);
                    }
                }
            }
        }
        if changed {
            self.save();
        }
        self.removed_total += summary.removed;
        self.bytes_total += summary.bytes;
        if !selection.remove.is_empty() {
            tracing::info!(
                removed = summary.removed,
                bytes_freed = summary.bytes,
                skipped = summary.skipped,
                kept_previous = summary.kept_previous,
                "image garbage collection"
            );
        } else {
            tracing::debug!(
                kept_previous = summary.kept_previous,
                "image garbage collection: nothing to remove"
            );
        }
        result.map(|()| summary)
    }
}

/// Removes one image: by id when it has at most one tag (Docker removes its digests with
/// it), else tag by tag (the last removal deletes it). Never forced.
async fn remove(rt: &dyn ContainerRuntime, r: &Removal) -> Result<(), RuntimeError> {
    if r.tags.len() > 1 {
        for t in &r.tags[1..] {
            rt.remove_image(t).await?;
        }
    }
    rt.remove_image(&r.id).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, CompView};

    fn view(state: State, retrying: bool) -> CompView {
        CompView {
            key: ("app".into(), "web".into()),
            desired: true,
            state,
            reason: String::new(),
            error: None,
            container: None,
            attempts: 0,
            agent_restarts: 0,
            retrying,
            next_attempt_at: None,
        }
    }

    #[test]
    fn settled_only_when_nothing_is_in_flight() {
        let plan = |views: Vec<CompView>, actions: Vec<Action>| Plan {
            actions,
            components: views,
            wake_at: None,
        };
        assert!(settled(&plan(vec![], vec![])));
        assert!(settled(&plan(
            vec![
                view(State::Installed, false),
                view(State::Removed, false),
                view(State::Failed, false)
            ],
            vec![]
        )));
        for busy in [
            view(State::Pending, false),
            view(State::Installing, false),
            view(State::Removing, false),
            view(State::Failed, true),
        ] {
            assert!(!settled(&plan(vec![busy.clone()], vec![])), "{busy:?}");
        }
        let pull = Action::Pull {
            key: ("app".into(), "web".into()),
            image: "r/web:v2".into(),
            refresh: false,
        };
        assert!(!settled(&plan(
            vec![view(State::Installed, false)],
            vec![pull]
        )));
    }

    #[test]
    fn due_right_after_a_generation_then_once_per_interval_and_never_when_off() {
        let t0 = Instant::now();
        let mut gc = ImageGc::default();
        assert!(gc.due(1, t0));
        gc.last_run = Some(t0);
        gc.collected_generation = Some(1);
        assert!(!gc.due(1, t0 + Duration::from_secs(599)));
        assert!(gc.due(1, t0 + DEFAULT_INTERVAL));
        assert!(gc.due(2, t0 + Duration::from_secs(1)), "a new generation");
        gc.settings.interval = None;
        assert!(!gc.due(2, t0 + Duration::from_secs(10_000)));
    }
}
