//! Compose-style values as written in Git and their parsing: durations, memory, cpus,
//! ports, volumes and image references.

use crate::component::{PortMapping, Protocol, VolumeKind, VolumeMount};
use crate::names::{validate_name, NameError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

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

/// A duration that is neither a number of seconds nor a compose duration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid duration `{text}`: {source}")]
pub struct DurationError {
    /// The text as written.
    pub text: String,
    /// Why it does not parse.
    #[source]
    pub source: humantime::DurationError,
}

/// Parses a compose duration: `30s`, `1m30s`, `500ms`, `2h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|source| DurationError {
        text: text.to_owned(),
        source,
    })
}

/// Why a compose-style value (memory, cpus, a port, a volume) is refused; the message of the
/// problem that names its field.
#[derive(Debug, thiserror::Error)]
pub(super) enum ValueError {
    #[error("invalid memory `{0}` (e.g. 64M, 1G, 268435456)")]
    Memory(String),
    #[error("memory `{0}` is below Docker's minimum of 6M")]
    MemoryTooSmall(String),
    #[error("memory `{0}` is above the maximum of 2^63 - 1 bytes")]
    MemoryTooLarge(String),
    #[error("invalid cpus `{0}` (e.g. 0.5)")]
    Cpus(String),
    #[error("cpus `{0}` must be above 0 and at most 1024")]
    CpusOutOfRange(String),
    /// `what` is `container` or `host`.
    #[error("invalid {what} port `{port}` (1 to 65535)")]
    PortNumber { what: &'static str, port: String },
    #[error("invalid host address `{0}`")]
    HostAddress(String),
    #[error("invalid host address `{ip}` in port `{port}`")]
    HostAddressInPort { ip: String, port: String },
    #[error("invalid port `{0}` (expected [host_ip:][host:]container[/tcp|udp])")]
    Port(String),
    #[error("port ranges are not supported: `{0}`")]
    PortRange(String),
    #[error("volume target `{0}` must be an absolute path")]
    RelativeTarget(String),
    #[error("a tmpfs mount takes no source")]
    TmpfsSource,
    #[error("bind source `{0}` must be an absolute path")]
    RelativeBindSource(String),
    #[error("{0}")]
    VolumeName(NameError),
    #[error("anonymous volume `{0}` is not supported: write name:{0} or /host/path:{0}")]
    AnonymousVolume(String),
    #[error("invalid volume `{0}` (expected source:target[:ro|rw])")]
    Volume(String),
    #[error("invalid volume mode `{mode}` in `{volume}` (ro or rw)")]
    VolumeMode { mode: String, volume: String },
    #[error("relative host path `{0}` is not supported on a device: use an absolute path")]
    RelativeHostPath(String),
    #[error("volume `{volume}`: {reason}")]
    ShortVolumeName { volume: String, reason: NameError },
}

pub(super) fn parse_memory(m: &Scalar) -> Result<u64, ValueError> {
    let text = m.to_string();
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| ValueError::Memory(text.clone()))?;
    let bytes = n * mult as f64;
    if bytes.is_nan() || bytes < 6.0 * 1024.0 * 1024.0 {
        return Err(ValueError::MemoryTooSmall(text));
    }
    if !bytes.is_finite() || bytes > crate::bounds::MAX_RESOURCE as f64 {
        return Err(ValueError::MemoryTooLarge(text));
    }
    Ok(bytes as u64)
}

pub(super) fn parse_cpus(c: &Scalar) -> Result<u64, ValueError> {
    let text = c.to_string();
    let n: f64 = text
        .trim()
        .parse()
        .map_err(|_| ValueError::Cpus(text.clone()))?;
    if n.is_nan() || n <= 0.0 || n > 1024.0 {
        return Err(ValueError::CpusOutOfRange(text));
    }
    Ok((n * 1e9).round() as u64)
}

fn parse_port_number(s: &str, what: &'static str) -> Result<u16, ValueError> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(ValueError::PortNumber {
            what,
            port: s.to_owned(),
        }),
    }
}

