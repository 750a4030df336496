//! Configuration: defaults < TOML file < environment (`LO_…`, `__` for nesting) < flags,
//! resolved by the pure [`resolve`], which takes the environment as a map so tests never
//! touch the process environment. `lo.example.toml` at the workspace root documents every key.

use crate::source::GitAuth;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers could not be merged or deserialised.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Value(String),
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Audit log settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Rotate `audit.log` when it reaches this size.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_bytes: 16 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// The LO's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Site name (required).
    pub site: String,
    /// Git repository: a local path or a URL (`file://`, `https://`, `ssh://`) (required).
    pub repo: String,
    /// Branch.
    pub branch: String,
    /// Site folder in the repository (default `sites/<site>`).
    pub site_path: Option<String>,
    /// How often to fetch.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub poll_interval: Duration,
    /// State directory (generations, mirror, audit log).
    pub state_dir: PathBuf,
    /// Broker address, `mqtt://[user:pass@]host[:port]`, or `mqtts://` for TLS.
    pub broker: String,
    /// For `mqtts://`: trust the CA certificates in this PEM file instead of the system store.
    pub tls_ca_file: Option<PathBuf>,
    /// MQTT client id (default `lo-<site>`).
    pub client_id: Option<String>,
    /// Topic root.
    pub topic_root: String,
    /// HTTP listen address (`/healthz`, `/readyz`, `/metrics`, `POST /sync`).
    pub http_listen: String,
    /// A node not heard from for this long is offline (3 × the agent's 10 s heartbeat).
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub heartbeat_timeout: Duration,
    /// Accept a commit that removes every deployment.
    pub allow_empty: bool,
    /// Accept a commit that removes more than `maxDeletePercent` of the deployments.
    pub allow_mass_delete: bool,
    /// Base64 of a 32-byte ed25519 seed: sign every desired document.
    pub signing_key: Option<String>,
    /// Key id put in signatures.
    pub signing_key_id: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Largest MQTT packet sent or received, bytes.
    pub max_packet_size: usize,
    /// Git credentials.
    pub git: GitAuth,
    /// Audit log.
    pub audit: AuditConfig,
    /// Bounds on Git input (`[limits]`; docs/lo.md, "Limits on Git input").
    pub limits: schemas::git::SiteLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            site: String::new(),
            repo: String::new(),
            branch: "main".into(),
            site_path: None,
            poll_interval: Duration::from_secs(5),
            state_dir: PathBuf::from("/var/lib/edgefleet-lo"),
            broker: "mqtt://localhost:1883".into(),
            tls_ca_file: None,
            client_id: None,
            topic_root: schemas::topic::DEFAULT_ROOT.into(),
            http_listen: "0.0.0.0:8080".into(),
            heartbeat_timeout: Duration::from_secs(30),
            allow_empty: false,
            allow_mass_delete: false,
            signing_key: None,
            signing_key_id: "lo".into(),
            log_format: LogFormat::Text,
            max_packet_size: 1024 * 1024,
            git: GitAuth::default(),
            audit: AuditConfig::default(),
            limits: schemas::git::SiteLimits::default(),
        }
    }
}

impl Config {
    /// The site folder.
    pub fn site_path(&self) -> String {
        self.site_path
            .clone()
            .unwrap_or_else(|| format!("sites/{}", self.site))
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("lo-{}", self.site))
    }

    /// Checks required values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        schemas::validate_name(&self.site).map_err(|e| ConfigError::Value(format!("site: {e}")))?;
        if self.repo.is_empty() {
            return Err(ConfigError::Value("repo is required".into()));
        }
        self.broker
            .parse::<schemas::BrokerUrl>()
            .map_err(|e| ConfigError::Value(e.to_string()))?;
        if self.poll_interval.is_zero() || self.heartbeat_timeout.is_zero() {
            return Err(ConfigError::Value("durations must be positive".into()));
        }
        if self.max_packet_size < 64 * 1024 {
            return Err(ConfigError::Value(
                "max_packet_size must be at least 65536".into(),
            ));
        }
        self.limits.validate().map_err(ConfigError::Value)?;
        // A desired document must fit in a packet with the topic and MQTT header around it.
        if self.limits.max_desired_bytes + 4096 > self.max_packet_size {
            return Err(ConfigError::Value(format!(
                "limits.max_desired_bytes ({}) must stay at least 4096 bytes below max_packet_size ({})",
                self.limits.max_desired_bytes, self.max_packet_size
            )));
        }
        if let Some(k) = &self.signing_key {
            schemas::sign::signing_key_from_base64(k)
                .map_err(|e| ConfigError::Value(format!("signing_key: {e}")))?;
        }
        Ok(())
    }
}

