//! Registry credentials: which ones a pull sends.
//!
//! Credentials live on the device only, never in Git or on MQTT. Two sources, both read once
//! at start (see `config`): the agent's own `[[registries]]` entries (password from a file)
//! and a Docker `config.json` (`registry_auth_file`, its `auths` map). An agent entry wins
//! over a `config.json` entry for the same host. `credsStore` and `credHelpers` are not
//! run (no helper binaries are executed by the agent): they are listed in
//! [`RegistryAuth::ignored`] so the agent can warn once at start.
//!
//! Nothing here ever formats a secret: [`Credential`] and [`RegistryAuth`] have redacting
//! `Debug` impls, parse errors name the file and the `auths` key, never a value, and a
//! refused pull is reported by [`denied_message`] with the registry host and a fixed reason
//! word, not with the engine's text.

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use std::collections::BTreeMap;

/// The host Docker Hub images are pulled from, as [`registry_of`] names it.
pub const DOCKER_HUB: &str = "docker.io";

/// The `config.json` key Docker itself uses for Docker Hub (sent as `serveraddress`).
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// Other names of Docker Hub in `config.json` keys.
const DOCKER_HUB_ALIASES: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// Largest `config.json` read (1 MiB): a bound keeps a path to `/dev/zero` or a huge file
/// from hanging or filling memory at start.
pub const MAX_DOCKER_CONFIG_BYTES: u64 = 1 << 20;

/// The credentials of one registry. `Debug` shows none of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    username: Option<String>,
    password: Option<String>,
    identity_token: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl Credential {
    /// A user name and password (HTTP basic auth, or a token exchange by the engine).
    pub fn basic(username: &str, password: &str) -> Self {
        Credential {
            username: Some(username.to_owned()),
            password: Some(password.to_owned()),
            identity_token: None,
        }
    }

    /// An OAuth identity token (`identitytoken` in `config.json`).
    pub fn identity_token(username: Option<&str>, token: &str) -> Self {
        Credential {
            username: username.map(str::to_owned),
            password: None,
            identity_token: Some(token.to_owned()),
        }
    }

    fn to_docker(&self, host: &str) -> DockerCredentials {
        DockerCredentials {
            username: self.username.clone(),
            password: self.password.clone(),
            identitytoken: self.identity_token.clone(),
            serveraddress: Some(if host == DOCKER_HUB {
                DOCKER_HUB_SERVER.to_owned()
            } else {
                host.to_owned()
            }),
            ..Default::default()
        }
    }
}

/// Where a credential came from; an agent entry beats a `config.json` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// `registry_auth_file` (a Docker `config.json`).
    DockerConfig,
    /// A `[[registries]]` entry of the agent's configuration.
    AgentConfig,
}

/// Every registry credential of the agent, by normalized host (`127.0.0.1:5000`,
/// `docker.io`). `Debug` lists hosts and sources only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    by_host: BTreeMap<String, (Source, Credential)>,
    ignored: Vec<String>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field(
                "hosts",
                &self
                    .by_host
                    .iter()
                    .map(|(h, (s, _))| (h.as_str(), *s))
                    .collect::<Vec<_>>(),
            )
            .field("ignored", &self.ignored)
            .finish()
    }
}

impl RegistryAuth {
    /// No credentials.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no registry has credentials.
    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    /// The hosts that have credentials (for the start log line).
    pub fn hosts(&self) -> Vec<String> {
        self.by_host.keys().cloned().collect()
    }

    /// What of a `config.json` was ignored (`credsStore "desktop"`, `credHelpers for
    /// gcr.io`): the agent warns once at start.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// Adds the credential of `host` (any `config.json` key form: `reg:5000`,
    /// `https://reg:5000/v1/`, Docker Hub's aliases). An [`Source::AgentConfig`] entry
    /// replaces a [`Source::DockerConfig`] one, never the other way round.
    pub fn insert(
        &mut self,
        host: &str,
        source: Source,
        credential: Credential,
    ) -> Result<(), String> {
        let host = normalize_host(host)?;
        match self.by_host.get(&host) {
            Some((existing, _)) if *existing > source => {}
            Some((existing, _)) if *existing == source && source == Source::AgentConfig => {
                return Err(format!("registry {host} is listed twice"));
            }
            _ => {
                self.by_host.insert(host, (source, credential));
            }
        }
        Ok(())
    }

