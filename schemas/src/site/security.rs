//! The site's security policy ([`SecuritySpec`]) and the checks a commit must pass: bind
//! mounts, host ports, node public keys.

use super::context::Ctx;
use crate::component::{PortMapping, VolumeKind, VolumeMount};
use crate::wire::DocProblem;
use serde::{Deserialize, Serialize};

/// Site security policy (`Site.spec.security`). A commit breaking it is rejected with
/// file, line and field.
// Guarded: bind mounts (`mount_allowed`), host ports (`port_allowed`), devices
// (`device_allowed`), added capabilities (`capability_allowed`); privileged mode and host
// networking by their flags in `site::host::resolve_host`. Everything is refused by default.
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
    /// Allow components with `privileged: true` (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_privileged: bool,
    /// Allow components with `networkMode: host` (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_host_network: bool,
    /// Host devices components may map (absolute paths; a directory covers what lies
    /// below it, whole components: `/dev/bus/usb` covers `/dev/bus/usb/001/002`). Default:
    /// none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_devices: Vec<String>,
    /// Capabilities components may add (`NET_ADMIN` or `CAP_NET_ADMIN`; `ALL` allows
    /// every one, and is needed for `capAdd: [ALL]`). Default: none. Dropping is always
    /// allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_capabilities: Vec<String>,
}

/// Whether the site allows mapping host device `source`.
pub(super) fn device_allowed(source: &str, security: &SecuritySpec) -> bool {
    let Some(path) = host_path_components(source) else {
        return false;
    };
    security.allowed_devices.iter().any(|a| {
        host_path_components(a).is_some_and(|prefix| !prefix.is_empty() && covers(&prefix, &path))
    })
}

/// Whether the site allows adding capability `cap` (normalised: `CAP_X` or `ALL`).
pub(super) fn capability_allowed(cap: &str, security: &SecuritySpec) -> bool {
    security
        .allowed_capabilities
        .iter()
        .any(|a| crate::host::normalize_capability(a).is_ok_and(|a| a == "ALL" || a == cap))
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

/// Why a commit breaks the site's security policy or carries an unusable node key; the
/// message of the problem that names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum PolicyError {
    #[error("bind source `{0}` must be an absolute path")]
    RelativeBindSource(String),
    #[error("bind mount of host path `{0}` is not under any of the site's allowedHostPaths (Site.spec.security)")]
    NotAllowedHostPath(String),
    #[error("bind mount of host path `{path}` is refused: it exposes the protected host path {protected} (list it in Site.spec.security.allowedHostPaths to allow it)")]
    ProtectedHostPath {
        path: String,
        protected: &'static str,
    },
    #[error("host port {0} is privileged (below 1024): set Site.spec.security.allowPrivilegedPorts to allow it")]
    PrivilegedPort(u16),
    #[error("a public key is base64 of 32 bytes (en-agent keygen), not {0} bytes")]
    PublicKeyLength(usize),
    #[error("a public key is base64 of 32 bytes (en-agent keygen)")]
    PublicKey,
}

pub(super) fn mount_allowed(m: &VolumeMount, security: &SecuritySpec) -> Result<(), PolicyError> {
    if m.kind != VolumeKind::Bind {
        return Ok(());
    }
    let source = crate::names::shorten(&m.source, 256);
    let Some(path) = host_path_components(&m.source) else {
        return Err(PolicyError::RelativeBindSource(source));
    };
    let normal = format!("/{}", path.join("/"));
    let listed = security.allowed_host_paths.as_ref().map(|list| {
        list.iter()
            .filter_map(|p| host_path_components(p))
            .any(|prefix| covers(&prefix, &path))
    });
    match listed {
        Some(true) => return Ok(()),
        Some(false) => return Err(PolicyError::NotAllowedHostPath(normal)),
        None => {}
    }
    // Protected: the path itself, anything below it, and anything above it (mounting
    // `/run` hands out `/run/docker.sock` too).
    for protected in PROTECTED_HOST_PATHS {
        let prot = host_path_components(protected).unwrap_or_default();
        if covers(&prot, &path) || covers(&path, &prot) {
            return Err(PolicyError::ProtectedHostPath {
                path: normal,
                protected,
            });
        }
    }
    Ok(())
}

pub(super) fn port_allowed(p: &PortMapping, security: &SecuritySpec) -> Result<(), PolicyError> {
    match p.host {
        Some(host) if host < 1024 && !security.allow_privileged_ports => {
            Err(PolicyError::PrivilegedPort(host))
        }
        _ => Ok(()),
    }
}

pub(super) fn check_security_spec(
    ctx: &Ctx<'_>,
    sec: &SecuritySpec,
    problems: &mut Vec<DocProblem>,
) {
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
    for (i, p) in sec.allowed_devices.iter().enumerate() {
        if !p.starts_with('/') {
            ctx.problem(
                problems,
                &format!("spec.security.allowedDevices[{i}]"),
                format!(
                    "`{}` is not an absolute path",
                    crate::names::shorten(p, 256)
                ),
            );
        }
    }
    for (i, c) in sec.allowed_capabilities.iter().enumerate() {
        if let Err(e) = crate::host::normalize_capability(c) {
            ctx.problem(
                problems,
                &format!("spec.security.allowedCapabilities[{i}]"),
                e.to_string(),
            );
        }
    }
}

/// Checks a node public key: base64 (standard, padded) of 32 bytes.
pub(super) fn public_key_ok(key: &str) -> Result<(), PolicyError> {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        Ok(b) if b.len() == 32 => Ok(()),
        Ok(b) => Err(PolicyError::PublicKeyLength(b.len())),
        Err(_) => Err(PolicyError::PublicKey),
    }
}
