//! The resolved component: what the LO sends and the agent runs, and its `specHash`.
//!
//! A [`Component`] is the fully resolved form of a component written in Git: every
//! default applied, every compose-style string (`"8080:80/tcp"`, `"data:/data:ro"`, `30s`,
//! `256M`) turned into explicit fields. Both sides compute [`spec_hash`] over it, so
//! "same spec" means the same thing to the LO and to the agent.
//!
//! **The spec hash** is `sha256:` followed by the lowercase hex SHA-256 of the component's
//! canonical JSON without its `specHash` field: object keys sorted by byte order at every
//! level, no insignificant white space, fields that hold their default (empty lists and
//! maps, `null`, `false`, the default restart policy and update order) omitted. Omitting
//! defaults is what keeps a hash stable when a later version adds an optional field.

pub use crate::host::{Device, Gpus, NetworkMode, Ulimit};
pub use crate::logging::{LogDriver, Logging};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A container of a deployment, fully resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    /// Component name, unique in its deployment.
    pub name: String,
    /// Image reference as written in Git (`registry:5000/repo/name:tag` or `…@sha256:…`).
    pub image: String,
    /// Overrides the image's CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Overrides the image's ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// Docker restart policy of the container.
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart: RestartPolicy,
    /// Healthcheck; the agent restarts a container that stays unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Components of the same deployment that must be running (healthy, when they have a
    /// healthcheck) before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "is_default")]
    pub resources: Resources,
    /// User labels put on the container (keys under `io.edgefleet.` are reserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How a changed spec replaces the running container.
    #[serde(default, skip_serializing_if = "is_default")]
    pub update_order: UpdateOrder,
    /// Log driver and options as Git says (the component's `logging`, else the Site's
    /// `spec.logging`); absent when neither says anything, and then the agent applies its
    /// bounded default (`crate::logging::effective`), which is in no hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Full access to the host's devices and kernel (Docker's `--privileged`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub privileged: bool,
    /// Capabilities added, `CAP_`-prefixed upper case (or `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities dropped, `CAP_`-prefixed upper case (or `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Host devices mapped into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// `bridge` (the deployment's network, the default), `host` or `none`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub network_mode: NetworkMode,
    /// User (and group) the process runs as: `name`, `uid`, `name:group`, `uid:gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory of the process (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Mount the root filesystem read-only.
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only: bool,
    /// tmpfs mounts: absolute path → mount options (`size=64m,mode=1777`, may be empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    /// Run an init process (tini) as PID 1 that reaps zombies and forwards signals.
    #[serde(default, skip_serializing_if = "is_default")]
    pub init: bool,
    /// Signal that stops the container (`SIGTERM` when unset), `SIG`-prefixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Time between the stop signal and SIGKILL, at most one hour; unset: the agent's
    /// `stop_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period_ms: Option<u64>,
    /// Extra `/etc/hosts` entries, `name:ip`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Size of `/dev/shm` in bytes (Docker's default 64 MiB when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size_bytes: Option<u64>,
    /// Namespaced kernel parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Resource limits of the process (`nofile`, `nproc`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// GPUs requested (NVIDIA driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Gpus>,
    /// [`spec_hash`] of this component; filled by [`Component::with_hash`].
    #[serde(default)]
    pub spec_hash: String,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    /// Port inside the container.
    pub container: u16,
    /// Port on the host; `None` lets Docker pick one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<u16>,
    /// Host address to bind; `None` binds every address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Transport protocol.
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: Protocol,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    /// Named volume, host path or tmpfs.
    pub kind: VolumeKind,
    /// Volume name or absolute host path; empty for tmpfs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only: bool,
}

/// Kind of mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A Docker named volume. The agent names it `<prefix>_<deployment>_<source>` (prefix
    /// `ef-<node>` by default), like compose prefixes volumes with the project name (the
    /// node keeps agents that share one engine apart).
    Volume,
    /// A host path.
    Bind,
    /// An in-memory tmpfs.
    Tmpfs,
}

/// Docker restart policy (compose names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart (compose `"no"`).
    No,
    /// Always restart.
    Always,
    /// Restart when the process exits non-zero.
    OnFailure,
    /// Restart unless stopped by hand (the default: a device reboot brings it back).
    #[default]
    UnlessStopped,
}

