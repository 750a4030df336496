//! The documents people write in Git, and their validation into resolved form.
//!
//! Every YAML document under `sites/<site>/` has `apiVersion: edgefleet.io/v1`, a `kind`
//! (`Deployment`, `Node` or `Site`), `metadata` and `spec`. Parsing is strict: an unknown
//! field is an error (a typo must never silently do the wrong thing), and every problem
//! names the file, the line and the field. [`load_site`] turns all files of a site into a
//! [`SiteDocs`]: deployments resolved into wire [`Component`]s with their spec hashes.

use crate::component::{
    Component, Healthcheck, PortMapping, Protocol, Resources, RestartPolicy, UpdateOrder,
    VolumeKind, VolumeMount,
};
use crate::names::validate_name;
use crate::wire::{DocProblem, FailurePolicy, OnFailure};
use crate::yaml;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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

/// A container, compose-style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentSpec {
    /// Unique in the deployment.
    pub name: String,
    /// `[registry[:port]/]repository[:tag][@sha256:digest]`.
    pub image: String,
    /// Replaces the image's CMD (a list, like compose's exec form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `{KEY: value}` or `["KEY=value"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvSpec>,
    /// `"8080:80"`, `"127.0.0.1:8080:80/udp"`, `80`, or `{target, published, protocol, hostIp}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// `"name:/path[:ro]"`, `"/host:/path[:ro]"`, or `{type, source, target, readOnly}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// `no`, `always`, `on-failure`, `unless-stopped` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// Like compose's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthcheckSpec>,
    /// Components of this deployment to start first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// Container labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `stop-first` (default) or `start-first`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_order: Option<UpdateOrder>,
}

/// A scalar YAML value (strings, numbers and booleans are all accepted where compose does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Scalar {
    /// Text.
    Str(String),
    /// Whole number.
    Int(i64),
    /// Number.
    Float(f64),
    /// Boolean.
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Str(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Environment, map or list form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum EnvSpec {
    /// `{KEY: value}`; a null value is the empty string.
    Map(BTreeMap<String, Option<Scalar>>),
    /// `["KEY=value"]`.
    List(Vec<String>),
}

/// A port, short or long form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum PortSpec {
    /// `80` (container port, host port chosen by Docker).
    Number(u16),
    /// `"[hostIp:][hostPort:]containerPort[/protocol]"`.
    Short(String),
    /// Long form.
    Long(PortLong),
}

/// The long form of a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortLong {
    /// Container port.
    pub target: u16,
    /// Host port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Host address to bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// A mount, short or long form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum VolumeSpec {
    /// `"source:target[:ro|rw]"`.
    Short(String),
    /// Long form.
    Long(VolumeLong),
}

/// The long form of a mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeLong {
    /// `volume`, `bind` or `tmpfs`.
    #[serde(rename = "type")]
    pub kind: VolumeKind,
    /// Volume name or absolute host path (none for tmpfs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Absolute path in the container.
    pub target: String,
    /// Read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A healthcheck, compose-style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthcheckSpec {
    /// `"command line"` (run by a shell) or `["CMD", "prog", "arg"]` / `["CMD-SHELL", "…"]`.
    pub test: TestSpec,
    /// Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Default `0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
}

/// A healthcheck test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum TestSpec {
    /// Run by `/bin/sh -c` (`CMD-SHELL`).
    Shell(String),
    /// Docker's form.
    List(Vec<String>),
}

/// Limits as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcesSpec {
    /// Bytes, or with a unit: `64M`, `1g`, `512k`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Scalar>,
    /// CPUs, e.g. `0.5` or `"1.5"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Scalar>,
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
    /// Rollout pacing.
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
}

/// Site security policy (`Site.spec.security`). A commit breaking it is rejected with
/// file, line and field.
// Bind mounts and host ports are guarded today (`mount_allowed`, `port_allowed`); privileged
// mode, devices and host networking are not part of the component model yet and will be
// guarded here when they are added. (A plain comment: doc text would change the JSON Schema.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecuritySpec {
    /// Host path prefixes that bind mounts may use (absolute paths). Unset: any host path
    /// except the protected ones (`/`, `/etc`, `/proc`, `/sys`, `/dev`, `/boot`, `/root`,
    /// `/var/run/docker.sock`, `/run/docker.sock` and what lies below them). A protected
    /// path is allowed only when listed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_host_paths: Option<Vec<String>>,
    /// Allow host ports below 1024 (default false).
    #[serde(default)]
    pub allow_privileged_ports: bool,
    /// Accept reports (status, events, heartbeat, presence) only when signed by the key of
    /// the node's `Node` document (default false).
    #[serde(default)]
    pub require_signed_reports: bool,
}

/// Rollout pacing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// At most this many nodes apply a new revision at once; the next ones follow as
    /// they converge (default: all at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
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

