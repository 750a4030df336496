//! MQTT payloads. Every payload is JSON with a `schema` field naming its type and version.

use crate::component::Component;
use crate::state::{Health, State};
use serde::{Deserialize, Serialize};

macro_rules! schema_tag {
    ($(#[$doc:meta])* $name:ident = $tag:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
        #[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
        pub enum $name {
            #[doc = concat!("`", $tag, "`")]
            #[default]
            #[serde(rename = $tag)]
            V1,
        }
        impl $name {
            /// The tag's text.
            pub const TAG: &'static str = $tag;
        }
    };
}

schema_tag!(
    /// `schema` of [`DesiredState`].
    DesiredSchema = "fleet.desired/v1"
);
schema_tag!(
    /// `schema` of [`NodeStatus`].
    StatusSchema = "fleet.status/v1"
);
schema_tag!(
    /// `schema` of [`Event`].
    EventSchema = "fleet.event/v1"
);
schema_tag!(
    /// `schema` of [`Heartbeat`].
    HeartbeatSchema = "fleet.heartbeat/v1"
);
schema_tag!(
    /// `schema` of [`Presence`].
    PresenceSchema = "fleet.presence/v1"
);
schema_tag!(
    /// `schema` of [`SiteStatus`].
    SiteSchema = "fleet.site/v1"
);

/// Where a desired document comes from in Git.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revision {
    /// Full commit id.
    pub commit: String,
    /// Site folder in the repository, e.g. `sites/plant-1`.
    pub path: String,
}

/// What the LO wants failures of a deployment to lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Keep the deployment `failed` and report it (the default).
    #[default]
    Hold,
    /// Roll the node back to the last revision that was `installed` on it.
    Rollback,
}

/// Failure policy of a deployment, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailurePolicy {
    /// Attempts per operation before `failed` (at least 1).
    pub attempts: u32,
    /// First retry delay in milliseconds; doubles each attempt, with jitter.
    pub backoff_ms: u64,
    /// What the LO does on `failed`.
    pub on_failure: OnFailure,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            attempts: 3,
            backoff_ms: 2_000,
            on_failure: OnFailure::Hold,
        }
    }
}

/// One deployment of a node's desired document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DesiredDeployment {
    /// Deployment name (`metadata.name` in Git).
    pub name: String,
    /// Commit this deployment's spec comes from; differs from the document's revision
    /// only when the LO rolled the deployment back on this node.
    pub commit: String,
    /// Failure policy.
    #[serde(default)]
    pub policy: FailurePolicy,
    /// Components, in the order written in Git.
    pub components: Vec<Component>,
}

/// An ed25519 signature over the document's canonical JSON without its `signature`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signature {
    /// Always `ed25519`.
    pub alg: String,
    /// Which key signed (free text, e.g. a fingerprint).
    pub key_id: String,
    /// Base64 (standard, padded) of the 64-byte signature.
    pub value: String,
}

/// A node's ed25519 signature over one report (status, event, heartbeat, presence), with
/// the key of its `Node` document (`spec.publicKey`).
///
/// It covers `edgefleet.report/v1\n<topic>\n<epoch>\n<seq>\n<canonical JSON of the report
/// without signature>` (see `sign::report_signing_payload`): the topic binds it to one node
/// and channel, `epoch` (the agent's session epoch) and `seq` (increasing within the
/// epoch, across channels) let a receiver refuse replays of older reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReportSignature {
    /// Always `ed25519`.
    pub alg: String,
    /// The signer's session epoch.
    pub epoch: u64,
    /// Increases with every signed report within the epoch.
    pub seq: u64,
    /// Base64 (standard, padded) of the 64-byte signature.
    pub value: String,
}

/// `<root>/<site>/nodes/<node>/desired`: what a node must run. Retained, QoS 1, from the LO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DesiredState {
    /// `fleet.desired/v1`.
    pub schema: DesiredSchema,
    /// Site name.
    pub site: String,
    /// Node name.
    pub node: String,
    /// Strictly increasing per node, never reused, also across LO restarts.
    pub generation: u64,
    /// The Git revision this document was rendered from.
    pub revision: Revision,
    /// When the LO issued it (RFC 3339, UTC).
    pub issued_at: String,
    /// Everything the node must run; empty means "run nothing we manage".
    pub deployments: Vec<DesiredDeployment>,
    /// Present when the LO signs documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

