//! A component's access to the edge host's hardware and OS, wire form: devices,
//! privileged mode, capabilities, network mode, user, working directory, read-only root,
//! tmpfs, init, stop signal and grace period, extra hosts, `/dev/shm` size, sysctls,
//! ulimits and GPUs. The value checks here are shared: the LO applies them when it resolves
//! Git (with file, line and field), the agent again on every desired document ([`check`]).
//! Whether a privileged value is *allowed* is the Site's security policy
//! (`site::SecuritySpec`), decided by the LO only.

use serde::{Deserialize, Serialize};

/// Longest stop grace period (1 hour), in milliseconds.
pub const MAX_STOP_GRACE_MS: u64 = 3_600_000;

/// The Linux capabilities (without `CAP_`), as of Linux 6.x.
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Signal names a container may be stopped with (without `SIG`).
pub const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// Resource limit names (`ulimit`), as Docker knows them.
pub const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// tmpfs mount options accepted (with a value: `size`, `mode`, `uid`, `gid`, `nr_inodes`).
const TMPFS_OPTIONS: &[&str] = &[
    "ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev",
];
const TMPFS_VALUE_OPTIONS: &[&str] = &["size", "mode", "uid", "gid", "nr_inodes"];

/// A host device mapped into the container (compose's `devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    /// Absolute path of the device on the host.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// cgroup permissions, a non-empty subset of `rwm` in that order.
    pub permissions: String,
}

/// Network of the container (compose's `network_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The deployment's own network, with DNS names of its components (the default).
    #[default]
    Bridge,
    /// The host's network stack (no isolation, no published ports).
    Host,
    /// No network but loopback.
    None,
}

impl NetworkMode {
    /// `bridge`, `host` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
        }
    }
}

/// A soft and hard resource limit; `-1` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ulimit {
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// GPUs requested from the engine (compose's `gpus`, driver `nvidia`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Gpus {
    /// Every GPU of the host.
    All,
    /// This many (1 or more).
    Count(u32),
}

/// A value of a host-access field that is not acceptable; the message of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error(
        "unknown capability `{0}` (a Linux capability such as NET_ADMIN or CAP_NET_ADMIN, or ALL)"
    )]
    Capability(String),
    #[error("`{0}` is not an absolute path")]
    NotAbsolute(String),
    #[error("device permissions `{0}` are not a non-empty subset of `rwm` (in that order)")]
    DevicePermissions(String),
    #[error("`{0}` is not a device (`/dev/x[:/dev/y[:rwm]]`)")]
    Device(String),
    #[error("unknown network mode `{0}` (bridge, host or none)")]
    NetworkMode(String),
    #[error("`{0}` is not a user (`name`, `uid`, `name:group` or `uid:gid`)")]
    User(String),
    #[error("`{0}` is not a tmpfs mount (`/path[:option,…]`, options size=, mode=, uid=, gid=, nr_inodes=, ro, rw, [no]exec, [no]suid, [no]dev)")]
    Tmpfs(String),
    #[error("unknown signal `{0}` (a name such as SIGTERM, SIGINT or TERM)")]
    Signal(String),
    #[error("stop grace period of {0} ms is above the maximum of 1h")]
    StopGrace(u64),
    #[error("`{0}` is not an extra host (`name:ip`, ip an IPv4 or IPv6 address or host-gateway)")]
    ExtraHost(String),
    #[error("shm size {0} is out of range (1 byte to {max})", max = crate::bounds::MAX_RESOURCE)]
    ShmSize(u64),
    #[error("sysctl `{0}` is not namespaced: only net.*, kernel.msg*, kernel.sem, kernel.shm* and fs.mqueue.* can be set per container")]
    Sysctl(String),
    #[error("sysctl `{0}` is refused with networkMode host (it would change the host's network settings)")]
    SysctlHostNetwork(String),
    #[error("sysctl `{0}`: the value must be 1 to 256 characters without line breaks")]
    SysctlValue(String),
    #[error("unknown ulimit `{0}` (one of core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack)")]
    UlimitName(String),
    #[error(
        "ulimit `{0}`: soft and hard must be -1 (unlimited) or 0 and above, soft not above hard"
    )]
    UlimitValue(String),
    #[error("gpus: a count of 0 requests nothing (write `all` or a count of 1 or more)")]
    GpuCount,
    #[error("published ports are refused with networkMode {0}: the container has no network of its own to publish from")]
    PortsWithoutNetwork(&'static str),
}

/// `NET_ADMIN`, `net_admin` or `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; `ALL` stays `ALL`.
pub fn normalize_capability(name: &str) -> Result<String, HostError> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if CAPABILITIES.contains(&bare) {
        Ok(format!("CAP_{bare}"))
    } else {
        Err(HostError::Capability(crate::shorten(name, 64)))
    }
}

