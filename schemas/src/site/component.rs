//! A component as written in a Deployment ([`ComponentSpec`], compose-style) and its
//! resolution into the wire [`Component`]. A component field's Git form and its
//! resolution live here together; the wire form is `crate::component`.

use super::context::Ctx;
use super::host::{shm_bytes, DeviceSpec, UlimitSpec};
use super::parse::{parse_cpus, parse_duration, parse_memory, parse_port, parse_volume};
use super::parse::{validate_image_reference, PortSpec, Scalar, VolumeSpec};
use super::security::{
    capability_allowed, device_allowed, mount_allowed, port_allowed, SecuritySpec,
};
use crate::component::{Component, Healthcheck, Resources, RestartPolicy, UpdateOrder};
use crate::host::{self, Device, Gpus, NetworkMode, Ulimit};
use crate::logging::{LogDriver, Logging, DEFAULT_DRIVER};
use crate::wire::DocProblem;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// Log driver and options (compose's `logging`); replaces the Site's `spec.logging`
    /// as a whole. Without either, the agent's bounded default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
    /// Full access to the host's devices and kernel (compose's `privileged`); refused
    /// unless the Site's `security.allowPrivileged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Capabilities to add (`NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`); each must be listed
    /// in the Site's `security.allowedCapabilities`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities to drop (`NET_RAW`, `ALL`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Host devices: `"/dev/x[:/dev/y[:rwm]]"` or `{source, target, permissions}`; each
    /// source must be under one of the Site's `security.allowedDevices`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceSpec>,
    /// `bridge` (default: the deployment's network), `host` (refused unless the Site's
    /// `security.allowHostNetwork`; no `ports`) or `none` (no `ports`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// `name`, `uid`, `name:group` or `uid:gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Scalar>,
    /// Absolute working directory of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Read-only root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// tmpfs mounts, `"/path[:size=64m,mode=1777,…]"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// Run an init process as PID 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Signal that stops the container (`SIGTERM`, `SIGINT`, `TERM`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Time between the stop signal and SIGKILL (`30s`, `1m30s`; at most `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<String>,
    /// Extra `/etc/hosts` entries, `"name:ip"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Size of `/dev/shm`: bytes or `64m`, `1g`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<Scalar>,
    /// Namespaced kernel parameters (`net.*`, `kernel.msg*`, `kernel.sem`, `kernel.shm*`,
    /// `fs.mqueue.*`; no `net.*` with host networking).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, Scalar>,
    /// Resource limits: `nofile: 1024` or `nofile: {soft: 1024, hard: 4096}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, UlimitSpec>,
    /// GPUs: `all` or a count (NVIDIA driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Scalar>,
}

/// Logging as written, compose's `logging: {driver, options}` (also a Site's
/// `spec.logging`, the default of every component that sets none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoggingSpec {
    /// `json-file` (default), `local`, `journald`, `syslog` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Driver options (`max-size: 10m`, `max-file: 3`, `tag`, …): at most 32, keys
    /// `[a-z0-9_.-]{1,64}`, values of at most 1 KiB. `max-size` (1 byte to `1g`) and
    /// `max-file` (1 to 100) only for `json-file` and `local`, which get `10m` and `3` for
    /// whichever is missing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, LogOptionValue>,
}

/// A log option's value: text, or a whole number or boolean written without quotes
/// (`max-file: 3`, `compress: true`), which Docker receives as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum LogOptionValue {
    /// Text.
    Str(String),
    /// Whole number.
    Int(i64),
    /// Boolean.
    Bool(bool),
}

