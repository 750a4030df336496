//! Configuration: defaults < file (TOML) < environment (`EN_…`) < flags.
//!
//! [`resolve`] is a pure function over the three layers, each a map of key → text, so
//! tests never touch the process environment. Keys are the snake_case names of
//! [`KEYS`]; the environment variable of a key is `EN_` + its upper-case name
//! (`state_dir` → `EN_STATE_DIR`).

use crate::runtime::auth::RegistryAuth;
use registries::registry_entry;
pub use registries::RegistryEntry;
use schemas::BrokerUrl;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

mod registries;

/// Every configuration key.
pub const KEYS: &[&str] = &[
    "site",
    "node",
    "broker",
    "client_id",
    "topic_root",
    "state_dir",
    "docker_host",
    "heartbeat",
    "resync",
    "status_debounce",
    "keep_alive",
    "public_key",
    "public_key_file",
    "report_signing_key_file",
    "broker_password_file",
    "tls_ca_file",
    "max_packet_size",
    "container_prefix",
    "disk_reserve_mb",
    "disk_path",
    "stop_timeout",
    "retry_max_backoff",
    "registry_auth_file",
    "image_gc_interval",
    "image_keep_previous",
];

/// The config file's array of registry entries (`[[registries]]`): file only, no
/// environment or flag form (an entry has three fields).
pub const REGISTRIES_KEY: &str = "registries";

/// Bounds of `retry_max_backoff`: at least a second (no tight loop against a registry that
/// is down), at most a day (a healed cause is picked up within a day).
pub const RETRY_MAX_BACKOFF_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(86_400);

/// Smallest `max_packet_size` accepted (64 KiB).
pub const MIN_PACKET_SIZE: usize = 64 << 10;

/// Largest `max_packet_size` accepted: a desired document is at most 4 MiB
/// ([`crate::store::MAX_DOCUMENT_BYTES`]); room for the topic and headers.
pub const MAX_PACKET_SIZE: usize = (4 << 20) + (64 << 10);

/// The resolved configuration of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Site name.
    pub site: String,
    /// Node name.
    pub node: String,
    /// Broker; `None` runs offline (converges from the state directory only).
    pub broker: Option<BrokerUrl>,
    /// MQTT client id (default `en-<site>-<node>`).
    pub client_id: Option<String>,
    /// Topic root (default `fleet`).
    pub topic_root: String,
    /// State directory (default `/var/lib/edgefleet`).
    pub state_dir: PathBuf,
    /// Docker endpoint (default `unix:///var/run/docker.sock`).
    pub docker_host: String,
    /// Heartbeat interval (default 10 s).
    pub heartbeat: Duration,
    /// Periodic resync (default 30 s).
    pub resync: Duration,
    /// Status debounce (default 250 ms).
    pub status_debounce: Duration,
    /// MQTT keep-alive (default 30 s).
    pub keep_alive: Duration,
    /// ed25519 public key (base64) that desired documents must be signed with.
    pub public_key: Option<String>,
    /// File holding that key.
    pub public_key_file: Option<PathBuf>,
    /// File holding this node's ed25519 private key (base64 of the 32-byte seed, as
    /// `en-agent keygen` writes it); with it every report is signed. A path only: the key
    /// itself never goes on the command line or in the environment (`ps`, logs).
    pub report_signing_key_file: Option<PathBuf>,
    /// File holding the broker password (replaces a password in `broker`), so the password
    /// stays out of `ps`, the environment and logs.
    pub broker_password_file: Option<PathBuf>,
    /// CA certificates (PEM) for `mqtts://`; default: the system store.
    pub tls_ca_file: Option<PathBuf>,
    /// Largest MQTT packet in and out (default 1 MiB).
    pub max_packet_size: usize,
    /// Prefix of container and network names (default `ef-<node>`).
    pub container_prefix: Option<String>,
    /// Free disk to keep after a pull (default 256 MiB).
    pub disk_reserve_bytes: u64,
    /// Where to measure free disk (default: Docker's data root).
    pub disk_path: Option<PathBuf>,
    /// Grace before SIGKILL when stopping a container (default 10 s).
    pub stop_timeout: Duration,
    /// The longest wait between two retries of a transient failure (registry down,
    /// network unreachable) once the attempt budget is spent (default 10 min; 1 s to 24 h).
    pub retry_max_backoff: Duration,
    /// A Docker `config.json` whose `auths` pulls authenticate with (default: none; the
    /// agent does not read `DOCKER_CONFIG` or `~/.docker/config.json` by itself).
    pub registry_auth_file: Option<PathBuf>,
    /// Image garbage collection: `image_gc_interval` (default 10 min; `off` or `0`
    /// disables it) and `image_keep_previous` (default 1, at most 100).
    pub image_gc: crate::images::GcSettings,
    /// The `[[registries]]` entries of the config file (host, user, password file).
    pub registries: Vec<RegistryEntry>,
    /// The credentials read from `registry_auth_file` and `registries` at resolve time
    /// (its `Debug` shows hosts only).
    pub registry_auth: RegistryAuth,
}