impl DesiredState {
    /// The canonical bytes that a signature covers: the document without `signature`.
    pub fn signing_payload(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(map) = &mut value {
            map.remove("signature");
        }
        crate::component::canonical_json(&value)
    }

    /// True when the two documents ask for the same thing (ignores generation, time,
    /// signature): the LO republishes only when this is false.
    pub fn same_content(&self, other: &DesiredState) -> bool {
        self.site == other.site
            && self.node == other.node
            && self.revision == other.revision
            && self.deployments == other.deployments
    }
}

/// An error reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// Machine-readable code, one of [`error_code`]'s constants (unknown codes are kept).
    pub code: String,
    /// Human-readable detail, as Docker said it.
    pub message: String,
}

impl ErrorInfo {
    /// A new error.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorInfo {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// Error codes of [`ErrorInfo`].
pub mod error_code {
    /// The registry refused the pull (authentication, authorisation).
    pub const PULL_DENIED: &str = "pull_denied";
    /// The image or tag does not exist.
    pub const IMAGE_NOT_FOUND: &str = "image_not_found";
    /// Any other pull failure (network, registry down).
    pub const PULL_FAILED: &str = "pull_failed";
    /// Not enough free disk for the pull.
    pub const NO_DISK: &str = "no_disk";
    /// A host port is already taken.
    pub const PORT_IN_USE: &str = "port_in_use";
    /// Docker refused to create the container.
    pub const CREATE_FAILED: &str = "create_failed";
    /// The container did not start or exited at once.
    pub const START_FAILED: &str = "start_failed";
    /// The container stays unhealthy.
    pub const UNHEALTHY: &str = "unhealthy";
    /// A dependency failed, so this component cannot start.
    pub const DEPENDENCY_FAILED: &str = "dependency_failed";
    /// Stopping or removing failed.
    pub const REMOVE_FAILED: &str = "remove_failed";
    /// The Docker engine cannot be reached.
    pub const DOCKER_UNREACHABLE: &str = "docker_unreachable";
    /// The desired document was refused (signature, addressing, generation).
    pub const REJECTED: &str = "rejected";
    /// A rollout's node did not pass its health gate within `waveTimeout` (LO only, in a
    /// rollout's `haltReason`).
    pub const WAVE_TIMEOUT: &str = "wave_timeout";
    /// Anything else.
    pub const INTERNAL: &str = "internal";
}

/// The measured state of one component on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Component name.
    pub name: String,
    /// Lifecycle state.
    pub state: State,
    /// Spec hash of the running container (from its label), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// Docker container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Docker's container status (`running`, `exited`, `restarting` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_status: Option<String>,
    /// Health as Docker measures it.
    #[serde(default)]
    pub health: Health,
    /// Restarts by Docker plus restarts by the agent for health.
    #[serde(default)]
    pub restart_count: u32,
    /// Image reference the container was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Local image id (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Repository digest (`repo@sha256:…`) when the image came from a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_digest: Option<String>,
    /// Attempts spent on the current operation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// `failed` for a transient cause (registry or network unreachable, engine restarting,
    /// a timeout) that the agent keeps retrying with capped backoff: the failure may heal
    /// by itself. Absent (false) for a permanent failure, which waits for Git to change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retrying: bool,
    /// When the agent tries again (RFC 3339), while `retrying`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The measured state of one deployment on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// Deployment name.
    pub name: String,
    /// Most severe component state.
    pub state: State,
    /// Commit of the spec being applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Components.
    pub components: Vec<ComponentStatus>,
}

/// A container on the node that the agent did not create: reported, never touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct UnmanagedContainer {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Docker status.
    pub status: String,
}

