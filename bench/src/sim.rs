//! Pieces of the fleet simulator: the timed fake runtime, the broker and LO launchers, the
//! MQTT watcher and `/proc` sampling.

use anyhow::{bail, Context};
use en_agent::runtime::fake::FakeRuntime;
use en_agent::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, EngineInfo, ImageInfo, LocalImage, RuntimeError,
};
use futures_util::stream::BoxStream;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A [`FakeRuntime`] that fails operations at a given rate and remembers when the first
/// mutating call (pull, create, start, restart, remove, network, volume) happened after it
/// was armed.
#[derive(Debug)]
pub struct TimedRuntime {
    inner: FakeRuntime,
    failure_rate: f64,
    armed_at: Mutex<Option<Instant>>,
    first_action: Mutex<Option<Instant>>,
    /// Mutating calls made.
    pub actions: AtomicU64,
    /// Failures injected.
    pub injected: AtomicU64,
}

impl TimedRuntime {
    /// Wraps `inner`; each pull/create/start fails with probability `failure_rate`.
    pub fn new(inner: FakeRuntime, failure_rate: f64) -> Self {
        TimedRuntime {
            inner,
            failure_rate,
            armed_at: Mutex::new(None),
            first_action: Mutex::new(None),
            actions: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// The fake engine underneath (to mark images unhealthy, make it crash …).
    pub fn fake(&self) -> &FakeRuntime {
        &self.inner
    }

    /// Forgets the last first action; the next mutating call is recorded.
    pub fn arm(&self) {
        *lock(&self.armed_at) = Some(Instant::now());
        *lock(&self.first_action) = None;
    }

    /// When the first mutating call after [`TimedRuntime::arm`] happened.
    pub fn first_action(&self) -> Option<Instant> {
        *lock(&self.first_action)
    }

    fn action(&self) {
        self.actions.fetch_add(1, Ordering::Relaxed);
        if lock(&self.armed_at).is_some() {
            let mut f = lock(&self.first_action);
            if f.is_none() {
                *f = Some(Instant::now());
            }
        }
    }

    fn inject(&self, what: &str) -> Result<(), RuntimeError> {
        if self.failure_rate > 0.0 && fastrand::f64() < self.failure_rate {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(match what {
                "pull" => RuntimeError::PullFailed("injected by fleet-sim".into()),
                "create" => RuntimeError::Other {
                    code: schemas::wire::error_code::CREATE_FAILED,
                    message: "injected by fleet-sim".into(),
                },
                _ => RuntimeError::Other {
                    code: schemas::wire::error_code::START_FAILED,
                    message: "injected by fleet-sim".into(),
                },
            });
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait::async_trait]
impl ContainerRuntime for TimedRuntime {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn info(&self) -> Result<EngineInfo, RuntimeError> {
        self.inner.info().await
    }
    async fn list_containers(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.inner.list_containers().await
    }
    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        self.inner.inspect_image(reference).await
    }
    // Image garbage collection runs on the simulated nodes as on real ones.
    async fn list_images(&self) -> Result<Vec<LocalImage>, RuntimeError> {
        self.inner.list_images().await
    }
    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        // Not an action on the workload: it does not count for "reconnect → first action".
        self.inner.remove_image(reference).await
    }
    async fn pull_image(&self, reference: &str) -> Result<(), RuntimeError> {
        self.action();
        self.inject("pull")?;
        self.inner.pull_image(reference).await
    }
    async fn image_size_hint(&self, reference: &str) -> Option<u64> {
        self.inner.image_size_hint(reference).await
    }
    async fn free_disk_bytes(&self) -> Result<Option<u64>, RuntimeError> {
        self.inner.free_disk_bytes().await
    }
    async fn list_networks(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, RuntimeError> {
        self.inner.list_networks(labels).await
    }
    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.action();
        self.inner.ensure_network(name, labels).await
    }
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.action();
        self.inner.remove_network(name).await
    }
    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.action();
        self.inner.ensure_volume(name, labels).await
    }
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.action();
        self.inject("create")?;
        self.inner.create_container(spec).await
    }
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.action();
        self.inject("start")?;
        self.inner.start_container(id).await
    }
    async fn restart_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.action();
        self.inner.restart_container(id, timeout).await
    }
    async fn remove_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.action();
        self.inner.remove_container(id, timeout).await
    }
    fn changes(&self) -> BoxStream<'static, Result<(), RuntimeError>> {
        self.inner.changes()
    }
}

