//! `lo healthcheck`: a plain HTTP/1.1 GET with std only, for container images without a shell
//! or curl (`HEALTHCHECK CMD ["/lo", "healthcheck"]`). Exit 0 on a 2xx answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Why a check failed; each message starts with the URL checked.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    /// Not an `http://` URL.
    #[error("{url}: only http:// URLs are supported")]
    Scheme {
        /// The URL.
        url: String,
    },
    /// An `http://` URL without a host.
    #[error("{url}: no host")]
    NoHost {
        /// The URL.
        url: String,
    },
    /// The host name does not resolve.
    #[error("{url}: cannot resolve {target}: {cause}")]
    Resolve {
        /// The URL.
        url: String,
        /// `host:port`.
        target: String,
        /// The resolver's error.
        cause: std::io::Error,
    },
    /// The host name resolves to no address.
    #[error("{url}: no address for {target}")]
    NoAddress {
        /// The URL.
        url: String,
        /// `host:port`.
        target: String,
    },
    /// No address accepted a connection in time (the last address tried).
    #[error("{url}: cannot connect to {addr}: {cause}")]
    Connect {
        /// The URL.
        url: String,
        /// The address tried last.
        addr: SocketAddr,
        /// Why it failed.
        cause: std::io::Error,
    },
    /// Sending the request or reading the answer failed.
    #[error("{url}: {cause}")]
    Io {
        /// The URL.
        url: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The answer does not start with an HTTP status line.
    #[error("{url}: not an HTTP answer: {line:?}")]
    NotHttp {
        /// The URL.
        url: String,
        /// The first line of the answer.
        line: String,
    },
    /// An answer other than 2xx.
    #[error("{url}: HTTP {code}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        code: u16,
    },
}

/// The URL checked by default: `/readyz` on the HTTP listen address, with an unspecified
/// address (`0.0.0.0`, `[::]`) replaced by loopback.
pub fn default_url(http_listen: &str) -> String {
    let addr = http_listen.trim();
    let addr = if let Some(port) = addr.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = addr.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        addr.to_owned()
    };
    format!("http://{addr}/readyz")
}

/// Splits `http://host[:port][/path]` into (host:port, host header, path).
fn parse(url: &str) -> Result<(String, String, String), HealthcheckError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HealthcheckError::Scheme {
            url: url.to_owned(),
        })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HealthcheckError::NoHost {
            url: url.to_owned(),
        });
    }
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    let target = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((target, authority.to_owned(), path.to_owned()))
}

/// GETs `url` within `timeout` (connect, send, read the status line). Returns the status code
/// (any code), or why there is none.
pub fn get_status(url: &str, timeout: Duration) -> Result<u16, HealthcheckError> {
    let started = Instant::now();
    let (target, host, path) = parse(url)?;
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|cause| HealthcheckError::Resolve {
            url: url.to_owned(),
            target: target.clone(),
            cause,
        })?
        .collect();
    let mut last = HealthcheckError::NoAddress {
        url: url.to_owned(),
        target,
    };
    let mut stream = None;
    for a in addrs {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(cause) => {
                last = HealthcheckError::Connect {
                    url: url.to_owned(),
                    addr: a,
                    cause,
                }
            }
        }
    }
    let mut s = stream.ok_or(last)?;
    let left = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let io = |cause: std::io::Error| HealthcheckError::Io {
        url: url.to_owned(),
        cause,
    };
    s.set_read_timeout(Some(left)).map_err(io)?;
    s.set_write_timeout(Some(left)).map_err(io)?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lo-healthcheck\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(io)?;
    // The status line is all we need: read until the first line ends (or 1 KiB).
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        let n = s.read(&mut chunk).map_err(io)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(HealthcheckError::NotHttp {
            url: url.to_owned(),
            line: line.to_owned(),
        }),
    }
}

/// Runs the check: `Ok(())` on 2xx, else the one-line reason.
pub fn check(url: &str, timeout: Duration) -> Result<(), HealthcheckError> {
    match get_status(url, timeout)? {
        200..=299 => Ok(()),
        code => Err(HealthcheckError::Status {
            url: url.to_owned(),
            code,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_uses_loopback_for_unspecified_addresses() {
        assert_eq!(default_url("0.0.0.0:8080"), "http://127.0.0.1:8080/readyz");
        assert_eq!(default_url("[::]:9000"), "http://[::1]:9000/readyz");
        assert_eq!(default_url("10.0.0.5:80"), "http://10.0.0.5:80/readyz");
    }

    #[test]
    fn urls_are_parsed_strictly() {
        assert_eq!(
            parse("http://127.0.0.1:8080/readyz").expect("ok"),
            (
                "127.0.0.1:8080".into(),
                "127.0.0.1:8080".into(),
                "/readyz".into()
            )
        );
        assert_eq!(
            parse("http://lo").expect("ok"),
            ("lo:80".into(), "lo".into(), "/".into())
        );
        assert_eq!(parse("http://[::1]/x").expect("ok").0, "[::1]:80");
        assert!(parse("https://x/").is_err());
        assert!(parse("http:///x").is_err());
    }

    #[test]
    fn answers_and_failures() {
        use std::net::TcpListener;
        // A tiny server answering each connection with the next canned status line.
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.1 200 OK",
                "HTTP/1.1 503 Service Unavailable",
                "garbage",
            ] {
                let (mut c, _) = l.accept().expect("accept");
                let mut req = [0u8; 512];
                let _ = c.read(&mut req);
                let _ = c.write_all(format!("{answer}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            }
        });
        let url = format!("http://{addr}/readyz");
        let t = Duration::from_secs(5);
        assert_eq!(check(&url, t).map_err(|e| e.to_string()), Ok(()));
        let e = check(&url, t).expect_err("503").to_string();
        assert!(e.ends_with("HTTP 503"), "{e}");
        let e = check(&url, t).expect_err("garbage").to_string();
        assert!(e.contains("not an HTTP answer"), "{e}");
        server.join().expect("server");
        // Nothing listens any more: a connection error, within the timeout.
        let started = Instant::now();
        let e = check(&url, Duration::from_secs(2))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("cannot connect"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
