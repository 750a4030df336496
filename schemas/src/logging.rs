//! A container's logging: the wire form ([`Logging`]), its rules ([`Logging::check`]) and
//! the bounded default an agent applies ([`effective`]).
//!
//! **Bounded by default.** A stock Docker engine writes `json-file` logs without any size
//! limit, which fills an SD card. So:
//! - a component without `logging` (and a site without a default) runs with
//!   [`DEFAULT_DRIVER`] `max-size` [`DEFAULT_MAX_SIZE`] `max-file` [`DEFAULT_MAX_FILE`]
//!   (at most 30 MB per container);
//! - `json-file` or `local` without `max-size` / `max-file` get those defaults for the
//!   missing one;
//! - there is no way to ask for unbounded local files (`max-size: -1` is refused); logs
//!   that must be kept go to `journald` or `syslog`, which bound themselves.
//!
//! The defaults are applied by the agent when it creates the container ([`effective`]), not
//! written into the resolved component: they are not in the spec hash, so adding them did
//! not change the hash of any existing component, and tuning them in a later version will
//! not restart every container of the fleet. What Git says (a component's `logging`, else
//! the Site's `spec.logging`) is in the resolved component and its hash.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Driver used when nothing says otherwise.
pub const DEFAULT_DRIVER: LogDriver = LogDriver::JsonFile;
/// `max-size` given to `json-file` / `local` logs that set none.
pub const DEFAULT_MAX_SIZE: &str = "10m";
/// `max-file` given to `json-file` / `local` logs that set none.
pub const DEFAULT_MAX_FILE: &str = "3";
/// Most options of one logging configuration.
pub const MAX_LOG_OPTIONS: usize = 32;
/// Longest option key.
pub const MAX_LOG_OPTION_KEY: usize = 64;
/// Longest option value, in bytes.
pub const MAX_LOG_OPTION_VALUE: usize = 1024;
/// Largest `max-size`: 1 GiB per file.
pub const MAX_LOG_SIZE: u64 = 1 << 30;
/// Largest `max-file`.
pub const MAX_LOG_FILES: u32 = 100;

/// A container's log driver and its options (Docker's `HostConfig.LogConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logging {
    /// The log driver.
    pub driver: LogDriver,
    /// Driver options, Docker's names (`max-size`, `max-file`, `compress`, `tag`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// The log drivers an edge device may use: the ones built into every Docker engine that
/// either keep bounded files on the device or hand the lines to the host's logger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    /// JSON lines in files on the device (Docker's default); bounded by `max-size`/`max-file`.
    JsonFile,
    /// Docker's compact binary files; bounded by `max-size`/`max-file`.
    Local,
    /// The host's systemd journal (bounded by journald's own settings).
    Journald,
    /// The host's syslog or a remote one (`syslog-address`).
    Syslog,
    /// No logs at all (`docker logs` shows nothing).
    None,
}

impl LogDriver {
    /// Every driver, in the order the documentation lists them.
    pub const ALL: [LogDriver; 5] = [
        LogDriver::JsonFile,
        LogDriver::Local,
        LogDriver::Journald,
        LogDriver::Syslog,
        LogDriver::None,
    ];

    /// Docker's name of the driver.
    pub fn as_str(self) -> &'static str {
        match self {
            LogDriver::JsonFile => "json-file",
            LogDriver::Local => "local",
            LogDriver::Journald => "journald",
            LogDriver::Syslog => "syslog",
            LogDriver::None => "none",
        }
    }

    /// The driver named `name`, if it is one of [`LogDriver::ALL`].
    pub fn parse(name: &str) -> Option<LogDriver> {
        LogDriver::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Whether the driver keeps rotating files on the device (`max-size`, `max-file`).
    pub fn keeps_files(self) -> bool {
        matches!(self, LogDriver::JsonFile | LogDriver::Local)
    }
}

