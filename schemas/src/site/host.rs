//! The Git forms of a component's host-access fields that are not plain text or numbers
//! (devices, ulimits) and the `shmSize` parser. Their resolution into the wire fields of
//! `crate::host`, with the Site security policy, is `component::resolve_host`.

use super::parse::Scalar;
use crate::host::Ulimit;
use serde::{Deserialize, Serialize};

/// A device as written: short form or long form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum DeviceSpec {
    /// `"/dev/x[:/dev/y[:rwm]]"`.
    Short(String),
    /// Long form.
    Long(DeviceLong),
}

/// The long form of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceLong {
    /// Absolute host path.
    pub source: String,
    /// Absolute path in the container (default: the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// cgroup permissions, a subset of `rwm` (default `rwm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
}

/// A ulimit as written: one number for both limits, or `{soft, hard}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum UlimitSpec {
    /// Soft and hard limit alike.
    Single(i64),
    /// Both.
    Pair(Ulimit),
}

/// A `shmSize` in bytes: a whole number, or a number with `k`, `m` or `g` (optionally
/// followed by `b`), 1 byte to `bounds::MAX_RESOURCE`.
pub(super) fn shm_bytes(s: &Scalar) -> Option<u64> {
    let text = s.to_string().trim().to_ascii_lowercase();
    let t = text.strip_suffix('b').unwrap_or(&text);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.parse().ok()?;
    let bytes = n.checked_mul(mult)?;
    (1..=crate::bounds::MAX_RESOURCE)
        .contains(&bytes)
        .then_some(bytes)
}