/// `TERM`, `sigterm` or `SIGTERM` → `SIGTERM`.
pub fn normalize_signal(name: &str) -> Result<String, HostError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&bare) {
        Ok(format!("SIG{bare}"))
    } else {
        Err(HostError::Signal(crate::shorten(name, 64)))
    }
}

fn absolute(path: &str) -> Result<(), HostError> {
    if path.starts_with('/') && !path.contains(['\n', '\0', ':']) && path.len() <= 4096 {
        Ok(())
    } else {
        Err(HostError::NotAbsolute(crate::shorten(path, 256)))
    }
}

fn permissions_ok(p: &str) -> bool {
    !p.is_empty() && p.len() <= 3 && {
        let mut rest = "rwm";
        p.chars().all(|c| match rest.find(c) {
            Some(i) => {
                rest = &rest[i + 1..];
                true
            }
            None => false,
        })
    }
}

/// Checks a device mapping (absolute paths, permissions a subset of `rwm`).
pub fn check_device(d: &Device) -> Result<(), HostError> {
    absolute(&d.source)?;
    absolute(&d.target)?;
    if !permissions_ok(&d.permissions) {
        return Err(HostError::DevicePermissions(crate::shorten(
            &d.permissions,
            16,
        )));
    }
    Ok(())
}

/// Parses the short form `/dev/x[:/dev/y[:rwm]]` (target defaults to the source,
/// permissions to `rwm`; `/dev/x:rw` is source and permissions).
pub fn parse_device(text: &str) -> Result<Device, HostError> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, permissions) = match parts[..] {
        [s] => (s, s, "rwm"),
        [s, p] if !p.starts_with('/') => (s, s, p),
        [s, t] => (s, t, "rwm"),
        [s, t, p] => (s, t, p),
        _ => return Err(HostError::Device(crate::shorten(text, 256))),
    };
    let d = Device {
        source: source.to_owned(),
        target: target.to_owned(),
        permissions: permissions.to_owned(),
    };
    check_device(&d)?;
    Ok(d)
}

/// Checks a user: `name|uid[:group|gid]`, each part `[A-Za-z0-9_.-]{1,64}`.
pub fn check_user(user: &str) -> Result<(), HostError> {
    let part_ok = |p: &str| {
        (1..=64).contains(&p.len())
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && !p.starts_with('-')
    };
    let ok = match user.split_once(':') {
        Some((u, g)) => part_ok(u) && part_ok(g),
        None => part_ok(user),
    };
    if ok {
        Ok(())
    } else {
        Err(HostError::User(crate::shorten(user, 64)))
    }
}

/// Checks a working directory (absolute path).
pub fn check_working_dir(dir: &str) -> Result<(), HostError> {
    absolute(dir)
}

/// Parses a tmpfs mount `/path[:options]` into `(path, options)`.
pub fn parse_tmpfs(text: &str) -> Result<(String, String), HostError> {
    let (path, options) = text.split_once(':').unwrap_or((text, ""));
    check_tmpfs(path, options).map_err(|_| HostError::Tmpfs(crate::shorten(text, 256)))?;
    Ok((path.to_owned(), options.to_owned()))
}