/// Why a logging configuration is refused: the option it is about (`None`: the whole
/// `options` map) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LoggingError {
    /// The option key at fault, or `None` for the map as a whole.
    pub option: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Logging {
    /// The rules of a logging configuration, the same on the LO (a commit that breaks them
    /// is refused) and on the agent (a document that breaks them is hostile): at most
    /// [`MAX_LOG_OPTIONS`] options, keys `[a-z0-9_.-]{1,64}`, values of at most 1 KiB;
    /// `max-size` a size of 1 byte to 1g and `max-file` a count of 1 to 100, both only for
    /// `json-file` and `local`; no options with `none`.
    pub fn check(&self) -> Result<(), LoggingError> {
        let whole = |message: String| LoggingError {
            option: None,
            message,
        };
        if self.options.len() > MAX_LOG_OPTIONS {
            return Err(whole(format!(
                "{} options, at most {MAX_LOG_OPTIONS} are allowed",
                self.options.len()
            )));
        }
        if self.driver == LogDriver::None && !self.options.is_empty() {
            return Err(whole("driver `none` takes no options".into()));
        }
        for (key, value) in &self.options {
            let refuse = |message: String| LoggingError {
                option: Some(key.clone()),
                message,
            };
            if !option_key_ok(key) {
                return Err(refuse(format!(
                    "invalid option name `{}` (1 to {MAX_LOG_OPTION_KEY} of a-z 0-9 _ . -)",
                    crate::shorten(key, 64)
                )));
            }
            if value.len() > MAX_LOG_OPTION_VALUE {
                return Err(refuse(format!(
                    "value of {} bytes, at most {MAX_LOG_OPTION_VALUE} are allowed",
                    value.len()
                )));
            }
            match key.as_str() {
                "max-size" | "max-file" if !self.driver.keeps_files() => {
                    return Err(refuse(format!(
                        "`{key}` applies to the json-file and local drivers, not to {}",
                        self.driver.as_str()
                    )));
                }
                "max-size" => {
                    parse_log_size(value).map_err(refuse)?;
                }
                "max-file" => match value.parse::<u32>() {
                    Ok(n) if (1..=MAX_LOG_FILES).contains(&n) => {}
                    _ => {
                        return Err(refuse(format!(
                            "`{}` is not a file count from 1 to {MAX_LOG_FILES}",
                            crate::shorten(value, 32)
                        )))
                    }
                },
                _ => {}
            }
        }
        Ok(())
    }
}

fn option_key_ok(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_LOG_OPTION_KEY
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Parses a Docker log size (`max-size`): a whole number of bytes, optionally followed by
/// `k`, `m` or `g` (either case, optionally with a `b`: `10m`, `512k`, `1G`, `100mb`).
/// Returns the size in bytes, the units taken as powers of 1024; 0, negative sizes (Docker's
/// `-1` is "unbounded") and sizes above 1g are refused. Every text accepted here is one
/// Docker accepts.
pub fn parse_log_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "`{}` is not a log size like `10m` (a whole number with k, m or g, from 1 byte to 1g)",
            crate::shorten(text, 32)
        )
    };
    let lower = text.to_ascii_lowercase();
    let unit_part = lower.trim_start_matches(|c: char| c.is_ascii_digit());
    let digits = &lower[..lower.len() - unit_part.len()];
    let shift = match unit_part.strip_suffix('b').unwrap_or(unit_part) {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(bad()),
    };
    if unit_part == "b" && digits.is_empty() {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_shl(shift).filter(|b| b >> shift == n);
    match bytes {
        Some(b) if (1..=MAX_LOG_SIZE).contains(&b) => Ok(b),
        _ => Err(bad()),
    }
}