/// Bounds on a site's Git input. Every one that is exceeded is a [`DocProblem`] (the
/// commit is rejected and the last good revision stays). The readers of Git trees and
/// working trees apply the size and count limits before reading a file into memory;
/// [`load_site_with`] checks them again on what it is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteLimits {
    /// Largest YAML file, bytes (default 1 MiB).
    pub max_file_bytes: u64,
    /// Largest site (all YAML files together), bytes (default 8 MiB).
    pub max_site_bytes: u64,
    /// Most YAML files in a site (default 1,000).
    pub max_site_files: usize,
    /// Most entries (files and folders of any kind) walked in the site folder
    /// (default 10,000).
    pub max_site_entries: usize,
    /// Deepest folder nesting under the site folder (default 16).
    pub max_folder_depth: usize,
    /// Most YAML documents in one file (default 100).
    pub max_docs_per_file: usize,
    /// Most YAML documents in a site (default 5,000).
    pub max_docs_per_site: usize,
    /// Deepest nesting of YAML sequences and mappings (default 64).
    pub max_yaml_depth: usize,
    /// Most YAML nodes one file may produce, each alias counting what it copies
    /// (default 100,000).
    pub max_yaml_nodes: usize,
    /// Most bytes of scalar text one file may produce, aliases included (default 4 MiB).
    pub max_yaml_text_bytes: usize,
    /// Largest desired document the LO may publish to one node, bytes (default 252 KiB:
    /// 4 KiB below the embedded broker's default packet limit of 256 KiB, room for the
    /// topic and the MQTT header); must stay below every packet limit on the way (the
    /// LO's `max_packet_size`, the broker's, the agents').
    pub max_desired_bytes: usize,
    /// Most problems reported for one commit; the rest are counted in a last entry
    /// (default 50).
    pub max_problems: usize,
}

impl Default for SiteLimits {
    fn default() -> Self {
        SiteLimits {
            max_file_bytes: 1024 * 1024,
            max_site_bytes: 8 * 1024 * 1024,
            max_site_files: 1000,
            max_site_entries: 10_000,
            max_folder_depth: 16,
            max_docs_per_file: 100,
            max_docs_per_site: 5000,
            max_yaml_depth: 64,
            max_yaml_nodes: 100_000,
            max_yaml_text_bytes: 4 * 1024 * 1024,
            max_desired_bytes: 252 * 1024,
            max_problems: 50,
        }
    }
}

impl SiteLimits {
    fn yaml(&self) -> yaml::Limits {
        yaml::Limits {
            max_depth: self.max_yaml_depth,
            max_nodes: self.max_yaml_nodes,
            max_text_bytes: self.max_yaml_text_bytes,
            max_docs: self.max_docs_per_file,
        }
    }

    /// Checks the limits themselves (all positive, depth within what the loader's fixed
    /// stacks allow).
    pub fn validate(&self) -> Result<(), String> {
        let counts = [
            ("max_file_bytes", self.max_file_bytes as usize),
            ("max_site_bytes", self.max_site_bytes as usize),
            ("max_site_files", self.max_site_files),
            ("max_site_entries", self.max_site_entries),
            ("max_folder_depth", self.max_folder_depth),
            ("max_docs_per_file", self.max_docs_per_file),
            ("max_docs_per_site", self.max_docs_per_site),
            ("max_yaml_depth", self.max_yaml_depth),
            ("max_yaml_nodes", self.max_yaml_nodes),
            ("max_yaml_text_bytes", self.max_yaml_text_bytes),
            ("max_desired_bytes", self.max_desired_bytes),
            ("max_problems", self.max_problems),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, v)| *v == 0) {
            return Err(format!("limits.{name} must be positive"));
        }
        // serde deserialisation and `Value` drop recurse once per level: keep them shallow.
        if self.max_yaml_depth > 256 {
            return Err("limits.max_yaml_depth must be at most 256".into());
        }
        if self.max_folder_depth > 64 {
            return Err("limits.max_folder_depth must be at most 64".into());
        }
        // The LO's site status lists at most 100 problems: the loader's list, with its
        // closing `… and N more problems` entry, must fit whole.
        if self.max_problems > 99 {
            return Err("limits.max_problems must be at most 99".into());
        }
        Ok(())
    }

    /// The problem of a file above `max_file_bytes`.
    pub fn file_too_large(&self, file: &str, size: u64) -> DocProblem {
        DocProblem {
            file: crate::names::shorten(file, 256),
            line: None,
            field: None,
            message: format!(
                "file is {size} bytes, above the {} byte limit (max_file_bytes)",
                self.max_file_bytes
            ),
        }
    }

    /// The problem of a site above `max_site_bytes`, noticed at `file`.
    pub fn site_too_large(&self, file: &str) -> DocProblem {
        DocProblem {
            file: crate::names::shorten(file, 256),
            line: None,
            field: None,
            message: format!(
                "the site's YAML files exceed {} bytes together (max_site_bytes)",
                self.max_site_bytes
            ),
        }
    }

    /// The problem of a site with more than `max_site_files` YAML files.
    pub fn too_many_files(&self, file: &str) -> DocProblem {
        DocProblem {
            file: crate::names::shorten(file, 256),
            line: None,
            field: None,
            message: format!(
                "more than {} YAML files in the site (max_site_files)",
                self.max_site_files
            ),
        }
    }
}

