//! The orchestrator: wires the Git source, the MQTT session, the pure core (render, plan,
//! observe, policy), the store, the audit log and the HTTP endpoints.
//!
//! One task (the engine) owns all state and handles, one at a time: new commits from the
//! source task, MQTT events from the session task, and a 100 ms tick (heartbeat timeouts,
//! debounced re-render, site status, persistence). It is level-triggered: every re-render
//! starts from the served revision and what is observed, never from why it ran.

use crate::audit::{Audit, AuditEntry};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::mqtt::{self, MqttEvent, MqttSettings};
use crate::observe::{Fleet, PresenceOutcome};
use crate::policy::{self, Decision, GuardFlags};
use crate::preview::{self as plan, NodeInput};
use crate::render::{self, Inventory, NodeDesired, PublishedRecord, RollbackOverride};
use crate::rollout::{self, PaceNode, RolloutSummary};
use crate::source::{Commit, DesiredSource, GitSource, SourceError};
use crate::store::{Bookkeeping, ServedRecord, Store, StoreError};
use rumqttc::{AsyncClient, QoS};
use schemas::site::SiteDocs;
use schemas::{
    BrokerUrl, DeploymentSummary, DesiredState, DocProblem, Event, Heartbeat, LoChannel,
    NodeChannel, NodeStatus, NodeSummary, Presence, Revision, ServedRevision, SiteError,
    SiteSchema, SiteStatus, StateCounts, Topic, Topics,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// LO version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Largest site status published; above it, converged online nodes are left out.
const MAX_STATUS_BYTES: usize = 192 * 1024;

/// Largest generation the LO issues or follows (the contract's, see `docs/protocol.md`).
pub use schemas::MAX_GENERATION;
/// Largest jump above our own generation that a desired document read back from the broker
/// makes us follow (the state dir was lost and the broker still holds newer documents). A
/// larger jump is what someone else wrote: it is ignored and logged, never followed, so one
/// message cannot exhaust the generation space of a node.
pub const MAX_GENERATION_STEP: u64 = 1_000_000;
/// Nodes not declared in Git (unknown, or auto-enrolled) tracked at most; messages of further
/// ones are counted only. Anyone on the broker can invent node names.
pub const MAX_UNDECLARED_NODES: usize = 1_000;
/// The same bound when the Site allows auto-enrolment: there every announcing node is a
/// node of the site (trust on first use, the Site's choice), so the bound is a fleet size
/// (twice the 10,000 nodes benchmarked) rather than a guard against invented names.
pub const MAX_AUTO_ENROLLED_NODES: usize = 20_000;
/// Names listed in the site status per list (the counts stay exact).
const MAX_LISTED: usize = 100;
/// Problems of a refused commit listed in the site status.
const MAX_PROBLEMS_LISTED: usize = 100;
/// Longest message (error, problem) in the site status, bytes.
const MAX_STATUS_MESSAGE: usize = 1024;
/// Deployments, and components over all deployments, accepted in one node status. A report
/// above these is refused rather than decoded and summed (a node runs tens, not thousands).
pub const MAX_REPORT_DEPLOYMENTS: usize = 1_000;
/// See [`MAX_REPORT_DEPLOYMENTS`].
pub const MAX_REPORT_COMPONENTS: usize = 10_000;
/// A node's desired document is re-asserted at most this often.
const REASSERT_INTERVAL: Duration = Duration::from_secs(1);
/// Room for the fixed header and topic length of a PUBLISH, besides topic and payload.
const PUBLISH_OVERHEAD: usize = 16;

/// Whether a generation read back from the broker above ours is followed (`Some`: the floor
/// to raise to). Only a trusted document (signed with our key when we sign) within
/// [`MAX_GENERATION_STEP`] above ours and below [`MAX_GENERATION`] (so the next one we issue
/// is still at most the maximum) is followed.
pub fn follow_generation(ours: u64, theirs: u64, trusted: bool) -> Option<u64> {
    let step = theirs.checked_sub(ours)?;
    (trusted && step > 0 && step <= MAX_GENERATION_STEP && theirs < MAX_GENERATION)
        .then_some(theirs)
}

/// Why a report is refused by the signature check (the `kind` label of
/// `messages_rejected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportRefusal {
    /// No signature where one is required.
    Unsigned,
    /// A signature that does not verify with the node's key (or no key to verify it with).
    BadSignature,
    /// A signature older than the newest accepted on that node and channel.
    Replay,
}

impl ReportRefusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportRefusal::Unsigned => "unsigned",
            ReportRefusal::BadSignature => "bad_signature",
            ReportRefusal::Replay => "replay",
        }
    }
}

/// The signature policy for one report, pure: `key` is the node's key from Git, `required`
/// the Site's `requireSignedReports`, `last` the newest `(epoch, seq)` accepted on this node
/// and channel, `presence` whether it came on the `online` channel (whose `epoch` the LO
/// acts on). Returns the report's `(epoch, seq)` when it was signed and verified.
pub fn check_report(
    raw: &serde_json::Value,
    topic: &str,
    presence: bool,
    key: Option<&ed25519_dalek::VerifyingKey>,
    required: bool,
    last: Option<(u64, u64)>,
) -> Result<Option<(u64, u64)>, ReportRefusal> {
    let signed = raw.get("signature").is_some();
    let key = match key {
        Some(k) => k,
        // Nothing to verify with: refused when signatures are required.
        None if required && signed => return Err(ReportRefusal::BadSignature),
        None if required => return Err(ReportRefusal::Unsigned),
        None => return Ok(None),
    };
    if !signed {
        return if required {
            Err(ReportRefusal::Unsigned)
        } else {
            Ok(None)
        };
    }
    let (epoch, seq) = schemas::sign::verify_report(raw, topic, key).map_err(|e| match e {
        schemas::sign::SignatureError::Missing => ReportRefusal::Unsigned,
        _ => ReportRefusal::BadSignature,
    })?;
    // A presence's own epoch is what the LO acts on: it must be the signed one.
    if presence && raw.get("epoch").and_then(|e| e.as_u64()) != Some(epoch) {
        return Err(ReportRefusal::BadSignature);
    }
    // An equal (epoch, seq) is the same message again (a retained copy): harmless.
    if last.is_some_and(|l| (epoch, seq) < l) {
        return Err(ReportRefusal::Replay);
    }
    Ok(Some((epoch, seq)))
}

/// Why a node status is too large to ingest, if it is.
fn oversized_report(raw: &serde_json::Value) -> Option<String> {
    let deployments = raw.get("deployments").and_then(|d| d.as_array());
    let n = deployments.map_or(0, Vec::len);
    if n > MAX_REPORT_DEPLOYMENTS {
        return Some(format!(
            "{n} deployments (at most {MAX_REPORT_DEPLOYMENTS})"
        ));
    }
    let components: usize = deployments
        .into_iter()
        .flatten()
        .map(|d| {
            d.get("components")
                .and_then(|c| c.as_array())
                .map_or(0, Vec::len)
        })
        .sum();
    let unmanaged = raw
        .get("unmanaged")
        .and_then(|u| u.as_array())
        .map_or(0, Vec::len);
    (components + unmanaged > MAX_REPORT_COMPONENTS).then(|| {
        format!(
            "{} containers (at most {MAX_REPORT_COMPONENTS})",
            components + unmanaged
        )
    })
}

