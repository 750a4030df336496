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
    /// The bounds on Git input (`[limits]`) cannot be used.
    #[error("invalid configuration: {0}")]
    Limits(#[from] schemas::site::LimitsError),
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

/// The LO's configuration. Its `Debug` form hides every secret (see [`Config::redacted`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// HTTP listen address (`/healthz`, `/readyz`, `/metrics`, `/status`, `POST /sync`).
    /// Loopback by default: the endpoints are for the host (and its healthcheck) unless
    /// opened on purpose (`0.0.0.0:8080` in a container, with `http_auth`).
    pub http_listen: String,
    /// Basic authentication `user:password` for `/status`, `/metrics` and `POST /sync`
    /// (`/healthz` and `/readyz` stay open for healthchecks).
    pub http_auth: Option<String>,
    /// A file holding `user:password` (first line), instead of `http_auth`.
    pub http_auth_file: Option<PathBuf>,
    /// A node not heard from for this long is offline (3 × the agent's 10 s heartbeat).
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub heartbeat_timeout: Duration,
    /// Accept a commit that removes every deployment.
    pub allow_empty: bool,
    /// Accept a commit that removes more than `maxDeletePercent` of the deployments.
    pub allow_mass_delete: bool,
    /// Base64 of a 32-byte ed25519 seed: sign every desired document.
    pub signing_key: Option<String>,
    /// A file holding `signing_key` (what `lo keygen` or `en-agent keygen --out` writes);
    /// keeps the key out of the environment. Exclusive with `signing_key`.
    pub signing_key_file: Option<PathBuf>,
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
    pub limits: schemas::site::SiteLimits,
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
            http_listen: "127.0.0.1:8080".into(),
            http_auth: None,
            http_auth_file: None,
            heartbeat_timeout: Duration::from_secs(30),
            allow_empty: false,
            allow_mass_delete: false,
            signing_key: None,
            signing_key_file: None,
            signing_key_id: "lo".into(),
            log_format: LogFormat::Text,
            max_packet_size: 1024 * 1024,
            git: GitAuth::default(),
            audit: AuditConfig::default(),
            limits: schemas::site::SiteLimits::default(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Config {}", self.redacted())
    }
}

impl Config {
    /// The configuration as JSON with every secret hidden: the signing key, HTTP credentials,
    /// Git password, token and passphrase as `***`, and passwords in the broker and Git URLs.
    /// What `Debug` prints, so a configuration logged by mistake leaks nothing.
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let hide = |v: &mut serde_json::Value, key: &str| {
            if let Some(x) = v.get_mut(key).filter(|x| !x.is_null()) {
                *x = serde_json::Value::String("***".into());
            }
        };
        for key in ["signing_key", "http_auth"] {
            hide(&mut v, key);
        }
        if let Some(git) = v.get_mut("git") {
            for key in ["password", "token", "ssh_passphrase"] {
                hide(git, key);
            }
        }
        v["broker"] = serde_json::Value::String(schemas::redact_url(&self.broker));
        v["repo"] = serde_json::Value::String(schemas::redact_url(&self.repo));
        v
    }

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

    /// The HTTP credentials, from `http_auth` or `http_auth_file` (read now).
    pub fn http_credentials(&self) -> Result<Option<(String, String)>, ConfigError> {
        let text = match (&self.http_auth, &self.http_auth_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Value(
                    "http_auth and http_auth_file are exclusive".into(),
                ))
            }
            (Some(t), None) => t.clone(),
            (None, Some(path)) => read_secret_file(path, "http_auth_file")?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            (None, None) => return Ok(None),
        };
        match text.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() => {
                Ok(Some((u.to_owned(), p.to_owned())))
            }
            // Never echo the value: it is a password.
            _ => Err(ConfigError::Value(
                "http_auth must be `user:password` with both parts non-empty".into(),
            )),
        }
    }

    /// Checks every value, so a bad one stops the LO at start with a clear message rather
    /// than at first use (or never, for a topic root that subscribes to everything).
    pub fn validate(&self) -> Result<(), ConfigError> {
        schemas::validate_name(&self.site).map_err(|e| ConfigError::Value(format!("site: {e}")))?;
        if self.repo.is_empty() {
            return Err(ConfigError::Value("repo is required".into()));
        }
        if self.branch.is_empty() || self.branch.len() > 255 {
            return Err(ConfigError::Value(
                "branch must be 1 to 255 characters".into(),
            ));
        }
        schemas::validate_root(&self.topic_root)
            .map_err(|e| ConfigError::Value(format!("topic_root: {e}")))?;
        validate_client_id(&self.client_id())?;
        self.broker
            .parse::<schemas::BrokerUrl>()
            .map_err(|e| ConfigError::Value(broker_error(&self.broker, &e)))?;
        if self.poll_interval.is_zero()
            || self.heartbeat_timeout.is_zero()
            || self.poll_interval > MAX_DURATION
            || self.heartbeat_timeout > MAX_DURATION
        {
            return Err(ConfigError::Value(
                "poll_interval and heartbeat_timeout must be positive and at most 1 day".into(),
            ));
        }
        if !(64 * 1024..=MAX_MQTT_PACKET).contains(&self.max_packet_size) {
            return Err(ConfigError::Value(format!(
                "max_packet_size must be between 65536 and {MAX_MQTT_PACKET} (the MQTT maximum)"
            )));
        }
        self.http_listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| {
                ConfigError::Value(format!(
                    "http_listen: `{}` is not an address:port",
                    schemas::shorten(&self.http_listen, 64)
                ))
            })?;
        self.http_credentials()?;
        if self.audit.max_bytes == 0 {
            return Err(ConfigError::Value(
                "audit.max_bytes must be positive".into(),
            ));
        }
        self.limits.validate()?;
        // A desired document must fit in a packet with the topic and MQTT header around it.
        if self.limits.max_desired_bytes + 4096 > self.max_packet_size {
            return Err(ConfigError::Value(format!(
                "limits.max_desired_bytes ({}) must stay at least 4096 bytes below max_packet_size ({})",
                self.limits.max_desired_bytes, self.max_packet_size
            )));
        }
        self.signing()?;
        Ok(())
    }

    /// The desired-document signing key, from `signing_key` or `signing_key_file` (read
    /// now), if any.
    pub fn signing(&self) -> Result<Option<ed25519_dalek::SigningKey>, ConfigError> {
        let text = match (&self.signing_key, &self.signing_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Value(
                    "signing_key and signing_key_file are exclusive".into(),
                ))
            }
            (Some(k), None) => k.clone(),
            (None, Some(path)) => read_secret_file(path, "signing_key_file")?,
            (None, None) => return Ok(None),
        };
        schemas::sign::signing_key_from_base64(text.trim())
            .map(Some)
            .map_err(|e| ConfigError::Value(format!("signing key: {e}")))
    }
}

