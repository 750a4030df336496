//! A component as written in a Deployment ([`ComponentSpec`], compose-style) and its
//! resolution into the wire [`Component`]. A component field's Git form and its
//! resolution live here together; the wire form is `crate::component`.

use super::context::Ctx;
use super::parse::{parse_cpus, parse_duration, parse_memory, parse_port, parse_volume};
use super::parse::{validate_image_reference, PortSpec, Scalar, VolumeSpec};
use super::security::{mount_allowed, port_allowed, SecuritySpec};
use crate::component::{Component, Healthcheck, Resources, RestartPolicy, UpdateOrder};
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
        logging,
        spec_hash: String::new(),
    }
}