/// Which broker carries the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// The embedded rumqttd (`broker` crate), in this process.
    Rumqttd,
    /// Debian's Mosquitto, a child process.
    Mosquitto,
}

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    /// `mqtt://127.0.0.1:<port>`.
    pub url: String,
    /// Port.
    pub port: u16,
    /// Mosquitto's process (None for the in-process rumqttd).
    pub child: Option<Child>,
    _handle: Option<broker::BrokerHandle>,
}

impl Broker {
    /// Starts a broker sized for `nodes` clients.
    pub fn start(
        kind: BrokerKind,
        nodes: usize,
        dir: &Path,
        broker_bin: Option<&Path>,
        wildcard_segment_mib: usize,
    ) -> anyhow::Result<Broker> {
        let max_connections = (nodes + 1_000).max(12_000);
        // rumqttd keeps one commit log per subscription filter; a subscriber that falls
        // further behind than the log loses messages silently ("Read cursor start jumped").
        // The site-wide wildcards of the LO (status, events, heartbeat, online) receive a
        // burst of one message per node on every rollout: size their logs for it.
        let mut segments = String::from(
            "[custom_segments.\"+/+/nodes/+/desired\"]\nmax_segment_size = 65536\nmax_segment_count = 2\n",
        );
        let mut custom = broker::BrokerConfig::default().custom_segments;
        if wildcard_segment_mib > 0 {
            for ch in ["status", "events", "heartbeat", "online"] {
                let size = wildcard_segment_mib << 20;
                segments.push_str(&format!(
                    "[custom_segments.\"+/+/nodes/+/{ch}\"]\nmax_segment_size = {size}\nmax_segment_count = 2\n"
                ));
                custom.insert(
                    format!("+/+/nodes/+/{ch}"),
                    broker::SegmentLimits {
                        max_segment_size: size,
                        max_segment_count: 2,
                    },
                );
            }
        }
        match (kind, broker_bin) {
            (BrokerKind::Rumqttd, Some(bin)) => {
                // Our `broker` binary: a process of its own, so its sockets do not count
                // against this process's open-files limit.
                let port = harness::free_port();
                let conf = dir.join("broker.toml");
                std::fs::write(
                    &conf,
                    format!(
                        "listen = \"127.0.0.1:{port}\"\nmax_connections = {max_connections}\nnext_connection_delay_ms = 0\n{segments}"
                    ),
                )?;
                let log = std::fs::File::create(dir.join("broker.log"))?;
                let child = Command::new(bin)
                    .arg("--config")
                    .arg(&conf)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("spawn {}", bin.display()))?;
                wait_listen(port)?;
                Ok(Broker {
                    url: format!("mqtt://127.0.0.1:{port}"),
                    port,
                    child: Some(child),
                    _handle: None,
                })
            }
            (BrokerKind::Rumqttd, None) => {
                let cfg = broker::BrokerConfig {
                    listen: "127.0.0.1:0".parse().context("listen address")?,
                    max_connections,
                    // Accept as fast as possible: the simulator ramps connections itself.
                    next_connection_delay_ms: 0,
                    custom_segments: custom,
                    ..broker::BrokerConfig::default()
                };
                let handle = broker::start(&cfg).context("start rumqttd")?;
                let addr = handle.connect_addr();
                Ok(Broker {
                    url: format!("mqtt://{addr}"),
                    port: addr.port(),
                    child: None,
                    _handle: Some(handle),
                })
            }
            (BrokerKind::Mosquitto, _) => {
                let port = harness::free_port();
                let conf = dir.join("mosquitto.conf");
                std::fs::write(&conf, mosquitto_conf(port)).context("mosquitto.conf")?;
                let log = std::fs::File::create(dir.join("mosquitto.log"))?;
                let child = Command::new(mosquitto_bin())
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .context("spawn mosquitto")?;
                wait_listen(port)?;
                Ok(Broker {
                    url: format!("mqtt://127.0.0.1:{port}"),
                    port,
                    child: Some(child),
                    _handle: None,
                })
            }
        }
    }

    /// The broker's pid when it is a separate process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_listen(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("broker did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Mosquitto's binary (`MOSQUITTO` overrides).
