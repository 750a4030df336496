//! The documents people write in Git, and their validation into resolved form.
//!
//! Every YAML document under `sites/<site>/` has `apiVersion: edgefleet.io/v1`, a `kind`
//! (`Deployment`, `Node` or `Site`), `metadata` and `spec`. Parsing is strict: an unknown
//! field is an error (a typo must never silently do the wrong thing), and every problem
//! names the file, the line and the field. [`load_site`] turns all files of a site into a
//! [`SiteDocs`]: deployments resolved into wire [`Component`]s with their spec hashes.

//!
//! ## Layout
//! - this file: the documents (`Deployment`, `Node`, `Site`) and the validated [`SiteDocs`];
//! - `load`: [`load_site`] / [`load_site_with`], the [`SiteLimits`] on Git input and
//!   [`bound_problems`]; start reading here;
//! - `deployment`: a deployment's targets, failure policy and `dependsOn` checks;
//! - `component`: a component as written ([`ComponentSpec`]) and its resolution into a wire
//!   [`Component`] (a new component field goes here, beside `schemas::component`);
//! - `parse`: compose-style values (durations, memory, cpus, ports, volumes, image
//!   references) with their typed errors;
//! - `security`: [`SecuritySpec`] and the checks a commit must pass (bind mounts, host
//!   ports, node keys);
//! - `context`: the document being checked, which names file, line and field in a problem;
//! - `yaml`: the bounded YAML reader that remembers the line of every field.

mod component;
mod context;
mod deployment;
mod host;
mod load;
mod parse;
mod rollout;
mod security;
mod yaml;

pub use component::{
    ComponentSpec, EnvSpec, HealthcheckSpec, LogOptionValue, LoggingSpec, ResourcesSpec, TestSpec,
};
pub use host::{DeviceLong, DeviceSpec, UlimitSpec};
pub use load::{
    bound_problems, load_site, load_site_with, parse_yaml_values, LimitsError, SiteLimits,
};
pub use parse::{
    parse_duration, validate_image_reference, DurationError, ImageRefError, PortLong, PortSpec,
    Scalar, VolumeLong, VolumeSpec,
};
pub use rollout::{
    Amount, AmountSpec, OnHalt, RolloutSpec, RolloutStrategy, Wave, WaveSpec,
    DEFAULT_WAVE_TIMEOUT_MS, MAX_ROLLOUT_MS, MAX_WAVES,
};
pub use security::{host_path_components, SecuritySpec};

use crate::component::Component;
use crate::wire::{FailurePolicy, OnFailure};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The `apiVersion` of every Git document.
pub const API_VERSION: &str = "edgefleet.io/v1";

macro_rules! const_str {
    ($(#[$doc:meta])* $name:ident = $value:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
        #[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
        pub enum $name {
            #[doc = concat!("`", $value, "`")]
            #[default]
            #[serde(rename = $value)]
            Value,
        }
    };
}

const_str!(
    /// `edgefleet.io/v1`
    ApiVersion = "edgefleet.io/v1"
);
const_str!(
    /// `Deployment`
    DeploymentKind = "Deployment"
);
const_str!(
    /// `Node`
    NodeKind = "Node"
);
const_str!(
    /// `Site`
    SiteKind = "Site"
);

/// `metadata` of every document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Name: 1–63 of `[A-Za-z0-9._-]`, starting with a letter or digit.
    pub name: String,
    /// Labels (on a Node, what `nodeSelector` matches).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form notes; ignored by edgefleet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `kind: Deployment`: an application made of containers, and where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    /// `edgefleet.io/v1`
    pub api_version: ApiVersion,
    /// `Deployment`
    pub kind: DeploymentKind,
    /// Name and labels.
    pub metadata: Metadata,
    /// What and where.
    pub spec: DeploymentSpec,
}

