//! A real Mosquitto with a TLS listener and a password file, for tests of `mqtts://`:
//! certificates made with the `openssl` command in a temp dir, a free loopback port.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The password of a [`TlsBroker`]'s one login.
pub const PASS: &str = "s3cret";

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn installed(cmd: &str) -> bool {
    Command::new(cmd).arg("--help").output().is_ok()
}

/// Whether Mosquitto (server, clients, mosquitto_passwd) and openssl are installed; panics
/// under CI when they are not.
pub fn require_tools() -> bool {
    if !crate::require_mosquitto() {
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
        !crate::in_ci(),
        "Mosquitto TLS test is mandatory with CI=true: missing {missing:?}"
    );
    eprintln!("skipping Mosquitto TLS test: missing {missing:?}");
    false
}

/// A CA named `name` (`ca.crt`, `ca.key`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
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
pub fn make_server_cert(dir: &Path) {
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
#[derive(Debug)]
pub struct TlsBroker {
    user: String,
    dir: tempfile::TempDir,
    port: u16,
    /// The Mosquitto process (its log shows logins and failed handshakes).
    pub proc: crate::Proc,
}

impl TlsBroker {
    pub fn start(login: &str) -> TlsBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        make_ca(d, "edgefleet test CA");
        make_server_cert(d);
        run(Command::new("mosquitto_passwd")
            .arg("-c")
            .arg("-b")
            .arg(d.join("passwd"))
            .args([login, PASS]));
        let mut attempt = 0;
        let (port, proc) = loop {
            attempt += 1;
            let port = crate::free_port();
            // Run as root (a container's CI), Mosquitto would switch to the `mosquitto` user,
            // which cannot read the temp dir: keep the current user.
            let run_as =
                if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(d).expect("stat")) == 0 {
                    "user root\n"
                } else {
                    ""
                };
            let conf = d.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "{run_as}persistence false\nallow_anonymous false\npassword_file {d}/passwd\n\
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
            let mut proc = crate::Proc::spawn("mosquitto-tls", cmd, d);
            crate::wait_port(port);
            // A free port can be taken by another test between the probe and Mosquitto's
            // bind: then Mosquitto exits (and the port answered for someone else): again.
            std::thread::sleep(std::time::Duration::from_millis(200));
            if !proc.alive() && attempt < 5 {
                continue;
            }
            break (port, proc);
        };
        TlsBroker {
            user: login.to_owned(),
            dir,
            port,
            proc,
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn url(&self) -> String {
        format!("mqtts://{}:{PASS}@127.0.0.1:{}", self.user, self.port)
    }

    pub fn client_args(&self, cmd: &mut Command) {
        cmd.arg("--cafile")
            .arg(self.ca())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-u", &self.user, "-P", PASS, "-q", "1"]);
    }

    /// Publishes a retained message over TLS.
    pub fn publish_retained(&self, topic: &str, payload: &[u8]) {
        let file = self.dir.path().join("payload");
        std::fs::write(&file, payload).expect("write payload");
        let mut cmd = Command::new("mosquitto_pub");
        self.client_args(&mut cmd);
        run(cmd.args(["-r", "-t", topic]).arg("-f").arg(&file));
    }

    /// The retained message on `topic`, read over TLS (waits at most 1 s for it).
    pub fn retained(&self, topic: &str) -> Option<Vec<u8>> {
        let mut cmd = Command::new("mosquitto_sub");
        self.client_args(&mut cmd);
        let out = cmd
            .args(["-t", topic, "-C", "1", "-W", "1", "-N"])
            .output()
            .expect("mosquitto_sub");
        // Exit code 27: timed out without a message.
        (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
    }

    /// Whether Mosquitto logged a login of `client_id` with this broker's user.
    pub fn logged_in(&self, client_id: &str) -> bool {
        let id = format!(" as {client_id} ");
        self.proc
            .log()
            .lines()
            .any(|l| l.contains(&id) && l.contains(&format!("u'{}'", self.user)))
    }

    /// TLS handshakes Mosquitto logged as failed so far (one attempt logs one of these;
    /// `crate::wait_port`'s plain TCP probe counts too).
    pub fn failed_handshakes(&self) -> usize {
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
pub async fn poll<T: Send + 'static>(
    timeout: std::time::Duration,
    f: impl Fn() -> Option<T> + Send + Sync + 'static,
) -> Option<T> {
    let f = std::sync::Arc::new(f);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let g = f.clone();
        if let Some(v) = tokio::task::spawn_blocking(move || g())
            .await
            .expect("join")
        {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
