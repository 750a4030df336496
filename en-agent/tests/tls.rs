//! The agent against a real Mosquitto with a TLS listener and a password file: TLS and
//! login end to end, and a broker certificate from the wrong CA (no session, the agent
//! keeps running and retrying), and a missing or empty CA file (refused at start). Needs
//! `mosquitto`, `mosquitto_sub`, `mosquitto_pub`,
//! `mosquitto_passwd` and `openssl`: skipped without them, mandatory with `CI=true`.
#![cfg(feature = "tls")]

mod common;

use common::*;
use en_agent::runtime::fake::FakeRuntime;
use en_agent::{Config, Counters};
use schemas::wire::NodeStatus;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const USER: &str = "n1";
const PASS: &str = "s3cret";

/// Runs a command, panicking with its output when it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed(cmd: &str) -> bool {
    Command::new(cmd).arg("--help").output().is_ok()
}

/// Whether Mosquitto (server, clients, mosquitto_passwd) and openssl are installed; panics
/// under CI when they are not.
fn require_tools() -> bool {
    if !harness::require_mosquitto() {
        return false;
    }
    let missing: Vec<&str> = ["mosquitto_pub", "mosquitto_passwd", "openssl"]
        .into_iter()
        .filter(|c| !installed(c))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !harness::in_ci(),
        "Mosquitto TLS test is mandatory with CI=true: missing {missing:?}"
    );
    eprintln!("skipping Mosquitto TLS test: missing {missing:?}");
    false
}

/// A CA named `name` (`ca.crt`, `ca.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        ])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
    dir.join("ca.crt")
}

/// A server certificate for 127.0.0.1 and localhost (`server.crt`, `server.key`), signed by
/// the CA in `dir`.
fn make_server_cert(dir: &Path) {
    run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-keyout", "server.key", "-out", "server.csr"])
        .args(["-subj", "/CN=localhost"]));
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
        ])
        .args(["-set_serial", "2", "-days", "2", "-extfile", "server.ext"])
        .args(["-out", "server.crt"]));
}

/// Mosquitto with only a TLS listener on loopback and a password file (one user).
struct TlsBroker {
    dir: tempfile::TempDir,
    port: u16,
    proc: harness::Proc,
}

impl TlsBroker {
    fn start() -> TlsBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        make_ca(d, "edgefleet test CA");
        make_server_cert(d);
        run(Command::new("mosquitto_passwd")
            .arg("-c")
            .arg("-b")
            .arg(d.join("passwd"))
            .args([USER, PASS]));
        let port = harness::free_port();
        // Run as root (a container's CI), Mosquitto would switch to the `mosquitto` user,
        // which cannot read the temp dir: keep the current user.
        let user = if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(d).expect("stat")) == 0
        {
            "user root\n"
        } else {
            ""
        };
        let conf = d.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "{user}persistence false\nallow_anonymous false\npassword_file {d}/passwd\n\
                 listener {port} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\n\
                 keyfile {d}/server.key\n",
                d = d.display()
            ),
        )
        .expect("write mosquitto.conf");
        let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or("mosquitto");
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(&conf).arg("-v");
        let proc = harness::Proc::spawn("mosquitto-tls", cmd, d);
        harness::wait_port(port);
        TlsBroker { dir, port, proc }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn url(&self) -> String {
        format!("mqtts://{USER}:{PASS}@127.0.0.1:{}", self.port)
    }

    fn client_args(&self, cmd: &mut Command) {
        cmd.arg("--cafile")
            .arg(self.ca())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", USER, "-P", PASS, "-q", "1"]);
    }

    /// Publishes a retained message over TLS.
    fn publish_retained(&self, topic: &str, payload: &[u8]) {
        let file = self.dir.path().join("payload");
        std::fs::write(&file, payload).expect("write payload");
        let mut cmd = Command::new("mosquitto_pub");
        self.client_args(&mut cmd);
        run(cmd.args(["-r", "-t", topic]).arg("-f").arg(&file));
    }

    /// The retained message on `topic`, read over TLS (waits at most 1 s for it).
    fn retained(&self, topic: &str) -> Option<Vec<u8>> {
        let mut cmd = Command::new("mosquitto_sub");
        self.client_args(&mut cmd);
        let out = cmd
            .args(["-t", topic, "-C", "1", "-W", "1", "-N"])
            .output()
            .expect("mosquitto_sub");
        // Exit code 27: timed out without a message.
        (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
    }

    /// Whether Mosquitto logged the agent's login (its client id, user USER).
    fn agent_logged_in(&self) -> bool {
        let id = format!(" as en-{SITE}-{NODE} ");
        self.proc
            .log()
            .lines()
            .any(|l| l.contains(&id) && l.contains(&format!("u'{USER}'")))
    }

    /// TLS handshakes Mosquitto logged as failed so far (one attempt logs one of these;
    /// `harness::wait_port`'s plain TCP probe counts too).
    fn failed_handshakes(&self) -> usize {
        self.proc
            .log()
            .lines()
            .filter(|l| {
                l.contains("Client connection from") && l.contains("failed")
                    || l.contains("Client <unknown> disconnected")
            })
            .count()
    }
}

