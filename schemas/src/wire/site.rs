//! The LO's side of the wire: the site summary (`lo/status`), its per-node, per-deployment
//! and rollout parts, the problems of a refused commit, and rollout events (`lo/events`).

use super::SiteSchema;
use crate::state::State;
use serde::{Deserialize, Serialize};

/// One per-file problem of a rejected commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DocProblem {
    /// File path in the repository.
    pub file: String,
    /// 1-based line, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Field path (`spec.components[0].image`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// The revision the LO serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ServedRevision {
    /// Commit id.
    pub commit: String,
    /// Site folder.
    pub path: String,
    /// When the LO started serving it (RFC 3339).
    pub since: String,
}

/// A commit the LO refused or holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SiteError {
    /// Commit id (empty when the source itself failed).
    pub commit: String,
    /// When (RFC 3339).
    pub at: String,
    /// Summary.
    pub message: String,
    /// Each problem found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<DocProblem>,
}

/// A node as the LO sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    /// Node name.
    pub node: String,
    /// Present and not timed out.
    pub online: bool,
    /// The generation the LO published to it.
    pub desired_generation: u64,
    /// The generation it reports applying.
    pub observed_generation: u64,
    /// Commit it reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Its rolled-up state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Observed generation = desired generation and converged.
    pub converged: bool,
    /// Time from the LO seeing the commit to the node converging on it, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged_in_ms: Option<u64>,
    /// Last message from the node (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Why the node keeps its current document for now (rollout pacing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Why this node's reports are refused, when they are (e.g. `unsigned refused: no
    /// publicKey in Git` while the Site requires signed reports, or `3 refused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<String>,
}

/// A paced rollout in progress (`Site.spec.rollout.maxParallel`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Nodes that may apply a new revision at once.
    pub max_parallel: u32,
    /// Nodes applying it now (at most 100 listed; see `inFlightCount`).
    pub in_flight: Vec<String>,
    /// Nodes waiting for their turn, keeping their current document (at most 100 listed).
    pub waiting: Vec<String>,
    /// Number of nodes applying it now.
    pub in_flight_count: u32,
    /// Number of nodes waiting.
    pub waiting_count: u32,
}

/// Number of nodes per state for one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct StateCounts {
    /// Nodes not reporting it yet.
    pub pending: u32,
    /// Installing.
    pub installing: u32,
    /// Installed.
    pub installed: u32,
    /// Removing.
    pub removing: u32,
    /// Removed.
    pub removed: u32,
    /// Failed.
    pub failed: u32,
}

impl StateCounts {
    /// Adds one node in `state`.
    pub fn add(&mut self, state: State) {
        let slot = match state {
            State::Pending => &mut self.pending,
            State::Installing => &mut self.installing,
            State::Installed => &mut self.installed,
            State::Removing => &mut self.removing,
            State::Removed => &mut self.removed,
            State::Failed => &mut self.failed,
        };
        *slot += 1;
    }
}

/// A deployment across the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSummary {
    /// Deployment name.
    pub name: String,
    /// Nodes it targets.
    pub nodes: u32,
    /// Targeted nodes per state.
    pub counts: StateCounts,
    /// Nodes it was rolled back on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled_back: Vec<String>,
    /// Its rollout: where the newest revision of the deployment stands on the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<DeploymentRollout>,
}

/// Where a deployment's rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum RolloutPhase {
    /// Waves are being handed the candidate.
    Progressing,
    /// `rollout.paused: true` in Git: no further node is handed the candidate.
    Paused,
    /// Too many failures (`onHalt: pause`, or nothing to roll back to): nodes stay where
    /// they are until a new commit.
    Halted,
    /// Too many failures (`onHalt: rollback`): every node that received the candidate was
    /// handed the promoted revision again.
    RolledBack,
    /// Every wave passed: the candidate is the promoted revision.
    Complete,
}

impl RolloutPhase {
    /// The camelCase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Progressing => "progressing",
            RolloutPhase::Paused => "paused",
            RolloutPhase::Halted => "halted",
            RolloutPhase::RolledBack => "rolledBack",
            RolloutPhase::Complete => "complete",
        }
    }
}

/// One version of a deployment: the commit it was served at and its spec hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VersionRef {
    /// Commit.
    pub commit: String,
    /// Spec hash (`sha256:…`, without the commit).
    pub spec_hash: String,
}

