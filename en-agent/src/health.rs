//! `en-agent healthcheck`: checks what the agent depends on, without writing anything.
//!
//! A `FROM scratch` image has no shell and no curl, so the container runtime's healthcheck
//! calls the agent binary itself. It checks the agent's *dependencies* — the Docker endpoint
//! answers `GET /_ping`, the state directory is readable — not the agent process: a dead
//! agent process ends its container (or systemd unit), and the runtime restarts it. No
//! liveness file is written, so a healthcheck every few seconds costs no flash writes.

use crate::config::Config;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the node is unhealthy; each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The state directory cannot be listed.
    #[error("state dir {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The persisted desired document cannot be opened.
    #[error("{}: {source}", path.display())]
    Desired {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Docker host is not a unix socket.
    #[error("docker host {0:?}: only unix sockets are supported")]
    UnsupportedHost(String),
    /// Connecting to, writing to or reading from the socket failed.
    #[error("docker at {path}: {source}")]
    Docker {
        /// The socket path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("docker at {path}: no answer to /_ping within {} ms", timeout.as_millis())]
    NoAnswer {
        /// The socket path.
        path: String,
        /// The timeout.
        timeout: Duration,
    },
    /// An answer other than `200`.
    #[error("docker at {path}: /_ping answered {status:?}")]
    BadAnswer {
        /// The socket path.
        path: String,
        /// The status line, at most 80 characters (`nothing` when empty).
        status: String,
    },
}

/// Runs the checks; `Ok` carries a one-line summary, `Err` a one-line reason.
pub fn check(config: &Config, timeout: Duration) -> Result<String, HealthError> {
    let entries = std::fs::read_dir(&config.state_dir).map_err(|source| HealthError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    // Readable means listable and, when present, the desired document readable.
    drop(entries);
    let desired = config.state_dir.join("desired.json");
    if desired.exists() {
        std::fs::File::open(&desired).map_err(|source| HealthError::Desired {
            path: desired.clone(),
            source,
        })?;
    }
    let api = docker_ping(&config.docker_host, timeout)?;
    Ok(format!(
        "docker answers /_ping at {} (API {api}); state dir {} readable",
        config.docker_host,
        config.state_dir.display()
    ))
}

/// `GET /_ping` on the Docker unix socket (`unix:///var/run/docker.sock` or a path), with
/// the whole exchange bounded by `timeout`. Returns the API version the engine announces
/// (`?` when it does not say).
pub fn docker_ping(host: &str, timeout: Duration) -> Result<String, HealthError> {
    let path = host
        .strip_prefix("unix://")
        .or_else(|| host.starts_with('/').then_some(host))
        .ok_or_else(|| HealthError::UnsupportedHost(host.to_owned()))?;
    let deadline = Instant::now() + timeout;
    let fail = |source: std::io::Error| HealthError::Docker {
        path: path.to_owned(),
        source,
    };
    let mut s = UnixStream::connect(Path::new(path)).map_err(fail)?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left())).map_err(fail)?;
    s.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        .map_err(fail)?;
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    // Headers and the 2-byte body are well under 8 KiB; stop once the head is complete and
    // the body ("OK") arrived, or at EOF.
    while response.len() < 8192 {
        s.set_read_timeout(Some(left())).map_err(fail)?;
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HealthError::NoAnswer {
                    path: path.to_owned(),
                    timeout,
                })
            }
            Err(e) => return Err(fail(e)),
        };
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&response, b"\r\n\r\n") {
            if response[end + 4..].starts_with(b"OK") {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.") || code != "200" {
        let shown: String = status.chars().take(80).collect();
        return Err(HealthError::BadAnswer {
            path: path.to_owned(),
            status: if shown.is_empty() {
                "nothing".to_owned()
            } else {
                shown
            },
        });
    }
    let api = text
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("api-version")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    Ok(api)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn serve_once(answer: &'static [u8]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        let l = UnixListener::bind(&path).expect("bind");
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = c.write_all(answer);
            }
        });
        let host = format!("unix://{}", path.display());
        (dir, host)
    }

    #[test]
    fn ping_reads_the_api_version_and_refuses_other_answers() {
        let (_d, host) =
            serve_once(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK");
        assert_eq!(
            docker_ping(&host, Duration::from_secs(3))
                .map_err(|e| e.to_string())
                .as_deref(),
            Ok("1.41")
        );
        let (_d, host) = serve_once(b"HTTP/1.1 500 Internal Server Error\r\n\r\n");
        let e = docker_ping(&host, Duration::from_secs(3))
            .expect_err("500")
            .to_string();
        assert!(e.contains("500"), "{e}");
        assert!(docker_ping("tcp://1.2.3.4:2375", Duration::from_secs(1))
            .expect_err("tcp")
            .to_string()
            .contains("unix"));
    }

    #[test]
    fn ping_is_bounded_when_the_engine_does_not_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        let _l = UnixListener::bind(&path).expect("bind"); // accepts (backlog), never answers
        let t0 = Instant::now();
        let e = docker_ping(&path.display().to_string(), Duration::from_millis(300))
            .expect_err("timeout")
            .to_string();
        assert!(e.contains("no answer"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3));
    }
}