/// Polls `f` (blocking) every 200 ms until it returns `Some`, for at most `timeout`.
async fn poll<T: Send + 'static>(
    timeout: Duration,
    f: impl Fn() -> Option<T> + Send + Sync + 'static,
) -> Option<T> {
    let f = Arc::new(f);
    let deadline = Instant::now() + timeout;
    loop {
        let g = f.clone();
        if let Some(v) = tokio::task::spawn_blocking(move || g())
            .await
            .expect("join")
        {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn agent_config(url: &str, ca: PathBuf, dir: &Path) -> Config {
    let mut c = Config::new(SITE, NODE);
    c.state_dir = dir.to_owned();
    c.broker = Some(url.parse().expect("url"));
    c.tls_ca_file = Some(ca);
    c.heartbeat = Duration::from_millis(500);
    c.status_debounce = Duration::from_millis(50);
    c
}

fn status_topic() -> String {
    format!("fleet/{SITE}/nodes/{NODE}/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_over_tls_with_login_reports_status() {
    if !require_tools() {
        return;
    }
    let broker = Arc::new(TlsBroker::start());
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::new();
    fake.add_registry_image("reg/web:v1");
    let stop = CancellationToken::new();
    let agent = en_agent::spawn(
        agent_config(&broker.url(), broker.ca(), dir.path()),
        Arc::new(fake.clone()),
        stop.clone(),
    )
    .expect("spawn");

    // The desired document, published by a TLS client with the same login.
    let d = doc(1, vec![deployment("app", vec![comp("web", "reg/web:v1")])]);
    broker.publish_retained(&format!("fleet/{SITE}/nodes/{NODE}/desired"), &bytes(&d));

    let b = broker.clone();
    let status = poll(Duration::from_secs(20), move || {
        b.retained(&status_topic())
            .and_then(|p| serde_json::from_slice::<NodeStatus>(&p).ok())
            .filter(|s| s.observed_generation == 1 && s.converged)
    })
    .await
    .unwrap_or_else(|| panic!("no converged status over TLS\n{}", broker.proc.log()));
    assert_eq!(status.node, NODE);
    assert!(Counters::get(&agent.counters().mqtt_sessions) >= 1);
    assert!(fake.containers().iter().all(|c| c.info.is_running()));
    // Mosquitto saw the agent log in as USER over the TLS listener.
    assert!(broker.agent_logged_in(), "{}", broker.proc.log());

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .expect("agent stops in time")
        .expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_with_the_wrong_ca_does_not_connect_and_keeps_retrying() {
    if !require_tools() {
        return;
    }
    let broker = Arc::new(TlsBroker::start());
    let other = tempfile::tempdir().expect("tempdir");
    let wrong_ca = make_ca(other.path(), "some other CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::new();
    fake.add_registry_image("reg/web:v1");
    let stop = CancellationToken::new();
    let agent = en_agent::spawn(
        agent_config(&broker.url(), wrong_ca, dir.path()),
        Arc::new(fake.clone()),
        stop.clone(),
    )
    .expect("spawn");

    // Several attempts (backoff 0.5 s doubling, with jitter), none gets a session.
    let b = broker.clone();
    let attempts = poll(Duration::from_secs(20), move || {
        let n = b.failed_handshakes();
        (n >= 4).then_some(n)
    })
    .await
    .unwrap_or_else(|| panic!("the agent stopped retrying\n{}", broker.proc.log()));
    assert!(attempts >= 4);
    assert_eq!(Counters::get(&agent.counters().mqtt_sessions), 0);
    let b = broker.clone();
    let presence = tokio::task::spawn_blocking(move || {
        b.retained(&format!("fleet/{SITE}/nodes/{NODE}/online"))
    })
    .await
    .expect("join");
    assert_eq!(presence, None, "the agent connected with the wrong CA");
    assert!(!broker.agent_logged_in(), "{}", broker.proc.log());

    // The agent itself keeps working (offline) and stops cleanly.
    agent.submit_desired(bytes(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    )));
    agent
        .wait_status(Duration::from_secs(20), |s| {
            s.observed_generation == 1 && s.converged
        })
        .await
        .expect("converges offline");
    let b = broker.clone();
    let status = tokio::task::spawn_blocking(move || b.retained(&status_topic()))
        .await
        .expect("join");
    assert_eq!(status, None);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .expect("agent stops in time")
        .expect("agent stops");
}

#[tokio::test]
async fn agent_refuses_a_missing_or_empty_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    for ca in [dir.path().join("missing.pem"), empty] {
        let state = tempfile::tempdir().expect("tempdir");
        let r = en_agent::spawn(
            agent_config("mqtts://n1:pw@127.0.0.1:8883", ca.clone(), state.path()),
            Arc::new(FakeRuntime::new()),
            CancellationToken::new(),
        );
        let err = r.expect_err("refused").to_string();
        assert!(err.contains("tls ca file"), "{ca:?}: {err}");
    }
}
