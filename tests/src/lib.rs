//! # The end-to-end harness
//!
//! Starts real processes (our `broker` or Mosquitto, `lo`, `en-agent`s), a local image
//! registry, real Git repositories, and watches the fleet over MQTT. Every resource a test
//! creates is released by a guard's `Drop`, also when the test fails.
//!
//! ## Layout
//! - [`Proc`]: a child process killed on drop; [`bin`] finds our binaries.
//! - [`GitRepo`]: a repository in a temp dir with `write`/`remove`/`commit`.
//! - [`Registry`], [`ScratchImage`] and [`build_image`]: Debian's `docker-registry` on
//!   loopback and tiny `FROM scratch` busybox images, so pulls and digests are real;
//!   [`docker`] / [`must_docker`] run the CLI; [`registry`]: the same with htpasswd auth.
//! - [`DockerGuard`]: removes every container, network and volume of a test site (or with
//!   any one label, e.g. a node's).
//! - [`Watcher`]: the latest retained payload of every topic under a site, with
//!   [`Watcher::wait_until`]; [`rollout`]: its whole history, a registry outage, node
//!   containers.
//! - [`require_docker`] / [`require_docker_registry`] / [`require_mosquitto`]: mandatory
//!   with `CI=true`, else skip with a one-line notice.

pub mod registry;
pub mod rollout;
pub mod site;
pub mod tls;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// True when the environment says CI (then Docker and Mosquitto tests are mandatory).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn require(what: &str, check: Result<(), String>) -> bool {
    match check {
        Ok(()) => true,
        Err(why) if in_ci() => panic!("{what} is mandatory with CI=true: {why}"),
        Err(why) => {
            eprintln!("skipping {what} test: {why}");
            false
        }
    }
}

/// Whether a Docker engine answers; panics under CI when it does not.
pub fn require_docker() -> bool {
    require("Docker", docker_check())
}

/// Whether a Docker engine answers and static busybox and `docker-registry` are installed
/// (what [`Registry`] and [`ScratchImage`] need); panics under CI when they are not.
pub fn require_docker_registry() -> bool {
    let check = docker_check().and_then(|()| {
        if busybox().is_none() {
            Err("busybox is missing (apt-get install busybox-static)".into())
        } else if registry_path().is_none() {
            Err("docker-registry is missing (apt-get install docker-registry)".into())
        } else {
            Ok(())
        }
    });
    require("Docker", check)
}

fn docker_check() -> Result<(), String> {
    docker(&["info", "--format", "{{.ServerVersion}}"])
        .map(drop)
        .map_err(|e| format!("no Docker engine: {e}"))
}

/// Whether Mosquitto and its clients are installed; panics under CI when they are not.
pub fn require_mosquitto() -> bool {
    let check = if mosquitto_path().is_some() && which("mosquitto_sub").is_some() {
        Ok(())
    } else {
        Err("mosquitto or mosquitto_sub not installed (apt-get install mosquitto mosquitto-clients)".into())
    };
    require("Mosquitto", check)
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

/// `cmd` on PATH, else at `fallback`.
fn installed(cmd: &str, fallback: &str) -> Option<PathBuf> {
    which(cmd).or_else(|| {
        let p = PathBuf::from(fallback);
        p.is_file().then_some(p)
    })
}

fn mosquitto_path() -> Option<PathBuf> {
    installed("mosquitto", "/usr/sbin/mosquitto")
}

fn registry_path() -> Option<PathBuf> {
    installed("docker-registry", "/usr/bin/docker-registry")
}

/// Debian's static busybox (`busybox-static`).
fn busybox() -> Option<&'static Path> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A unique short name for this test run (`<prefix>-<pid><n>`), valid as site or tag.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Path of one of our binaries (`broker`, `lo`, `en-agent`), built by `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    if !path.is_file() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--bins",
                "-p",
                "edgefleet-broker",
                "-p",
                "edgefleet-lo",
                "-p",
                "edgefleet-agent",
            ])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the binaries failed");
    }
    path
}

/// A child process, killed (SIGKILL) and reaped on drop; its output goes to a log file.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd`, sending stdout and stderr to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it still runs (a server that lost its port to another process exits).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills it now (SIGKILL: no clean shutdown, its Last Will fires).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it with SIGTERM and waits up to 10 s (clean shutdown).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True while it runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // Show what the process said: the first thing one wants when a scenario fails.
            let log = self.log();
            let tail: String = log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("---- last lines of {} ----\n{tail}", self.name);
        }
    }
}