/// Progress of one wave of a rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct WaveStatus {
    /// Nodes of the deployment this wave brings the candidate to (its own, not cumulative).
    pub nodes: u32,
    /// Nodes that passed the health gate.
    pub passed: u32,
    /// Nodes that failed (failed, crash loop, or gate not reached within `waveTimeout`).
    pub failed: u32,
    /// Online nodes handed the candidate or waiting for it, not yet passed or failed.
    pub pending: u32,
    /// Nodes of the wave that are offline (they get the candidate when back, if the
    /// rollout still allows it, else the promoted revision).
    pub offline: u32,
}

/// Why a rollout halted: the first failure that crossed the threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct HaltReason {
    /// The node.
    pub node: String,
    /// The component, when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// An [`error_code`], or `wave_timeout`.
    pub code: String,
    /// What happened, bounded.
    pub message: String,
}

/// A deployment's rollout (`Site.spec.rollout` / `Deployment.spec.rollout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRollout {
    /// Phase.
    pub phase: RolloutPhase,
    /// Current wave, 1-based (the last one once complete).
    pub wave: u32,
    /// Every wave, in order.
    pub waves: Vec<WaveStatus>,
    /// The last version that passed on the site (what a rollback hands back), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<VersionRef>,
    /// The version being rolled out, while it is not promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<VersionRef>,
    /// Nodes handed the candidate so far.
    pub received: u32,
    /// Why it halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_reason: Option<HaltReason>,
    /// When the current wave started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_started_at: Option<String>,
}

/// What happened to a rollout, on `<root>/<site>/lo/events` (QoS 1, not retained).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum RolloutEventKind {
    /// A new candidate started at wave 1.
    Started,
    /// A wave passed; the next one starts.
    WavePassed,
    /// The failure threshold was crossed and nothing is rolled back.
    Halted,
    /// The failure threshold was crossed and the candidate's nodes were handed the
    /// promoted revision.
    RolledBack,
    /// Every wave passed: the candidate is promoted.
    Complete,
}

impl RolloutEventKind {
    /// The camelCase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutEventKind::Started => "started",
            RolloutEventKind::WavePassed => "wavePassed",
            RolloutEventKind::Halted => "halted",
            RolloutEventKind::RolledBack => "rolledBack",
            RolloutEventKind::Complete => "complete",
        }
    }
}

schema_tag!(
    /// `schema` of [`LoEvent`].
    LoEventSchema = "fleet.lo-event/v1"
);

/// `<root>/<site>/lo/events`: a rollout event. QoS 1, not retained, from the LO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LoEvent {
    /// `fleet.lo-event/v1`.
    pub schema: LoEventSchema,
    /// When (RFC 3339).
    pub at: String,
    /// Deployment.
    pub deployment: String,
    /// What happened.
    pub kind: RolloutEventKind,
    /// The wave concerned, 1-based.
    pub wave: u32,
    /// The candidate.
    pub candidate: VersionRef,
    /// The promoted version, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<VersionRef>,
    /// Why it halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_reason: Option<HaltReason>,
}

/// `<root>/<site>/lo/status`: the site summary. Retained, QoS 1, from the LO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SiteStatus {
    /// `fleet.site/v1`.
    pub schema: SiteSchema,
    /// Site name.
    pub site: String,
    /// When this summary was made (RFC 3339).
    pub updated_at: String,
    /// LO version.
    pub lo_version: String,
    /// The revision served, if any commit was accepted yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<ServedRevision>,
    /// The last refused commit or source error (cleared by the next good commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<SiteError>,
    /// A commit held by the deletion guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<SiteError>,
    /// Every enrolled node.
    pub nodes: Vec<NodeSummary>,
    /// Every deployment of the served revision.
    pub deployments: Vec<DeploymentSummary>,
    /// A paced rollout, while the Site sets `rollout.maxParallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Nodes that announced themselves but are not enrolled: they get no workloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_nodes: Vec<String>,
    /// How many unknown nodes are tracked, when `unknownNodes` lists only some of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_nodes_count: Option<u32>,
    /// Messages from further unknown nodes, beyond what the LO tracks, since it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_nodes_untracked: Option<u64>,
    /// How many enrolled nodes there are, when `nodes` lists only some of them (the summary
    /// must fit in one MQTT packet; nodes that need attention are listed first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_count: Option<u32>,
    /// How many problems `lastError` has, when it lists only some of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems_count: Option<u32>,
}
