//! `mqtt://[user:pass@]host[:port]` and `mqtts://…` broker addresses, parsed once for the
//! LO, the agent and the tools.

use std::fmt;

/// A parsed broker address.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `mqtts://`: TLS.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (default 1883, or 8883 with TLS).
    pub port: u16,
    /// User name, when given.
    pub username: Option<String>,
    /// Password, when given.
    pub password: Option<String>,
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        write!(f, "BrokerUrl({self})")
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        let user = match &self.username {
            Some(u) => format!("{u}:***@"),
            None => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{user}{host}:{}", self.port)
    }
}

/// Why a broker address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid broker address {url:?}: {reason} (expected mqtt://[user:pass@]host[:port] or mqtts://…)")]
pub struct BrokerUrlError {
    url: String,
    reason: &'static str,
}

/// A URL as it may be shown: the password (or token) of its user part replaced by `***`,
/// any query string hidden, and at most 256 characters. `https://user:tok@host/x` →
/// `https://user:***@host/x`; `https://tok@host` → `https://***@host`; `mqtt://u:pa/ss@h` →
/// `mqtt://u:***@h`; `https://h/x?access_token=t` → `https://h/x?***`; without `://`
/// (`mqtt:u:pw@h`, `u:pw@h`) everything before the last `@` is hidden. Errs on the side of
/// hiding: the user part ends at the last `@`, so a password holding `/`, `:` or `@` is
/// hidden whole (and a path holding `@` is hidden with it).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // A scheme of letters, digits and `+-.` only. In a typo like `mqtt::pw://…@h` the
    // secret may sit in what looks like the scheme or the user: everything before the last
    // `@` is hidden.
    let well_formed = scheme.is_some_and(|s| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if scheme.is_some() && !well_formed {
        if let Some(at) = url.rfind('@') {
            let host = &url[at + 1..];
            let shown = match host.find(['?', '#']) {
                Some(q) => format!("***@{}?***", &host[..q]),
                None => format!("***@{host}"),
            };
            return crate::names::shorten(&shown, 256);
        }
    }
    let (rest, query) = match rest.find(['?', '#']) {
        Some(q) => (&rest[..q], "?***"),
        None => (rest, ""),
    };
    let shown = match rest.rfind('@') {
        Some(at) => {
            let (user, host) = (&rest[..at], &rest[at + 1..]);
            let user = match user.split_once(':') {
                Some((name, _)) if well_formed && !name.contains(['/', '@']) => {
                    format!("{name}:***")
                }
                _ => "***".to_owned(),
            };
            match scheme {
                Some(scheme) => format!("{scheme}://{user}@{host}{query}"),
                None => format!("{user}@{host}{query}"),
            }
        }
        None => match scheme {
            Some(scheme) => format!("{scheme}://{rest}{query}"),
            None => format!("{rest}{query}"),
        },
    };
    crate::names::shorten(&shown, 256)
}

/// Replaces every URL or `user:secret@host` with credentials inside `text` (an error
/// message of git, say) by its [`redact_url`] form.
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains('@') && (word.contains("://") || word.contains(':')) {
            let start = word.find(|c: char| c.is_ascii_alphanumeric()).unwrap_or(0);
            // Quotes and punctuation around the URL stay as they are.
            let end = word
                .rfind(|c: char| c.is_ascii_alphanumeric() || c == '/')
                .map_or(word.len(), |e| e + 1)
                .max(start);
            out.push_str(&word[..start]);
            out.push_str(&redact_url(&word[start..end]));
            out.push_str(&word[end..]);
        } else {
            out.push_str(word);
        }
    }
    out
}

impl std::str::FromStr for BrokerUrl {
    type Err = BrokerUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let err = |reason| BrokerUrlError {
            url: redact_url(url),
            reason,
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("tcp://") {
            (false, r)
        } else {
            return Err(err("unknown scheme"));
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(user.to_owned()), Some(pass.to_owned())),
                None => (Some(u.to_owned()), None),
            },
        };
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
            let (h, p) = r.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            let port = match p.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| err("invalid port"))?,
                None if p.is_empty() => default_port,
                None => return Err(err("garbage after ']'")),
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| err("invalid port"))?),
                None => (hostport.to_owned(), default_port),
            }
        };
        if host.is_empty() || host.contains('/') {
            return Err(err("missing host"));
        }
        Ok(BrokerUrl {
            tls,
            host,
            port,
            username,
            password,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        let u: BrokerUrl = "mqtt://127.0.0.1:1884".parse().expect("url");
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 1884));
        let u: BrokerUrl = "mqtts://node-1:s3cr:et@broker.local".parse().expect("url");
        assert_eq!(u.port, 8883);
        assert_eq!(u.username.as_deref(), Some("node-1"));
        assert_eq!(u.password.as_deref(), Some("s3cr:et"));
        assert_eq!(u.to_string(), "mqtts://node-1:***@broker.local:8883");
        assert!(!format!("{u:?}").contains("s3cr"));
        let u: BrokerUrl = "mqtt://[::1]:1883".parse().expect("url");
        assert_eq!(u.host, "::1");
        for bad in ["http://x", "mqtt://", "mqtt://h:port", "mqtt://[::1", "x"] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad}");
        }
        // An error never echoes the password.
        let err = "mqtt://lo:hunter2@host:port"
            .parse::<BrokerUrl>()
            .expect_err("port");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("lo:***@host"), "{err}");
    }

    #[test]
    fn urls_are_redacted() {
        for (url, shown) in [
            (
                "https://u:tok@git.example/x.git",
                "https://u:***@git.example/x.git",
            ),
            ("https://tok@git.example/x", "https://***@git.example/x"),
            ("https://git.example/x", "https://git.example/x"),
            ("/local/path", "/local/path"),
            // A password with `/`, `:` or `@`, and text that only looks like a URL.
            ("mqtt://u:pa/ss@h:1883", "mqtt://u:***@h:1883"),
            ("mqtt://u:p@ss@h", "mqtt://u:***@h"),
            ("mqtt::///@aa@", "***@"),
            // A malformed scheme: what looks like the scheme or the user may be the secret.
            ("mqtt:://aa0:@", "***@"),
            ("mqtt::0aa://@h:1883", "***@h:1883"),
            ("mqtt:u:pw@h", "***@h"),
            ("u:pw@h", "***@h"),
            // A path with `@` is hidden with the user part: hiding too much is the safe side.
            ("https://git.example/x@y", "https://***@y"),
            ("https://h/x?access_token=secret", "https://h/x?***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        assert_eq!(
            redact_urls_in("fetch main from 'https://u:tok@h/r.git' failed"),
            "fetch main from 'https://u:***@h/r.git' failed"
        );
    }
}