pub fn mosquitto_bin() -> PathBuf {
    std::env::var_os("MOSQUITTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto"))
}

/// The Mosquitto configuration a 10,000-node site needs: no connection limit (the file
/// descriptor limit is then the bound: raise it), no per-client queue limit (the LO's
/// wildcard subscriptions receive 10,000 status messages at once; the default of 1,000
/// queued QoS 1 messages drops the rest), large packets for desired documents.
pub fn mosquitto_conf(port: u16) -> String {
    format!(
        "listener {port} 127.0.0.1\n\
         max_connections -1\n\
         allow_anonymous true\n\
         persistence false\n\
         max_packet_size 2000000\n\
         max_inflight_messages 0\n\
         max_queued_messages 0\n\
         log_type error\n\
         log_type warning\n"
    )
}

/// What the watcher saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// The commit being waited for and when the wait started.
    pub target: Option<(String, Instant)>,
    /// Node → when its status said converged at the target commit.
    pub converged: HashMap<String, Instant>,
    /// When the LO's site status first named the target commit.
    pub lo_served: Option<Instant>,
    /// Node → last `online: true` presence (when it was seen, epoch).
    pub online: HashMap<String, (Instant, u64)>,
    /// Status messages received.
    pub status_msgs: u64,
    /// Status bytes received.
    pub status_bytes: u64,
    /// Heartbeat messages and bytes received.
    pub heartbeat_msgs: u64,
    /// Heartbeat bytes.
    pub heartbeat_bytes: u64,
    /// Event messages and bytes.
    pub event_msgs: u64,
    /// Event bytes.
    pub event_bytes: u64,
    /// One heartbeat payload, as an example.
    pub heartbeat_example: Option<String>,
}

/// The counters of [`Seen`], copied out of the lock.
#[derive(Debug, Clone, Default)]
pub struct SeenCounts {
    /// Status messages received.
    pub status_msgs: u64,
    /// Status bytes received.
    pub status_bytes: u64,
    /// Heartbeat messages received.
    pub heartbeat_msgs: u64,
    /// Heartbeat bytes.
    pub heartbeat_bytes: u64,
    /// Event messages.
    pub event_msgs: u64,
    /// Event bytes.
    pub event_bytes: u64,
    /// One heartbeat payload.
    pub heartbeat_example: Option<String>,
}

impl Seen {
    /// The counters.
    pub fn snapshot(&self) -> SeenCounts {
        SeenCounts {
            status_msgs: self.status_msgs,
            status_bytes: self.status_bytes,
            heartbeat_msgs: self.heartbeat_msgs,
            heartbeat_bytes: self.heartbeat_bytes,
            event_msgs: self.event_msgs,
            event_bytes: self.event_bytes,
            heartbeat_example: self.heartbeat_example.clone(),
        }
    }
}

/// Subscribes to a site's status, presence, heartbeats, events and LO status.
#[derive(Debug, Clone)]
pub struct Watcher {
    /// What it saw.
    pub seen: Arc<Mutex<Seen>>,
    /// Wakes waiters on every change.
    pub notify: Arc<tokio::sync::Notify>,
}