/// Caps what a rejection carries: at most `max` problems, each with a bounded file, field
/// and message, and a last entry counting the ones left out. Problems end up in the LO's
/// retained status, which must stay far below the MQTT packet limit.
pub fn bound_problems(mut problems: Vec<DocProblem>, max: usize) -> Vec<DocProblem> {
    let max = max.max(1);
    let extra = problems.len().saturating_sub(max);
    problems.truncate(max);
    for p in &mut problems {
        p.file = crate::names::shorten(&p.file, 256);
        p.field = p.field.as_deref().map(|f| crate::names::shorten(f, 256));
        p.message = crate::names::shorten(&p.message, 512);
    }
    if extra > 0 {
        let file = problems.last().map(|p| p.file.clone()).unwrap_or_default();
        problems.push(DocProblem {
            file,
            line: None,
            field: None,
            message: format!("… and {extra} more problems"),
        });
    }
    problems
}

/// Validates every document of a site with the default [`SiteLimits`]; see
/// [`load_site_with`].
pub fn load_site<'a, I>(site: &str, files: I) -> Result<SiteDocs, Vec<DocProblem>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    load_site_with(site, files, &SiteLimits::default())
}

/// Validates every document of a site within `limits`. `files` are `(path, content)` pairs
/// of the YAML files under the site folder; `site` is the folder's name. Any problem rejects
/// the whole set: the caller keeps what it served before. The problems returned are
/// bounded ([`bound_problems`]).
pub fn load_site_with<'a, I>(
    site: &str,
    files: I,
    limits: &SiteLimits,
) -> Result<SiteDocs, Vec<DocProblem>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    load_site_inner(site, files, limits).map_err(|p| bound_problems(p, limits.max_problems))
}

fn load_site_inner<'a, I>(
    site: &str,
    files: I,
    limits: &SiteLimits,
) -> Result<SiteDocs, Vec<DocProblem>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut problems = Vec::new();
    let mut docs = SiteDocs::default();
    let mut deployment_files: Vec<(Deployment, Ctx<'_>)> = Vec::new();
    let yaml_limits = limits.yaml();
    let mut parsed: Vec<(&str, Result<Vec<yaml::YamlDoc>, yaml::YamlError>)> = Vec::new();
    let (mut site_bytes, mut file_count, mut doc_count) = (0u64, 0usize, 0usize);
    for (path, src) in files {
        file_count += 1;
        if file_count > limits.max_site_files {
            problems.push(limits.too_many_files(path));
            break;
        }
        let size = src.len() as u64;
        if size > limits.max_file_bytes {
            problems.push(limits.file_too_large(path, size));
            continue;
        }
        site_bytes += size;
        if site_bytes > limits.max_site_bytes {
            problems.push(limits.site_too_large(path));
            break;
        }
        let result = yaml::parse_with(src, &yaml_limits);
        if let Ok(docs) = &result {
            doc_count += docs.len();
            if doc_count > limits.max_docs_per_site {
                problems.push(DocProblem {
                    file: crate::names::shorten(path, 256),
                    line: docs.first().map(|d| d.line),
                    field: None,
                    message: format!(
                        "more than {} YAML documents in the site (max_docs_per_site)",
                        limits.max_docs_per_site
                    ),
                });
                break;
            }
        }
        parsed.push((path, result));
    }
    for (file, result) in &parsed {
        let ydocs = match result {
            Ok(d) => d,
            Err(e) => {
                problems.push(DocProblem {
                    file: (*file).to_owned(),
                    line: Some(e.line),
                    field: None,
                    message: format!("invalid YAML: {}", e.message),
                });
                continue;
            }
        };
        for ydoc in ydocs {
            let ctx = Ctx { file, doc: ydoc };
            let kind = ydoc
                .value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("");
            match kind {
                "Deployment" => {
                    if let Some(d) = ctx.parse::<Deployment>(&mut problems) {
                        deployment_files.push((d, ctx));
                    }
                }
                "Node" => {
                    if let Some(n) = ctx.parse::<Node>(&mut problems) {
                        if let Some(key) = &n.spec.public_key {
                            if let Err(e) = public_key_ok(key) {
                                ctx.problem(&mut problems, "spec.publicKey", e);
                            }
                        }
                        if ctx.name_ok(&n.metadata.name, &mut problems) {
                            if let Some(prev) = docs.nodes.get(&n.metadata.name) {
                                ctx.problem(
                                    &mut problems,
                                    "metadata.name",
                                    format!(
                                        "node `{}` is already declared in {}",
                                        n.metadata.name, prev.file
                                    ),
                                );
                            } else {
                                docs.nodes.insert(
                                    n.metadata.name.clone(),
                                    NodeEntry {
                                        labels: n.metadata.labels.clone(),
                                        file: (*file).to_owned(),
                                        public_key: n.spec.public_key.clone(),
                                    },
                                );
                            }
                        }
                    }
                }
                "Site" => {
                    if let Some(s) = ctx.parse::<Site>(&mut problems) {
                        if s.metadata.name != site {
                            ctx.problem(
                                &mut problems,
                                "metadata.name",
                                format!(
                                    "Site is named `{}` but lives in the folder of site `{site}`",
                                    s.metadata.name
                                ),
                            );
                        } else if docs.site.is_some() {
                            ctx.problem(&mut problems, "kind", "a second Site document".into());
                        } else {
                            if let Some(p) = s.spec.max_delete_percent {
                                if p > 100 {
                                    ctx.problem(
                                        &mut problems,
                                        "spec.maxDeletePercent",
                                        format!("{p} is not a percentage (0 to 100)"),
                                    );
                                }
                            }
                            if let Some(policy) = &s.spec.policy {
                                resolve_policy(&ctx, "spec.policy", policy, &[], &mut problems);
                            }
                            if let Some(sec) = &s.spec.security {
                                check_security_spec(&ctx, sec, &mut problems);
                            }
                            docs.site = Some(s);
                        }
                    }
                }
                other => ctx.problem(
                    &mut problems,
                    "kind",
                    if other.is_empty() {
                        "missing `kind` (one of Deployment, Node, Site)".to_owned()
                    } else {
                        format!("unknown kind `{other}` (expected Deployment, Node or Site)")
                    },
                ),
            }
        }
    }
    let site_spec = docs.spec();
    let site_policy = site_spec.policy.clone().unwrap_or_default();
    let auto_enroll = site_spec.enrollment.as_ref().is_some_and(|e| e.auto);
    let security = site_spec.security.clone().unwrap_or_default();
    for (d, ctx) in &deployment_files {
        let Some(resolved) = resolve_deployment(ctx, d, &site_policy, &security, &mut problems)
        else {
            continue;
        };
        if let Targets::Nodes(nodes) = &resolved.targets {
            if !auto_enroll {
                for (i, n) in nodes.iter().enumerate() {
                    if !docs.nodes.contains_key(n) {
                        ctx.problem(
                            &mut problems,
                            &format!("spec.nodes[{i}]"),
                            format!("node `{n}` is not declared by a Node document (and the Site does not allow auto-enrollment)"),
                        );
                    }
                }
            }
        }
        if let Some(prev) = docs.deployments.get(&resolved.name) {
            ctx.problem(
                &mut problems,
                "metadata.name",
                format!(
                    "deployment `{}` is already declared in {}",
                    resolved.name, prev.file
                ),
            );
            continue;
        }
        docs.deployments.insert(resolved.name.clone(), resolved);
    }
    if problems.is_empty() {
        Ok(docs)
    } else {
        problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Err(problems)
    }
}