/// Reads a small secret file (a key, a `user:password` line): at most 4 KiB, so a
/// misconfigured `/dev/zero` or a log file cannot hang or exhaust the LO at start.
fn read_secret_file(path: &std::path::Path, key: &str) -> Result<String, ConfigError> {
    use std::io::Read;
    const MAX: u64 = 4096;
    let err =
        |e: &dyn std::fmt::Display| ConfigError::Value(format!("{key} {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    let mut text = String::new();
    file.take(MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| err(&e))?;
    if text.len() as u64 > MAX {
        return Err(err(&"larger than 4 KiB: not a key or credentials file"));
    }
    Ok(text)
}

/// The error for an invalid broker URL. `BrokerUrlError` redacts what it recognises as a URL
/// (`scheme://user:pass@…`), but a typo such as `mqtt:lo:pass@host` is not one: with an `@`
/// in the text, everything before the last `@` is withheld.
pub fn broker_error(url: &str, e: &schemas::BrokerUrlError) -> String {
    match url.rsplit_once('@') {
        Some((_, host)) => format!(
            "invalid broker address `***@{}` (expected mqtt://[user:pass@]host[:port] or mqtts://…)",
            schemas::shorten(host, 64)
        ),
        None => e.to_string(),
    }
}

/// Longest poll interval or heartbeat timeout accepted.
const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// The largest packet MQTT can carry (remaining length of 268,435,455 bytes).
const MAX_MQTT_PACKET: usize = 268_435_455;

/// A client id every broker takes: 1 to 128 characters, no wildcards, separators, spaces or
/// control characters (they would make ACL patterns such as `%c` match other topics).
fn validate_client_id(id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !matches!(c, '+' | '#' | '/'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Value(format!(
            "client_id `{}` must be 1 to 128 characters without spaces, `+`, `#` or `/`",
            schemas::shorten(id, 64)
        )))
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

    fn base() -> Config {
        resolve(Some("site = \"s1\"\nrepo = \"/r\"\n"), &HashMap::new(), &[]).expect("resolves")
    }

    type Tweak = fn(&mut Config);

    #[test]
    fn invalid_values_are_refused_at_start() {
        base().validate().expect("valid");
        assert_eq!(base().http_listen, "127.0.0.1:8080");
        let bad: Vec<(&str, Tweak)> = vec![
            ("root #", |c| c.topic_root = "#".into()),
            ("root +", |c| c.topic_root = "+".into()),
            ("root empty", |c| c.topic_root = String::new()),
            ("root a//b", |c| c.topic_root = "a//b".into()),
            ("root /fleet", |c| c.topic_root = "/fleet".into()),
            ("site", |c| c.site = "a/b".into()),
            ("client id #", |c| c.client_id = Some("lo#".into())),
            ("client id empty", |c| c.client_id = Some(String::new())),
            ("client id long", |c| c.client_id = Some("x".repeat(200))),
            ("poll 0", |c| c.poll_interval = Duration::ZERO),
            ("timeout 0", |c| c.heartbeat_timeout = Duration::ZERO),
            ("packet small", |c| c.max_packet_size = 1000),
            ("packet huge", |c| c.max_packet_size = usize::MAX),
            ("signing key", |c| {
                c.signing_key = Some("bm90IGEga2V5".into())
            }),
            ("http listen", |c| c.http_listen = "localhost".into()),
            ("http auth", |c| c.http_auth = Some("nopassword".into())),
            ("http auth empty user", |c| c.http_auth = Some(":pw".into())),
            ("audit", |c| c.audit.max_bytes = 0),
        ];
        for (what, f) in bad {
            let mut c = base();
            f(&mut c);
            assert!(c.validate().is_err(), "{what} accepted");
        }
    }

    #[test]
    fn http_auth_errors_never_echo_the_password() {
        let mut c = base();
        c.http_auth = Some("s3cret-without-colon".into());
        let e = c.validate().expect_err("refused").to_string();
        assert!(!e.contains("s3cret"), "{e}");
        for url in [
            "mqtt://lo:hunter2@host:notaport",
            "mqtt:lo:hunter2@host",
            "mqtt//lo:hunter2@host",
            "lo:hunter2@host",
        ] {
            let mut c = base();
            c.broker = url.into();
            let e = c.validate().expect_err("refused").to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2_000, ..Default::default() })]

        /// Whatever the broker text, a configuration error never shows its password.
        #[test]
        fn broker_errors_never_echo_the_password(
            prefix in "(mqtts?|http)?:?/{0,2}[a-z]{0,4}:?",
            pass in "[a-zA-Z0-9/:%?#]{0,6}",
            host in "[a-z0-9.:/\\[\\]-]{0,16}",
        ) {
            let secret = format!("S3cr{pass}");
            let mut c = base();
            c.broker = format!("{prefix}{secret}@{host}");
            if let Err(e) = c.validate() {
                let text = e.to_string();
                proptest::prop_assert!(!text.contains(&secret), "{}", text);
            }
        }
    }

    #[test]
    fn http_credentials_from_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("auth");
        std::fs::write(&path, "ops:pa:ss\n").expect("write");
        let mut c = base();
        c.http_auth_file = Some(path);
        assert_eq!(
            c.http_credentials().expect("reads"),
            Some(("ops".into(), "pa:ss".into()))
        );
        c.http_auth = Some("a:b".into());
        assert!(c.validate().is_err(), "both set");
    }

    #[test]
    fn signing_key_from_a_file_bounded_and_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lo.key");
        let key =
            schemas::sign::signing_key_to_base64(&ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
        std::fs::write(&path, format!("{key}\n")).expect("write");
        let mut c = base();
        c.signing_key_file = Some(path.clone());
        let k = c.signing().expect("reads").expect("a key");
        assert_eq!(k.to_bytes(), [3; 32]);
        c.signing_key = Some(key);
        assert!(c.validate().is_err(), "both set");
        c.signing_key = None;
        // A huge or endless file is refused at start, not read whole.
        c.signing_key_file = Some("/dev/zero".into());
        let err = c.validate().expect_err("endless").to_string();
        assert!(err.contains("larger than 4 KiB"), "{err}");
        std::fs::write(&path, "bm90IGEga2V5").expect("write");
        c.signing_key_file = Some(path);
        assert!(c.validate().is_err(), "not a key");
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let mut c = base();
        c.broker = "mqtt://lo:brokerpw1@h:1883".into();
        c.repo = "https://ci:repotoken1@git.example/r.git".into();
        c.signing_key = Some("signingkey1".into());
        c.http_auth = Some("ops:httppw1".into());
        c.git.password = Some("gitpw1".into());
        c.git.token = Some("gittoken1".into());
        c.git.ssh_passphrase = Some("passphrase1".into());
        let shown = format!("{c:?}");
        for secret in [
            "brokerpw1",
            "repotoken1",
            "signingkey1",
            "httppw1",
            "gitpw1",
            "gittoken1",
            "passphrase1",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("lo:***@h:1883"), "{shown}");
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