/// Cuts the lists of a site status that grow with outside input (unknown nodes, problems,
/// messages) to fixed sizes, with counts.
fn cap_status(st: &mut SiteStatus) {
    if st.unknown_nodes.len() > MAX_LISTED {
        st.unknown_nodes_count
            .get_or_insert(u32::try_from(st.unknown_nodes.len()).unwrap_or(u32::MAX));
        st.unknown_nodes.truncate(MAX_LISTED);
    }
    for e in [&mut st.last_error, &mut st.held].into_iter().flatten() {
        e.message = schemas::shorten(&e.message, MAX_STATUS_MESSAGE);
        for p in &mut e.problems {
            p.message = schemas::shorten(&p.message, MAX_STATUS_MESSAGE);
            p.file = schemas::shorten(&p.file, MAX_STATUS_MESSAGE);
            p.field = p
                .field
                .as_deref()
                .map(|f| schemas::shorten(f, MAX_STATUS_MESSAGE));
        }
    }
    if let Some(e) = &mut st.last_error {
        if e.problems.len() > MAX_PROBLEMS_LISTED {
            st.problems_count = Some(u32::try_from(e.problems.len()).unwrap_or(u32::MAX));
            e.problems.truncate(MAX_PROBLEMS_LISTED);
        }
    }
}

/// The site status encoded within `limit` bytes: lists capped, then converged online nodes
/// left out, then nodes, deployments and problems cut (counts stay exact). `None` when even
/// the smallest form does not fit: then nothing is sent (a publish above the broker's limit
/// would cost the connection, and be retried after every reconnect).
pub fn fit_status(
    st: &SiteStatus,
    rollout: Option<&RolloutSummary>,
    limit: usize,
) -> Option<Vec<u8>> {
    let mut st = st.clone();
    cap_status(&mut st);
    let encode =
        |st: &SiteStatus| serde_json::to_vec(&status_json(st, rollout)).unwrap_or_default();
    let mut payload = encode(&st);
    if payload.len() <= limit {
        return Some(payload);
    }
    let total = st.nodes.len();
    st.nodes_count = Some(u32::try_from(total).unwrap_or(u32::MAX));
    // Keep the nodes that need attention; the counts stay complete.
    st.nodes.retain(|n| !(n.online && n.converged));
    payload = encode(&st);
    while payload.len() > limit && !st.nodes.is_empty() {
        let keep = st.nodes.len() * 3 / 4;
        st.nodes.truncate(keep);
        payload = encode(&st);
    }
    while payload.len() > limit && !st.deployments.is_empty() {
        let keep = st.deployments.len() * 3 / 4;
        st.deployments.truncate(keep);
        payload = encode(&st);
    }
    if payload.len() > limit {
        if let Some(e) = &mut st.last_error {
            st.problems_count
                .get_or_insert(u32::try_from(e.problems.len()).unwrap_or(u32::MAX));
            e.problems.clear();
        }
        st.unknown_nodes_count
            .get_or_insert(u32::try_from(st.unknown_nodes.len()).unwrap_or(u32::MAX));
        st.unknown_nodes.clear();
        payload = encode(&st);
    }
    tracing::debug!(
        total,
        listed = st.nodes.len(),
        bytes = payload.len(),
        "site status trimmed to fit the packet limit"
    );
    (payload.len() <= limit).then_some(payload)
}

/// Errors that stop the LO.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// State directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Git mirror.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// HTTP listener or audit log.
    #[error("{context}: {source}")]
    Io {
        /// What.
        context: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// State shared with the HTTP endpoints and tests.
#[derive(Debug, Default)]
pub struct Shared {
    /// Metrics.
    pub metrics: Metrics,
    /// `POST /sync` wakes the source.
    pub sync: Notify,
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
}

/// Most node names listed in the `rollout` part of the site status (the counts are exact).
const MAX_ROLLOUT_NAMES: usize = 100;

/// The site status document with the rollout fields filled in: `rollout`, and `waiting` on
/// every node held back by pacing.
pub fn status_json(st: &SiteStatus, rollout: Option<&RolloutSummary>) -> serde_json::Value {
    let mut st = st.clone();
    if let Some(r) = rollout {
        for n in &mut st.nodes {
            if r.waiting.binary_search(&n.node).is_ok() {
                n.waiting = Some(rollout::WAITING.to_owned());
            }
        }
        let listed = |names: &[String]| names.iter().take(MAX_ROLLOUT_NAMES).cloned().collect();
        st.rollout = Some(schemas::RolloutStatus {
            max_parallel: r.max_parallel,
            in_flight: listed(&r.in_flight),
            waiting: listed(&r.waiting),
            in_flight_count: u32::try_from(r.in_flight.len()).unwrap_or(u32::MAX),
            waiting_count: u32::try_from(r.waiting.len()).unwrap_or(u32::MAX),
        });
    }
    serde_json::to_value(&st).unwrap_or(serde_json::Value::Null)
}

/// A running LO.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP endpoints listen.
    pub http_addr: SocketAddr,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Ends when the LO has shut down.
    pub join: tokio::task::JoinHandle<()>,
}

/// Runs the LO until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    let running = start(cfg, shutdown).await?;
    let _ = running.join.await;
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Starts the LO: state dir, Git mirror, HTTP, MQTT, engine. Returns once listening.
pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<Running, AppError> {
    cfg.validate()?;
    let broker: BrokerUrl = cfg
        .broker
        .parse()
        .map_err(|e: schemas::BrokerUrlError| crate::config::ConfigError::Value(e.to_string()))?;
    let transport = mqtt::Transport::for_broker(&broker, cfg.tls_ca_file.as_deref())
        .map_err(crate::config::ConfigError::Value)?;
    let store = Store::open(&cfg.state_dir)?;
    let audit = Audit::open(
        &cfg.state_dir.join("audit"),
        cfg.audit.max_bytes,
        cfg.audit.keep,
    )
    .map_err(|source| AppError::Io {
        context: "audit log".into(),
        source,
    })?;
    let mirror = cfg.state_dir.join("mirror.git");
    let (url, branch, auth) = (cfg.repo.clone(), cfg.branch.clone(), cfg.git.clone());
    let source = tokio::task::spawn_blocking(move || GitSource::open(&mirror, &url, &branch, auth))
        .await
        .map_err(|e| AppError::Io {
            context: "git mirror".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
    let source = source.with_limits(cfg.limits.clone());
    let shared = Arc::new(Shared::default());
    let listener = tokio::net::TcpListener::bind(&cfg.http_listen)
        .await
        .map_err(|source| AppError::Io {
            context: format!("http listen {}", cfg.http_listen),
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| AppError::Io {
        context: "http listen".into(),
        source,
    })?;
    let auth = cfg
        .http_credentials()?
        .map(|(u, p)| crate::http::Credentials::new(&u, &p));
    if auth.is_none() && !http_addr.ip().is_loopback() {
        tracing::warn!(listen = %http_addr, "http endpoints listen beyond loopback without http_auth: /status and POST /sync are open to the network");
    }
    let router = crate::http::router_with_auth(shared.clone(), auth);
    let http_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "http server failed");
        }
    });

    let topics = Topics::new(&cfg.topic_root);
    let (mqtt_tx, mqtt_rx) = mpsc::unbounded_channel();
    let mqtt_stop = CancellationToken::new();
    let (client, mqtt_task) = mqtt::start(
        MqttSettings {
            broker,
            client_id: cfg.client_id(),
            max_packet_size: cfg.max_packet_size,
            site: cfg.site.clone(),
            topics: topics.clone(),
            last_epoch: store.data.lo_epoch,
            epoch_file: Some(cfg.state_dir.join("lo-epoch")),
            version: VERSION.into(),
            transport,
        },
        mqtt_tx,
        mqtt_stop.clone(),
    );

    let (src_tx, src_rx) = mpsc::channel(4);
    let start_commit = store.data.served.as_ref().map(|s| s.commit.clone());
    tokio::spawn(source_task(
        Box::new(source),
        cfg.site_path(),
        start_commit,
        cfg.poll_interval,
        shared.clone(),
        src_tx,
        shutdown.clone(),
    ));

    let signing = cfg.signing()?;
    let book = store.data.bookkeeping();
    let published = store.data.published();
    let engine = Engine {
        site: cfg.site.clone(),
        site_path: cfg.site_path(),
        fleet: Fleet::new(cfg.heartbeat_timeout.as_millis() as u64),
        topics,
        shared: shared.clone(),
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
        pace_dirty: false,
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
    };
    let join = tokio::spawn(engine.run(src_rx, mqtt_rx, mqtt_task, mqtt_stop, shutdown));
    Ok(Running {
        http_addr,
        shared,
        join,
    })
}