impl Watcher {
    /// Connects and subscribes (QoS 1; the watcher is up before any node publishes).
    pub async fn start(broker_port: u16, root: &str, site: &str) -> anyhow::Result<Watcher> {
        let mut opts = MqttOptions::new(
            format!("fleet-sim-watch-{}", std::process::id()),
            "127.0.0.1",
            broker_port,
        );
        opts.set_max_packet_size(4 << 20, 4 << 20);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        let (client, mut el) = AsyncClient::new(opts, 1024);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let notify = Arc::new(tokio::sync::Notify::new());
        let w = Watcher {
            seen: seen.clone(),
            notify: notify.clone(),
        };
        let prefix = format!("{root}/{site}/");
        let filters = [
            format!("{root}/{site}/nodes/+/status"),
            format!("{root}/{site}/nodes/+/online"),
            format!("{root}/{site}/nodes/+/heartbeat"),
            format!("{root}/{site}/nodes/+/events"),
            format!("{root}/{site}/lo/status"),
        ];
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            let _ = client.subscribe(f.clone(), QoS::AtLeastOnce).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let now = Instant::now();
                        let Some(rest) = p.topic.strip_prefix(&prefix) else {
                            continue;
                        };
                        on_publish(&seen, rest, &p.payload, now);
                        notify.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "watcher connection");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .context("watcher subscribe timed out")?
            .context("watcher stopped")?;
        Ok(w)
    }

    /// Starts waiting for `commit`: clears the converged set.
    pub fn set_target(&self, commit: &str, t0: Instant) {
        let mut s = lock(&self.seen);
        s.target = Some((commit.to_owned(), t0));
        s.converged.clear();
        s.lo_served = None;
    }

    /// Nodes converged on the target so far.
    pub fn converged_count(&self) -> usize {
        lock(&self.seen).converged.len()
    }
}

fn on_publish(seen: &Mutex<Seen>, rest: &str, payload: &[u8], now: Instant) {
    let mut s = lock(seen);
    if rest == "lo/status" {
        let Some((target, _)) = &s.target else { return };
        if s.lo_served.is_none() {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) {
                if v["revision"]["commit"].as_str() == Some(target.as_str()) {
                    s.lo_served = Some(now);
                }
            }
        }
        return;
    }
    let mut parts = rest.split('/');
    let (Some("nodes"), Some(node), Some(channel)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    match channel {
        "status" => {
            s.status_msgs += 1;
            s.status_bytes += payload.len() as u64;
            let Some((target, _)) = &s.target else { return };
            if s.converged.contains_key(node) {
                return;
            }
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) {
                if v["converged"].as_bool() == Some(true)
                    && v["revision"]["commit"].as_str() == Some(target.as_str())
                {
                    s.converged.insert(node.to_owned(), now);
                }
            }
        }
        "online" => {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) {
                if v["online"].as_bool() == Some(true) {
                    let epoch = v["epoch"].as_u64().unwrap_or(0);
                    s.online.insert(node.to_owned(), (now, epoch));
                }
            }
        }
        "heartbeat" => {
            s.heartbeat_msgs += 1;
            s.heartbeat_bytes += payload.len() as u64;
            if s.heartbeat_example.is_none() {
                s.heartbeat_example = Some(String::from_utf8_lossy(payload).into_owned());
            }
        }
        "events" => {
            s.event_msgs += 1;
            s.event_bytes += payload.len() as u64;
        }
        _ => {}
    }
}

/// `POST /sync` to the LO (what a Git webhook does).
pub async fn post_sync(addr: &str) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(10), post_sync_inner(addr))
        .await
        .context("POST /sync timed out")?
}