impl Config {
    /// Defaults for `site`/`node`, offline.
    pub fn new(site: &str, node: &str) -> Self {
        Config {
            site: site.to_owned(),
            node: node.to_owned(),
            broker: None,
            client_id: None,
            topic_root: schemas::topic::DEFAULT_ROOT.to_owned(),
            state_dir: PathBuf::from("/var/lib/edgefleet"),
            docker_host: "unix:///var/run/docker.sock".to_owned(),
            heartbeat: Duration::from_secs(10),
            resync: Duration::from_secs(30),
            status_debounce: Duration::from_millis(250),
            keep_alive: Duration::from_secs(30),
            public_key: None,
            public_key_file: None,
            report_signing_key_file: None,
            broker_password_file: None,
            tls_ca_file: None,
            max_packet_size: 1 << 20,
            container_prefix: None,
            disk_reserve_bytes: 256 << 20,
            disk_path: None,
            stop_timeout: Duration::from_secs(10),
            retry_max_backoff: crate::retry::DEFAULT_MAX_BACKOFF,
            registry_auth_file: None,
            image_gc: crate::images::GcSettings::default(),
            registries: Vec::new(),
            registry_auth: RegistryAuth::new(),
        }
    }

    /// The public key text, from `public_key` or `public_key_file`.
    pub fn public_key(&self) -> Result<Option<String>, KeyFileError> {
        if let Some(k) = &self.public_key {
            return Ok(Some(k.clone()));
        }
        match &self.public_key_file {
            Some(p) => read_key_file(p).map(Some),
            None => Ok(None),
        }
    }

    /// Both keys, read and parsed: the one desired documents must be signed with and this
    /// node's report signing key. The binary calls this at start so a missing or malformed
    /// key file is a configuration error (exit code 2), not a crash loop later.
    pub fn keys(&self) -> Result<Keys, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.to_owned(),
            reason,
        };
        let key_name = if self.public_key.is_some() {
            "public_key"
        } else {
            "public_key_file"
        };
        let desired = match self
            .public_key()
            .map_err(|e| invalid(key_name, format!("public key: {e}")))?
        {
            Some(text) => Some(
                schemas::sign::verifying_key_from_base64(&text)
                    .map_err(|e| invalid(key_name, e.to_string()))?,
            ),
            None => None,
        };
        let report = match &self.report_signing_key_file {
            Some(p) => {
                let text = read_key_file(p)
                    .map_err(|e| invalid("report_signing_key_file", e.to_string()))?;
                Some(schemas::sign::signing_key_from_base64(&text).map_err(|e| {
                    invalid("report_signing_key_file", format!("{}: {e}", p.display()))
                })?)
            }
            None => None,
        };
        Ok(Keys { desired, report })
    }
}

/// The parsed keys of a configuration (see [`Config::keys`]).
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// Desired documents must verify with this key.
    pub desired: Option<schemas::sign::Ed25519VerifyingKey>,
    /// Reports are signed with this key.
    pub report: Option<schemas::sign::Ed25519SigningKey>,
}

/// Largest key file read: a key is 44 characters; a bound keeps a path to `/dev/zero` or a
/// huge file from hanging or filling memory at start.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why a key file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Opening or reading failed.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Larger than such a file can be (4 KiB for a key or password).
    #[error("{}: larger than {limit} bytes, not a key file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound.
        limit: u64,
    },
}

/// Reads a key file (trimmed text), bounded.
pub(crate) fn read_key_file(path: &std::path::Path) -> Result<String, KeyFileError> {
    read_bounded(path, MAX_KEY_FILE_BYTES)
}