/// The spec of a Deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Run on exactly these nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// Run on every node whose labels include all of these. Without `nodes` and
    /// `nodeSelector` a deployment runs on every node of the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Failure policy; unset fields come from the Site, then the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySpec>,
    /// Rollout strategy; unset fields come from the Site's `rollout`, then the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    /// The containers.
    pub components: Vec<ComponentSpec>,
}

/// A failure policy as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Attempts per operation before `failed` (default 3, 1 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// First retry delay, doubled each attempt, with jitter (default `2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// `hold` (default) or `rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
}

/// `kind: Node`: a device of the site, with its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// `edgefleet.io/v1`
    pub api_version: ApiVersion,
    /// `Node`
    pub kind: NodeKind,
    /// The node name (its agent's `--node`) and labels.
    pub metadata: Metadata,
    /// Optional details.
    #[serde(default)]
    pub spec: NodeSpec,
}

/// The spec of a Node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The node's ed25519 public key (base64 of 32 bytes, as printed by `en-agent keygen`):
    /// reports signed with it are the node's; with
    /// `Site.spec.security.requireSignedReports` nothing else is accepted from the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// `kind: Site` (at most one per site): site-wide defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Site {
    /// `edgefleet.io/v1`
    pub api_version: ApiVersion,
    /// `Site`
    pub kind: SiteKind,
    /// `name` must be the site folder's name.
    pub metadata: Metadata,
    /// Defaults.
    #[serde(default)]
    pub spec: SiteSpec,
}

/// The spec of a Site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteSpec {
    /// Default failure policy of every deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySpec>,
    /// How a new revision of a deployment reaches the site's nodes: waves, health gate,
    /// failure threshold, halt (a Deployment's own `rollout` wins field by field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    /// Enrolment of nodes that announce themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<EnrollmentSpec>,
    /// Deletion guard: allow a commit that removes every deployment (default false).
    #[serde(default)]
    pub allow_empty: bool,
    /// Deletion guard: hold a commit that removes more than this percentage of the
    /// deployments (default 50; 100 disables the guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delete_percent: Option<u8>,
    /// What workloads may do and what the LO accepts from nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySpec>,
    /// Default logging of every component that sets none (same shape as a component's
    /// `logging`). Without it, the agent's bounded default applies (`json-file`,
    /// `max-size: 10m`, `max-file: 3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
}

/// Enrolment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollmentSpec {
    /// Nodes that announce themselves (presence) join the site without a Node document.
    #[serde(default)]
    pub auto: bool,
    /// Labels given to auto-enrolled nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Which nodes a deployment targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Every node of the site.
    All,
    /// Exactly these nodes.
    Nodes(BTreeSet<String>),
    /// Nodes whose labels include all of these.
    Selector(BTreeMap<String, String>),
}

impl Targets {
    /// Whether a node with these labels is targeted.
    pub fn matches(&self, node: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Targets::All => true,
            Targets::Nodes(nodes) => nodes.contains(node),
            Targets::Selector(sel) => sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
        }
    }
}

/// A validated deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDeployment {
    /// Name.
    pub name: String,
    /// File it was read from.
    pub file: String,
    /// Targets.
    pub targets: Targets,
    /// Resolved failure policy.
    pub policy: FailurePolicy,
    /// Resolved rollout strategy (the LO's alone: not in the spec hash, never sent).
    pub rollout: RolloutStrategy,
    /// Resolved components, in written order.
    pub components: Vec<Component>,
}

/// A validated node entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// File it was read from.
    pub file: String,
    /// The node's report-signing public key (base64), from `spec.publicKey`.
    pub public_key: Option<String>,
}

/// Everything a site's files say, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SiteDocs {
    /// The Site document, if any.
    pub site: Option<Site>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeEntry>,
    /// Deployments by name.
    pub deployments: BTreeMap<String, ResolvedDeployment>,
}

impl SiteDocs {
    /// The Site spec, or defaults.
    pub fn spec(&self) -> SiteSpec {
        self.site
            .as_ref()
            .map(|s| s.spec.clone())
            .unwrap_or_default()
    }
}