async fn post_sync_inner(addr: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.write_all(
        b"POST /sync HTTP/1.1\r\nHost: lo\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf);
    if !(head.starts_with("HTTP/1.1 2")) {
        bail!("POST /sync: {}", head.lines().next().unwrap_or(""));
    }
    Ok(())
}

/// CPU (user + system) and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ProcSample {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    pub hwm_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, so 11 and 12 after the state field (3).
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_s: ticks / clk_tck(),
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    })
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The LO, in this process or as a child process of the `lo` binary.
#[derive(Debug)]
pub enum Lo {
    /// `lo::app::start` in this process.
    InProcess(lo::app::Running, tokio_util::sync::CancellationToken),
    /// The `lo` binary.
    Process(Child, String),
}

impl Lo {
    /// Starts the LO on `repo` (a `file://` URL) with a long poll interval: syncs are
    /// triggered by `POST /sync`.
    pub async fn start(
        bin: Option<&Path>,
        site: &str,
        repo: &str,
        broker_url: &str,
        state_dir: &Path,
        log: &Path,
    ) -> anyhow::Result<Lo> {
        Self::start_with(bin, site, repo, broker_url, state_dir, log, None).await
    }

    /// [`Lo::start`] with another `heartbeat_timeout` (the LO's presence timeout, and how
    /// long after connecting it waits before a rollout wave passes).
    pub async fn start_with(
        bin: Option<&Path>,
        site: &str,
        repo: &str,
        broker_url: &str,
        state_dir: &Path,
        log: &Path,
        heartbeat_timeout: Option<Duration>,
    ) -> anyhow::Result<Lo> {
        let default_timeout = lo::config::Config::default().heartbeat_timeout;
        let heartbeat_timeout = heartbeat_timeout.unwrap_or(default_timeout);
        match bin {
            None => {
                let cfg = lo::config::Config {
                    site: site.to_owned(),
                    repo: repo.to_owned(),
                    poll_interval: Duration::from_secs(3600),
                    state_dir: state_dir.to_owned(),
                    broker: broker_url.to_owned(),
                    http_listen: "127.0.0.1:0".to_owned(),
                    heartbeat_timeout,
                    ..lo::config::Config::default()
                };
                let token = tokio_util::sync::CancellationToken::new();
                let source = lo::app::open_git_source(&cfg)
                    .await
                    .context("LO git source")?;
                let running = lo::app::start(cfg, source, token.clone())
                    .await
                    .context("start LO")?;
                Ok(Lo::InProcess(running, token))
            }
            Some(bin) => {
                let http = format!("127.0.0.1:{}", harness::free_port());
                let conf = state_dir.with_extension("toml");
                std::fs::create_dir_all(state_dir)?;
                std::fs::write(
                    &conf,
                    format!(
                        "site = \"{site}\"\nrepo = \"{repo}\"\npoll_interval = \"1h\"\nstate_dir = \"{}\"\nbroker = \"{broker_url}\"\nhttp_listen = \"{http}\"\nheartbeat_timeout = \"{}ms\"\n",
                        state_dir.display(),
                        heartbeat_timeout.as_millis()
                    ),
                )?;
                let child = Command::new(bin)
                    .args(["run", "--config"])
                    .arg(&conf)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(log)?)
                    .spawn()
                    .with_context(|| format!("spawn {}", bin.display()))?;
                let deadline = Instant::now() + Duration::from_secs(30);
                while tokio::net::TcpStream::connect(&http).await.is_err() {
                    if Instant::now() > deadline {
                        bail!("lo did not listen on {http}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Lo::Process(child, http))
            }
        }
    }

    /// Its HTTP address.
    pub fn http(&self) -> String {
        match self {
            Lo::InProcess(r, _) => r.http_addr.to_string(),
            Lo::Process(_, h) => h.clone(),
        }
    }

    /// Its pid when it runs as a process.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Lo::InProcess(..) => None,
            Lo::Process(c, _) => Some(c.id()),
        }
    }

    /// Stops it.
    pub async fn stop(self) {
        match self {
            Lo::InProcess(r, token) => {
                token.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(10), r.join).await;
            }
            Lo::Process(mut c, _) => {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = c.try_wait() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