/// What the source task reports.
#[derive(Debug)]
enum SourceMsg {
    /// A commit whose site files changed (or the revision restored at start).
    Commit {
        commit: Commit,
        files: crate::source::SiteFiles,
        restored: bool,
        /// False for a new head that does not touch the site (not forwarded).
        changed: bool,
    },
    /// The source failed.
    Error(String),
    /// The source works again (clears a source error).
    Ok,
}

/// A source error as it may be shown: git2 errors carry the remote URL, with its token when
/// the URL has one, and this text goes to the log, the audit log and `lo/status`.
fn source_error(text: &str) -> SourceMsg {
    SourceMsg::Error(schemas::redact_urls_in(&schemas::shorten(text, 4096)))
}

/// A piece of blocking work on the source.
type SourceJob = Box<dyn FnOnce(&mut dyn DesiredSource) -> SourceMsg + Send>;

async fn source_task(
    source: Box<dyn DesiredSource>,
    site_path: String,
    start_commit: Option<String>,
    poll: Duration,
    shared: Arc<Shared>,
    tx: mpsc::Sender<SourceMsg>,
    shutdown: CancellationToken,
) {
    let source = Arc::new(Mutex::new(source));
    let blocking = |f: SourceJob| {
        let source = source.clone();
        async move {
            tokio::task::spawn_blocking(move || match source.lock() {
                Ok(mut s) => f(s.as_mut()),
                Err(_) => SourceMsg::Error("source lock poisoned".into()),
            })
            .await
            .unwrap_or_else(|e| SourceMsg::Error(e.to_string()))
        }
    };
    // The commit whose site files were last handed over (None: nothing yet).
    let mut last: Option<String> = None;
    if let Some(c) = start_commit {
        let path = site_path.clone();
        let id = c.clone();
        let msg = blocking(Box::new(move |s| match s.read_site(&id, &path) {
            Ok(files) => SourceMsg::Commit {
                commit: Commit { id, time: 0 },
                files,
                restored: true,
                changed: true,
            },
            Err(e) => source_error(&format!("cannot restore served revision: {e}")),
        }))
        .await;
        if matches!(msg, SourceMsg::Commit { .. }) {
            last = Some(c);
        }
        if tx.send(msg).await.is_err() {
            return;
        }
    }
    let mut failing = false;
    loop {
        let path = site_path.clone();
        let prev = last.clone();
        let msg = blocking(Box::new(move |s| {
            let head = match s.fetch() {
                Ok(Some(h)) => h,
                Ok(None) => return SourceMsg::Error("branch not found in the repository".into()),
                Err(e) => return source_error(&e.to_string()),
            };
            if prev.as_deref() == Some(head.id.as_str()) {
                return SourceMsg::Ok;
            }
            let changed = match &prev {
                None => true,
                Some(p) => s.changed(p, &head.id, &path).unwrap_or(true),
            };
            if !changed {
                tracing::debug!(commit = %head.id, "commit does not touch the site");
                return SourceMsg::Commit {
                    commit: head,
                    files: Default::default(),
                    restored: false,
                    changed: false,
                };
            }
            match s.read_site(&head.id, &path) {
                Ok(files) => SourceMsg::Commit {
                    commit: head,
                    files,
                    restored: false,
                    changed: true,
                },
                Err(e) => source_error(&e.to_string()),
            }
        }))
        .await;
        let forward = match &msg {
            SourceMsg::Commit {
                commit, changed, ..
            } => {
                last = Some(commit.id.clone());
                failing = false;
                *changed
            }
            SourceMsg::Error(_) => {
                failing = true;
                true
            }
            SourceMsg::Ok => {
                let was = failing;
                failing = false;
                was
            }
        };
        if forward && tx.send(msg).await.is_err() {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
            _ = shared.sync.notified() => {}
        }
    }
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

struct Engine {
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
    /// Rollout pacing state, while the Site sets `maxParallel`.
    rollout: Option<RolloutSummary>,
    /// Something pacing depends on changed (status, presence).
    pace_dirty: bool,
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

impl Engine {
    fn mono_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    async fn run(
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
            let epoch = self.store.data.lo_epoch;
            let _ = self
                .client
                .publish(
                    self.topics.lo(&self.site, LoChannel::Online),
                    QoS::AtLeastOnce,
                    true,
                    mqtt::presence(false, epoch, VERSION),
                )
                .await;
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

    async fn on_commit(&mut self, commit: Commit, files: crate::source::SiteFiles, restored: bool) {
        if files.is_empty() {
            // A missing (renamed, deleted, mistyped) or empty site folder is a broken commit,
            // not an order to remove everything: rejected, the last good revision stays.
            self.reject(
                &commit.id,
                "commit rejected: site folder missing or empty",
                vec![crate::source::missing_site_problem(&self.site_path)],
            );
            return;
        }
        let limits = &self.cfg.limits;
        let loaded = schemas::site::load_site_with(
            &self.site,
            files.files.iter().map(|(p, c)| (p.as_str(), c.as_str())),
            limits,
        );
        // Refused entries (links, oversized or non-UTF-8 files) and document problems
        // reject the commit alike; so does a desired document too large to publish.
        let mut problems = files.problems;
        if let Ok(docs) = &loaded {
            let revision = Revision {
                commit: commit.id.clone(),
                path: self.site_path.clone(),
            };
            let inventory = render::inventory(docs, self.announced());
            let rendered = render::render(docs, &revision, &inventory, &BTreeMap::new());
            problems.extend(render::oversized_documents(
                docs,
                &self.site,
                &rendered,
                limits.max_desired_bytes,
            ));
        }
        let docs = match loaded {
            Ok(d) if problems.is_empty() => d,
            loaded => {
                problems.extend(loaded.err().unwrap_or_default());
                let problems = schemas::site::bound_problems(problems, limits.max_problems);
                self.reject(
                    &commit.id,
                    "commit rejected: invalid site documents",
                    problems,
                );
                return;
            }
        };
        let names: BTreeSet<String> = docs.deployments.keys().cloned().collect();
        if !restored {
            let prev = self.served.as_ref().map(|s| &s.names);
            if let Some(reason) = policy::deletion_guard(prev, &names, &docs.spec(), self.flags) {
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
        }
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
        if let Ok(mut g) = self.shared.served.lock() {
            *g = Some(commit.id.clone());
        }
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

    fn announced(&self) -> impl Iterator<Item = &str> {
        self.fleet
            .nodes()
            .iter()
            .filter(|(_, o)| o.presence.is_some() || o.status.is_some())
            .map(|(n, _)| n.as_str())
    }

    /// Renders every node, persists new generations, then publishes what changed.
    async fn reconcile(&mut self) {
        self.reconcile_pending = false;
        self.pace_dirty = false;
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
        let inventory = render::inventory(&served.docs, self.announced());
        let overrides: BTreeMap<String, BTreeMap<String, RollbackOverride>> = self
            .book
            .rollbacks
            .iter()
            .map(|(n, m)| {
                (
                    n.clone(),
                    m.iter().map(|(d, r)| (d.clone(), r.over.clone())).collect(),
                )
            })
            .collect();
        let mut rendered = render::render(&served.docs, &revision, &inventory, &overrides);
        // Nodes published before and no longer in the site get an explicit empty document.
        for node in self.store.data.nodes.keys() {
            if !rendered.contains_key(node) {
                let doc = match self.desired.get(node) {
                    Some(d) if d.deployments.is_empty() => d.clone(),
                    _ => NodeDesired::empty(revision.clone()),
                };
                rendered.insert(node.clone(), doc);
            }
        }
        // Rollout pacing: which nodes whose run changes get their new document now.
        let max_parallel = served
            .docs
            .spec()
            .rollout
            .as_ref()
            .and_then(|r| r.max_parallel);
        let mono = self.mono_ms();
        let settled = self.settled;
        let mut pace_in = BTreeMap::new();
        for node in inventory.nodes.keys() {
            let Some(t) = rendered.get(node) else {
                continue;
            };
            let rec = self.store.data.nodes.get(node);
            let status = self.fleet.get(node).and_then(|o| o.status.as_ref());
            let online = self.fleet.online(node, mono);
            let pending = match (rec, self.desired.get(node)) {
                (Some(_), Some(p)) => {
                    p.revision.commit != t.revision.commit && p.run_hash() != t.run_hash()
                }
                _ => false,
            };
            let in_flight = rec.is_some_and(|r| {
                rollout::in_flight(r.rollout, r.generation, status, online || !settled)
            });
            pace_in.insert(
                node.clone(),
                PaceNode {
                    pending,
                    in_flight,
                    online,
                },
            );
        }
        let pacing = rollout::pace(max_parallel, &pace_in);
        let mut changed = Vec::new();
        let now = now_ms();
        let issued = schemas::now_rfc3339();
        let mut published = BTreeMap::new();
        for (node, t) in &rendered {
            let prev = self.store.data.nodes.get(node);
            let waiting = pacing.waiting.contains(node);
            let content = match self.desired.get(node) {
                Some(p) if waiting => p.clone(),
                _ => t.clone(),
            };
            let step = !waiting && pace_in.get(node).is_some_and(|p| p.pending);
            let hash = content.content_hash();
            let floor = self.floors.get(node).copied().unwrap_or(0);
            if let Some(generation) = render::next_generation(prev, &hash, floor) {
                // A node still applying a rollout step stays in flight with its next document.
                let status = self.fleet.get(node).and_then(|o| o.status.as_ref());
                let carry =
                    prev.is_some_and(|r| rollout::in_flight(r.rollout, r.generation, status, true));
                self.store.data.nodes.insert(
                    node.clone(),
                    PublishedRecord {
                        generation,
                        content_hash: hash,
                        issued_at: issued.clone(),
                        published_ms: now,
                        rollout: step || carry,
                    },
                );
                changed.push(node.clone());
            }
            published.insert(node.clone(), content);
        }
        let summary = max_parallel.map(|m| RolloutSummary {
            max_parallel: m,
            in_flight: pacing.in_flight.iter().cloned().collect(),
            waiting: pacing.waiting.iter().cloned().collect(),
        });
        if summary.as_ref().map(|r| (&r.in_flight, &r.waiting))
            != self.rollout.as_ref().map(|r| (&r.in_flight, &r.waiting))
        {
            if let Some(r) = &summary {
                tracing::info!(
                    max_parallel = r.max_parallel,
                    in_flight = r.in_flight.len(),
                    waiting = r.waiting.len(),
                    granted = pacing.granted.len(),
                    "rollout paced"
                );
            }
        }
        if let Ok(mut g) = self.shared.rollout.lock() {
            *g = summary.clone();
        }
        self.rollout = summary;
        self.inventory = inventory;
        self.desired = published;
        self.target = rendered;
        if !changed.is_empty() {
            // Persist before publishing: a generation that went out is never reused.
            self.published_dirty = true;
            self.save();
            for node in &changed {
                self.publish_desired(node).await;
            }
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

    /// The bytes of the desired document of `node` as published (deterministic: the same
    /// record gives the same bytes, signature included).
    fn desired_payload(&self, node: &str) -> Option<(DesiredState, Vec<u8>)> {
        let doc = self.desired_doc(node)?;
        match serde_json::to_vec(&doc) {
            Ok(p) => Some((doc, p)),
            Err(e) => {
                tracing::error!(node = %node, error = %e, "cannot serialise desired document");
                None
            }
        }
    }

    fn digest(&self, payload: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.digest_keys.hash_one(payload)
    }

    /// Whether a publish on `topic` of `len` bytes fits the packet limit; counts and logs
    /// when it does not.
    fn fits(&self, kind: &str, topic: &str, len: usize) -> bool {
        let size = len + topic.len() + PUBLISH_OVERHEAD;
        if size <= self.cfg.max_packet_size {
            return true;
        }
        tracing::error!(kind, topic = %topic, bytes = size, limit = self.cfg.max_packet_size, "publish exceeds the packet limit; not sent");
        self.shared
            .metrics
            .publish_refused
            .get_or_create(&Metrics::kind(kind))
            .inc();
        false
    }

    fn desired_doc(&self, node: &str) -> Option<DesiredState> {
        let nd = self.desired.get(node)?;
        let rec = self.store.data.nodes.get(node)?;
        let mut doc = nd.to_state(&self.site, node, rec.generation, &rec.issued_at);
        if let Some(key) = &self.signing {
            schemas::sign::sign(&mut doc, key, &self.cfg.signing_key_id);
        }
        Some(doc)
    }

    async fn publish_desired(&mut self, node: &str) {
        if !self.connected {
            self.unsent.insert(node.to_owned());
            return;
        }
        let Some((doc, payload)) = self.desired_payload(node) else {
            return;
        };
        let topic = self.topics.node(&self.site, node, NodeChannel::Desired);
        if !self.fits("desired", &topic, payload.len()) {
            self.unsent.remove(node);
            return;
        }
        // What we publish now is what the broker will hold: nothing left to re-assert.
        self.suspect.remove(node);
        let digest = self.digest(&payload);
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
        {
            tracing::warn!(node = %node, error = %e, "cannot queue desired document");
            self.unsent.insert(node.to_owned());
            return;
        }
        self.unsent.remove(node);
        self.published_digest.insert(node.to_owned(), digest);
        self.shared.metrics.desired_published.inc();
        tracing::debug!(node = %node, generation = doc.generation, "desired published");
        self.audit.log(
            AuditEntry::new(
                "published",
                format!("desired with {} deployments", doc.deployments.len()),
            )
            .node(node)
            .commit(&doc.revision.commit)
            .generation(doc.generation),
        );
    }

    async fn republish_all(&mut self) {
        let nodes: Vec<String> = self.desired.keys().cloned().collect();
        tracing::info!(nodes = nodes.len(), "republishing every desired document");
        for node in nodes {
            self.publish_desired(&node).await;
        }
    }

    async fn on_mqtt(&mut self, ev: MqttEvent) {
        match ev {
            MqttEvent::Connected {
                session_present,
                epoch,
            } => {
                tracing::info!(session_present, epoch, "mqtt connected");
                if self.ever_connected {
                    self.shared.metrics.mqtt_reconnects.inc();
                }
                self.connected = true;
                self.shared.mqtt_connected.store(true, Ordering::SeqCst);
                if self.settle_at.is_none() {
                    // Retained presence and status arrive within a heartbeat timeout.
                    self.settle_at =
                        Some(self.mono_ms() + self.cfg.heartbeat_timeout.as_millis() as u64);
                }
                self.store.data.lo_epoch = epoch;
                self.save();
                let subs = [
                    (NodeChannel::Status, QoS::AtMostOnce),
                    (NodeChannel::Online, QoS::AtMostOnce),
                    (NodeChannel::Desired, QoS::AtMostOnce),
                    (NodeChannel::Heartbeat, QoS::AtMostOnce),
                    (NodeChannel::Events, QoS::AtLeastOnce),
                ]
                .map(|(c, q)| {
                    rumqttc::SubscribeFilter::new(self.topics.all_nodes(&self.site, c), q)
                });
                if session_present && !self.ever_connected {
                    // A new process on a kept session: rumqttd sends retained messages only
                    // for a subscription the session does not have yet (and only unsubscribes
                    // a restored one after it was subscribed on this connection). Subscribe,
                    // unsubscribe, and subscribe again below, so the retained status, presence
                    // and desired documents are read back.
                    if let Err(e) = self.client.subscribe_many(subs.clone()).await {
                        tracing::warn!(error = %e, "cannot subscribe");
                    }
                    for f in &subs {
                        if let Err(e) = self.client.unsubscribe(f.path.clone()).await {
                            tracing::warn!(error = %e, "cannot unsubscribe");
                        }
                    }
                }
                if let Err(e) = self.client.subscribe_many(subs).await {
                    tracing::warn!(error = %e, "cannot subscribe");
                }
                let _ = self
                    .client
                    .publish(
                        self.topics.lo(&self.site, LoChannel::Online),
                        QoS::AtLeastOnce,
                        true,
                        mqtt::presence(true, epoch, VERSION),
                    )
                    .await;
                if !self.ever_connected || !session_present {
                    self.ever_connected = true;
                    self.republish_all().await;
                } else {
                    let unsent: Vec<String> = self.unsent.iter().cloned().collect();
                    for node in unsent {
                        self.publish_desired(&node).await;
                    }
                }
                self.status_dirty = true;
                self.last_status = None;
            }
            MqttEvent::Disconnected(reason) => {
                if self.connected {
                    tracing::warn!(reason = %reason, "mqtt disconnected");
                }
                self.connected = false;
                self.shared.mqtt_connected.store(false, Ordering::SeqCst);
            }
            MqttEvent::Message {
                topic,
                payload,
                retain,
            } => self.on_message(&topic, &payload, retain),
        }
    }

    fn refuse(&self, topic: &str, reason: &str, detail: &str) {
        // Both come from outside (serde quotes the offending value): cut them, so one
        // message cannot write megabytes to the log.
        let topic = schemas::shorten(topic, 256);
        let detail = schemas::shorten(detail, 256);
        tracing::warn!(topic = %topic, reason, detail = %detail, "message refused");
        self.shared
            .metrics
            .messages_rejected
            .get_or_create(&Metrics::kind(reason))
            .inc();
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let (node, channel) = match self.topics.parse(topic) {
            Ok(Topic::Node {
                site,
                node,
                channel,
            }) if site == self.site => (node, channel),
            Ok(_) => return self.refuse(topic, "wrong_topic", "not a node topic of this site"),
            Err(e) => return self.refuse(topic, "wrong_topic", &e.to_string()),
        };
        if payload.is_empty() {
            // A deleted retained topic.
            return self.on_deleted(&node, channel);
        }
        self.shared
            .metrics
            .messages
            .get_or_create(&Metrics::kind(channel.as_str()))
            .inc();
        if channel == NodeChannel::Desired {
            return self.on_desired_readback(&node, payload);
        }
        // One parse into a value: the signature covers the raw JSON (fields a newer agent
        // added included), and sizes are checked before typed decoding.
        let raw: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => return self.refuse(topic, "malformed", &e.to_string()),
        };
        let key = (node.clone(), channel);
        let last = self.report_seq.get(&key).copied();
        // A session's presences (`online: true` after CONNACK, then its Will, signed before
        // it) are ordered by the session only: within one epoch both count, whatever their
        // sequence numbers; an older session's presence is a replay.
        let presence = channel == NodeChannel::Online;
        let last = last.map(|(e, s)| if presence { (e, 0) } else { (e, s) });
        match check_report(
            &raw,
            topic,
            presence,
            self.keys.get(&node),
            self.require_signed,
            last,
        ) {
            Ok(Some((epoch, seq))) => {
                if self.keys.contains_key(&node) {
                    let seq = if presence { 0 } else { seq };
                    self.report_seq.insert(key, (epoch, seq));
                }
            }
            Ok(None) => {}
            Err(why) => {
                if self.declared(&node) {
                    *self.refused_reports.entry(node.clone()).or_default() += 1;
                    self.status_dirty = true;
                }
                return self.refuse(topic, why.as_str(), "report signature check failed");
            }
        }
        if !self.admit(&node) {
            self.untracked += 1;
            self.shared.metrics.unknown_nodes_untracked.inc();
            if self.untracked.is_power_of_two() {
                tracing::warn!(node = %schemas::shorten(&node, 64), untracked = self.untracked, limit = MAX_UNDECLARED_NODES, "too many undeclared nodes; messages of further ones are counted only");
            }
            self.status_dirty = true;
            return;
        }
        let now = self.mono_ms();
        let wall = schemas::now_rfc3339();
        let known = self
            .fleet
            .get(&node)
            .is_some_and(|o| o.presence.is_some() || o.status.is_some());
        match channel {
            NodeChannel::Status => {
                if let Some(why) = oversized_report(&raw) {
                    return self.refuse(topic, "oversized", &why);
                }
                let mut s: NodeStatus = match serde_json::from_value(raw) {
                    Ok(s) => s,
                    Err(e) => return self.refuse(topic, "malformed", &e.to_string()),
                };
                if !self.declared(&node) && !self.auto_enrol() {
                    // A node that gets nothing: only its announcement matters. Its lists are
                    // not kept (1,000 of them could hold a packet each).
                    s.deployments.clear();
                    s.unmanaged.clear();
                }
                if s.node != node || s.site != self.site {
                    return self.refuse(
                        topic,
                        "wrongly_addressed",
                        "site or node differ from the topic",
                    );
                }
                self.on_status(&node, s, now, retain, &wall);
            }
            NodeChannel::Online => {
                let p: Presence = match serde_json::from_value(raw) {
                    Ok(p) => p,
                    Err(e) => return self.refuse(topic, "malformed", &e.to_string()),
                };
                match self.fleet.presence(&node, &p, now, retain, &wall) {
                    PresenceOutcome::Stale => {
                        tracing::info!(node = %node, epoch = p.epoch, "stale presence ignored");
                        self.audit.log(
                            AuditEntry::new(
                                "observed",
                                format!("stale presence (epoch {}) ignored", p.epoch),
                            )
                            .node(&node),
                        );
                    }
                    PresenceOutcome::OutOfRange => {
                        return self.refuse(topic, "out_of_range", "presence epoch above 2^53-1");
                    }
                    outcome => {
                        if outcome == PresenceOutcome::Jump {
                            tracing::warn!(node = %node, epoch = p.epoch, "presence epoch jumped; applied without raising the floor");
                        }
                        self.audit.log(
                            AuditEntry::new(
                                "observed",
                                format!("online={} epoch={}", p.online, p.epoch),
                            )
                            .node(&node),
                        );
                    }
                }
                self.status_dirty = true;
                self.pace_dirty = true;
            }
            NodeChannel::Heartbeat => match serde_json::from_value::<Heartbeat>(raw) {
                Ok(hb) => self.fleet.heartbeat(&node, hb, now, &wall),
                Err(e) => return self.refuse(topic, "malformed", &e.to_string()),
            },
            NodeChannel::Events => match serde_json::from_value::<Event>(raw) {
                Ok(ev) => {
                    tracing::debug!(node = %node, deployment = %ev.deployment, to = %ev.to, "event");
                    self.fleet.event(&node, ev, now, &wall);
                }
                Err(e) => return self.refuse(topic, "malformed", &e.to_string()),
            },
            NodeChannel::Desired => {}
        }
        if !known
            && self
                .fleet
                .get(&node)
                .is_some_and(|o| o.presence.is_some() || o.status.is_some())
        {
            // A node announced itself: the inventory may change (auto-enrolment, unknown).
            self.reconcile_pending = true;
        }
    }

    /// Whether the served Site enrols announcing nodes.
    fn auto_enrol(&self) -> bool {
        self.served
            .as_ref()
            .and_then(|s| s.docs.site.as_ref())
            .and_then(|site| site.spec.enrollment.as_ref())
            .is_some_and(|e| e.auto)
    }

    /// Whether `node` has a `Node` document at the served revision.
    fn declared(&self, node: &str) -> bool {
        self.served
            .as_ref()
            .is_some_and(|s| s.docs.nodes.contains_key(node))
    }

    /// Whether what `node` says is kept: declared nodes and nodes already tracked always;
    /// others while fewer than [`MAX_UNDECLARED_NODES`] undeclared ones are tracked
    /// ([`MAX_AUTO_ENROLLED_NODES`] with auto-enrolment).
    fn admit(&self, node: &str) -> bool {
        if self.declared(node) || self.fleet.get(node).is_some() {
            return true;
        }
        let limit = if self.auto_enrol() {
            MAX_AUTO_ENROLLED_NODES
        } else {
            MAX_UNDECLARED_NODES
        };
        if self.fleet.len() < limit {
            return true;
        }
        // Counting the undeclared nodes walks the whole fleet: done again only when the
        // fleet or the served revision changed, so a flood of invented names past the bound
        // costs a lookup per message, not a walk.
        let at = (
            self.fleet.len(),
            self.served.as_ref().map(|s| s.commit.clone()),
        );
        if let Some((when, undeclared)) = self.undeclared_count.take() {
            if when == at {
                self.undeclared_count.set(Some((when, undeclared)));
                return undeclared < limit;
            }
        }
        let undeclared = self
            .fleet
            .nodes()
            .keys()
            .filter(|n| !self.declared(n))
            .count();
        self.undeclared_count.set(Some((at, undeclared)));
        undeclared < limit
    }

    /// A retained topic was deleted (empty payload).
    fn on_deleted(&mut self, node: &str, channel: NodeChannel) {
        match channel {
            // Someone deleted a document we hold: a fresh agent would get nothing.
            NodeChannel::Desired if self.desired_doc(node).is_some() => {
                tracing::warn!(node = %node, "retained desired document deleted on the broker; re-asserting it");
                let now = self.mono_ms();
                self.suspect.entry(node.to_owned()).or_insert(now);
            }
            // Only nodes that are not enrolled are forgotten: an enrolled node keeps its
            // workloads whatever happens to its report topics.
            NodeChannel::Status | NodeChannel::Online if self.inventory.unknown.contains(node) => {
                if channel == NodeChannel::Status {
                    self.fleet.status_deleted(node);
                } else {
                    self.fleet.presence_deleted(node);
                }
                if self.fleet.get(node).is_none() {
                    tracing::info!(node = %node, "unknown node's retained topics deleted; forgotten");
                    self.reconcile_pending = true;
                }
                self.status_dirty = true;
            }
            _ => {}
        }
    }

    /// A retained desired document read back from the broker. The broker is not trusted:
    /// what it holds is compared with what we published; anything else is re-asserted, and
    /// a generation above ours is followed only within bounds (and signed by us when we
    /// sign), so no message can wrap or exhaust a node's generations.
    fn on_desired_readback(&mut self, node: &str, payload: &[u8]) {
        let ours_known = self.store.data.nodes.contains_key(node) || self.declared(node);
        if !ours_known {
            // Not a node we publish for: nothing to follow, nothing kept.
            return;
        }
        // Our own publish coming back (the common case) is recognised by its digest; only
        // before our first publish of this process is the document rendered to compare.
        let ours_now = match self.published_digest.get(node) {
            Some(d) => Some(*d == self.digest(payload)),
            None => self
                .desired_payload(node)
                .map(|(_, p)| p.as_slice() == payload),
        };
        if ours_now == Some(true) {
            self.suspect.remove(node);
            return;
        }
        let ours = self.store.data.nodes.get(node).map_or(0, |r| r.generation);
        if let Ok(doc) = serde_json::from_slice::<DesiredState>(payload) {
            if doc.generation > ours {
                let trusted = match &self.signing {
                    Some(k) => schemas::sign::verify(&doc, &k.verifying_key()).is_ok(),
                    None => true,
                };
                match follow_generation(ours, doc.generation, trusted) {
                    Some(g) => {
                        tracing::warn!(node = %node, generation = g, ours, "broker holds a newer desired generation; superseding it");
                        let f = self.floors.entry(node.to_owned()).or_default();
                        *f = (*f).max(g);
                        self.reconcile_pending = true;
                    }
                    None => {
                        tracing::warn!(node = %node, generation = doc.generation, ours, trusted, "desired generation read back not followed (too far ahead, above the maximum, or not signed by us)");
                        self.shared.metrics.generations_ignored.inc();
                    }
                }
            }
        }
        if ours_now.is_some() {
            let now = self.mono_ms();
            self.suspect.entry(node.to_owned()).or_insert(now);
        }
    }

    /// Re-publishes the desired documents the broker holds wrongly, at most once per
    /// [`REASSERT_INTERVAL`] per node (a writer fighting us costs one publish a second).
    async fn reassert(&mut self) {
        if self.suspect.is_empty() || !self.connected {
            return;
        }
        let now = self.mono_ms();
        let due: Vec<String> = self
            .suspect
            .iter()
            .filter(|(n, since)| {
                now.saturating_sub(**since) >= 300
                    && self
                        .reasserted
                        .get(*n)
                        .is_none_or(|(t, _)| t.elapsed() >= REASSERT_INTERVAL)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for node in due {
            let count = {
                let e = self
                    .reasserted
                    .entry(node.clone())
                    .or_insert((Instant::now(), 0));
                *e = (Instant::now(), e.1 + 1);
                e.1
            };
            if count.is_power_of_two() {
                tracing::warn!(node = %node, count, "broker holds another desired document than ours; re-asserting");
            }
            self.shared.metrics.desired_reasserted.inc();
            self.publish_desired(&node).await;
            self.suspect.remove(&node);
        }
    }

    fn on_status(&mut self, node: &str, s: NodeStatus, now: u64, retain: bool, wall: &str) {
        let prev = self
            .fleet
            .get(node)
            .and_then(|o| o.status.as_ref())
            .map(|p| (p.observed_generation, p.state, p.converged));
        if prev != Some((s.observed_generation, s.state, s.converged)) {
            self.audit.log(
                AuditEntry::new(
                    "observed",
                    format!(
                        "status state={} converged={}",
                        s.state.map_or("none", |st| st.as_str()),
                        s.converged
                    ),
                )
                .node(node)
                .generation(s.observed_generation),
            );
        }
        if let (Some(d), Some(rec)) = (self.desired.get(node), self.store.data.nodes.get(node)) {
            let empty = BTreeMap::new();
            let empty_rb = BTreeMap::new();
            let empty_h = BTreeMap::new();
            let decisions = policy::decide(
                d,
                rec.generation,
                &s,
                self.book.installed.get(node).unwrap_or(&empty),
                self.book.rollbacks.get(node).unwrap_or(&empty_rb),
                self.book.held.get(node).unwrap_or(&empty_h),
            );
            if s.converged
                && s.observed_generation == rec.generation
                && self.converged.get(node).map(|c| c.0) != Some(rec.generation)
            {
                let took = now_ms().saturating_sub(rec.published_ms);
                tracing::info!(node = %node, generation = rec.generation, converged_in_ms = took, "node converged");
                self.converged
                    .insert(node.to_owned(), (rec.generation, took));
            }
            self.apply(node, decisions);
        }
        self.fleet.status(node, s, now, retain, wall);
        self.status_dirty = true;
        self.pace_dirty = true;
    }

    fn apply(&mut self, node: &str, decisions: Vec<Decision>) {
        for d in decisions {
            match d {
                Decision::Installed { deployment, dep } => {
                    self.book
                        .installed
                        .entry(node.to_owned())
                        .or_default()
                        .insert(deployment, dep);
                    self.book_dirty = true;
                }
                Decision::Hold {
                    deployment,
                    commit,
                    reason,
                } => {
                    tracing::warn!(node = %node, deployment = %deployment, commit = %commit, reason = %reason, "deployment failed; held");
                    self.shared
                        .metrics
                        .decisions
                        .get_or_create(&Metrics::kind("hold"))
                        .inc();
                    self.audit.log(
                        AuditEntry::new("decided", format!("hold: {reason}"))
                            .node(node)
                            .deployment(&deployment)
                            .commit(&commit),
                    );
                    let spec_hash = self
                        .desired
                        .get(node)
                        .and_then(|nd| nd.get(&deployment))
                        .map(|d| d.spec_hash.clone())
                        .unwrap_or_default();
                    self.book
                        .held
                        .entry(node.to_owned())
                        .or_default()
                        .insert(deployment, spec_hash);
                    self.book_dirty = true;
                }
                Decision::Rollback { deployment, mark } => {
                    tracing::warn!(node = %node, deployment = %deployment, failed = %mark.failed_commit, to = %mark.over.to.spec.commit, "deployment failed; rolling back");
                    self.shared
                        .metrics
                        .decisions
                        .get_or_create(&Metrics::kind("rollback"))
                        .inc();
                    self.audit.log(
                        AuditEntry::new(
                            "decided",
                            format!(
                                "rollback to the version of commit {}",
                                mark.over.to.spec.commit
                            ),
                        )
                        .node(node)
                        .deployment(&deployment)
                        .commit(&mark.failed_commit),
                    );
                    self.book
                        .rollbacks
                        .entry(node.to_owned())
                        .or_default()
                        .insert(deployment, mark);
                    self.book_dirty = true;
                    self.reconcile_pending = true;
                }
                Decision::RollbackFailed { deployment, commit } => {
                    tracing::error!(node = %node, deployment = %deployment, commit = %commit, "rolled-back version failed too; stopping");
                    self.shared
                        .metrics
                        .decisions
                        .get_or_create(&Metrics::kind("rollback_failed"))
                        .inc();
                    self.audit.log(
                        AuditEntry::new("decided", "rollback failed too: no further action")
                            .node(node)
                            .deployment(&deployment)
                            .commit(&commit),
                    );
                    if let Some(m) = self
                        .book
                        .rollbacks
                        .get_mut(node)
                        .and_then(|m| m.get_mut(&deployment))
                    {
                        m.failed_again = true;
                    }
                    self.book_dirty = true;
                }
            }
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
        if self.pace_dirty
            && self
                .rollout
                .as_ref()
                .is_some_and(|r| !r.in_flight.is_empty() || !r.waiting.is_empty())
        {
            self.reconcile_pending = true;
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
        if self.book_dirty {
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

    fn site_status(&self) -> SiteStatus {
        let now = self.mono_ms();
        let mut nodes = Vec::new();
        let (mut online_n, mut converged_n) = (0, 0);
        for node in self.inventory.nodes.keys() {
            let obs = self.fleet.get(node);
            let status = obs.and_then(|o| o.status.as_ref());
            let desired_generation = self.store.data.nodes.get(node).map_or(0, |r| r.generation);
            let observed_generation = status.map_or(0, |s| s.observed_generation);
            let converged =
                status.is_some_and(|s| s.converged) && observed_generation == desired_generation;
            let online = self.fleet.online(node, now);
            online_n += i64::from(online);
            converged_n += i64::from(converged);
            nodes.push(NodeSummary {
                node: node.clone(),
                online,
                desired_generation,
                observed_generation,
                commit: status.and_then(|s| s.revision.as_ref().map(|r| r.commit.clone())),
                state: status.and_then(|s| s.state),
                converged,
                converged_in_ms: self
                    .converged
                    .get(node)
                    .filter(|c| c.0 == desired_generation)
                    .map(|c| c.1),
                last_seen: obs.and_then(|o| o.last_seen.clone()),
                // Filled in by `status_json`, which knows the pacing state.
                waiting: None,
                reports: self.reports_note(node),
            });
        }
        self.shared.metrics.nodes_online.set(online_n);
        self.shared.metrics.nodes_converged.set(converged_n);
        let mut deployments = Vec::new();
        if let Some(served) = &self.served {
            for name in served.docs.deployments.keys() {
                let mut counts = StateCounts::default();
                let mut targeted = 0;
                let mut rolled_back = Vec::new();
                for (node, nd) in &self.desired {
                    let Some(dep) = nd.get(name) else { continue };
                    targeted += 1;
                    let rec_gen = self.store.data.nodes.get(node).map_or(0, |r| r.generation);
                    let state = self
                        .fleet
                        .get(node)
                        .and_then(|o| o.status.as_ref())
                        .filter(|s| s.observed_generation == rec_gen)
                        .and_then(|s| s.deployments.iter().find(|d| &d.name == name))
                        .map_or(schemas::State::Pending, |d| d.state);
                    counts.add(state);
                    if self
                        .book
                        .rollbacks
                        .get(node)
                        .and_then(|m| m.get(name))
                        .is_some_and(|m| m.over.to.hash == dep.hash)
                    {
                        rolled_back.push(node.clone());
                    }
                }
                deployments.push(DeploymentSummary {
                    name: name.clone(),
                    nodes: targeted,
                    counts,
                    rolled_back,
                });
            }
        }
        SiteStatus {
            schema: SiteSchema::V1,
            site: self.site.clone(),
            updated_at: schemas::now_rfc3339(),
            lo_version: VERSION.into(),
            revision: self.served.as_ref().map(|s| ServedRevision {
                commit: s.commit.clone(),
                path: self.site_path.clone(),
                since: s.since.clone(),
            }),
            last_error: self.last_error.clone(),
            held: self.held.clone(),
            nodes,
            deployments,
            rollout: None,
            unknown_nodes: self
                .inventory
                .unknown
                .iter()
                .take(MAX_LISTED)
                .cloned()
                .collect(),
            unknown_nodes_count: (self.inventory.unknown.len() > MAX_LISTED)
                .then(|| u32::try_from(self.inventory.unknown.len()).unwrap_or(u32::MAX)),
            unknown_nodes_untracked: (self.untracked > 0).then_some(self.untracked),
            nodes_count: None,
            problems_count: None,
        }
    }

    /// Why a node's reports are refused, for the site status.
    fn reports_note(&self, node: &str) -> Option<String> {
        if self.require_signed && !self.keys.contains_key(node) {
            return Some("unsigned refused: no publicKey in Git".into());
        }
        self.refused_reports
            .get(node)
            .map(|n| format!("{n} refused (unsigned, bad signature or replay)"))
    }

    async fn publish_status(&mut self) {
        let st = self.site_status();
        self.status_dirty = false;
        self.last_status = Some(Instant::now());
        if let Ok(mut g) = self.shared.status.lock() {
            *g = Some(st.clone());
        }
        if !self.connected {
            return;
        }
        let topic = self.topics.lo(&self.site, LoChannel::Status);
        let limit = MAX_STATUS_BYTES.min(
            self.cfg
                .max_packet_size
                .saturating_sub(topic.len() + PUBLISH_OVERHEAD),
        );
        let Some(payload) = fit_status(&st, self.rollout.as_ref(), limit) else {
            tracing::error!(
                limit,
                "site status does not fit the packet limit even trimmed; not sent"
            );
            self.shared
                .metrics
                .publish_refused
                .get_or_create(&Metrics::kind("status"))
                .inc();
            return;
        };
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
        {
            tracing::warn!(error = %e, "cannot publish the site status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    #[test]
    fn generations_read_back_are_followed_only_within_bounds() {
        // (ours, theirs, trusted, followed)
        let cases = [
            (4, 9, true, Some(9)),
            (4, 4, true, None),
            (4, 3, true, None),
            (4, 9, false, None),
            (0, MAX_GENERATION_STEP, true, Some(MAX_GENERATION_STEP)),
            (0, MAX_GENERATION_STEP + 1, true, None),
            (4, u64::MAX, true, None),
            (
                MAX_GENERATION - 2,
                MAX_GENERATION - 1,
                true,
                Some(MAX_GENERATION - 1),
            ),
            (MAX_GENERATION - 1, MAX_GENERATION, true, None),
            (u64::MAX, 0, true, None),
        ];
        for (ours, theirs, trusted, want) in cases {
            assert_eq!(
                follow_generation(ours, theirs, trusted),
                want,
                "ours {ours}, theirs {theirs}, trusted {trusted}"
            );
        }
    }

    fn hb(seq: u64) -> serde_json::Value {
        json!({"schema": "fleet.heartbeat/v1", "seq": seq, "uptimeS": 1,
            "observedGeneration": 2, "converged": true})
    }

    /// (report, node key, required, newest accepted, outcome)
    type Case<'a> = (
        &'a serde_json::Value,
        Option<&'a ed25519_dalek::VerifyingKey>,
        bool,
        Option<(u64, u64)>,
        Result<Option<(u64, u64)>, ReportRefusal>,
    );

    #[test]
    fn report_signature_policy_table() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let vk = key.verifying_key();
        let topic = "fleet/s/nodes/n1/heartbeat";
        let unsigned = hb(1);
        let mut signed = hb(1);
        schemas::sign::sign_report(&mut signed, topic, 3, 10, &key);
        let mut foreign = hb(1);
        schemas::sign::sign_report(&mut foreign, topic, 3, 10, &other);
        let mut elsewhere = hb(1);
        schemas::sign::sign_report(&mut elsewhere, "fleet/s/nodes/n2/heartbeat", 3, 10, &key);
        let mut tampered = signed.clone();
        tampered["converged"] = json!(false);
        use ReportRefusal::*;
        let cases: [Case<'_>; 12] = [
            (&unsigned, None, false, None, Ok(None)),
            (&unsigned, Some(&vk), false, None, Ok(None)),
            (&unsigned, Some(&vk), true, None, Err(Unsigned)),
            (&unsigned, None, true, None, Err(Unsigned)),
            (&signed, None, true, None, Err(BadSignature)),
            (&signed, Some(&vk), true, None, Ok(Some((3, 10)))),
            (&signed, Some(&vk), false, Some((3, 10)), Ok(Some((3, 10)))),
            (&signed, Some(&vk), true, Some((3, 11)), Err(Replay)),
            (&signed, Some(&vk), true, Some((4, 0)), Err(Replay)),
            (&foreign, Some(&vk), false, None, Err(BadSignature)),
            (&elsewhere, Some(&vk), true, None, Err(BadSignature)),
            (&tampered, Some(&vk), false, None, Err(BadSignature)),
        ];
        for (i, (raw, k, required, last, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                check_report(raw, topic, false, k, required, last),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn presence_epoch_must_be_the_signed_epoch() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let topic = "fleet/s/nodes/n1/online";
        let mut p = json!({"schema": "fleet.presence/v1", "online": false, "epoch": 5});
        schemas::sign::sign_report(&mut p, topic, 5, 0, &key);
        assert_eq!(
            check_report(&p, topic, true, Some(&key.verifying_key()), true, None),
            Ok(Some((5, 0)))
        );
        let mut q = json!({"schema": "fleet.presence/v1", "online": false, "epoch": 9});
        schemas::sign::sign_report(&mut q, topic, 5, 0, &key);
        assert_eq!(
            check_report(&q, topic, true, Some(&key.verifying_key()), true, None),
            Err(ReportRefusal::BadSignature)
        );
    }

    #[test]
    fn oversized_reports_are_recognised_before_decoding() {
        let deps: Vec<serde_json::Value> = (0..MAX_REPORT_DEPLOYMENTS + 1)
            .map(|i| json!({"name": format!("d{i}"), "state": "installed", "components": []}))
            .collect();
        assert!(oversized_report(&json!({ "deployments": deps })).is_some());
        let comps: Vec<serde_json::Value> =
            (0..MAX_REPORT_COMPONENTS + 1).map(|_| json!({})).collect();
        assert!(oversized_report(&json!({"deployments": [{"components": comps}]})).is_some());
        assert!(oversized_report(&json!({"deployments": [{"components": [{}]}]})).is_none());
    }

    fn site_status(nodes: usize, unknown: usize, problems: usize) -> SiteStatus {
        SiteStatus {
            schema: SiteSchema::V1,
            site: "s".into(),
            updated_at: "t".into(),
            lo_version: "v".into(),
            revision: None,
            last_error: Some(SiteError {
                commit: "c".into(),
                at: "t".into(),
                message: "m".repeat(100_000),
                problems: (0..problems)
                    .map(|i| DocProblem {
                        file: format!("f{i}.yaml"),
                        line: Some(1),
                        field: None,
                        message: "x".repeat(200),
                    })
                    .collect(),
            }),
            held: None,
            nodes: (0..nodes)
                .map(|i| NodeSummary {
                    node: format!("node-{i:05}"),
                    online: i % 2 == 0,
                    desired_generation: 1,
                    observed_generation: 1,
                    commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                    state: None,
                    converged: i % 4 == 0,
                    converged_in_ms: None,
                    last_seen: Some("2026-01-01T00:00:00.000Z".into()),
                    waiting: None,
                    reports: None,
                })
                .collect(),
            deployments: Vec::new(),
            rollout: None,
            unknown_nodes: (0..unknown).map(|i| format!("ghost-{i:05}")).collect(),
            unknown_nodes_count: None,
            unknown_nodes_untracked: None,
            nodes_count: None,
            problems_count: None,
        }
    }

    #[test]
    fn site_status_always_fits_the_limit_with_counts() {
        let st = site_status(5_000, 5_000, 10_000);
        for limit in [64 * 1024, 192 * 1024] {
            let payload = fit_status(&st, None, limit).expect("fits");
            assert!(payload.len() <= limit, "{} > {limit}", payload.len());
            let back: SiteStatus = serde_json::from_slice(&payload).expect("decodes");
            assert_eq!(back.nodes_count, Some(5_000));
            assert_eq!(back.unknown_nodes_count, Some(5_000));
            assert_eq!(back.problems_count, Some(10_000));
            assert!(back.unknown_nodes.len() <= MAX_LISTED);
            let e = back.last_error.expect("error kept");
            assert!(e.message.len() < 2 * MAX_STATUS_MESSAGE);
            assert!(e.problems.len() <= MAX_PROBLEMS_LISTED);
        }
        // Far too small: nothing rather than something the broker refuses.
        assert_eq!(fit_status(&st, None, 100), None);
        // A small status is untouched.
        let small = site_status(3, 0, 0);
        let back: SiteStatus =
            serde_json::from_slice(&fit_status(&small, None, 64 * 1024).expect("fits"))
                .expect("decodes");
        assert_eq!(back.nodes.len(), 3);
        assert_eq!(back.nodes_count, None);
    }
}