    /// Adds the `auths` of a Docker `config.json` text. Errors name the `auths` key and
    /// the field, never a value (serde's own messages can quote the input, so only their
    /// line and column are kept).
    pub fn add_docker_config(&mut self, text: &str) -> Result<(), String> {
        let root: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            format!(
                "not a Docker config.json (invalid JSON at line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        let root = root
            .as_object()
            .ok_or("not a Docker config.json (not a JSON object)")?;
        if let Some(store) = root.get("credsStore") {
            let name = store.as_str().unwrap_or("?");
            self.ignored.push(format!("credsStore {name:?}"));
        }
        if let Some(helpers) = root.get("credHelpers") {
            let hosts: Vec<&str> = helpers
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            self.ignored
                .push(format!("credHelpers for {}", hosts.join(", ")));
        }
        let auths = match root.get("auths") {
            None | Some(serde_json::Value::Null) => return Ok(()),
            Some(a) => a.as_object().ok_or("auths: not a JSON object")?,
        };
        for (key, entry) in auths {
            let at = |what: &str| format!("auths.{key:?}: {what}");
            let entry = entry.as_object().ok_or_else(|| at("not a JSON object"))?;
            let text = |field: &str| -> Result<Option<&str>, String> {
                match entry.get(field) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(s)),
                    Some(_) => Err(at(&format!("{field} is not a string"))),
                }
            };
            let (auth, user, pass, token) = (
                text("auth")?,
                text("username")?,
                text("password")?,
                text("identitytoken")?,
            );
            let credential = if let Some(token) = token {
                Credential::identity_token(user, token)
            } else if let Some(auth) = auth {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| at("auth is not base64 of user:password"))?;
                let (u, p) = decoded
                    .split_once(':')
                    .filter(|(u, p)| !u.is_empty() && !p.is_empty())
                    .ok_or_else(|| at("auth is not base64 of user:password"))?;
                Credential::basic(u, p)
            } else {
                match (user, pass) {
                    (Some(u), Some(p)) => Credential::basic(u, p),
                    (None, None) => continue, // what `credsStore` leaves behind: `{}`
                    _ => return Err(at("username and password go together")),
                }
            };
            self.insert(key, Source::DockerConfig, credential)
                .map_err(|e| at(&e))?;
        }
        Ok(())
    }

    /// The registry host of `reference` and the credentials the pull sends, if any.
    pub fn for_image(&self, reference: &str) -> (String, Option<DockerCredentials>) {
        let host = registry_of(reference);
        let creds = self.by_host.get(&host).map(|(_, c)| c.to_docker(&host));
        (host, creds)
    }
}

/// The registry host an image reference is pulled from, the way Docker reads it: the part
/// before the first `/` when it has a `.` or a `:` or is `localhost`, else Docker Hub.
/// Lower-case; Docker Hub's aliases are [`DOCKER_HUB`]. `127.0.0.1:5000` and
/// `localhost:5000` are different hosts (as for Docker).
pub fn registry_of(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            let h = first.to_ascii_lowercase();
            if DOCKER_HUB_ALIASES.contains(&h.as_str()) {
                DOCKER_HUB.to_owned()
            } else {
                h
            }
        }
        _ => DOCKER_HUB.to_owned(),
    }
}

/// A registry host as written in a `config.json` key or a `[[registries]]` entry, in the
/// form [`registry_of`] gives: scheme and path dropped, lower-case, Docker Hub's aliases
/// and `https://index.docker.io/v1/` folded to [`DOCKER_HUB`].
pub fn normalize_host(key: &str) -> Result<String, String> {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let host = k.split('/').next().unwrap_or("").to_ascii_lowercase();
    let bad = |why: &str| format!("registry host {key:?}: {why}");
    if host.is_empty() {
        return Err(bad("empty"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
    {
        return Err(bad("not a host[:port]"));
    }
    if let Some((name, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
        if name.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("not a host[:port]"));
        }
    }
    Ok(if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        DOCKER_HUB.to_owned()
    } else {
        host
    })
}

/// Why a registry refused a pull, in a fixed word: the engine's text is not reported (it
/// could carry what a registry echoed back).
fn denied_reason(docker_message: &str) -> &'static str {
    let m = docker_message.to_ascii_lowercase();
    [
        ("no basic auth credentials", "no credentials sent"),
        (
            "repository does not exist",
            "repository does not exist or needs credentials",
        ),
        ("authentication required", "unauthorized"),
        ("unauthorized", "unauthorized"),
        ("forbidden", "forbidden"),
        ("denied", "denied"),
    ]
    .into_iter()
    .find(|(w, _)| m.contains(w))
    .map_or("refused", |(_, r)| r)
}