/// Resolves the configuration: defaults, then the TOML `file` text, then `env` (keys
/// `LO_<FIELD>`, nested with `__`, e.g. `LO_GIT__TOKEN`), then `flags` (dotted keys).
pub fn resolve(
    file: Option<&str>,
    env: &HashMap<String, String>,
    flags: &[(String, String)],
) -> Result<Config, ConfigError> {
    let mut b = config::Config::builder();
    if let Some(text) = file {
        b = b.add_source(config::File::from_str(text, config::FileFormat::Toml));
    }
    let env: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("LO_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    b = b.add_source(
        config::Environment::with_prefix("LO")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(env)),
    );
    for (k, v) in flags {
        b = b.set_override(k.as_str(), v.as_str())?;
    }
    let cfg: Config = b.build()?.try_deserialize()?;
    Ok(cfg)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Ms(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(t) => match t.trim().parse::<u64>() {
            Ok(ms) => Ok(Duration::from_millis(ms)),
            Err(_) => humantime::parse_duration(t.trim()).map_err(serde::de::Error::custom),
        },
        Raw::Ms(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        let file = "site = \"plant-1\"\nrepo = \"/srv/git\"\nbranch = \"prod\"\npoll_interval = \"2s\"\n[git]\nusername = \"u\"\n";
        let env = HashMap::from([
            ("LO_BRANCH".to_owned(), "staging".to_owned()),
            ("LO_HEARTBEAT_TIMEOUT".to_owned(), "45s".to_owned()),
            ("LO_GIT__TOKEN".to_owned(), "t0k".to_owned()),
            ("LO_ALLOW_EMPTY".to_owned(), "true".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ]);
        let flags = vec![("http_listen".to_owned(), "127.0.0.1:9".to_owned())];
        let c = resolve(Some(file), &env, &flags).expect("resolves");
        assert_eq!(c.site, "plant-1");
        assert_eq!(c.tls_ca_file, None);
        assert_eq!(c.branch, "staging");
        assert_eq!(c.poll_interval, Duration::from_secs(2));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(45));
        assert_eq!(c.git.username.as_deref(), Some("u"));
        assert_eq!(c.git.token.as_deref(), Some("t0k"));
        assert!(c.allow_empty);
        assert_eq!(c.http_listen, "127.0.0.1:9");
        assert_eq!(c.site_path(), "sites/plant-1");
        c.validate().expect("valid");
    }

    #[test]
    fn example_file_parses() {
        let c = resolve(
            Some(include_str!("../../lo.example.toml")),
            &HashMap::new(),
            &[],
        )
        .expect("example parses");
        assert_eq!(c.poll_interval, Duration::from_secs(5));
        c.validate().expect("valid");
    }

    #[test]
    fn tls_ca_file_from_file_and_env() {
        let file = "site = \"s\"\nrepo = \"/r\"\nbroker = \"mqtts://lo:pw@broker\"\ntls_ca_file = \"/etc/ca.pem\"\n";
        let c = resolve(Some(file), &HashMap::new(), &[]).expect("resolves");
        assert_eq!(c.tls_ca_file, Some(PathBuf::from("/etc/ca.pem")));
        c.validate().expect("valid");
        let env = HashMap::from([("LO_TLS_CA_FILE".to_owned(), "/other.pem".to_owned())]);
        let c = resolve(Some(file), &env, &[]).expect("resolves");
        assert_eq!(c.tls_ca_file, Some(PathBuf::from("/other.pem")));
    }

    #[test]
    fn unknown_key_is_an_error() {
        assert!(resolve(Some("sitee = \"x\""), &HashMap::new(), &[]).is_err());
    }

    #[test]
    fn limits_section_resolves_and_desired_limit_must_fit_a_packet() {
        let file = "site = \"s\"\nrepo = \"/r\"\n[limits]\nmax_file_bytes = 2048\nmax_desired_bytes = 100000\n";
        let env = HashMap::from([("LO_LIMITS__MAX_YAML_DEPTH".to_owned(), "32".to_owned())]);
        let c = resolve(Some(file), &env, &[]).expect("resolves");
        assert_eq!(c.limits.max_file_bytes, 2048);
        assert_eq!(c.limits.max_yaml_depth, 32);
        assert_eq!(
            c.limits.max_site_files, 1000,
            "unset keys keep their default"
        );
        c.validate().expect("valid");
        let too_big = "site = \"s\"\nrepo = \"/r\"\nmax_packet_size = 262144\n[limits]\nmax_desired_bytes = 262144\n";
        let err = resolve(Some(too_big), &HashMap::new(), &[])
            .expect("resolves")
            .validate()
            .expect_err("desired above the packet limit");
        assert!(err.to_string().contains("max_desired_bytes"), "{err}");
        let zero = "site = \"s\"\nrepo = \"/r\"\n[limits]\nmax_yaml_nodes = 0\n";
        assert!(resolve(Some(zero), &HashMap::new(), &[])
            .expect("resolves")
            .validate()
            .is_err());
        assert!(resolve(Some("[limits]\nmax_bogus = 1\n"), &HashMap::new(), &[]).is_err());
    }
}