struct Ctx<'a> {
    file: &'a str,
    doc: &'a yaml::YamlDoc,
}

impl Ctx<'_> {
    fn problem(&self, problems: &mut Vec<DocProblem>, field: &str, message: String) {
        problems.push(DocProblem {
            file: self.file.to_owned(),
            line: Some(self.doc.line_of(field)),
            field: Some(field.to_owned()),
            message,
        });
    }

    fn parse<T: DeserializeOwned>(&self, problems: &mut Vec<DocProblem>) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(self.doc.value.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut field = e.path().to_string();
                let message = e.inner().to_string();
                // Name an unknown field itself, whether or not the path already ends with it.
                if let Some(unknown) = message
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                {
                    if field == "." {
                        field = unknown.to_owned();
                    } else if !field.ends_with(unknown) {
                        field = format!("{field}.{unknown}");
                    }
                }
                let message = if message.starts_with("data did not match any variant") {
                    format!("unsupported value shape: {message}")
                } else {
                    message
                };
                self.problem(problems, &field, message);
                None
            }
        }
    }

    fn name_ok(&self, name: &str, problems: &mut Vec<DocProblem>) -> bool {
        match validate_name(name) {
            Ok(()) => true,
            Err(e) => {
                self.problem(problems, "metadata.name", e.to_string());
                false
            }
        }
    }
}

fn resolve_policy(
    ctx: &Ctx<'_>,
    at: &str,
    spec: &PolicySpec,
    fallback: &[&PolicySpec],
    problems: &mut Vec<DocProblem>,
) -> FailurePolicy {
    let default = FailurePolicy::default();
    let attempts = spec
        .attempts
        .or_else(|| fallback.iter().find_map(|p| p.attempts))
        .unwrap_or(default.attempts);
    if !(1..=100).contains(&attempts) {
        ctx.problem(
            problems,
            &format!("{at}.attempts"),
            format!("attempts must be 1 to 100, not {attempts}"),
        );
    }
    let backoff_ms = match spec
        .backoff
        .as_ref()
        .or_else(|| fallback.iter().find_map(|p| p.backoff.as_ref()))
    {
        Some(text) => match parse_duration(text) {
            Ok(d) if d.as_millis() <= u128::from(crate::bounds::MAX_BACKOFF_MS) => {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            }
            Ok(_) => {
                ctx.problem(
                    problems,
                    &format!("{at}.backoff"),
                    format!(
                        "backoff `{}` is above the maximum of 1h",
                        crate::shorten(text, 32)
                    ),
                );
                default.backoff_ms
            }
            Err(e) => {
                ctx.problem(problems, &format!("{at}.backoff"), e);
                default.backoff_ms
            }
        },
        None => default.backoff_ms,
    };
    FailurePolicy {
        attempts,
        backoff_ms,
        on_failure: spec
            .on_failure
            .or_else(|| fallback.iter().find_map(|p| p.on_failure))
            .unwrap_or(default.on_failure),
    }
}