/// The logging an agent gives a container whose resolved component says `logging`:
/// nothing → [`DEFAULT_DRIVER`] with [`DEFAULT_MAX_SIZE`] and [`DEFAULT_MAX_FILE`];
/// `json-file` / `local` → the same defaults for whichever of `max-size` / `max-file` is
/// missing; any other driver → as written.
pub fn effective(logging: Option<&Logging>) -> Logging {
    let mut l = logging.cloned().unwrap_or(Logging {
        driver: DEFAULT_DRIVER,
        options: BTreeMap::new(),
    });
    if l.driver.keeps_files() {
        l.options
            .entry("max-size".into())
            .or_insert_with(|| DEFAULT_MAX_SIZE.into());
        l.options
            .entry("max-file".into())
            .or_insert_with(|| DEFAULT_MAX_FILE.into());
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logging(driver: LogDriver, options: &[(&str, &str)]) -> Logging {
        Logging {
            driver,
            options: options
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("1", 1),
            ("10m", 10 << 20),
            ("10M", 10 << 20),
            ("10mb", 10 << 20),
            ("512k", 512 << 10),
            ("512KB", 512 << 10),
            ("1g", 1 << 30),
            ("100b", 100),
            ("1024m", 1 << 30),
        ] {
            assert_eq!(parse_log_size(text), Ok(bytes), "{text}");
        }
        for text in [
            "",
            "-1",
            "0",
            "0m",
            "m",
            "b",
            "10 m",
            "1.5m",
            "2g",
            "1025m",
            "10t",
            "10mib",
            "10x",
            "99999999999999999999",
            "18014398509481984k",
        ] {
            assert!(parse_log_size(text).is_err(), "{text} must be refused");
        }
    }

    #[test]
    fn checks() {
        use LogDriver::*;
        let ok = [
            logging(JsonFile, &[]),
            logging(JsonFile, &[("max-size", "10m"), ("max-file", "100")]),
            logging(Local, &[("max-size", "1m"), ("compress", "false")]),
            logging(Journald, &[("tag", "{{.Name}}")]),
            logging(Syslog, &[("syslog-address", "udp://10.0.0.1:514")]),
            logging(None, &[]),
        ];
        for l in ok {
            assert_eq!(l.check(), Ok(()), "{l:?}");
        }
        let long = "x".repeat(MAX_LOG_OPTION_VALUE + 1);
        let bad: [(Logging, Option<&str>, &str); 9] = [
            (
                logging(JsonFile, &[("max-size", "-1")]),
                Some("max-size"),
                "log size",
            ),
            (
                logging(JsonFile, &[("max-file", "0")]),
                Some("max-file"),
                "file count",
            ),
            (
                logging(Local, &[("max-file", "101")]),
                Some("max-file"),
                "file count",
            ),
            (
                logging(Journald, &[("max-size", "1m")]),
                Some("max-size"),
                "not to journald",
            ),
            (
                logging(Syslog, &[("max-file", "2")]),
                Some("max-file"),
                "not to syslog",
            ),
            (logging(None, &[("tag", "x")]), Option::None, "no options"),
            (
                logging(JsonFile, &[("Tag", "x")]),
                Some("Tag"),
                "invalid option name",
            ),
            (
                logging(JsonFile, &[("tag", &long)]),
                Some("tag"),
                "at most 1024",
            ),
            (
                logging(JsonFile, &[(&"k".repeat(65), "x")]),
                Some(&*"k".repeat(65)),
                "invalid option name",
            ),
        ];
        for (l, option, needle) in bad {
            let e = l.check().expect_err("must be refused");
            assert_eq!(e.option.as_deref(), option, "{l:?}");
            assert!(e.message.contains(needle), "{e} lacks {needle}");
        }
        let many: Vec<(String, String)> = (0..=MAX_LOG_OPTIONS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let l = Logging {
            driver: JsonFile,
            options: many.into_iter().collect(),
        };
        let e = l.check().expect_err("33 options");
        assert_eq!(e.option, Option::None);
        assert!(e.message.contains("at most 32"), "{e}");
    }

    #[test]
    fn defaults_bound_the_files() {
        use LogDriver::*;
        assert_eq!(
            effective(Option::None),
            logging(JsonFile, &[("max-size", "10m"), ("max-file", "3")])
        );
        assert_eq!(
            effective(Some(&logging(Local, &[("max-size", "1m")]))),
            logging(Local, &[("max-size", "1m"), ("max-file", "3")])
        );
        assert_eq!(
            effective(Some(&logging(JsonFile, &[("max-file", "5"), ("tag", "t")]))),
            logging(
                JsonFile,
                &[("max-size", "10m"), ("max-file", "5"), ("tag", "t")]
            )
        );
        for l in [
            logging(Journald, &[]),
            logging(None, &[]),
            logging(Syslog, &[("tag", "t")]),
        ] {
            assert_eq!(effective(Some(&l)), l);
        }
    }
}