/// Reads a text file of at most `limit` bytes (trimmed).
pub(crate) fn read_bounded(path: &std::path::Path, limit: u64) -> Result<String, KeyFileError> {
    use std::io::Read as _;
    let read_err = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > limit {
        return Err(KeyFileError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(text.trim().to_owned())
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML or holds a non-scalar value.
    #[error("config file: {0}")]
    File(String),
    /// A key no version knows (typo protection).
    #[error("unknown config key {0:?}")]
    UnknownKey(String),
    /// A required key is missing.
    #[error("missing {0} (config file key, EN_{1} or --{2})")]
    Missing(&'static str, String, String),
    /// A value does not parse.
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Parses a TOML config file into a layer (without its `[[registries]]`).
pub fn file_layer(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    parse_file(text).map(|(layer, _)| layer)
}

/// Parses a TOML config file into a layer and its `[[registries]]` entries.
pub fn parse_file(
    text: &str,
) -> Result<(BTreeMap<String, String>, Vec<RegistryEntry>), ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::File(e.to_string()))?;
    let mut out = BTreeMap::new();
    let mut registries = Vec::new();
    for (k, v) in table {
        if k == REGISTRIES_KEY {
            let list = v.as_array().ok_or_else(|| ConfigError::Invalid {
                key: k.clone(),
                reason: "must be an array of tables ([[registries]])".into(),
            })?;
            for (i, entry) in list.iter().enumerate() {
                registries.push(registry_entry(i, entry)?);
            }
            continue;
        }
        if !KEYS.contains(&k.as_str()) {
            return Err(ConfigError::UnknownKey(k));
        }
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(ConfigError::File(format!(
                    "{k}: unsupported value {other:?}"
                )))
            }
        };
        out.insert(k, s);
    }
    Ok((out, registries))
}

/// Picks the `EN_…` variables of the environment map into a layer.
pub fn env_layer(env: &HashMap<String, String>) -> BTreeMap<String, String> {
    KEYS.iter()
        .filter_map(|k| {
            env.get(&format!("EN_{}", k.to_uppercase()))
                .map(|v| ((*k).to_owned(), v.clone()))
        })
        .collect()
}