/// Runs `cmd` to completion with piped output, killing it after `limit` (then panics).
pub fn output_within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("{cmd:?} did not exit within {limit:?}: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts our `broker` on `port`.
pub fn start_broker(port: u16, log_dir: &Path) -> Proc {
    let mut cmd = Command::new(bin("broker"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
    let p = Proc::spawn("broker", cmd, log_dir);
    wait_port(port);
    p
}

/// Starts Mosquitto on `port` (anonymous access on loopback, persistence off).
pub fn start_mosquitto(port: u16, log_dir: &Path) -> Proc {
    let conf = log_dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_packet_size 2000000\nmax_inflight_messages 0\nmax_queued_messages 100000\n"
        ),
    )
    .expect("mosquitto conf");
    let mut cmd = Command::new(mosquitto_path().expect("mosquitto installed"));
    cmd.arg("-c").arg(&conf);
    let p = Proc::spawn("mosquitto", cmd, log_dir);
    wait_port(port);
    p
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_port(port: u16) {
    wait_for(&format!("port {port}"), Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

/// A Git repository in a temp dir, driven by the `git` command.
#[derive(Debug)]
pub struct GitRepo {
    dir: tempfile::TempDir,
}

impl GitRepo {
    /// `git init -b main`.
    pub fn new() -> GitRepo {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = GitRepo { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.email", "test@edgefleet.invalid"]);
        repo.git(&["config", "user.name", "edgefleet test"]);
        repo
    }

    /// The working tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `file://` URL of the repository.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    /// Runs git in the repository.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes a file (creating folders).
    pub fn write(&self, path: &str, content: &str) {
        let p = self.dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    /// Removes a file.
    pub fn remove(&self, path: &str) {
        std::fs::remove_file(self.dir.path().join(path)).expect("remove");
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

impl Default for GitRepo {
    fn default() -> Self {
        GitRepo::new()
    }
}

/// Debian's `docker-registry` on 127.0.0.1 (Docker trusts loopback registries without TLS).
#[derive(Debug)]
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    // `rollout::Registry::{stop, restart}` start it again on the same port and storage.
    proc: Proc,
    conf: PathBuf,
    log_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry with storage in a temp dir.
    pub fn start(log_dir: &Path) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("config.yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let mut cmd = Command::new(registry_path().expect("docker-registry installed"));
        cmd.arg("serve").arg(&conf);
        let proc = Proc::spawn("registry", cmd, log_dir);
        wait_port(port);
        Registry {
            addr: format!("127.0.0.1:{port}"),
            proc,
            conf,
            log_dir: log_dir.to_path_buf(),
            _dir: dir,
        }
    }
}

/// Runs `docker` with these arguments (stdin closed); its trimmed stdout, or the command
/// and its stderr.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// [`docker`], panicking when it fails.
pub fn must_docker(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// A tiny `FROM scratch` image: Debian's static busybox at one path, a few files, an
/// entrypoint and a command. Built with `docker build`, so digests are real.
#[derive(Debug, Clone)]
pub struct ScratchImage {
    busybox: String,
    files: Vec<(String, Vec<u8>)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

impl ScratchImage {
    /// Busybox at `path` (absolute, e.g. `/bin/busybox`), nothing else yet.
    pub fn busybox_at(path: &str) -> ScratchImage {
        ScratchImage {
            busybox: path.to_owned(),
            files: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
        }
    }

    /// Adds a file at absolute `path` (folders are created).
    pub fn file(mut self, path: &str, content: impl AsRef<[u8]>) -> ScratchImage {
        self.files
            .push((path.to_owned(), content.as_ref().to_vec()));
        self
    }

    /// Sets `ENTRYPOINT` (exec form).
    pub fn entrypoint(mut self, argv: &[&str]) -> ScratchImage {
        self.entrypoint = argv.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Sets `CMD` (exec form).
    pub fn cmd(mut self, argv: &[&str]) -> ScratchImage {
        self.cmd = argv.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Builds it and tags it `tag`; when `tag` names a loopback registry, pushes it and
    /// returns its repo digest (`<repo>@sha256:…`) in that repository.
    pub fn build(&self, tag: &str) -> Option<String> {
        let ctx = tempfile::tempdir().expect("tempdir");
        let root = ctx.path().join("rootfs");
        let place = |path: &str| {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            p
        };
        std::fs::copy(
            busybox().expect("busybox-static installed"),
            place(&self.busybox),
        )
        .expect("copy busybox");
        for (path, content) in &self.files {
            std::fs::write(place(path), content).expect("image file");
        }
        // The tag as a label makes every tag its own image: tests running in parallel build
        // the same files, and a shared image id would let one test's cleanup delete another
        // test's image while it is being built or pushed.
        let mut dockerfile = format!(
            "FROM scratch\nCOPY rootfs/ /\nLABEL io.edgefleet.test-image={}\n",
            serde_json::Value::String(tag.to_owned())
        );
        for (word, argv) in [("ENTRYPOINT", &self.entrypoint), ("CMD", &self.cmd)] {
            if !argv.is_empty() {
                let json = serde_json::to_string(argv).expect("json");
                dockerfile.push_str(&format!("{word} {json}\n"));
            }
        }
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("dockerfile");
        must_docker(&["build", "-q", "-t", tag, &ctx.path().display().to_string()]);
        if !(tag.starts_with("127.0.0.1:") || tag.starts_with("localhost:")) {
            return None;
        }
        must_docker(&["push", tag]);
        // Parallel tests may build the same image under other names: pick this repository's.
        let repo = match tag.rsplit_once(':') {
            Some((repo, t)) if !t.contains('/') => repo,
            _ => tag,
        };
        let digests = must_docker(&["image", "inspect", "--format", "{{json .RepoDigests}}", tag]);
        let list: Vec<String> = serde_json::from_str(&digests).unwrap_or_default();
        list.into_iter()
            .find(|d| d.strip_prefix(repo).is_some_and(|r| r.starts_with('@')))
    }
}

/// Builds a tiny `FROM scratch` image holding static busybox that serves HTTP on 8080
/// (`/index.html` says `version`, `/health` answers while `/tmp/unhealthy` is absent), tags
/// it `tag`, pushes it when `tag` names a registry, and returns the repo digest if pushed.
pub fn build_image(tag: &str, version: &str) -> Option<String> {
    ScratchImage::busybox_at("/bin/busybox")
        .file("/www/index.html", format!("{version}\n"))
        .file("/www/health", "ok\n")
        .entrypoint(&["/bin/busybox"])
        // httpd as PID 1 ignores SIGTERM, so every `docker stop` would wait out its 10 s
        // grace period; a shell that forwards TERM stops at once, like a real service.
        .cmd(&[
            "sh",
            "-c",
            "/bin/busybox httpd -f -p 8080 -h /www & pid=$!; trap 'kill $pid; exit 0' TERM; wait",
        ])
        .build(tag)
}

/// Removes every container, network and volume carrying one label (a test site's or
/// node's), and the given containers and images, on drop.
#[derive(Debug)]
pub struct DockerGuard {
    /// `label=<key>=<value>`, a `docker … --filter`.
    filter: String,
    containers: Mutex<Vec<String>>,
    images: Mutex<Vec<String>>,
}

impl DockerGuard {
    /// Guards resources labelled `io.edgefleet.site=<site>`.
    pub fn new(site: &str) -> DockerGuard {
        DockerGuard::by_label("io.edgefleet.site", site)
    }

    /// Guards resources labelled `<key>=<value>` (e.g. `io.edgefleet.node=<node>`).
    pub fn by_label(key: &str, value: &str) -> DockerGuard {
        DockerGuard {
            filter: format!("label={key}={value}"),
            containers: Mutex::new(Vec::new()),
            images: Mutex::new(Vec::new()),
        }
    }

    /// Also removes this image on drop: a tag, or a whole repository (every tag of it).
    pub fn image(&self, reference: &str) {
        self.images.lock().expect("lock").push(reference.to_owned());
    }

    /// Also removes this container (name or id), which need not carry the label, on drop.
    pub fn container(&self, name: &str) {
        self.containers.lock().expect("lock").push(name.to_owned());
    }

    /// Containers with the label, `name → state`.
    pub fn containers(&self) -> BTreeMap<String, String> {
        docker(&[
            "ps",
            "-a",
            "--filter",
            &self.filter,
            "--format",
            "{{.Names}} {{.State}}",
        ])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, s)| (n.to_owned(), s.to_owned()))
        .collect()
    }

    /// Runs `docker` with these arguments.
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        docker(args)
    }

    fn cleanup(&self) {
        let filter = self.filter.as_str();
        let ids = docker(&["ps", "-aq", "--filter", filter]).unwrap_or_default();
        let mut ids: Vec<&str> = ids.split_whitespace().collect();
        let named = self
            .containers
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        ids.extend(named.iter().map(String::as_str));
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            let _ = docker(&args);
        }
        for kind in ["network", "volume"] {
            let list = docker(&[kind, "ls", "-q", "--filter", filter]).unwrap_or_default();
            for id in list.split_whitespace() {
                let _ = docker(&[kind, "rm", id]);
            }
        }
        for image in self.images.lock().map(|v| v.clone()).unwrap_or_default() {
            let _ = docker(&["rmi", "-f", &image]);
            // Every local tag (or, untagged, digest) of a repository; by name, never by id,
            // so an image shared with another test keeps that test's names.
            let names = docker(&[
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}",
                &image,
            ])
            .unwrap_or_default();
            for line in names.lines() {
                if let Some(name) = line.split(' ').find(|n| !n.contains("<none>")) {
                    let _ = docker(&["rmi", "-f", name]);
                }
            }
        }
    }
}

impl Drop for DockerGuard {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// The latest payload of every topic under `<root>/<site>/#`, as JSON.
#[derive(Debug, Clone)]
pub struct Watcher {
    latest: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    // Every payload but heartbeats, in arrival order (`rollout::Watcher::history`).
    history: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    _rt: Arc<tokio::runtime::Runtime>,
}

impl Watcher {
    /// Connects to `127.0.0.1:port` and subscribes to `fleet/<site>/#`, reconnecting and
    /// resubscribing after broker restarts.
    pub fn start(port: u16, site: &str) -> Watcher {
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
        );
        let latest = Arc::new(Mutex::new(BTreeMap::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let history = Arc::new(Mutex::new(Vec::new()));
        let (l, e, h) = (latest.clone(), events.clone(), history.clone());
        let filter = format!("fleet/{site}/#");
        let id = unique("watch");
        rt.spawn(async move {
            let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
            opts.set_max_packet_size(4 << 20, 4 << 20);
            opts.set_keep_alive(Duration::from_secs(5));
            let (client, mut ev) = rumqttc::AsyncClient::new(opts, 1000);
            loop {
                match ev.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&p.payload).unwrap_or(serde_json::Value::Null);
                        if p.topic.ends_with("/events") {
                            e.lock().expect("lock").push(v.clone());
                        }
                        if !p.topic.ends_with("/heartbeat") {
                            h.lock().expect("lock").push((p.topic.clone(), v.clone()));
                        }
                        l.lock().expect("lock").insert(p.topic.clone(), v);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Watcher {
            latest,
            events,
            history,
            _rt: rt,
        }
    }

    /// The latest payload on `topic`.
    pub fn get(&self, topic: &str) -> Option<serde_json::Value> {
        self.latest.lock().expect("lock").get(topic).cloned()
    }

    /// Every event seen so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().expect("lock").clone()
    }

    /// Polls `f` over the latest payloads until it returns `Some`.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&BTreeMap<String, serde_json::Value>) -> Option<T>,
    ) -> T {
        let latest = self.latest.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(what, timeout, || f(&latest.lock().expect("lock")))
        }));
        match result {
            Ok(v) => v,
            Err(p) => {
                let snapshot = self.latest.lock().expect("lock").clone();
                for (t, v) in snapshot.iter().filter(|(t, _)| !t.ends_with("/heartbeat")) {
                    eprintln!("{t}: {v}");
                }
                std::panic::resume_unwind(p)
            }
        }
    }
}

/// Reads the retained message on `topic` with Mosquitto's own client (a client we did not write).
pub fn mosquitto_sub_retained(port: u16, topic: &str) -> Option<serde_json::Value> {
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            "5",
            "--retained-only",
        ])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}