impl RestartPolicy {
    /// The Docker / compose name.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }
}

/// How an updated container replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old container, then start the new one (the default; works with fixed ports).
    #[default]
    StopFirst,
    /// Start the new container first and stop the old one once it runs (or is healthy).
    /// Needs a spec without fixed host ports.
    StartFirst,
}

/// A healthcheck, durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Healthcheck {
    /// Docker form: `["CMD", "prog", "arg"]` or `["CMD-SHELL", "command line"]`.
    pub test: Vec<String>,
    /// Time between checks.
    pub interval_ms: u64,
    /// Time a check may take.
    pub timeout_ms: u64,
    /// Consecutive failures before `unhealthy`.
    pub retries: u32,
    /// Grace period after start during which failures do not count.
    #[serde(default, skip_serializing_if = "is_default")]
    pub start_period_ms: u64,
}

/// Resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU limit in units of 10⁻⁹ CPUs (Docker's `NanoCpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<u64>,
}

impl Component {
    /// Returns the component with its `specHash` computed.
    pub fn with_hash(mut self) -> Self {
        self.spec_hash = spec_hash(&self);
        self
    }

    /// True when the stored `specHash` matches the content.
    pub fn hash_is_valid(&self) -> bool {
        self.spec_hash == spec_hash(self)
    }
}

/// The spec hash of a component (see the module documentation), ignoring its
/// current `specHash` field.
pub fn spec_hash(component: &Component) -> String {
    let mut value = serde_json::to_value(component).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        map.remove("specHash");
    }
    let mut hasher = Sha256::new();
    hasher.update(canonical_json(&value).as_bytes());
    format!("sha256:{}", hex(&hasher.finalize()))
}

/// Canonical JSON: keys sorted at every level, no white space. Independent of whether
/// `serde_json` was built with `preserve_order`.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Component {
        Component {
            name: "web".into(),
            image: "registry.local:5000/web:1.0".into(),
            ..Component::default()
        }
    }

    #[test]
    fn spec_hash_is_pinned() {
        // A change of this value breaks agreement between LO and agent versions:
        // change it only with a new wire schema version.
        let c = minimal().with_hash();
        assert_eq!(
            canonical_json(&serde_json::to_value(&c).expect("json")),
            format!(
                "{{\"image\":\"registry.local:5000/web:1.0\",\"name\":\"web\",\"specHash\":\"{}\"}}",
                c.spec_hash
            )
        );
        assert_eq!(
            c.spec_hash,
            "sha256:eee82451786ba205689484accb8179878e357a16863a906979e04d245b5a3969"
        );
    }

    #[test]
    fn spec_hash_ignores_field_order_and_explicit_defaults() {
        let a = minimal().with_hash();
        // The same component parsed from JSON with other key order and explicit defaults.
        let b: Component = serde_json::from_str(
            r#"{"restart":"unless-stopped","updateOrder":"stop-first","env":{},"ports":[],
                "resources":{},"image":"registry.local:5000/web:1.0","name":"web",
                "specHash":"whatever"}"#,
        )
        .expect("parse");
        assert_eq!(spec_hash(&b), a.spec_hash);
        assert!(!b.hash_is_valid());
        assert!(a.hash_is_valid());
    }

    #[test]
    fn spec_hash_changes_with_content() {
        let base = minimal().with_hash().spec_hash;
        let mut env = minimal();
        env.env.insert("A".into(), "1".into());
        let mut image = minimal();
        image.image = "registry.local:5000/web:1.1".into();
        let mut restart = minimal();
        restart.restart = RestartPolicy::Always;
        let mut ports = minimal();
        ports.ports.push(PortMapping {
            container: 80,
            host: Some(8080),
            host_ip: None,
            protocol: Protocol::Tcp,
        });
        let hashes: Vec<String> = [env, image, restart, ports]
            .into_iter()
            .map(|c| c.with_hash().spec_hash)
            .collect();
        for h in &hashes {
            assert_ne!(*h, base);
        }
        let mut sorted = hashes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), hashes.len());
    }

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":{"z":1,"a":[{"y":2,"x":"é\""}]},"a":null}"#)
                .expect("json");
        assert_eq!(
            canonical_json(&v),
            r#"{"a":null,"b":{"a":[{"x":"é\"","y":2}],"z":1}}"#
        );
    }
}
