//! One agent instance: the convergence loop, the engine-change watcher and (when a
//! broker is configured) the MQTT session. No globals: a process may run many.

use crate::config::Config;
use crate::counters::{bump, Counters};
use crate::error::AgentError;
use crate::inbox::Inbox;
use crate::plan::{Observed, Plan};
use crate::reconcile::{Outcome, ReconcileSettings, Reconciler};
use crate::report;
use crate::runtime::spec::Identity;
use crate::runtime::ContainerRuntime;
use crate::store::{Accepted, Store};
use futures_util::StreamExt;
use schemas::wire::{error_code, AgentInfo, ErrorInfo, Event, NodeStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    status: watch::Receiver<Option<NodeStatus>>,
    events: broadcast::Sender<Event>,
    inbox: Arc<Inbox>,
    counters: Arc<Counters>,
    tasks: tokio::task::JoinSet<()>,
}

impl AgentHandle {
    /// The latest status (published or not), `None` before the first observation.
    pub fn status(&self) -> watch::Receiver<Option<NodeStatus>> {
        self.status.clone()
    }

    /// Events from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Hands a desired document to the agent as if it came from the broker.
    pub fn submit_desired(&self, bytes: Vec<u8>) {
        self.inbox.push(bytes);
    }

    /// Waits until `pred` holds for the status, up to `timeout`; returns the status.
    pub async fn wait_status(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&NodeStatus) -> bool,
    ) -> Option<NodeStatus> {
        let mut rx = self.status.clone();
        let fut = async {
            loop {
                if let Some(s) = rx.borrow_and_update().as_ref() {
                    if pred(s) {
                        return Some(s.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.ok().flatten()
    }

    /// Waits for every task to end (after the shutdown token was cancelled).
    pub async fn wait(mut self) -> Result<(), AgentError> {
        while let Some(r) = self.tasks.join_next().await {
            r.map_err(|e| AgentError::Join(e.to_string()))?;
        }
        Ok(())
    }
}

/// Starts an agent: converges from the state directory at once, with or without a broker.
pub fn spawn(
    config: Config,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> Result<AgentHandle, AgentError> {
    let keys = config.keys().map_err(|e| AgentError::Key(e.to_string()))?;
    let store = Store::open(&config.state_dir, &config.site, &config.node, keys.desired)?;
    let started = Instant::now();
    let (status_tx, status_rx) = watch::channel(None);
    // Small: the publisher drains it at once; a fleet simulator runs thousands of agents.
    let (events_tx, _) = broadcast::channel(64);
    let inbox = Arc::new(Inbox::default());
    let counters = Arc::new(Counters::default());
    let changes = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();

    let mut identity = Identity::new(&config.site, &config.node);
    if let Some(p) = &config.container_prefix {
        identity.prefix = p.clone();
    }
    let reconciler = Reconciler::new(
        runtime.clone(),
        identity,
        ReconcileSettings {
            stop_timeout: config.stop_timeout,
            disk_reserve_bytes: config.disk_reserve_bytes,
            retry_max_backoff: config.retry_max_backoff,
            image_gc: config.image_gc.clone(),
        },
    )
    .with_image_ledger(store.dir());
    tasks.spawn(watch_changes(runtime, changes.clone(), shutdown.clone()));
    if let Some(broker) = config.broker.clone() {
        let session = crate::mqtt::Session::new(
            &config,
            broker,
            store.dir().to_owned(),
            inbox.clone(),
            status_rx.clone(),
            events_tx.subscribe(),
            counters.clone(),
            started,
            keys.report,
        )
        .map_err(|e| AgentError::Mqtt(e.to_string()))?;
        tasks.spawn(session.run(shutdown.clone()));
    }
    let core = Core {
        store,
        reconciler,
        inbox: inbox.clone(),
        changes,
        status_tx,
        events_tx: events_tx.clone(),
        counters: counters.clone(),
        resync: config.resync,
        started,
        rejected: None,
        refusals: RefusalLog::default(),
        event_seq: 0,
        last_states: report::StateMap::new(),
    };
    tasks.spawn(core.run(shutdown));
    Ok(AgentHandle {
        status: status_rx,
        events: events_tx,
        inbox,
        counters,
        tasks,
    })
}

/// Runs an agent until `shutdown` is cancelled. Containers keep running afterwards.
pub async fn run(
    config: Config,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    spawn(config, runtime, shutdown)?.wait().await
}

/// Turns the engine's change stream into wake-ups; reopens it when it ends.
async fn watch_changes(
    runtime: Arc<dyn ContainerRuntime>,
    changes: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let mut stream = runtime.changes();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                item = stream.next() => match item {
                    Some(Ok(())) => { failures = 0; changes.notify_one() }
                    Some(Err(e)) => { tracing::debug!(error = %e, "engine event stream failed"); break }
                    None => break,
                }
            }
        }
        failures += 1;
        // Something may have changed while the stream was down: resync.
        changes.notify_one();
        let delay =
            crate::retry::backoff(500, failures, fastrand::f64()).min(Duration::from_secs(30));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

struct Core {
    store: Store,
    reconciler: Reconciler,
    inbox: Arc<Inbox>,
    changes: Arc<Notify>,
    status_tx: watch::Sender<Option<NodeStatus>>,
    events_tx: broadcast::Sender<Event>,
    counters: Arc<Counters>,
    resync: Duration,
    started: Instant,
    rejected: Option<ErrorInfo>,
    refusals: RefusalLog,
    event_seq: u64,
    last_states: report::StateMap,
}

/// How often refused documents are summarised in the log at most.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Rate limit of the refusal log: a hostile writer can publish thousands of documents a
/// second, and a warning each would flood the device's log (flash, journald). The first
/// refusal of a quiet period is logged at once; later ones are counted and summarised in
/// one line at most every [`REFUSAL_LOG_INTERVAL`].
#[derive(Debug, Default)]
struct RefusalLog {
    /// When the last line was written.
    last_line: Option<Instant>,
    /// Refusals since that line, not logged yet.
    unlogged: u64,
    /// The latest of them.
    last_reason: String,
}

impl RefusalLog {
    /// Records one refusal; returns the number of refusals the caller should log in one
    /// line now (`Some(n)`), or `None` when the line is held back.
    fn record(&mut self, now: Instant, reason: &str) -> Option<u64> {
        self.unlogged += 1;
        self.last_reason = schemas::shorten(reason, 200);
        self.flush(now)
    }

    /// `Some(n)` when a line is due (the interval passed and refusals are pending).
    fn flush(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= REFUSAL_LOG_INTERVAL);
        if self.unlogged == 0 || !due {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// When the held-back refusals are due for their summary line.
    fn due_at(&self) -> Option<Instant> {
        match (self.unlogged, self.last_line) {
            (0, _) | (_, None) => None,
            (_, Some(t)) => Some(t + REFUSAL_LOG_INTERVAL),
        }
    }
}

impl Core {
    fn take_desired(&mut self) {
        while let Some(bytes) = self.inbox.pop() {
            match self.store.accept(&bytes) {
                Ok(Ok(Accepted::New)) => {
                    bump(&self.counters.documents_accepted);
                    self.rejected = None;
                    tracing::info!(
                        generation = self.store.generation(),
                        "applying desired document"
                    );
                }
                Ok(Ok(Accepted::Unchanged)) => {
                    tracing::debug!(
                        generation = self.store.generation(),
                        "desired document unchanged"
                    );
                }
                Ok(Err(rejection)) => {
                    bump(&self.counters.documents_rejected);
                    let reason = rejection.to_string();
                    if let Some(count) = self.refusals.record(Instant::now(), &reason) {
                        self.log_refusals(count);
                    }
                    self.rejected = Some(ErrorInfo::new(error_code::REJECTED, reason));
                }
                Err(e) => {
                    // Not persisted, so not applied: the broker's retained copy comes back.
                    bump(&self.counters.documents_rejected);
                    tracing::error!(error = %e, "cannot persist desired document, not applying it");
                    self.rejected = Some(ErrorInfo::new(error_code::INTERNAL, e.to_string()));
                }
            }
        }
    }

    fn log_refusals(&self, count: u64) {
        tracing::warn!(
            refused = count,
            refused_total = Counters::get(&self.counters.documents_rejected),
            last_reason = %self.refusals.last_reason,
            applied_generation = self.store.generation(),
            "rejected desired document(s)"
        );
    }

    fn publish(&mut self, plan: &Plan, observed: &Observed) {
        let status = report::build_status(
            &self.reconciler.identity,
            self.store.current(),
            plan,
            observed,
            &self.reconciler.runtime_info,
            AgentInfo {
                version: crate::VERSION.to_owned(),
                uptime_s: self.started.elapsed().as_secs(),
                rejected_documents: Counters::get(&self.counters.documents_rejected),
                images_removed: self.reconciler.images.removed_total,
                image_bytes_freed: self.reconciler.images.bytes_total,
            },
            self.rejected.clone(),
            schemas::now_rfc3339(),
        );
        let events = report::diff_events(
            &self.last_states,
            &status,
            plan,
            &mut self.event_seq,
            &status.reported_at,
        );
        self.last_states = report::states_of(&status);
        for e in events {
            tracing::info!(deployment = %e.deployment, component = e.component.as_deref().unwrap_or("-"), from = e.from.map_or("-", |s| s.as_str()), to = %e.to, reason = %e.reason, "state transition");
            let _ = self.events_tx.send(e);
        }
        let changed = self.status_tx.borrow().as_ref().map(report::comparable)
            != Some(report::comparable(&status));
        if changed {
            self.status_tx.send_replace(Some(status));
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let mut plan = Plan::default();
        let mut observed = Observed::default();
        let mut unreachable = 0u32;
        let mut burst = 0u32;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            self.take_desired();
            let now = Instant::now();
            let desired = self.store.current();
            let mut wake = now + self.resync;
            // Every engine call is abandoned at shutdown (a pull may take minutes): the
            // next start re-derives everything from Docker.
            let observation = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                r = self.reconciler.observe(desired) => r,
            };
            match observation {
                Ok(o) => {
                    unreachable = 0;
                    observed = o;
                    plan = self.reconciler.plan(desired, &observed, now.into_std());
                }
                Err(e) => {
                    unreachable += 1;
                    if unreachable == 1 {
                        tracing::warn!(error = %e, "cannot observe the container engine");
                    }
                    plan.actions.clear();
                    wake = now
                        + crate::retry::backoff(1_000, unreachable, fastrand::f64())
                            .min(Duration::from_secs(30));
                }
            }
            let desired = self.store.current().cloned();
            self.publish(&plan, &observed);
            if let Some(action) = plan.actions.first() {
                burst += 1;
                if burst > 200 {
                    // A plan that keeps acting without settling: never spin.
                    tracing::warn!(?action, "convergence is not settling, slowing down");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                bump(&self.counters.actions);
                let outcome = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        tracing::info!(component = ?action.key(), "stopping: abandoning the engine call in progress");
                        return;
                    }
                    o = self
                        .reconciler
                        .execute(action, desired.as_ref(), Instant::now().into_std()) => o,
                };
                if !matches!(outcome, Outcome::Done) {
                    bump(&self.counters.action_failures);
                }
                continue;
            }
            burst = 0;
            // Settled: images nothing needs any more may go (never while anything is in
            // flight, nor while a new document waits: it may want a previous image back).
            if self.inbox.is_empty() {
                let collected = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    s = self.reconciler.collect_images(desired.as_ref(), &observed, &plan, now.into_std()) => s,
                };
                if collected.is_some_and(|s| s.removed > 0) {
                    self.publish(&plan, &observed);
                }
            }
            if let Some(w) = plan.wake_at {
                wake = wake.min(Instant::from_std(w));
            }
            if let Some(count) = self.refusals.flush(Instant::now()) {
                self.log_refusals(count);
            }
            if let Some(w) = self.refusals.due_at() {
                wake = wake.min(w);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.inbox.notified() => {}
                _ = self.changes.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_log_writes_the_first_line_then_one_summary_per_minute() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.record(t0, "first"), Some(1));
        // A flood within the minute: held back, counted.
        for i in 0..10_000u64 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(log.record(at, "again"), None);
        }
        assert_eq!(log.due_at(), Some(t0 + REFUSAL_LOG_INTERVAL));
        assert_eq!(log.flush(t0 + Duration::from_secs(59)), None);
        assert_eq!(log.flush(t0 + REFUSAL_LOG_INTERVAL), Some(10_000));
        assert_eq!(log.last_reason, "again");
        // Nothing pending: no line, no wake-up.
        assert_eq!(log.flush(t0 + Duration::from_secs(600)), None);
        assert_eq!(log.due_at(), None);
        // A refusal after a quiet period is logged at once.
        assert_eq!(log.record(t0 + Duration::from_secs(600), "late"), Some(1));
    }

    #[test]
    fn refusal_log_keeps_reasons_short() {
        let mut log = RefusalLog::default();
        log.record(Instant::now(), &"x".repeat(1 << 20));
        assert!(log.last_reason.len() < 300);
    }
}
