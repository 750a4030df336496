//! The registry part of the configuration: `[[registries]]` entries (file only) and the
//! credentials read from them and from `registry_auth_file` at resolve time.

use super::{read_bounded, read_key_file, Config, ConfigError, KeyFileError};
use crate::runtime::auth::{self, Credential, RegistryAuth};
use std::path::PathBuf;

/// One `[[registries]]` entry: the password is read from `password_file`, never written in
/// the config file, the environment or a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    /// `reg.example:5000`, `127.0.0.1:5000`, `docker.io`.
    pub host: String,
    /// The user name.
    pub username: String,
    /// The file holding the password (trimmed; at most 4 KiB).
    pub password_file: PathBuf,
}

/// Parses one `[[registries]]` entry. Errors name the entry and the field, never a value.
pub(super) fn registry_entry(i: usize, v: &toml::Value) -> Result<RegistryEntry, ConfigError> {
    let bad = |reason: String| ConfigError::Invalid {
        key: format!("registries[{i}]"),
        reason,
    };
    let table = v
        .as_table()
        .ok_or_else(|| bad("not a table ([[registries]])".into()))?;
    let text = |field: &str| -> Result<String, ConfigError> {
        match table.get(field) {
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            Some(_) => Err(bad(format!("{field}: must be a non-empty string"))),
            None => Err(bad(format!("{field}: missing"))),
        }
    };
    for k in table.keys() {
        match k.as_str() {
            "host" | "username" | "password_file" => {}
            "password" | "auth" | "identitytoken" => {
                return Err(bad(format!(
                    "{k}: a secret is not accepted in the config file; use password_file"
                )))
            }
            other => return Err(bad(format!("unknown field {other:?}"))),
        }
    }
    let host = text("host")?;
    auth::normalize_host(&host).map_err(&bad)?;
    let username = text("username")?;
    if username.contains(':') || username.chars().any(char::is_control) {
        return Err(bad(
            "username: must not hold ':' or control characters".into()
        ));
    }
    let password_file = PathBuf::from(text("password_file")?);
    Ok(RegistryEntry {
        host,
        username,
        password_file,
    })
}