fn resolve_deployment(
    ctx: &Ctx<'_>,
    d: &Deployment,
    site_policy: &PolicySpec,
    security: &SecuritySpec,
    problems: &mut Vec<DocProblem>,
) -> Option<ResolvedDeployment> {
    let before = problems.len();
    ctx.name_ok(&d.metadata.name, problems);
    let spec = &d.spec;
    let targets = match (&spec.nodes, &spec.node_selector) {
        (Some(_), Some(_)) => {
            ctx.problem(
                problems,
                "spec.nodeSelector",
                "use either `nodes` or `nodeSelector`, not both".into(),
            );
            Targets::All
        }
        (Some(nodes), None) => {
            let mut set = BTreeSet::new();
            for (i, n) in nodes.iter().enumerate() {
                if let Err(e) = validate_name(n) {
                    ctx.problem(problems, &format!("spec.nodes[{i}]"), e.to_string());
                }
                if !set.insert(n.clone()) {
                    ctx.problem(
                        problems,
                        &format!("spec.nodes[{i}]"),
                        format!("node `{n}` is listed twice"),
                    );
                }
            }
            Targets::Nodes(set)
        }
        (None, Some(sel)) => Targets::Selector(sel.clone()),
        (None, None) => Targets::All,
    };
    let policy = resolve_policy(
        ctx,
        "spec.policy",
        spec.policy.as_ref().unwrap_or(&PolicySpec::default()),
        &[site_policy],
        problems,
    );
    if spec.components.is_empty() {
        ctx.problem(
            problems,
            "spec.components",
            "a deployment needs at least one component".into(),
        );
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut components = Vec::new();
    for (i, c) in spec.components.iter().enumerate() {
        let at = format!("spec.components[{i}]");
        if let Err(e) = validate_name(&c.name) {
            ctx.problem(problems, &format!("{at}.name"), e.to_string());
        }
        if let Some(first) = names.insert(&c.name, i) {
            ctx.problem(
                problems,
                &format!("{at}.name"),
                format!(
                    "duplicate component name `{}` (also spec.components[{first}])",
                    c.name
                ),
            );
        }
        components.push(resolve_component(ctx, &at, c, security, problems));
    }
    // dependsOn: known names, no self-reference, no cycle.
    for (i, c) in spec.components.iter().enumerate() {
        for (j, dep) in c.depends_on.iter().enumerate() {
            let field = format!("spec.components[{i}].dependsOn[{j}]");
            if dep == &c.name {
                ctx.problem(problems, &field, format!("`{dep}` depends on itself"));
            } else if !names.contains_key(dep.as_str()) {
                ctx.problem(
                    problems,
                    &field,
                    format!("`{dep}` is not a component of this deployment"),
                );
            }
        }
    }
    if let Some(cycle) = find_cycle(&spec.components) {
        let i = names.get(cycle[0].as_str()).copied().unwrap_or(0);
        ctx.problem(
            problems,
            &format!("spec.components[{i}].dependsOn"),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
    }
    (problems.len() == before).then(|| ResolvedDeployment {
        name: d.metadata.name.clone(),
        file: ctx.file.to_owned(),
        targets,
        policy,
        components: components.into_iter().map(Component::with_hash).collect(),
    })
}

/// A cycle in `dependsOn`, as the list of names around it (first repeated at the end).
fn find_cycle(components: &[ComponentSpec]) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, &[String]> = components
        .iter()
        .map(|c| (c.name.as_str(), c.depends_on.as_slice()))
        .collect();
    // 1 = on the path, 2 = done. Depth-first with an explicit path: a commit can chain
    // thousands of components, which must not become thousands of stack frames.
    let mut mark: BTreeMap<&str, u8> = BTreeMap::new();
    for c in components {
        if mark.contains_key(c.name.as_str()) {
            continue;
        }
        mark.insert(&c.name, 1);
        // (component, index of the next dependency to look at)
        let mut path: Vec<(&str, usize)> = vec![(&c.name, 0)];
        while let Some(&(n, i)) = path.last() {
            let ds = deps.get(n).copied().unwrap_or(&[]);
            let Some(d) = ds.get(i).map(String::as_str) else {
                mark.insert(n, 2);
                path.pop();
                continue;
            };
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            if d == n || !deps.contains_key(d) {
                continue;
            }
            match mark.get(d) {
                Some(2) => {}
                Some(_) => {
                    let start = path.iter().position(|(s, _)| *s == d).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|(s, _)| (*s).to_owned()).collect();
                    cycle.push(d.to_owned());
                    return Some(cycle);
                }
                None => {
                    mark.insert(d, 1);
                    path.push((d, 0));
                }
            }
        }
    }
    None
}

