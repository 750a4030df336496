//! Counters of one agent, shared by the convergence loop and the MQTT session.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one agent (read them for metrics and tests).
#[derive(Debug, Default)]
pub struct Counters {
    /// Desired documents accepted and applied.
    pub documents_accepted: AtomicU64,
    /// Desired documents refused (malformed, foreign, stale, unsigned …).
    pub documents_rejected: AtomicU64,
    /// Engine actions executed.
    pub actions: AtomicU64,
    /// Engine actions that failed.
    pub action_failures: AtomicU64,
    /// Successful broker sessions.
    pub mqtt_sessions: AtomicU64,
    /// Status reports published.
    pub status_published: AtomicU64,
    /// Events dropped (offline queue full or lagging).
    pub events_dropped: AtomicU64,
}

impl Counters {
    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