/// Checks a tmpfs mount path and its options (`size=64m,mode=1777,noexec`).
pub fn check_tmpfs(path: &str, options: &str) -> Result<(), HostError> {
    let bad = || HostError::Tmpfs(crate::shorten(&format!("{path}:{options}"), 256));
    absolute(path).map_err(|_| bad())?;
    if options.is_empty() {
        return Ok(());
    }
    for opt in options.split(',') {
        let ok = match opt.split_once('=') {
            Some((k, v)) => {
                TMPFS_VALUE_OPTIONS.contains(&k)
                    && !v.is_empty()
                    && v.len() <= 32
                    && v.chars().all(|c| c.is_ascii_alphanumeric())
            }
            None => TMPFS_OPTIONS.contains(&opt),
        };
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// Parses an extra host `name:ip` (or compose's `name=ip`) into `name:ip`.
pub fn parse_extra_host(text: &str) -> Result<String, HostError> {
    let bad = || HostError::ExtraHost(crate::shorten(text, 256));
    let (name, ip) = match (text.split_once('='), text.split_once(':')) {
        (Some(p), _) => p,
        (None, Some(p)) => p,
        (None, None) => return Err(bad()),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !name.starts_with(['-', '.']);
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if !name_ok || (ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err()) {
        return Err(bad());
    }
    Ok(format!("{name}:{ip}"))
}

/// Whether `name` is a namespaced sysctl a container may set.
pub fn sysctl_namespaced(name: &str) -> bool {
    let chars_ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    chars_ok
        && (name.starts_with("net.")
            || name.starts_with("kernel.msg")
            || name == "kernel.sem"
            || name.starts_with("kernel.shm")
            || name.starts_with("fs.mqueue."))
}

/// Checks a sysctl and its value, given the network mode.
pub fn check_sysctl(name: &str, value: &str, network: NetworkMode) -> Result<(), HostError> {
    if !sysctl_namespaced(name) {
        return Err(HostError::Sysctl(crate::shorten(name, 128)));
    }
    if network == NetworkMode::Host && name.starts_with("net.") {
        return Err(HostError::SysctlHostNetwork(name.to_owned()));
    }
    if value.is_empty() || value.len() > 256 || value.contains(['\n', '\r', '\0']) {
        return Err(HostError::SysctlValue(name.to_owned()));
    }
    Ok(())
}

/// Checks a ulimit's name and values.
pub fn check_ulimit(name: &str, u: &Ulimit) -> Result<(), HostError> {
    if !ULIMITS.contains(&name) {
        return Err(HostError::UlimitName(crate::shorten(name, 64)));
    }
    let unlimited = |v: i64| if v == -1 { i64::MAX } else { v };
    if u.soft < -1 || u.hard < -1 || unlimited(u.soft) > unlimited(u.hard) {
        return Err(HostError::UlimitValue(name.to_owned()));
    }
    Ok(())
}

/// The agent's check of a component's host-access fields (the values only: the policy is
/// the LO's). The first problem found.
pub fn check(c: &crate::Component) -> Result<(), HostError> {
    for cap in c.cap_add.iter().chain(&c.cap_drop) {
        normalize_capability(cap)?;
    }
    for d in &c.devices {
        check_device(d)?;
    }
    if c.network_mode != NetworkMode::Bridge && !c.ports.is_empty() {
        return Err(HostError::PortsWithoutNetwork(c.network_mode.as_str()));
    }
    if let Some(u) = &c.user {
        check_user(u)?;
    }
    if let Some(w) = &c.working_dir {
        check_working_dir(w)?;
    }
    for (path, options) in &c.tmpfs {
        check_tmpfs(path, options)?;
    }
    if let Some(s) = &c.stop_signal {
        normalize_signal(s)?;
    }
    if let Some(ms) = c.stop_grace_period_ms {
        if ms > MAX_STOP_GRACE_MS {
            return Err(HostError::StopGrace(ms));
        }
    }
    for h in &c.extra_hosts {
        parse_extra_host(h)?;
    }
    if let Some(s) = c.shm_size_bytes {
        if s == 0 || s > crate::bounds::MAX_RESOURCE {
            return Err(HostError::ShmSize(s));
        }
    }
    for (k, v) in &c.sysctls {
        check_sysctl(k, v, c.network_mode)?;
    }
    for (k, u) in &c.ulimits {
        check_ulimit(k, u)?;
    }
    if c.gpus == Some(Gpus::Count(0)) {
        return Err(HostError::GpuCount);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_and_signals_normalise() {
        assert_eq!(
            normalize_capability("net_admin").expect("valid"),
            "CAP_NET_ADMIN"
        );
        assert_eq!(
            normalize_capability("CAP_SYS_TIME").expect("valid"),
            "CAP_SYS_TIME"
        );
        assert_eq!(normalize_capability("all").expect("valid"), "ALL");
        assert!(normalize_capability("CAP_FLY").is_err());
        assert_eq!(normalize_signal("term").expect("valid"), "SIGTERM");
        assert_eq!(normalize_signal("SIGUSR1").expect("valid"), "SIGUSR1");
        assert!(normalize_signal("SIGFOO").is_err());
    }

    #[test]
    fn device_short_forms() {
        let d = |s: &str, t: &str, p: &str| Device {
            source: s.into(),
            target: t.into(),
            permissions: p.into(),
        };
        assert_eq!(
            parse_device("/dev/null").expect("valid"),
            d("/dev/null", "/dev/null", "rwm")
        );
        assert_eq!(
            parse_device("/dev/null:r").expect("valid"),
            d("/dev/null", "/dev/null", "r")
        );
        assert_eq!(
            parse_device("/dev/a:/dev/b").expect("valid"),
            d("/dev/a", "/dev/b", "rwm")
        );
        assert_eq!(
            parse_device("/dev/a:/dev/b:rw").expect("valid"),
            d("/dev/a", "/dev/b", "rw")
        );
        for bad in [
            "dev/null",
            "/dev/a:/dev/b:wr",
            "/dev/a:/dev/b:rwx",
            "/a:/b:r:x",
            "/dev/a:",
        ] {
            assert!(parse_device(bad).is_err(), "{bad}");
        }
    }
}