fn resolve_component(
    ctx: &Ctx<'_>,
    at: &str,
    c: &ComponentSpec,
    security: &SecuritySpec,
    problems: &mut Vec<DocProblem>,
) -> Component {
    let mut report = |field: &str, message: String| {
        ctx.problem(problems, &format!("{at}.{field}"), message);
    };
    if let Err(e) = validate_image_reference(&c.image) {
        report(
            "image",
            format!("invalid image reference `{}`: {e}", c.image),
        );
    }
    let mut env = BTreeMap::new();
    match &c.env {
        None => {}
        Some(EnvSpec::Map(map)) => {
            for (k, v) in map {
                if k.is_empty() || k.contains('=') {
                    report(&format!("env.{k}"), format!("invalid variable name `{k}`"));
                }
                env.insert(
                    k.clone(),
                    v.as_ref().map(|s| s.to_string()).unwrap_or_default(),
                );
            }
        }
        Some(EnvSpec::List(list)) => {
            for (i, item) in list.iter().enumerate() {
                match item.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        env.insert(k.to_owned(), v.to_owned());
                    }
                    _ => report(&format!("env[{i}]"), format!("`{item}` is not KEY=value")),
                }
            }
        }
    }
    let mut ports = Vec::new();
    for (i, p) in c.ports.iter().enumerate() {
        match parse_port(p) {
            Ok(pm) => {
                if let Err(e) = port_allowed(&pm, security) {
                    report(&format!("ports[{i}]"), e);
                }
                ports.push(pm)
            }
            Err(e) => report(&format!("ports[{i}]"), e),
        }
    }
    let mut volumes = Vec::new();
    for (i, v) in c.volumes.iter().enumerate() {
        match parse_volume(v) {
            Ok(vm) => {
                if let Err(e) = mount_allowed(&vm, security) {
                    report(&format!("volumes[{i}]"), e);
                }
                volumes.push(vm)
            }
            Err(e) => report(&format!("volumes[{i}]"), e),
        }
    }
    let healthcheck = c.healthcheck.as_ref().map(|h| {
        let test = match &h.test {
            TestSpec::Shell(s) => vec!["CMD-SHELL".to_owned(), s.clone()],
            TestSpec::List(l) => l.clone(),
        };
        match test.first().map(String::as_str) {
            Some("CMD") | Some("CMD-SHELL") if test.len() >= 2 => {}
            _ => report(
                "healthcheck.test",
                "expected a command line, or a list starting with CMD or CMD-SHELL and a command"
                    .into(),
            ),
        }
        let mut dur = |field: &str, value: &Option<String>, default_ms: u64| match value {
            None => default_ms,
            Some(text) => match parse_duration(text) {
                Ok(d) if d.as_millis() <= u128::from(crate::bounds::MAX_HEALTHCHECK_MS) => {
                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
                }
                Ok(_) => {
                    report(
                        &format!("healthcheck.{field}"),
                        format!("`{}` is above the maximum of 24h", crate::shorten(text, 32)),
                    );
                    default_ms
                }
                Err(e) => {
                    report(&format!("healthcheck.{field}"), e);
                    default_ms
                }
            },
        };
        Healthcheck {
            test,
            interval_ms: dur("interval", &h.interval, 30_000),
            timeout_ms: dur("timeout", &h.timeout, 30_000),
            start_period_ms: dur("startPeriod", &h.start_period, 0),
            retries: h.retries.unwrap_or(3),
        }
    });
    let mut resources = Resources::default();
    if let Some(r) = &c.resources {
        if let Some(m) = &r.memory {
            match parse_memory(m) {
                Ok(b) => resources.memory_bytes = Some(b),
                Err(e) => report("resources.memory", e),
            }
        }
        if let Some(cpus) = &r.cpus {
            match parse_cpus(cpus) {
                Ok(n) => resources.nano_cpus = Some(n),
                Err(e) => report("resources.cpus", e),
            }
        }
    }
    for key in c.labels.keys() {
        if key.starts_with("io.edgefleet.") {
            report(
                &format!("labels.{key}"),
                "labels under `io.edgefleet.` are reserved for the agent".into(),
            );
        }
    }
    let update_order = c.update_order.unwrap_or_default();
    if update_order == UpdateOrder::StartFirst && ports.iter().any(|p| p.host.is_some()) {
        report(
            "updateOrder",
            "start-first cannot be used with fixed host ports (old and new container would both bind them)".into(),
        );
    }
    Component {
        name: c.name.clone(),
        image: c.image.clone(),
        command: c.command.clone(),
        entrypoint: c.entrypoint.clone(),
        env,
        ports,
        volumes,
        restart: c.restart.unwrap_or_default(),
        healthcheck,
        depends_on: c.depends_on.clone(),
        resources,
        labels: c.labels.clone(),
        update_order,
        spec_hash: String::new(),
    }
}

/// Host paths a bind mount may not use unless `allowedHostPaths` lists them: the host's
/// configuration, kernel interfaces, devices, boot files, root's home and the Docker socket
/// (a container with the socket owns the host).
const PROTECTED_HOST_PATHS: &[&str] = &[
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/var/run/docker.sock",
    "/run/docker.sock",
];

/// The components of an absolute path after resolving `.`, `..` and repeated or trailing
/// `/` (lexically: the host's symlinks are not ours to read). `None` for a relative path.
pub fn host_path_components(path: &str) -> Option<Vec<&str>> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Some(parts)
}