/// The agent itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    /// Agent version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// Desired documents refused since the agent started (replays, downgrades, bad or
    /// missing signatures, limits); `rejected` says why the last one was.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub rejected_documents: u64,
    /// Images the agent's image garbage collection removed since the agent started.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub images_removed: u64,
    /// Bytes those removals freed (each image's size less what it shared with other
    /// images, when the engine tells; Docker 20.10 does not, so shared layers count too).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub image_bytes_freed: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// The container runtime as the agent last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RuntimeInfo {
    /// `docker`, or `fake` in tests.
    pub kind: String,
    /// Engine version, when reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether the last call reached the engine.
    pub reachable: bool,
    /// Why it is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `<root>/<site>/nodes/<node>/status`: the full measured report. Retained, QoS 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// `fleet.status/v1`.
    pub schema: StatusSchema,
    /// Site name.
    pub site: String,
    /// Node name.
    pub node: String,
    /// Generation of the desired document being applied (0: none yet).
    pub observed_generation: u64,
    /// Revision of that document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
    /// Most severe deployment state; `None` with no deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// True when every desired deployment is `installed` and nothing undesired remains.
    pub converged: bool,
    /// When this report was measured (RFC 3339).
    pub reported_at: String,
    /// Desired deployments and managed leftovers being removed.
    pub deployments: Vec<DeploymentStatus>,
    /// Containers the agent did not create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmanaged: Vec<UnmanagedContainer>,
    /// The container runtime.
    pub runtime: RuntimeInfo,
    /// The agent.
    pub agent: AgentInfo,
    /// The last desired document refused, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<ErrorInfo>,
    /// The node's signature, when it has a key (`en-agent keygen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ReportSignature>,
}

/// `<root>/<site>/nodes/<node>/events`: one state transition. QoS 1, not retained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `fleet.event/v1`.
    pub schema: EventSchema,
    /// Sequence number within the agent's run (resets on restart).
    pub seq: u64,
    /// When (RFC 3339).
    pub at: String,
    /// Generation being applied.
    pub generation: u64,
    /// Deployment.
    pub deployment: String,
    /// Component; `None` for a deployment-level transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Previous state; `None` when first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<State>,
    /// New state.
    pub to: State,
    /// Why, in a few words (`image pulled`, `container exited`, `spec changed` …).
    pub reason: String,
    /// The error behind a transition to `failed` or a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The node's signature, when it has a key (`en-agent keygen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ReportSignature>,
}

/// `<root>/<site>/nodes/<node>/heartbeat`: small liveness signal. QoS 1, not retained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// `fleet.heartbeat/v1`.
    pub schema: HeartbeatSchema,
    /// Counter within the agent's run.
    pub seq: u64,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// Generation being applied.
    pub observed_generation: u64,
    /// Whether the node has converged to it.
    pub converged: bool,
    /// The node's signature, when it has a key (`en-agent keygen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ReportSignature>,
}

/// `<root>/<site>/nodes/<node>/online` and `<root>/<site>/lo/online`. Retained, QoS 1; the
/// `online: false` form is also the client's Last Will.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    /// `fleet.presence/v1`.
    pub schema: PresenceSchema,
    /// Online or not.
    pub online: bool,
    /// Session epoch: increases on every connect of that client (persisted across
    /// restarts). A message with an epoch lower than the highest seen is stale.
    pub epoch: u64,
    /// Software version of the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The node's signature, when it has a key (`en-agent keygen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ReportSignature>,
}

/// Formats a time as RFC 3339 UTC with milliseconds (`2026-11-25T10:00:00.123Z`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// [`rfc3339`] of now.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

mod site;
pub use site::*;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_651_199)),
            "2026-11-25T23:59:59.000Z"
        );
    }

    #[test]
    fn schema_tag_is_checked() {
        let ok = r#"{"schema":"fleet.heartbeat/v1","seq":1,"uptimeS":2,"observedGeneration":3,"converged":true}"#;
        let hb: Heartbeat = serde_json::from_str(ok).expect("parse");
        assert_eq!(hb.seq, 1);
        let wrong = ok.replace("fleet.heartbeat/v1", "fleet.heartbeat/v2");
        assert!(serde_json::from_str::<Heartbeat>(&wrong).is_err());
        // Reports accept fields added by newer agents (additive evolution within v1).
        let extra = ok.replace("\"seq\"", "\"extra\":1,\"seq\"");
        assert!(serde_json::from_str::<Heartbeat>(&extra).is_ok());
    }
}