/// The message of a refused pull: the registry host, the image, whether credentials were
/// sent, and a fixed reason word. Never a credential, never the engine's own text.
pub fn denied_message(host: &str, reference: &str, sent: bool, docker_message: &str) -> String {
    let reason = denied_reason(docker_message);
    if sent {
        format!("registry {host} refused the credentials for {reference} ({reason})")
    } else {
        format!(
            "registry {host} refused {reference} without credentials ({reason}; none are configured for {host} on this node)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_host_of_references() {
        for (r, want) in [
            ("busybox", "docker.io"),
            ("busybox:1.36", "docker.io"),
            ("library/busybox", "docker.io"),
            ("someone/app:v1", "docker.io"),
            ("docker.io/library/busybox", "docker.io"),
            ("index.docker.io/someone/app", "docker.io"),
            ("registry-1.docker.io/someone/app", "docker.io"),
            ("127.0.0.1:5000/web:1", "127.0.0.1:5000"),
            ("localhost:5000/a/b@sha256:00", "localhost:5000"),
            ("localhost/app", "localhost"),
            ("Reg.Example:5000/a", "reg.example:5000"),
            ("ghcr.io/o/app:v1", "ghcr.io"),
            ("[::1]:5000/app", "[::1]:5000"),
        ] {
            assert_eq!(registry_of(r), want, "{r}");
        }
    }

    #[test]
    fn config_keys_are_normalized() {
        for (k, want) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("docker.io", "docker.io"),
            ("https://registry-1.docker.io", "docker.io"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
            ("REG.example:5000", "reg.example:5000"),
        ] {
            assert_eq!(normalize_host(k).as_deref(), Ok(want), "{k}");
        }
        for bad in [
            "",
            "https://",
            "reg:port",
            "reg:0",
            "reg:70000",
            "a b",
            ":5000",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad:?}");
        }
    }

    fn user_of(a: &RegistryAuth, reference: &str) -> Option<(String, String)> {
        a.for_image(reference).1.map(|c| {
            (
                c.username.unwrap_or_default(),
                c.password.unwrap_or_default(),
            )
        })
    }

    #[test]
    fn ports_and_hosts_must_match_exactly() {
        let mut a = RegistryAuth::new();
        a.insert(
            "127.0.0.1:5000",
            Source::AgentConfig,
            Credential::basic("u", "p"),
        )
        .expect("insert");
        assert_eq!(
            user_of(&a, "127.0.0.1:5000/web:1"),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(user_of(&a, "127.0.0.1:5001/web:1"), None);
        assert_eq!(user_of(&a, "127.0.0.1/web:1"), None);
        assert_eq!(user_of(&a, "localhost:5000/web:1"), None);
        assert_eq!(user_of(&a, "web:1"), None);
        let (host, creds) = a.for_image("127.0.0.1:5000/web:1");
        assert_eq!(host, "127.0.0.1:5000");
        assert_eq!(
            creds.and_then(|c| c.serveraddress).as_deref(),
            Some("127.0.0.1:5000")
        );
    }

    #[test]
    fn docker_config_auths_are_read() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            r#"{{
              "auths": {{
                "https://index.docker.io/v1/": {{ "auth": "{}" }},
                "127.0.0.1:5000": {{ "username": "ru", "password": "rp" }},
                "ghcr.io": {{ "identitytoken": "tok" }},
                "helped.example": {{}}
              }},
              "credsStore": "desktop",
              "credHelpers": {{ "gcr.io": "gcloud" }}
            }}"#,
            b64("hub-user:hub:pass")
        );
        let mut a = RegistryAuth::new();
        a.add_docker_config(&text).expect("parses");
        assert_eq!(
            user_of(&a, "busybox"),
            Some(("hub-user".into(), "hub:pass".into()))
        );
        assert_eq!(
            a.for_image("busybox")
                .1
                .and_then(|c| c.serveraddress)
                .as_deref(),
            Some(DOCKER_HUB_SERVER)
        );
        assert_eq!(
            user_of(&a, "127.0.0.1:5000/x"),
            Some(("ru".into(), "rp".into()))
        );
        let gh = a.for_image("ghcr.io/o/x").1.expect("ghcr");
        assert_eq!(gh.identitytoken.as_deref(), Some("tok"));
        assert!(a.for_image("helped.example/x").1.is_none());
        assert_eq!(
            a.ignored(),
            ["credsStore \"desktop\"", "credHelpers for gcr.io"]
        );
        assert_eq!(a.hosts(), ["127.0.0.1:5000", "docker.io", "ghcr.io"]);
        let shown = format!("{a:?}");
        for secret in ["hub:pass", "rp", "tok", &b64("hub-user:hub:pass")] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn agent_entries_win_over_docker_config() {
        let mut a = RegistryAuth::new();
        a.insert(
            "reg:5000",
            Source::AgentConfig,
            Credential::basic("agent", "a"),
        )
        .expect("agent");
        a.add_docker_config(r#"{"auths":{"reg:5000":{"username":"file","password":"f"}}}"#)
            .expect("config.json");
        assert_eq!(
            user_of(&a, "reg:5000/x"),
            Some(("agent".into(), "a".into()))
        );
        // The other order too.
        let mut b = RegistryAuth::new();
        b.add_docker_config(r#"{"auths":{"reg:5000":{"username":"file","password":"f"}}}"#)
            .expect("config.json");
        b.insert(
            "reg:5000",
            Source::AgentConfig,
            Credential::basic("agent", "a"),
        )
        .expect("agent");
        assert_eq!(
            user_of(&b, "reg:5000/x"),
            Some(("agent".into(), "a".into()))
        );
        assert!(b
            .insert("REG:5000", Source::AgentConfig, Credential::basic("x", "y"))
            .is_err());
    }

    #[test]
    fn bad_docker_configs_are_refused_without_quoting_values() {
        let secret = "s3cret-value";
        for text in [
            format!("{{\"auths\": {{\"r:5000\": {{\"auth\": \"{secret}\"}}}}}}"),
            format!("{{\"auths\": {{\"r:5000\": {{\"auth\": 12}}, \"x\": \"{secret}\"}}}}"),
            format!("{{\"auths\": {{\"r:5000\": {{\"username\": \"{secret}\"}}}}}}"),
            format!("{{\"auths\": \"{secret}\"}}"),
            format!("{{\"auths\": {{\"r:5000\": {{\"auth\": \"{secret}\" }}"),
            format!("[\"{secret}\"]"),
        ] {
            let e = RegistryAuth::new()
                .add_docker_config(&text)
                .expect_err("refused");
            assert!(!e.contains(secret), "{e}");
        }
        let e = RegistryAuth::new()
            .add_docker_config(r#"{"auths": {"r:5000": {"auth": "!!"}}}"#)
            .expect_err("refused");
        assert_eq!(e, "auths.\"r:5000\": auth is not base64 of user:password");
    }

    #[test]
    fn denied_messages_name_the_registry_not_the_secret() {
        let m = denied_message(
            "127.0.0.1:5000",
            "127.0.0.1:5000/web:1",
            true,
            "unauthorized: authentication required Basic dTpw",
        );
        assert_eq!(
            m,
            "registry 127.0.0.1:5000 refused the credentials for 127.0.0.1:5000/web:1 (unauthorized)"
        );
        assert!(!m.contains("dTpw"));
        let m = denied_message(
            "127.0.0.1:5000",
            "127.0.0.1:5000/web:1",
            false,
            "Head \"http://127.0.0.1:5000/v2/web/manifests/1\": no basic auth credentials",
        );
        assert!(m.starts_with("registry 127.0.0.1:5000 refused"), "{m}");
        assert!(m.contains("no credentials sent"), "{m}");
    }

    #[test]
    fn credentials_do_not_debug_print() {
        let c = Credential::basic("user", "pa55word");
        assert_eq!(format!("{c:?}"), "Credential(<redacted>)");
    }
}