fn duration(key: &str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v).map_err(|e| ConfigError::Invalid {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e: T::Err| ConfigError::Invalid {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// Resolves defaults < file < env < flags. `flags` use the same keys as the file.
pub fn resolve(
    file: Option<&str>,
    env: &HashMap<String, String>,
    flags: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let (mut m, registries) = match file {
        Some(text) => parse_file(text)?,
        None => (BTreeMap::new(), Vec::new()),
    };
    m.extend(env_layer(env));
    for (k, v) in flags {
        if !KEYS.contains(&k.as_str()) {
            return Err(ConfigError::UnknownKey(k.clone()));
        }
        m.insert(k.clone(), v.clone());
    }
    let required = |k: &'static str| {
        m.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| ConfigError::Missing(k, k.to_uppercase(), k.replace('_', "-")))
    };
    let site = required("site")?;
    let node = required("node")?;
    for (k, v) in [("site", &site), ("node", &node)] {
        schemas::validate_name(v).map_err(|e| ConfigError::Invalid {
            key: k.to_owned(),
            reason: e.to_string(),
        })?;
    }
    let mut c = Config::new(&site, &node);
    c.registries = registries;
    for (k, v) in &m {
        let v = v.as_str();
        match k.as_str() {
            "broker" if !v.is_empty() => {
                c.broker =
                    Some(
                        v.parse()
                            .map_err(|e: schemas::BrokerUrlError| ConfigError::Invalid {
                                key: k.clone(),
                                reason: e.to_string(),
                            })?,
                    )
            }
            "client_id" => c.client_id = Some(v.to_owned()),
            "topic_root" => c.topic_root = v.to_owned(),
            "state_dir" => c.state_dir = PathBuf::from(v),
            "docker_host" => c.docker_host = v.to_owned(),
            "heartbeat" => c.heartbeat = duration(k, v)?,
            "resync" => c.resync = duration(k, v)?,
            "status_debounce" => c.status_debounce = duration(k, v)?,
            "keep_alive" => c.keep_alive = duration(k, v)?,
            "stop_timeout" => c.stop_timeout = duration(k, v)?,
            "retry_max_backoff" => c.retry_max_backoff = duration(k, v)?,
            "public_key" => c.public_key = Some(v.to_owned()),
            "public_key_file" => c.public_key_file = Some(PathBuf::from(v)),
            "broker_password_file" if !v.is_empty() => {
                c.broker_password_file = Some(PathBuf::from(v))
            }
            "report_signing_key_file" if !v.is_empty() => {
                c.report_signing_key_file = Some(PathBuf::from(v))
            }
            "tls_ca_file" => c.tls_ca_file = Some(PathBuf::from(v)),
            "max_packet_size" => c.max_packet_size = number(k, v)?,
            "container_prefix" => c.container_prefix = Some(v.to_owned()),
            "disk_reserve_mb" => {
                c.disk_reserve_bytes =
                    number::<u64>(k, v)?.checked_mul(1 << 20).ok_or_else(|| {
                        ConfigError::Invalid {
                            key: k.clone(),
                            reason: "too large".into(),
                        }
                    })?
            }
            "disk_path" => c.disk_path = Some(PathBuf::from(v)),
            "registry_auth_file" if !v.is_empty() => c.registry_auth_file = Some(PathBuf::from(v)),
            "image_gc_interval" => {
                c.image_gc.interval = match v {
                    "off" | "false" | "0" => None,
                    _ => Some(duration(k, v)?).filter(|d| !d.is_zero()),
                }
            }
            "image_keep_previous" => {
                c.image_gc.keep_previous = number(k, v)?;
                if c.image_gc.keep_previous > crate::images::MAX_KEEP_PREVIOUS {
                    return Err(ConfigError::Invalid {
                        key: k.clone(),
                        reason: format!("at most {}", crate::images::MAX_KEEP_PREVIOUS),
                    });
                }
            }
            _ => {}
        }
    }
    if let Some(p) = c.broker_password_file.clone() {
        let invalid = |reason: String| ConfigError::Invalid {
            key: "broker_password_file".into(),
            reason,
        };
        let broker = c
            .broker
            .as_mut()
            .ok_or_else(|| invalid("set, but no broker is configured".into()))?;
        if broker.username.is_none() {
            return Err(invalid("the broker URL has no user name".into()));
        }
        let password = read_key_file(&p).map_err(|e| invalid(e.to_string()))?;
        if password.is_empty() {
            return Err(invalid(format!("{}: empty", p.display())));
        }
        broker.password = Some(password);
    }
    c.registry_auth = registries::registry_auth(&c)?;
    // A root with wildcards or empty levels would subscribe to other nodes' topics or
    // publish where nobody listens.
    schemas::validate_root(&c.topic_root).map_err(|e| ConfigError::Invalid {
        key: "topic_root".into(),
        reason: e.to_string(),
    })?;
    if let Some(id) = &c.client_id {
        if id.is_empty() || id.len() > 128 {
            return Err(ConfigError::Invalid {
                key: "client_id".into(),
                reason: "must be 1 to 128 characters".into(),
            });
        }
    }
    // Below 64 KiB ordinary documents would not fit: every retained desired document would
    // break the session (rumqttc drops a connection on an oversized packet) in a loop.
    if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&c.max_packet_size) {
        return Err(ConfigError::Invalid {
            key: "max_packet_size".into(),
            reason: format!("must be between {MIN_PACKET_SIZE} and {MAX_PACKET_SIZE} bytes"),
        });
    }
    if !RETRY_MAX_BACKOFF_RANGE.contains(&c.retry_max_backoff) {
        return Err(ConfigError::Invalid {
            key: "retry_max_backoff".into(),
            reason: "must be between 1s and 24h".into(),
        });
    }
    if c.resync.is_zero() || c.heartbeat.is_zero() {
        return Err(ConfigError::Invalid {
            key: "heartbeat/resync".into(),
            reason: "must be greater than zero".into(),
        });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_only_identity_is_given() {
        let c = resolve(
            None,
            &HashMap::new(),
            &flags(&[("site", "s"), ("node", "n")]),
        )
        .expect("config");
        assert_eq!(c, Config::new("s", "n"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/edgefleet"));
        assert_eq!(c.heartbeat, Duration::from_secs(10));
        assert!(c.broker.is_none());
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let file = r#"
            site = "file-site"
            node = "file-node"
            heartbeat = "20s"
            max_packet_size = 2097152
            broker = "mqtt://file:1883"
        "#;
        let env: HashMap<String, String> = [
            ("EN_NODE", "env-node"),
            ("EN_HEARTBEAT", "5s"),
            ("PATH", "/bin"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let c = resolve(Some(file), &env, &flags(&[("heartbeat", "1s")])).expect("config");
        assert_eq!(c.site, "file-site");
        assert_eq!(c.node, "env-node");
        assert_eq!(c.heartbeat, Duration::from_secs(1));
        assert_eq!(c.max_packet_size, 2_097_152);
        assert_eq!(c.broker.map(|b| b.port), Some(1883));
    }

    #[test]
    fn bad_values_and_unknown_keys_are_refused() {
        let env = HashMap::new();
        assert!(matches!(
            resolve(Some("sit = \"x\""), &env, &BTreeMap::new()),
            Err(ConfigError::UnknownKey(_))
        ));
        assert!(matches!(
            resolve(None, &env, &flags(&[("node", "n")])),
            Err(ConfigError::Missing("site", ..))
        ));
        assert!(matches!(
            resolve(
                None,
                &env,
                &flags(&[("site", "s"), ("node", "n"), ("heartbeat", "soon")])
            ),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            resolve(None, &env, &flags(&[("site", "s"), ("node", "a/b")])),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn retry_max_backoff_is_a_bounded_duration() {
        let env = HashMap::new();
        let with = |v: &str| {
            resolve(
                None,
                &env,
                &flags(&[("site", "s"), ("node", "n"), ("retry_max_backoff", v)]),
            )
        };
        assert_eq!(
            resolve(None, &env, &flags(&[("site", "s"), ("node", "n")]))
                .expect("config")
                .retry_max_backoff,
            Duration::from_secs(600)
        );
        assert_eq!(
            with("2s").expect("2s").retry_max_backoff,
            Duration::from_secs(2)
        );
        assert_eq!(
            with("1s").expect("1s").retry_max_backoff,
            Duration::from_secs(1)
        );
        assert_eq!(
            with("24h").expect("24h").retry_max_backoff,
            Duration::from_secs(86_400)
        );
        for bad in ["999ms", "0s", "25h", "soon"] {
            match with(bad) {
                Err(e @ ConfigError::Invalid { .. }) => {
                    let line = e.to_string();
                    assert!(line.starts_with("invalid retry_max_backoff: "), "{line}");
                    assert!(!line.contains('\n'), "{line}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let env: HashMap<String, String> =
            [("EN_RETRY_MAX_BACKOFF".to_owned(), "30s".to_owned())].into();
        let c = resolve(None, &env, &flags(&[("site", "s"), ("node", "n")])).expect("env");
        assert_eq!(c.retry_max_backoff, Duration::from_secs(30));
        let c = resolve(
            Some("site = \"s\"\nnode = \"n\"\nretry_max_backoff = \"5m\""),
            &HashMap::new(),
            &BTreeMap::new(),
        )
        .expect("file");
        assert_eq!(c.retry_max_backoff, Duration::from_secs(300));
    }

    #[test]
    fn broker_password_file_replaces_the_url_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\n").expect("write");
        let c = resolve(
            None,
            &HashMap::new(),
            &flags(&[
                ("site", "s"),
                ("node", "n"),
                ("broker", "mqtt://node-1:old@broker:1883"),
                ("broker_password_file", pw.to_str().expect("path")),
            ]),
        )
        .expect("config");
        let broker = c.broker.clone().expect("broker");
        assert_eq!(broker.username.as_deref(), Some("node-1"));
        assert_eq!(broker.password.as_deref(), Some("from-file"));
        assert!(!format!("{c:?}").contains("from-file"), "Debug hides it");
    }

    #[test]
    fn image_gc_keys() {
        let env = HashMap::new();
        let with = |pairs: &[(&str, &str)]| {
            let mut f = flags(&[("site", "s"), ("node", "n")]);
            f.extend(flags(pairs));
            resolve(None, &env, &f)
        };
        let c = with(&[]).expect("defaults");
        assert_eq!(c.image_gc.interval, Some(Duration::from_secs(600)));
        assert_eq!(c.image_gc.keep_previous, 1);
        for off in ["off", "0", "0s", "false"] {
            let c = with(&[("image_gc_interval", off)]).expect(off);
            assert_eq!(c.image_gc.interval, None, "{off}");
        }
        let c = with(&[("image_gc_interval", "1h"), ("image_keep_previous", "3")]).expect("set");
        assert_eq!(c.image_gc.interval, Some(Duration::from_secs(3600)));
        assert_eq!(c.image_gc.keep_previous, 3);
        assert_eq!(
            with(&[("image_keep_previous", "0")])
                .expect("0")
                .image_gc
                .keep_previous,
            0
        );
        for bad in [
            ("image_keep_previous", "101"),
            ("image_keep_previous", "-1"),
            ("image_gc_interval", "soon"),
        ] {
            assert!(
                matches!(with(&[bad]), Err(ConfigError::Invalid { .. })),
                "{bad:?}"
            );
        }
        let env: HashMap<String, String> =
            [("EN_IMAGE_GC_INTERVAL".to_owned(), "off".to_owned())].into();
        let c = resolve(None, &env, &flags(&[("site", "s"), ("node", "n")])).expect("env");
        assert_eq!(c.image_gc.interval, None);
    }

    #[test]
    fn example_config_file_parses() {
        let text = include_str!("../../en-agent.example.toml");
        let c = resolve(Some(text), &HashMap::new(), &BTreeMap::new()).expect("example parses");
        assert_eq!(c.topic_root, "fleet");
    }
}