/// Whether `prefix` covers `path`, whole components only (`/data` covers `/data/x`, not
/// `/database`).
fn covers(prefix: &[&str], path: &[&str]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}

fn mount_allowed(m: &VolumeMount, security: &SecuritySpec) -> Result<(), String> {
    if m.kind != VolumeKind::Bind {
        return Ok(());
    }
    let source = crate::names::shorten(&m.source, 256);
    let Some(path) = host_path_components(&m.source) else {
        return Err(format!("bind source `{source}` must be an absolute path"));
    };
    let normal = format!("/{}", path.join("/"));
    let listed = security.allowed_host_paths.as_ref().map(|list| {
        list.iter()
            .filter_map(|p| host_path_components(p))
            .any(|prefix| covers(&prefix, &path))
    });
    match listed {
        Some(true) => return Ok(()),
        Some(false) => {
            return Err(format!(
                "bind mount of host path `{normal}` is not under any of the site's allowedHostPaths (Site.spec.security)"
            ))
        }
        None => {}
    }
    // Protected: the path itself, anything below it, and anything above it (mounting
    // `/run` hands out `/run/docker.sock` too).
    for protected in PROTECTED_HOST_PATHS {
        let prot = host_path_components(protected).unwrap_or_default();
        if covers(&prot, &path) || covers(&path, &prot) {
            return Err(format!(
                "bind mount of host path `{normal}` is refused: it exposes the protected host path {protected} (list it in Site.spec.security.allowedHostPaths to allow it)"
            ));
        }
    }
    Ok(())
}

fn port_allowed(p: &PortMapping, security: &SecuritySpec) -> Result<(), String> {
    match p.host {
        Some(host) if host < 1024 && !security.allow_privileged_ports => Err(format!(
            "host port {host} is privileged (below 1024): set Site.spec.security.allowPrivilegedPorts to allow it"
        )),
        _ => Ok(()),
    }
}

fn check_security_spec(ctx: &Ctx<'_>, sec: &SecuritySpec, problems: &mut Vec<DocProblem>) {
    for (i, p) in sec.allowed_host_paths.iter().flatten().enumerate() {
        if !p.starts_with('/') {
            ctx.problem(
                problems,
                &format!("spec.security.allowedHostPaths[{i}]"),
                format!(
                    "`{}` is not an absolute path",
                    crate::names::shorten(p, 256)
                ),
            );
        }
    }
}

/// Checks a node public key: base64 (standard, padded) of 32 bytes.
fn public_key_ok(key: &str) -> Result<(), String> {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        Ok(b) if b.len() == 32 => Ok(()),
        Ok(b) => Err(format!(
            "a public key is base64 of 32 bytes (en-agent keygen), not {} bytes",
            b.len()
        )),
        Err(_) => Err("a public key is base64 of 32 bytes (en-agent keygen)".into()),
    }
}

/// Parses a compose duration: `30s`, `1m30s`, `500ms`, `2h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration `{text}`: {e}"))
}

fn parse_memory(m: &Scalar) -> Result<u64, String> {
    let text = m.to_string();
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid memory `{text}` (e.g. 64M, 1G, 268435456)"))?;
    let bytes = n * mult as f64;
    if bytes.is_nan() || bytes < 6.0 * 1024.0 * 1024.0 {
        return Err(format!("memory `{text}` is below Docker's minimum of 6M"));
    }
    if !bytes.is_finite() || bytes > crate::bounds::MAX_RESOURCE as f64 {
        return Err(format!(
            "memory `{text}` is above the maximum of 2^63 - 1 bytes"
        ));
    }
    Ok(bytes as u64)
}

fn parse_cpus(c: &Scalar) -> Result<u64, String> {
    let text = c.to_string();
    let n: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid cpus `{text}` (e.g. 0.5)"))?;
    if n.is_nan() || n <= 0.0 || n > 1024.0 {
        return Err(format!("cpus `{text}` must be above 0 and at most 1024"));
    }
    Ok((n * 1e9).round() as u64)
}

fn parse_port_number(s: &str, what: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid {what} port `{s}` (1 to 65535)")),
    }
}