pub(super) fn parse_port(p: &PortSpec) -> Result<PortMapping, ValueError> {
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
                    .map_err(|_| ValueError::HostAddress(ip.clone()))?;
            }
            Ok(PortMapping {
                container: l.target,
                host: l.published,
                host_ip: l.host_ip.clone(),
                protocol: l.protocol.unwrap_or_default(),
            })
        }
        PortSpec::Short(s) => {
            let bad = || ValueError::Port(s.clone());
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
                    .map_err(|_| ValueError::HostAddressInPort {
                        ip: ip.clone(),
                        port: s.clone(),
                    })?;
            }
            let (host, container) = match rest.split_once(':') {
                Some((h, c)) => (Some(parse_port_number(h, "host")?), c),
                None => (None, rest),
            };
            if container.contains('-') {
                return Err(ValueError::PortRange(s.clone()));
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

pub(super) fn parse_volume(v: &VolumeSpec) -> Result<VolumeMount, ValueError> {
    let check_target = |t: &str| {
        if t.starts_with('/') {
            Ok(())
        } else {
            Err(ValueError::RelativeTarget(t.to_owned()))
        }
    };
    match v {
        VolumeSpec::Long(l) => {
            check_target(&l.target)?;
            let source = l.source.clone().unwrap_or_default();
            match l.kind {
                VolumeKind::Tmpfs if !source.is_empty() => return Err(ValueError::TmpfsSource),
                VolumeKind::Bind if !source.starts_with('/') => {
                    return Err(ValueError::RelativeBindSource(source))
                }
                VolumeKind::Volume => validate_name(&source).map_err(ValueError::VolumeName)?,
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
                [_] => return Err(ValueError::AnonymousVolume(s.clone())),
                _ => return Err(ValueError::Volume(s.clone())),
            };
            check_target(target)?;
            let read_only = match mode {
                None | Some("rw") => false,
                Some("ro") => true,
                Some(m) => {
                    return Err(ValueError::VolumeMode {
                        mode: m.to_owned(),
                        volume: s.clone(),
                    })
                }
            };
            let kind = if source.starts_with('/') {
                VolumeKind::Bind
            } else if source.starts_with('.') || source.starts_with('~') {
                return Err(ValueError::RelativeHostPath(source.to_owned()));
            } else {
                validate_name(source).map_err(|reason| ValueError::ShortVolumeName {
                    volume: s.clone(),
                    reason,
                })?;
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

/// Why an image reference is refused by [`validate_image_reference`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// The reference is empty.
    #[error("empty")]
    Empty,
    /// The reference is longer than 512 characters.
    #[error("longer than 512 characters")]
    TooLong,
    /// A digest without `:` between algorithm and hex.
    #[error("digest must be algo:hex")]
    DigestForm,
    /// A digest other than `sha256:` and 64 hex digits.
    #[error("invalid digest `{0}` (expected sha256:<64 hex digits>)")]
    Digest(String),
    /// A tag with characters Docker refuses, empty or longer than 128.
    #[error("invalid tag `{0}`")]
    Tag(String),
    /// A registry host with characters other than letters, digits, `.` and `-`.
    #[error("invalid registry host `{0}`")]
    RegistryHost(String),
    /// A registry port that is not a number from 0 to 65535 (the whole host part is kept).
    #[error("invalid registry port in `{0}`")]
    RegistryPort(String),
    /// A repository path component other than lowercase letters, digits, `.`, `_`, `-`.
    #[error("invalid repository path component `{0}` (lowercase letters, digits, '.', '_', '-')")]
    PathComponent(String),
}

/// Checks a Docker image reference: `[host[:port]/]path[:tag][@algo:hex]`.
pub fn validate_image_reference(reference: &str) -> Result<(), ImageRefError> {
    if reference.is_empty() {
        return Err(ImageRefError::Empty);
    }
    if reference.len() > 512 {
        return Err(ImageRefError::TooLong);
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or(ImageRefError::DigestForm)?;
        if algo != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ImageRefError::Digest(d.to_owned()));
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
            return Err(ImageRefError::Tag(tag.to_owned()));
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
                return Err(ImageRefError::RegistryHost(first.to_owned()));
            }
            if let Some(p) = port {
                p.parse::<u16>()
                    .map_err(|_| ImageRefError::RegistryPort(first.to_owned()))?;
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
            return Err(ImageRefError::PathComponent((*seg).to_owned()));
        }
    }
    Ok(())
}
