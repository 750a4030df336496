//! The LO against a real Mosquitto with a TLS listener and a password file: TLS and login
//! end to end (retained desired documents and presence read back with `mosquitto_sub
//! --cafile`, and `lo plan --broker mqtts://…`'s reader), a broker certificate from the wrong
//! CA (no session, the LO keeps running and retrying) and a missing CA file (refused at
//! start). Needs `mosquitto`, `mosquitto_sub`, `mosquitto_pub`, `mosquitto_passwd` and
//! `openssl`: skipped without them, mandatory with `CI=true`.
#![cfg(feature = "mqtt-tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use schemas::{DesiredState, LoChannel, NodeChannel, Presence, SiteStatus, Topics};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USER: &str = "lo";
const PASS: &str = "s3cret";

// The Mosquitto TLS helpers below are the same as in en-agent/tests/tls.rs (the crates share
// no test code but the `harness`, which others own).

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

    /// Whether Mosquitto logged the LO's login (its client id, user USER).
    fn lo_logged_in(&self) -> bool {
        let id = format!(" as lo-{SITE} ");
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

fn files() -> Vec<(&'static str, Option<String>)> {
    vec![
        (
            "sites/s1/nodes.yaml",
            Some(node_doc("n1", "    role: gw\n")),
        ),
        (
            "sites/s1/web.yaml",
            Some(deployment_doc("web", "reg/web:1", "")),
        ),
    ]
}

fn tls_config(repo: &Path, state: &Path, url: String, ca: PathBuf) -> lo::config::Config {
    let mut cfg = lo_config(repo, state, "127.0.0.1:1".parse().unwrap());
    cfg.broker = url;
    cfg.tls_ca_file = Some(ca);
    cfg
}

fn commit(repo: &Repo) -> String {
    let f = files();
    let refs: Vec<(&str, Option<&str>)> = f.iter().map(|(p, c)| (*p, c.as_deref())).collect();
    repo.commit(&refs, "first")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lo_over_tls_with_login_publishes_retained_desired_and_presence() {
    if !require_tools() {
        return;
    }
    assert_eq!(SITE, "s1");
    let broker = Arc::new(TlsBroker::start());
    let repo = Repo::new();
    let c1 = commit(&repo);
    let state = tempfile::tempdir().unwrap();
    let lo = Lo::start(tls_config(
        repo.path(),
        state.path(),
        broker.url(),
        broker.ca(),
    ))
    .await;
    let t = Topics::default();

    let b = broker.clone();
    let topic = t.node(SITE, "n1", NodeChannel::Desired);
    let doc = poll(Duration::from_secs(20), move || {
        b.retained(&topic)
            .and_then(|p| serde_json::from_slice::<DesiredState>(&p).ok())
    })
    .await
    .unwrap_or_else(|| panic!("no retained desired over TLS\n{}", broker.proc.log()));
    assert_eq!(doc.revision.commit, c1);
    assert_eq!(doc.deployments.len(), 1);
    assert!(lo.running.shared.mqtt_connected.load(Ordering::SeqCst));

    let b = broker.clone();
    let topic = t.lo(SITE, LoChannel::Online);
    let lo_online = poll(Duration::from_secs(10), move || {
        b.retained(&topic)
            .and_then(|p| serde_json::from_slice::<Presence>(&p).ok())
            .filter(|p| p.online)
    })
    .await;
    assert!(lo_online.is_some(), "no LO presence over TLS");
    assert!(broker.lo_logged_in(), "{}", broker.proc.log());

    // A node's presence and status published over TLS reach the LO (its subscriptions
    // work) and show in its retained site summary.
    broker.publish_retained(&t.node(SITE, "n1", NodeChannel::Online), &presence(true, 1));
    broker.publish_retained(
        &t.node(SITE, "n1", NodeChannel::Status),
        &serde_json::to_vec(&status_for(&doc, None)).unwrap(),
    );
    let b = broker.clone();
    let topic = t.lo(SITE, LoChannel::Status);
    let summary = poll(Duration::from_secs(20), move || {
        b.retained(&topic)
            .and_then(|p| serde_json::from_slice::<SiteStatus>(&p).ok())
            .filter(|s| {
                s.nodes
                    .iter()
                    .any(|n| n.node == "n1" && n.converged && n.online)
            })
    })
    .await;
    assert!(
        summary.is_some(),
        "no converged n1 in the retained lo/status"
    );

    // `lo plan --broker mqtts://… --tls-ca-file` reads the same broker.
    let url: schemas::BrokerUrl = broker.url().parse().unwrap();
    let observed = lo::cli::observe_broker(
        &url,
        Some(&broker.ca()),
        &t,
        SITE,
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;
    assert!(observed.is_ok(), "{:?}", observed.err());

    lo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lo_with_the_wrong_ca_does_not_connect_and_keeps_retrying() {
    if !require_tools() {
        return;
    }
    let broker = Arc::new(TlsBroker::start());
    let other = tempfile::tempdir().unwrap();
    let wrong_ca = make_ca(other.path(), "some other CA");
    let repo = Repo::new();
    let c1 = commit(&repo);
    let state = tempfile::tempdir().unwrap();
    let lo = Lo::start(tls_config(
        repo.path(),
        state.path(),
        broker.url(),
        wrong_ca.clone(),
    ))
    .await;
    // The LO serves the commit from Git, but gets no broker session.
    wait_until("commit served", Duration::from_secs(20), || {
        lo.running.shared.served_commit().filter(|c| *c == c1)
    })
    .await;
    let b = broker.clone();
    let attempts = poll(Duration::from_secs(15), move || {
        let n = b.failed_handshakes();
        (n >= 4).then_some(n)
    })
    .await
    .unwrap_or_else(|| panic!("the LO stopped retrying\n{}", broker.proc.log()));
    assert!(attempts >= 4);
    assert!(!lo.running.shared.mqtt_connected.load(Ordering::SeqCst));
    assert!(!broker.lo_logged_in(), "{}", broker.proc.log());
    let b = broker.clone();
    let topic = Topics::default().node(SITE, "n1", NodeChannel::Desired);
    let desired = tokio::task::spawn_blocking(move || b.retained(&topic))
        .await
        .unwrap();
    assert_eq!(desired, None, "the LO published with the wrong CA");

    // `lo plan`'s reader fails instead of hanging.
    let url: schemas::BrokerUrl = broker.url().parse().unwrap();
    let observed = lo::cli::observe_broker(
        &url,
        Some(&wrong_ca),
        &Topics::default(),
        SITE,
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;
    assert!(observed.is_err());

    lo.stop().await;
}

#[tokio::test]
async fn lo_refuses_to_start_with_a_missing_ca_file() {
    let repo = Repo::new();
    commit(&repo);
    let state = tempfile::tempdir().unwrap();
    let cfg = tls_config(
        repo.path(),
        state.path(),
        "mqtts://lo:pw@127.0.0.1:8883".into(),
        state.path().join("no-such-ca.pem"),
    );
    let err = lo::app::start(cfg, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("tls_ca_file"), "{err}");
}
