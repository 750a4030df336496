//! State the engine shares with the HTTP endpoints and tests: metrics, the `POST /sync`
//! wake-up, whether MQTT is connected, and the latest served commit, site status and rollout
//! summary. The engine writes it; the HTTP endpoints and tests read it.

use crate::metrics::Metrics;
use crate::rollout::RolloutSummary;
use crate::status::{cap_status, status_json};
use schemas::SiteStatus;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// State shared with the HTTP endpoints and tests.
#[derive(Debug, Default)]
pub struct Shared {
    /// Metrics.
    pub metrics: Metrics,
    /// `POST /sync` wakes the source poller.
    pub sync: Arc<Notify>,
    /// MQTT connected.
    pub mqtt_connected: AtomicBool,
    served: Mutex<Option<String>>,
    status: Mutex<Option<SiteStatus>>,
    rollout: Mutex<Option<RolloutSummary>>,
}

impl Shared {
    /// The commit served, if any.
    pub fn served_commit(&self) -> Option<String> {
        self.served.lock().ok().and_then(|g| g.clone())
    }

    /// The latest site status.
    pub fn site_status(&self) -> Option<SiteStatus> {
        self.status.lock().ok().and_then(|g| g.clone())
    }

    /// The rollout pacing state (present while the Site sets `rollout.maxParallel`).
    pub fn rollout(&self) -> Option<RolloutSummary> {
        self.rollout.lock().ok().and_then(|g| g.clone())
    }

    /// The latest site status as published: [`Shared::site_status`] with the rollout fields
    /// (`rollout`, and `waiting` on nodes held back).
    pub fn site_status_json(&self) -> Option<serde_json::Value> {
        let mut st = self.site_status()?;
        cap_status(&mut st);
        Some(status_json(&st, self.rollout().as_ref()))
    }

    /// Records the commit now served.
    pub(crate) fn set_served(&self, commit: &str) {
        if let Ok(mut g) = self.served.lock() {
            *g = Some(commit.to_owned());
        }
    }

    /// Records the latest site status.
    pub(crate) fn set_status(&self, st: SiteStatus) {
        if let Ok(mut g) = self.status.lock() {
            *g = Some(st);
        }
    }

    /// Records the rollout pacing state.
    pub(crate) fn set_rollout(&self, r: Option<RolloutSummary>) {
        if let Ok(mut g) = self.rollout.lock() {
            *g = r;
        }
    }
}