fn parse_port(p: &PortSpec) -> Result<PortMapping, String> {
    match p {
        PortSpec::Number(n) => Ok(PortMapping {
            container: parse_port_number(&n.to_string(), "container")?,
            host: None,
            host_ip: None,
            protocol: Protocol::Tcp,
        }),
        PortSpec::Long(l) => {
            parse_port_number(&l.target.to_string(), "container")?;
            if let Some(ip) = &l.host_ip {
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| format!("invalid host address `{ip}`"))?;
            }
            Ok(PortMapping {
                container: l.target,
                host: l.published,
                host_ip: l.host_ip.clone(),
                protocol: l.protocol.unwrap_or_default(),
            })
        }
        PortSpec::Short(s) => {
            let bad =
                || format!("invalid port `{s}` (expected [host_ip:][host:]container[/tcp|udp])");
            let (rest, protocol) = match s.rsplit_once('/') {
                Some((r, "tcp")) => (r, Protocol::Tcp),
                Some((r, "udp")) => (r, Protocol::Udp),
                Some(_) => return Err(bad()),
                None => (s.as_str(), Protocol::Tcp),
            };
            // IPv6 host addresses are written in brackets: [::1]:8080:80
            let (host_ip, rest) = if let Some(r) = rest.strip_prefix('[') {
                let (ip, r) = r.split_once("]:").ok_or_else(bad)?;
                (Some(ip.to_owned()), r)
            } else {
                match rest.matches(':').count() {
                    2 => {
                        let (ip, r) = rest.split_once(':').ok_or_else(bad)?;
                        (Some(ip.to_owned()), r)
                    }
                    0 | 1 => (None, rest),
                    _ => return Err(bad()),
                }
            };
            if let Some(ip) = &host_ip {
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| format!("invalid host address `{ip}` in port `{s}`"))?;
            }
            let (host, container) = match rest.split_once(':') {
                Some((h, c)) => (Some(parse_port_number(h, "host")?), c),
                None => (None, rest),
            };
            if container.contains('-') {
                return Err(format!("port ranges are not supported: `{s}`"));
            }
            Ok(PortMapping {
                container: parse_port_number(container, "container")?,
                host,
                host_ip,
                protocol,
            })
        }
    }
}

fn parse_volume(v: &VolumeSpec) -> Result<VolumeMount, String> {
    let check_target = |t: &str| {
        if t.starts_with('/') {
            Ok(())
        } else {
            Err(format!("volume target `{t}` must be an absolute path"))
        }
    };
    match v {
        VolumeSpec::Long(l) => {
            check_target(&l.target)?;
            let source = l.source.clone().unwrap_or_default();
            match l.kind {
                VolumeKind::Tmpfs if !source.is_empty() => {
                    return Err("a tmpfs mount takes no source".into())
                }
                VolumeKind::Bind if !source.starts_with('/') => {
                    return Err(format!("bind source `{source}` must be an absolute path"))
                }
                VolumeKind::Volume => validate_name(&source).map_err(|e| e.to_string())?,
                _ => {}
            }
            Ok(VolumeMount {
                kind: l.kind,
                source,
                target: l.target.clone(),
                read_only: l.read_only,
            })
        }
        VolumeSpec::Short(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [src, tgt] => (*src, *tgt, None),
                [src, tgt, mode] => (*src, *tgt, Some(*mode)),
                [_] => {
                    return Err(format!(
                        "anonymous volume `{s}` is not supported: write name:{s} or /host/path:{s}"
                    ))
                }
                _ => {
                    return Err(format!(
                        "invalid volume `{s}` (expected source:target[:ro|rw])"
                    ))
                }
            };
            check_target(target)?;
            let read_only = match mode {
                None | Some("rw") => false,
                Some("ro") => true,
                Some(m) => return Err(format!("invalid volume mode `{m}` in `{s}` (ro or rw)")),
            };
            let kind = if source.starts_with('/') {
                VolumeKind::Bind
            } else if source.starts_with('.') || source.starts_with('~') {
                return Err(format!(
                    "relative host path `{source}` is not supported on a device: use an absolute path"
                ));
            } else {
                validate_name(source).map_err(|e| format!("volume `{s}`: {e}"))?;
                VolumeKind::Volume
            };
            Ok(VolumeMount {
                kind,
                source: source.to_owned(),
                target: target.to_owned(),
                read_only,
            })
        }
    }
}

/// Checks a Docker image reference: `[host[:port]/]path[:tag][@algo:hex]`.
pub fn validate_image_reference(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("empty".into());
    }
    if reference.len() > 512 {
        return Err("longer than 512 characters".into());
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or("digest must be algo:hex")?;
        if algo != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "invalid digest `{d}` (expected sha256:<64 hex digits>)"
            ));
        }
    }
    // A tag follows the last ':' after the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(format!("invalid tag `{tag}`"));
        }
    }
    let mut segments: Vec<&str> = name.split('/').collect();
    // The first segment is a registry host when it has a '.', a ':' or is localhost.
    if segments.len() > 1 {
        let first = segments[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            let (host, port) = match first.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (first, None),
            };
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            {
                return Err(format!("invalid registry host `{first}`"));
            }
            if let Some(p) = port {
                p.parse::<u16>()
                    .map_err(|_| format!("invalid registry port in `{first}`"))?;
            }
            segments.remove(0);
        }
    }
    for seg in &segments {
        let ok = !seg.is_empty()
            && seg.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && seg.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && seg.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if !ok {
            return Err(format!(
                "invalid repository path component `{seg}` (lowercase letters, digits, '.', '_', '-')"
            ));
        }
    }
    Ok(())
}

/// Parses a YAML stream into JSON values (one per non-empty document), with the same
/// scalar rules as [`load_site`]. Used to validate Git documents against the JSON Schemas.
pub fn parse_yaml_values(src: &str) -> Result<Vec<serde_json::Value>, DocProblem> {
    yaml::parse(src)
        .map(|docs| docs.into_iter().map(|d| d.value).collect())
        .map_err(|e| DocProblem {
            file: String::new(),
            line: Some(e.line),
            field: None,
            message: e.message,
        })
}