/// Reads `registry_auth_file` and every entry's `password_file` (bounded) into the
/// credentials pulls send. Errors name the key and the file, never a secret.
pub(super) fn registry_auth(c: &Config) -> Result<RegistryAuth, ConfigError> {
    let mut a = RegistryAuth::new();
    if let Some(p) = &c.registry_auth_file {
        let invalid = |reason: String| ConfigError::Invalid {
            key: "registry_auth_file".into(),
            reason: format!("{}: {reason}", p.display()),
        };
        let text = read_bounded(p, auth::MAX_DOCKER_CONFIG_BYTES).map_err(|e| match e {
            KeyFileError::Read { source, .. } => invalid(source.to_string()),
            KeyFileError::TooLarge { limit, .. } => invalid(format!(
                "larger than {limit} bytes, not a Docker config.json"
            )),
        })?;
        a.add_docker_config(&text).map_err(invalid)?;
    }
    for (i, r) in c.registries.iter().enumerate() {
        let invalid = |reason: String| ConfigError::Invalid {
            key: format!("registries[{i}].password_file"),
            reason,
        };
        let password = read_key_file(&r.password_file).map_err(|e| invalid(e.to_string()))?;
        if password.is_empty() {
            return Err(invalid(format!("{}: empty", r.password_file.display())));
        }
        a.insert(
            &r.host,
            auth::Source::AgentConfig,
            Credential::basic(&r.username, &password),
        )
        .map_err(|e| ConfigError::Invalid {
            key: format!("registries[{i}].host"),
            reason: e,
        })?;
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::super::resolve;
    use std::collections::{BTreeMap, HashMap};
    use std::path::PathBuf;

    fn flags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn secret_files(dir: &std::path::Path) -> (PathBuf, PathBuf) {
        let pw = dir.join("reg.pass");
        std::fs::write(&pw, "agent-s3cret\n").expect("write");
        let cfg = dir.join("config.json");
        // base64("file-user:file-s3cret")
        std::fs::write(
            &cfg,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"ZmlsZS11c2VyOmZpbGUtczNjcmV0"},
                "https://index.docker.io/v1/":{"username":"hub","password":"hub-s3cret"}},
              "credsStore":"desktop"}"#,
        )
        .expect("write");
        (pw, cfg)
    }

    #[test]
    fn registry_credentials_come_from_files_and_never_debug_print() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pw, cfg) = secret_files(dir.path());
        let file = format!(
            "site = \"s\"\nnode = \"n\"\nregistry_auth_file = {cfg:?}\n\
             [[registries]]\nhost = \"127.0.0.1:5000\"\nusername = \"agent\"\npassword_file = {pw:?}\n"
        );
        let c = resolve(Some(&file), &HashMap::new(), &BTreeMap::new()).expect("config");
        assert_eq!(c.registries.len(), 1);
        assert_eq!(c.registry_auth.hosts(), ["127.0.0.1:5000", "docker.io"]);
        assert_eq!(c.registry_auth.ignored(), ["credsStore \"desktop\""]);
        // The agent entry wins over config.json for the same host.
        let (host, creds) = c.registry_auth.for_image("127.0.0.1:5000/web:1");
        assert_eq!(host, "127.0.0.1:5000");
        let creds = creds.expect("creds");
        assert_eq!(creds.username.as_deref(), Some("agent"));
        assert_eq!(creds.password.as_deref(), Some("agent-s3cret"));
        let hub = c.registry_auth.for_image("busybox").1.expect("hub");
        assert_eq!(hub.password.as_deref(), Some("hub-s3cret"));
        let shown = format!("{c:?} {c:#?}");
        for secret in [
            "agent-s3cret",
            "file-s3cret",
            "hub-s3cret",
            "ZmlsZS11c2VyOmZpbGUtczNjcmV0",
        ] {
            assert!(!shown.contains(secret), "Debug shows {secret}: {shown}");
        }
        // The file path may come from the environment too (a path, not a secret).
        let env: HashMap<String, String> = [(
            "EN_REGISTRY_AUTH_FILE".to_owned(),
            cfg.display().to_string(),
        )]
        .into();
        let c = resolve(None, &env, &flags(&[("site", "s"), ("node", "n")])).expect("env");
        let creds = c.registry_auth.for_image("127.0.0.1:5000/web:1").1;
        assert_eq!(creds.and_then(|c| c.username).as_deref(), Some("file-user"));
    }

    #[test]
    fn bad_registry_settings_name_the_key_and_file_never_the_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pw, _) = secret_files(dir.path());
        let head = "site = \"s\"\nnode = \"n\"\n";
        let entry = |body: &str| format!("{head}[[registries]]\n{body}\n");
        let refused = |text: &str| -> String {
            match resolve(Some(text), &HashMap::new(), &BTreeMap::new()) {
                Err(e) => e.to_string(),
                Ok(c) => panic!("accepted: {c:?}"),
            }
        };
        let e = refused(&entry(
            "host = \"r:5000\"\nusername = \"u\"\npassword = \"inline-s3cret\"",
        ));
        assert!(
            e.contains("registries[0]") && e.contains("password_file"),
            "{e}"
        );
        assert!(!e.contains("inline-s3cret"), "{e}");
        let e = refused(&entry(&format!(
            "host = \"r:5000\"\nusername = \"u\"\npassword_file = {pw:?}\ncolour = \"x\""
        )));
        assert!(e.contains("unknown field \"colour\""), "{e}");
        let e = refused(&entry(&format!(
            "host = \"r:port\"\nusername = \"u\"\npassword_file = {pw:?}"
        )));
        assert!(e.contains("registries[0]"), "{e}");
        let e = refused(&entry(
            "host = \"r:5000\"\nusername = \"u\"\npassword_file = \"/nope/x\"",
        ));
        assert!(
            e.contains("registries[0].password_file") && e.contains("/nope/x"),
            "{e}"
        );
        let e = refused(&format!("{head}registries = \"r:5000\"\n"));
        assert!(e.contains("registries"), "{e}");
        let twice = format!("host = \"r:5000\"\nusername = \"u\"\npassword_file = {pw:?}");
        let e = refused(&format!("{}[[registries]]\n{twice}\n", entry(&twice)));
        assert!(e.contains("listed twice"), "{e}");
        // config.json: missing, too large, not JSON, a bad auth: key and file, no secret.
        let bad = dir.path().join("bad.json");
        for (content, want) in [
            (None, "No such file"),
            (Some(vec![b' '; (1 << 20) + 1]), "larger than"),
            (
                Some(b"{\"auths\": {\"r:5000\": {\"auth\": \"leaked-s3cret\" }}".to_vec()),
                "invalid JSON",
            ),
            (
                Some(b"{\"auths\": {\"r:5000\": {\"auth\": \"leaked-s3cret\"}}}".to_vec()),
                "auth is not base64",
            ),
        ] {
            let _ = std::fs::remove_file(&bad);
            if let Some(c) = content {
                std::fs::write(&bad, c).expect("write");
            }
            let e = refused(&format!("{head}registry_auth_file = {bad:?}\n"));
            assert!(e.starts_with("invalid registry_auth_file: "), "{e}");
            assert!(
                e.contains(&bad.display().to_string()) && e.contains(want),
                "{e}"
            );
            assert!(!e.contains("leaked-s3cret"), "{e}");
        }
    }
}
