//! The engine: the one task that owns the LO's state. It receives new commits from the
//! source poller ([`crate::source::poll`]), MQTT events from the session task, and a 100 ms
//! tick; for each it updates what it observed, runs the pure decisions
//! ([`crate::reconcile`], [`crate::reports`], [`crate::policy`]), and performs what they
//! return: persist ([`crate::store`]), publish, audit ([`crate::audit`]).
//! Level-triggered: every re-render starts from the served revision and what is observed,
//! never from why it ran.
//!
//! Layout: this file holds the state, the loop, commits and the tick; `ingest.rs` what comes
//! from MQTT (decoding, signature and size checks, presence, status, read-back desired
//! documents); `publish.rs` what goes out (desired documents, site status, presence).

mod ingest;
mod publish;

use crate::audit::{Audit, AuditEntry};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::mqtt::{self, MqttEvent};
use crate::observe::Fleet;
use crate::policy::{Decision, GuardFlags};
use crate::preview::{self as plan, NodeInput};
use crate::reconcile::{self, CommitCheck, CommitInput, ReconcileInput};
use crate::render::{Inventory, NodeDesired};
use crate::rollout::{Rollout, RolloutSummary};
use crate::shared::Shared;
use crate::source::poll::SourceMsg;
use crate::source::{Commit, SiteFiles};
use crate::store::{Bookkeeping, ServedRecord, Store};
use rumqttc::AsyncClient;
use schemas::site::SiteDocs;
use schemas::{DeploymentRollout, DocProblem, NodeChannel, Revision, SiteError, Topics};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Longest a rollout's outcomes and soak clocks wait to be saved (they are re-derived from
/// the nodes' reports after a restart: losing them only delays a wave).
const LAZY_SAVE: Duration = Duration::from_secs(10);

/// Wall-clock now, ms since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the engine is started with.
#[derive(Debug)]
pub struct EngineParts {
    /// Configuration (validated).
    pub cfg: Config,
    /// State shared with HTTP.
    pub shared: Arc<Shared>,
    /// Audit log.
    pub audit: Audit,
    /// The MQTT client of the session task.
    pub client: AsyncClient,
    /// The state directory.
    pub store: Store,
    /// Topic builder.
    pub topics: Topics,
    /// Key that signs desired documents, if configured.
    pub signing: Option<ed25519_dalek::SigningKey>,
}

#[derive(Debug)]
struct Served {
    commit: String,
    since: String,
    docs: SiteDocs,
    names: BTreeSet<String>,
}

/// `((fleet size, served commit), undeclared nodes tracked)`.
type UndeclaredCount = ((usize, Option<String>), usize);