impl std::fmt::Display for LogOptionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogOptionValue::Str(s) => f.write_str(s),
            LogOptionValue::Int(i) => write!(f, "{i}"),
            LogOptionValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Resolves a `logging` as written at `at` (`spec.components[0].logging` or
/// `spec.logging`) into its wire form, reporting every problem on its field.
pub(super) fn resolve_logging(
    ctx: &Ctx<'_>,
    at: &str,
    spec: &LoggingSpec,
    problems: &mut Vec<DocProblem>,
) -> Option<Logging> {
    let driver = match spec.driver.as_deref() {
        None => DEFAULT_DRIVER,
        Some(name) => match LogDriver::parse(name) {
            Some(d) => d,
            None => {
                let known: Vec<&str> = LogDriver::ALL.iter().map(|d| d.as_str()).collect();
                ctx.problem(
                    problems,
                    &format!("{at}.driver"),
                    format!(
                        "unsupported log driver `{}` (one of {})",
                        crate::shorten(name, 64),
                        known.join(", ")
                    ),
                );
                return None;
            }
        },
    };
    let logging = Logging {
        driver,
        options: spec
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
    };
    match logging.check() {
        Ok(()) => Some(logging),
        Err(e) => {
            let field = match &e.option {
                Some(key) => format!("{at}.options.{key}"),
                None => format!("{at}.options"),
            };
            ctx.problem(problems, &field, e.message);
            None
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

pub(super) fn resolve_component(
    ctx: &Ctx<'_>,
    at: &str,
    c: &ComponentSpec,
    security: &SecuritySpec,
    site_logging: Option<&Logging>,
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
                    report(&format!("ports[{i}]"), e.to_string());
                }
                ports.push(pm)
            }
            Err(e) => report(&format!("ports[{i}]"), e.to_string()),
        }
    }
    let mut volumes = Vec::new();
    for (i, v) in c.volumes.iter().enumerate() {
        match parse_volume(v) {
            Ok(vm) => {
                if let Err(e) = mount_allowed(&vm, security) {
                    report(&format!("volumes[{i}]"), e.to_string());
                }
                volumes.push(vm)
            }
            Err(e) => report(&format!("volumes[{i}]"), e.to_string()),
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
                    report(&format!("healthcheck.{field}"), e.to_string());
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
                Err(e) => report("resources.memory", e.to_string()),
            }
        }
        if let Some(cpus) = &r.cpus {
            match parse_cpus(cpus) {
                Ok(n) => resources.nano_cpus = Some(n),
                Err(e) => report("resources.cpus", e.to_string()),
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
    let logging = match &c.logging {
        Some(l) => resolve_logging(ctx, &format!("{at}.logging"), l, problems),
        None => site_logging.cloned(),
    };
    let mut component = Component {
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
        logging,
        ..Component::default()
    };
    resolve_host(ctx, at, c, security, &mut component, problems);
    component
}

/// Resolves the host-access fields of `c` into `out`, reporting every problem (value or
/// security policy) on its field under `at`.
fn resolve_host(
    ctx: &Ctx<'_>,
    at: &str,
    c: &ComponentSpec,
    security: &SecuritySpec,
    out: &mut Component,
    problems: &mut Vec<DocProblem>,
) {
    let mut report = |field: &str, message: String| {
        ctx.problem(problems, &format!("{at}.{field}"), message);
    };
    if c.privileged == Some(true) {
        if !security.allow_privileged {
            report(
                "privileged",
                "privileged mode is refused by the site's security policy (set Site.spec.security.allowPrivileged to allow it)".into(),
            );
        }
        out.privileged = true;
    }
    for (i, cap) in c.cap_add.iter().enumerate() {
        match host::normalize_capability(cap) {
            Ok(n) => {
                if !capability_allowed(&n, security) {
                    report(
                        &format!("capAdd[{i}]"),
                        format!("capability {n} is refused by the site's security policy (list it in Site.spec.security.allowedCapabilities to allow it)"),
                    );
                }
                out.cap_add.push(n);
            }
            Err(e) => report(&format!("capAdd[{i}]"), e.to_string()),
        }
    }
    for (i, cap) in c.cap_drop.iter().enumerate() {
        match host::normalize_capability(cap) {
            Ok(n) => out.cap_drop.push(n),
            Err(e) => report(&format!("capDrop[{i}]"), e.to_string()),
        }
    }
    for (i, d) in c.devices.iter().enumerate() {
        let parsed = match d {
            DeviceSpec::Short(s) => host::parse_device(s),
            DeviceSpec::Long(l) => {
                let d = Device {
                    source: l.source.clone(),
                    target: l.target.clone().unwrap_or_else(|| l.source.clone()),
                    permissions: l.permissions.clone().unwrap_or_else(|| "rwm".into()),
                };
                host::check_device(&d).map(|()| d)
            }
        };
        match parsed {
            Ok(d) => {
                if !device_allowed(&d.source, security) {
                    report(
                        &format!("devices[{i}]"),
                        format!("device `{}` is refused by the site's security policy (list it or a parent directory in Site.spec.security.allowedDevices to allow it)", d.source),
                    );
                }
                out.devices.push(d);
            }
            Err(e) => report(&format!("devices[{i}]"), e.to_string()),
        }
    }
    match c.network_mode.as_deref() {
        None | Some("bridge") => {}
        Some("host") => {
            if !security.allow_host_network {
                report(
                    "networkMode",
                    "host networking is refused by the site's security policy (set Site.spec.security.allowHostNetwork to allow it)".into(),
                );
            }
            out.network_mode = NetworkMode::Host;
        }
        Some("none") => out.network_mode = NetworkMode::None,
        Some(other) => report(
            "networkMode",
            host::HostError::NetworkMode(crate::shorten(other, 64)).to_string(),
        ),
    }
    if out.network_mode != NetworkMode::Bridge && !c.ports.is_empty() {
        report(
            "ports",
            host::HostError::PortsWithoutNetwork(out.network_mode.as_str()).to_string(),
        );
    }
    if let Some(u) = &c.user {
        let u = u.to_string();
        match host::check_user(&u) {
            Ok(()) => out.user = Some(u),
            Err(e) => report("user", e.to_string()),
        }
    }
    if let Some(w) = &c.working_dir {
        match host::check_working_dir(w) {
            Ok(()) => out.working_dir = Some(w.clone()),
            Err(e) => report("workingDir", e.to_string()),
        }
    }
    out.read_only = c.read_only == Some(true);
    out.init = c.init == Some(true);
    for (i, t) in c.tmpfs.iter().enumerate() {
        match host::parse_tmpfs(t) {
            Ok((path, options)) => {
                if out.tmpfs.insert(path.clone(), options).is_some() {
                    report(&format!("tmpfs[{i}]"), format!("`{path}` is mounted twice"));
                }
            }
            Err(e) => report(&format!("tmpfs[{i}]"), e.to_string()),
        }
    }
    if let Some(s) = &c.stop_signal {
        match host::normalize_signal(s) {
            Ok(n) => out.stop_signal = Some(n),
            Err(e) => report("stopSignal", e.to_string()),
        }
    }
    if let Some(text) = &c.stop_grace_period {
        match parse_duration(text) {
            Ok(d) if d.as_millis() <= u128::from(host::MAX_STOP_GRACE_MS) => {
                out.stop_grace_period_ms = Some(u64::try_from(d.as_millis()).unwrap_or(0));
            }
            Ok(_) => report(
                "stopGracePeriod",
                format!("`{}` is above the maximum of 1h", crate::shorten(text, 32)),
            ),
            Err(e) => report("stopGracePeriod", e.to_string()),
        }
    }
    for (i, h) in c.extra_hosts.iter().enumerate() {
        match host::parse_extra_host(h) {
            Ok(n) => out.extra_hosts.push(n),
            Err(e) => report(&format!("extraHosts[{i}]"), e.to_string()),
        }
    }
    if let Some(s) = &c.shm_size {
        match shm_bytes(s) {
            Some(b) => out.shm_size_bytes = Some(b),
            None => report(
                "shmSize",
                format!(
                    "`{}` is not a size (bytes, or a number with k, m or g) of 1 byte or more",
                    crate::shorten(&s.to_string(), 32)
                ),
            ),
        }
    }
    for (k, v) in &c.sysctls {
        let v = v.to_string();
        match host::check_sysctl(k, &v, out.network_mode) {
            Ok(()) => {
                out.sysctls.insert(k.clone(), v);
            }
            Err(e) => report(&format!("sysctls.{k}"), e.to_string()),
        }
    }
    for (k, u) in &c.ulimits {
        let u = match *u {
            UlimitSpec::Single(n) => Ulimit { soft: n, hard: n },
            UlimitSpec::Pair(p) => p,
        };
        match host::check_ulimit(k, &u) {
            Ok(()) => {
                out.ulimits.insert(k.clone(), u);
            }
            Err(e) => report(&format!("ulimits.{k}"), e.to_string()),
        }
    }
    match &c.gpus {
        None => {}
        Some(Scalar::Str(s)) if s == "all" => out.gpus = Some(Gpus::All),
        Some(Scalar::Int(n)) if *n >= 1 && *n <= 1024 => {
            out.gpus = Some(Gpus::Count(u32::try_from(*n).unwrap_or(1)))
        }
        Some(other) => report(
            "gpus",
            format!(
                "`{}` is not `all` or a GPU count from 1 to 1024",
                crate::shorten(&other.to_string(), 32)
            ),
        ),
    }
}