/// The engine task's state (see the module doc).
pub struct Engine {
    cfg: Config,
    site: String,
    site_path: String,
    topics: Topics,
    shared: Arc<Shared>,
    audit: Audit,
    client: AsyncClient,
    store: Store,
    book: Bookkeeping,
    book_dirty: bool,
    served: Option<Served>,
    last_error: Option<SiteError>,
    held: Option<SiteError>,
    fleet: Fleet,
    /// What each node was last handed (the content of its current generation).
    desired: BTreeMap<String, NodeDesired>,
    /// What each node should run at the served revision (differs from `desired` while rollout
    /// pacing holds a node back).
    target: BTreeMap<String, NodeDesired>,
    /// `desired` changed since the last save.
    published_dirty: bool,
    /// Site-wide pacing summary, while the Site sets `maxParallel`.
    rollout: Option<RolloutSummary>,
    /// Each deployment's rollout (persisted).
    rollouts: BTreeMap<String, Rollout>,
    /// A rollout changed what it commits to (see [`Rollout::same_commitments`]): saved
    /// before publishing.
    rollouts_dirty: bool,
    /// Only outcomes or soak clocks changed since the last save, since then: saved within
    /// [`LAZY_SAVE`].
    rollouts_lazy: Option<Instant>,
    /// The `rollout` object of each deployment, for the site status.
    views: BTreeMap<String, DeploymentRollout>,
    /// Something a rollout depends on changed (status, presence).
    pace_dirty: bool,
    /// Last reconcile (rollouts advance with time too: soak, timeouts).
    last_reconcile: Instant,
    /// When presence read back after the first CONNACK is complete (mono ms): before, a node
    /// not seen online may just not have been heard from yet.
    settle_at: Option<u64>,
    settled: bool,
    floors: BTreeMap<String, u64>,
    /// node → (generation, ms from publish to converged).
    converged: BTreeMap<String, (u64, u64)>,
    inventory: Inventory,
    connected: bool,
    ever_connected: bool,
    unsent: BTreeSet<String>,
    status_dirty: bool,
    last_status: Option<Instant>,
    reconcile_pending: bool,
    signing: Option<ed25519_dalek::SigningKey>,
    origin: Instant,
    last_plan: Option<Instant>,
    flags: GuardFlags,
    /// Report-signing keys of the nodes declared in Git (served revision).
    keys: BTreeMap<String, ed25519_dalek::VerifyingKey>,
    /// The served Site requires signed reports.
    require_signed: bool,
    /// Newest `(epoch, seq)` of a signed report accepted, per node and channel.
    report_seq: BTreeMap<(String, NodeChannel), (u64, u64)>,
    /// Reports refused per node declared in Git (for the note in the site status).
    refused_reports: BTreeMap<String, u64>,
    /// Nodes whose retained desired document read back differs from ours, since (mono ms).
    suspect: BTreeMap<String, u64>,
    /// Last re-assertion per node, and how many so far (a writer fighting us shows up here).
    reasserted: BTreeMap<String, (Instant, u64)>,
    /// Digest of the desired payload last published per node: every publish comes back on
    /// our own subscription, and comparing digests spares re-serialising and re-signing
    /// the document for each echo. Keyed per process (`RandomState`), so a writer cannot
    /// craft a payload that collides with ours.
    published_digest: BTreeMap<String, u64>,
    digest_keys: std::hash::RandomState,
    /// Undeclared nodes tracked, as counted by [`Engine::admit`] at (fleet size, served
    /// commit).
    undeclared_count: std::cell::Cell<Option<UndeclaredCount>>,
    /// Messages from undeclared nodes beyond [`MAX_UNDECLARED_NODES`].
    untracked: u64,
    /// Last sweep of silent undeclared nodes.
    last_sweep: Instant,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("site", &self.site)
            .field("served", &self.served.as_ref().map(|s| &s.commit))
            .field("nodes", &self.desired.len())
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with nothing served yet (the published documents and rollback bookkeeping
    /// restored from the state directory).
    pub fn new(p: EngineParts) -> Self {
        let EngineParts {
            cfg,
            shared,
            audit,
            client,
            store,
            topics,
            signing,
        } = p;
        let book = store.data.bookkeeping();
        let published = store.data.published();
        let rollouts = store.data.rollouts();
        Engine {
            site: cfg.site.clone(),
            site_path: cfg.site_path(),
            fleet: Fleet::new(cfg.heartbeat_timeout.as_millis() as u64),
            topics,
            shared,
            audit,
            client,
            store,
            book,
            book_dirty: false,
            served: None,
            last_error: None,
            held: None,
            desired: published,
            target: BTreeMap::new(),
            published_dirty: false,
            rollout: None,
            rollouts,
            rollouts_dirty: false,
            rollouts_lazy: None,
            views: BTreeMap::new(),
            pace_dirty: false,
            last_reconcile: Instant::now(),
            settle_at: None,
            settled: false,
            floors: BTreeMap::new(),
            converged: BTreeMap::new(),
            inventory: Inventory::default(),
            connected: false,
            ever_connected: false,
            unsent: BTreeSet::new(),
            status_dirty: true,
            last_status: None,
            reconcile_pending: false,
            signing,
            origin: Instant::now(),
            last_plan: None,
            flags: GuardFlags {
                allow_empty: cfg.allow_empty,
                allow_mass_delete: cfg.allow_mass_delete,
            },
            keys: BTreeMap::new(),
            require_signed: false,
            report_seq: BTreeMap::new(),
            refused_reports: BTreeMap::new(),
            suspect: BTreeMap::new(),
            reasserted: BTreeMap::new(),
            published_digest: BTreeMap::new(),
            digest_keys: std::hash::RandomState::new(),
            undeclared_count: std::cell::Cell::new(None),
            untracked: 0,
            last_sweep: Instant::now(),
            cfg,
        }
    }

    fn mono_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Runs until `shutdown`: then saves, publishes the last status and offline presence,
    /// and disconnects.
    pub async fn run(
        mut self,
        mut src_rx: mpsc::Receiver<SourceMsg>,
        mut mqtt_rx: mpsc::UnboundedReceiver<MqttEvent>,
        mqtt_task: tokio::task::JoinHandle<()>,
        mqtt_stop: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(msg) = src_rx.recv() => self.on_source(msg).await,
                Some(ev) = mqtt_rx.recv() => self.on_mqtt(ev).await,
                _ = tick.tick() => self.tick().await,
            }
        }
        tracing::info!("shutting down");
        self.save();
        if self.connected {
            self.publish_status().await;
            self.publish_presence(false, self.store.data.lo_epoch).await;
            let _ = self.client.disconnect().await;
        }
        mqtt::drain(mqtt_task, &mqtt_stop, Duration::from_secs(3)).await;
        mqtt_stop.cancel();
    }

    fn save(&mut self) {
        if self.published_dirty {
            self.store.data.set_published(&self.desired);
            self.published_dirty = false;
        }
        if self.book_dirty {
            self.store.data.set_bookkeeping(&self.book);
            self.book_dirty = false;
        }
        if self.rollouts_dirty || self.rollouts_lazy.is_some() {
            self.store.data.set_rollouts(&self.rollouts);
            self.rollouts_dirty = false;
            self.rollouts_lazy = None;
        }
        if let Err(e) = self.store.save() {
            tracing::error!(error = %e, "cannot save the state");
        }
    }

    async fn on_source(&mut self, msg: SourceMsg) {
        match msg {
            SourceMsg::Error(message) => {
                tracing::warn!(error = %message, "git source failed; keeping the served revision");
                self.shared.metrics.source_errors.inc();
                self.audit.log(AuditEntry::new("source", message.clone()));
                self.last_error = Some(SiteError {
                    commit: String::new(),
                    at: schemas::now_rfc3339(),
                    message,
                    problems: Vec::new(),
                });
                self.status_dirty = true;
            }
            SourceMsg::Ok => {
                if self
                    .last_error
                    .as_ref()
                    .is_some_and(|e| e.commit.is_empty())
                {
                    self.last_error = None;
                    self.status_dirty = true;
                }
            }
            SourceMsg::Commit {
                commit,
                files,
                restored,
                ..
            } => self.on_commit(commit, files, restored).await,
        }
    }

    async fn on_commit(&mut self, commit: Commit, files: SiteFiles, restored: bool) {
        let check = reconcile::check_commit(&CommitInput {
            site: &self.site,
            site_path: &self.site_path,
            commit: &commit.id,
            files: &files,
            limits: &self.cfg.limits,
            fleet: &self.fleet,
            served: self.served.as_ref().map(|s| &s.names),
            flags: self.flags,
            restored,
        });
        let docs = match check {
            CommitCheck::Serve(docs) => *docs,
            CommitCheck::Reject { message, problems } => {
                return self.reject(&commit.id, message, problems);
            }
            CommitCheck::Hold(reason) => {
                tracing::warn!(commit = %commit.id, reason = %reason, "commit held by the deletion guard");
                self.shared.metrics.held_commits.inc();
                self.audit
                    .log(AuditEntry::new("held", reason.clone()).commit(&commit.id));
                self.held = Some(SiteError {
                    commit: commit.id.clone(),
                    at: schemas::now_rfc3339(),
                    message: reason,
                    problems: Vec::new(),
                });
                self.status_dirty = true;
                return;
            }
        };
        let names: BTreeSet<String> = docs.deployments.keys().cloned().collect();
        let (since, since_ms) = match (&self.store.data.served, restored) {
            (Some(s), true) => (s.since.clone(), s.since_ms),
            _ => (schemas::now_rfc3339(), now_ms()),
        };
        tracing::info!(commit = %commit.id, deployments = names.len(), nodes = docs.nodes.len(), restored, "serving commit");
        self.shared.metrics.served_commits.inc();
        self.audit.log(
            AuditEntry::new(
                "served",
                format!(
                    "serving {} deployments{}",
                    names.len(),
                    if restored { " (restored)" } else { "" }
                ),
            )
            .commit(&commit.id),
        );
        self.store.data.served = Some(ServedRecord {
            commit: commit.id.clone(),
            since: since.clone(),
            since_ms,
        });
        self.served = Some(Served {
            commit: commit.id.clone(),
            since,
            docs,
            names,
        });
        self.shared.set_served(&commit.id);
        if !restored {
            self.last_error = None;
            self.held = None;
        }
        self.reconcile().await;
    }

    fn reject(&mut self, commit: &str, message: &str, problems: Vec<DocProblem>) {
        for p in &problems {
            tracing::warn!(commit = %commit, file = %p.file, line = ?p.line, field = ?p.field, reason = %p.message, "invalid document");
        }
        tracing::error!(commit = %commit, problems = problems.len(), "commit rejected; keeping the last good revision");
        self.shared.metrics.rejected_commits.inc();
        let detail: Vec<String> = problems
            .iter()
            .map(|p| format!("{}:{}: {}", p.file, p.line.unwrap_or(0), p.message))
            .collect();
        self.audit.log(
            AuditEntry::new("rejected", format!("{message}: {}", detail.join("; "))).commit(commit),
        );
        self.last_error = Some(SiteError {
            commit: commit.to_owned(),
            at: schemas::now_rfc3339(),
            message: message.to_owned(),
            problems,
        });
        self.status_dirty = true;
    }

    /// Renders every node (pure [`reconcile::reconcile`]), persists new generations, then
    /// publishes what changed.
    async fn reconcile(&mut self) {
        self.reconcile_pending = false;
        self.pace_dirty = false;
        self.last_reconcile = Instant::now();
        let Some(served) = &self.served else { return };
        let started = Instant::now();
        // Keys were validated with the site; one that does not decode is no key.
        self.keys = served
            .docs
            .nodes
            .iter()
            .filter_map(|(n, e)| {
                let k = e.public_key.as_deref()?;
                schemas::sign::verifying_key_from_base64(k)
                    .ok()
                    .map(|k| (n.clone(), k))
            })
            .collect();
        // Bookkeeping of nodes that left Git (or lost their key) goes with them.
        let keys = &self.keys;
        self.report_seq.retain(|(n, _), _| keys.contains_key(n));
        let declared = &served.docs.nodes;
        self.refused_reports.retain(|n, _| declared.contains_key(n));
        self.require_signed = served
            .docs
            .spec()
            .security
            .is_some_and(|s| s.require_signed_reports);
        let revision = Revision {
            commit: served.commit.clone(),
            path: self.site_path.clone(),
        };
        let issued_at = schemas::now_rfc3339();
        let out = reconcile::reconcile(&ReconcileInput {
            docs: &served.docs,
            revision: &revision,
            fleet: &self.fleet,
            mono_ms: self.mono_ms(),
            settled: self.settled,
            records: &self.store.data.nodes,
            floors: &self.floors,
            handed: &self.desired,
            rollbacks: &self.book.rollbacks,
            rollouts: &self.rollouts,
            now_ms: now_ms(),
            issued_at: &issued_at,
        });
        if out.rollout.as_ref().map(|r| (&r.in_flight, &r.waiting))
            != self.rollout.as_ref().map(|r| (&r.in_flight, &r.waiting))
        {
            if let Some(r) = &out.rollout {
                tracing::info!(
                    max_parallel = r.max_parallel,
                    in_flight = r.in_flight.len(),
                    waiting = r.waiting.len(),
                    "rollout paced"
                );
            }
        }
        if out.rollouts != self.rollouts {
            let committed = out.rollouts.len() == self.rollouts.len()
                && out
                    .rollouts
                    .iter()
                    .zip(&self.rollouts)
                    .all(|((a, x), (b, y))| a == b && x.same_commitments(y));
            if committed {
                self.rollouts_lazy.get_or_insert_with(Instant::now);
            } else {
                self.rollouts_dirty = true;
            }
            self.rollouts = out.rollouts;
        }
        let mut phases: BTreeMap<&str, i64> = BTreeMap::new();
        for v in out.views.values() {
            *phases.entry(v.phase.as_str()).or_default() += 1;
        }
        for phase in ["progressing", "paused", "halted", "rolledBack", "complete"] {
            self.shared
                .metrics
                .rollouts
                .get_or_create(&Metrics::kind(phase))
                .set(phases.get(phase).copied().unwrap_or(0));
        }
        self.views = out.views;
        self.shared.set_rollout(out.rollout.clone());
        self.rollout = out.rollout;
        self.inventory = out.inventory;
        self.desired = out.handed;
        self.target = out.target;
        let changed: Vec<String> = out.records.keys().cloned().collect();
        self.store.data.nodes.extend(out.records);
        if !changed.is_empty() || self.rollouts_dirty {
            // Persist before publishing: a generation that went out is never reused, and
            // the nodes handed a candidate are known after a crash.
            self.published_dirty |= !changed.is_empty();
            self.save();
            for node in &changed {
                self.publish_desired(node).await;
            }
        }
        for (deployment, h) in out.happened {
            self.rollout_event(&deployment, &h).await;
        }
        self.shared
            .metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        self.shared
            .metrics
            .nodes_enrolled
            .set(self.inventory.nodes.len() as i64);
        self.status_dirty = true;
        self.last_plan = None;
    }

    /// Performs the rollback policy's decisions on a status report of `node`: bookkeeping,
    /// log, metrics, audit ([`reconcile::decided`] chose them).
    fn apply(&mut self, node: &str, decisions: Vec<Decision>) {
        if decisions.is_empty() {
            return;
        }
        let out = reconcile::decided(
            node,
            self.desired.get(node),
            decisions,
            &schemas::now_rfc3339(),
        );
        for d in out.decided {
            let e = &d.audit;
            let (deployment, commit) = (
                e.deployment.as_deref().unwrap_or_default(),
                e.commit.as_deref().unwrap_or_default(),
            );
            match d.kind {
                "rollback_failed" => {
                    tracing::error!(node = %node, deployment = %deployment, commit = %commit, "rolled-back version failed too; stopping");
                }
                kind => {
                    tracing::warn!(node = %node, deployment = %deployment, commit = %commit, decision = kind, reason = %e.message, "deployment failed");
                }
            }
            self.shared
                .metrics
                .decisions
                .get_or_create(&Metrics::kind(d.kind))
                .inc();
            self.audit.log(d.audit);
        }
        if !out.changes.is_empty() {
            self.book_dirty = true;
        }
        for c in out.changes {
            c.apply_to(&mut self.book, node);
        }
        if out.rerender {
            self.reconcile_pending = true;
        }
    }

    async fn tick(&mut self) {
        let now = self.mono_ms();
        for (node, online) in self.fleet.expire(now) {
            tracing::info!(node = %node, online, "node presence changed");
            self.status_dirty = true;
            self.pace_dirty = true;
        }
        if !self.settled && self.settle_at.is_some_and(|t| now >= t) {
            self.settled = true;
            self.pace_dirty = true;
        }
        // Rollouts in progress advance on what nodes report and with time (soak, wave
        // timeouts): at most every 250 ms after a change, at least every second.
        if self.rollouts.values().any(Rollout::active) {
            let since = self.last_reconcile.elapsed();
            if (self.pace_dirty && since >= Duration::from_millis(250))
                || since >= Duration::from_secs(1)
            {
                self.reconcile_pending = true;
            }
        }
        if self.reconcile_pending {
            self.reconcile().await;
        }
        self.reassert().await;
        if self.last_sweep.elapsed() >= Duration::from_secs(5) {
            self.last_sweep = Instant::now();
            // Nodes not enrolled that nobody heard of for ten heartbeat timeouts are
            // forgotten (their retained topics, if still there, bring them back after a
            // reconnect); this includes names seen only in heartbeats or events.
            let forget_after = 10 * self.cfg.heartbeat_timeout.as_millis() as u64;
            let enrolled = &self.inventory.nodes;
            let forgotten = self
                .fleet
                .forget_silent(now, forget_after, |n| !enrolled.contains_key(n));
            if forgotten > 0 {
                tracing::info!(forgotten, "silent unknown nodes forgotten");
                self.reconcile_pending = true;
                self.status_dirty = true;
            }
        }
        if self.book_dirty || self.rollouts_lazy.is_some_and(|t| t.elapsed() >= LAZY_SAVE) {
            self.save();
        }
        let plan_due = self
            .last_plan
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if self.status_dirty && plan_due {
            self.update_plan_metrics();
            self.last_plan = Some(Instant::now());
        }
        let due = self
            .last_status
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
        if self.status_dirty && due {
            self.publish_status().await;
        }
    }

    fn update_plan_metrics(&mut self) {
        if self.served.is_none() {
            return;
        }
        let started = Instant::now();
        let desired: Vec<(&str, Vec<&schemas::DesiredDeployment>)> = self
            .target
            .iter()
            .map(|(n, d)| (n.as_str(), d.deployments.iter().map(|x| &*x.spec).collect()))
            .collect();
        // Only the counts per action are needed: no plan (steps, names, reasons) is built.
        // Whether a node is online or paced only sets a plan's `waiting`, not its actions.
        let summary = plan::count(desired.iter().map(|(n, ds)| {
            (
                *n,
                NodeInput {
                    desired: ds.as_slice(),
                    observed: self.fleet.get(n).and_then(|o| o.status.as_ref()),
                    online: true,
                    paced: false,
                },
            )
        }));
        self.shared
            .metrics
            .plan_seconds
            .observe(started.elapsed().as_secs_f64());
        for a in ["install", "update", "delete", "restart", "noop"] {
            self.shared
                .metrics
                .plan_actions
                .get_or_create(&Metrics::kind(a))
                .set(0);
        }
        for (a, n) in &summary {
            self.shared
                .metrics
                .plan_actions
                .get_or_create(&Metrics::kind(a.as_str()))
                .set(*n as i64);
        }
    }
}
