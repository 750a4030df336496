//! `fleet-sim`: a whole edgefleet site in one process, measuring commit → every node
//! converged.
//!
//! A broker (the embedded rumqttd, or Mosquitto as a child process), the real LO
//! (`lo::app::start` in process, or the `lo` binary with `--lo-bin`) on a temp Git repository,
//! and N agents (`en_agent::spawn`, each with its own MQTT connection, state directory,
//! reports and heartbeat) over the fake container runtime (latency and failure rate
//! configurable). Then, `--runs` times: commit a new image version of every deployment,
//! `POST /sync`, and time
//!
//! - `detect`: sync → the LO's site status names the new commit,
//! - `agents`: sync → every agent's own status is converged at that commit,
//! - `broker`: sync → a converged status at that commit from every node has crossed the
//!   broker (what the LO and an operator see). This is the headline figure.
//!
//! With `--reconnect N`, N nodes are stopped, a change is committed and converged by the
//! rest, and each is started again: CONNACK (its `online` presence seen) → its first
//! container action.
//!
//! `--scenario rollout-good|rollout-bad|rollout-offline` runs the rollout scenario instead
//! (waves, health gate, halt and rollback, offline nodes: `bench::rollout`, issue #11):
//! PASS/FAIL lines on stderr, exit status 1 on a FAIL.
//!
//! One JSON document on stdout; progress on stderr. Every phase has a timeout: the run
//! always ends by itself. See BENCHMARKS.md and `scripts/bench-fleet.sh`.

use anyhow::{bail, Context};
use bench::sim::{self, Broker, BrokerKind, Lo, TimedRuntime, Watcher};
use bench::{node_name, summarize, Summary, SynthSite};
use clap::Parser;
use en_agent::runtime::fake::FakeRuntime;
use schemas::wire::NodeStatus;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "fleet-sim",
    about = "Simulate an edgefleet site and time commit → converged"
)]
struct Args {
    /// What to run: `commit` (commit → converged, the default) or a rollout scenario.
    #[arg(long, value_enum, default_value_t = ScenarioKind::Commit)]
    scenario: ScenarioKind,
    /// Rollout scenarios: the Site's waves (cumulative `nodes` of each, `N` or `N%`).
    #[arg(long, default_value = "1%,10%,100%", value_delimiter = ',')]
    waves: Vec<String>,
    /// Rollout scenarios: the soak of every wave.
    #[arg(long, default_value = "2s")]
    soak: String,
    /// Rollout scenarios: `waveTimeout`.
    #[arg(long, default_value = "30s")]
    wave_timeout: String,
    /// Rollout scenarios: the release never becomes healthy (implied by `rollout-bad`).
    #[arg(long)]
    bad_release: bool,
    /// Rollout scenarios: percent of the nodes offline during the rollout (default 10 for
    /// `rollout-offline`, 0 otherwise).
    #[arg(long)]
    offline_percent: Option<f64>,
    /// Rollout scenarios: bound on halt → every node that received the candidate reports the
    /// promoted version installed, seconds.
    #[arg(long, default_value_t = 60)]
    rollback_bound_s: u64,
    /// Rollout scenarios: bound on reconnect → a returning node reports the promoted version
    /// installed, seconds.
    #[arg(long, default_value_t = 5)]
    return_bound_s: u64,
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Broker.
    #[arg(long, value_enum, default_value_t = BrokerKind::Rumqttd)]
    broker: BrokerKind,
    /// Deployments in the site (deployment 0 on every node, odd ones on half the nodes).
    #[arg(long, default_value_t = 1)]
    deployments: usize,
    /// Components (containers) per deployment.
    #[arg(long, default_value_t = 3)]
    components: usize,
    /// Latency added to every fake engine call, ms.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Probability that a pull/create/start fails (the agent retries with backoff).
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Measured rollouts (each a new commit).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Nodes to measure reconnect → first action on (0: skip).
    #[arg(long, default_value_t = 0)]
    reconnect: usize,
    /// Timeout of each phase, seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Agents started per batch while connecting the fleet.
    #[arg(long, default_value_t = 500)]
    spawn_batch: usize,
    /// Pause between batches, ms.
    #[arg(long, default_value_t = 100)]
    spawn_pause_ms: u64,
    /// Agent heartbeat interval, seconds.
    #[arg(long, default_value_t = 10)]
    heartbeat_s: u64,
    /// Measure the LO's CPU while the fleet is idle for this long after the runs, seconds
    /// (needs `--lo-bin`).
    #[arg(long, default_value_t = 0)]
    idle_s: u64,
    /// With `--broker rumqttd`: run our `broker` binary at this path instead of rumqttd in
    /// this process (needed above ~9,000 nodes when the open-files limit is 20,000: in one
    /// process every node costs two sockets).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// rumqttd: commit-log segment size (MiB, 2 segments) of the site-wide wildcard filters
    /// (`…/nodes/+/status|events|heartbeat|online`); 0 keeps the broker's defaults (1 MiB),
    /// which lose status messages above a few thousand nodes.
    #[arg(long, default_value_t = 32)]
    rumqttd_wildcard_segment_mib: usize,
    /// Run the `lo` binary at this path instead of the LO in process.
    #[arg(long)]
    lo_bin: Option<PathBuf>,
    /// Where the agents' state directories go (default: a temp dir in /dev/shm, so the
    /// simulator measures the protocol, not this machine's disk).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

/// What fleet-sim runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScenarioKind {
    /// Commit → every node converged (`--runs` times), reconnect → first action.
    Commit,
    /// A release that becomes healthy, through the waves.
    RolloutGood,
    /// A release whose components never become healthy: halt and rollback.
    RolloutBad,
    /// A good release (bad with `--bad-release`) with `--offline-percent` (10) of the nodes
    /// offline during the rollout, back after it ended.
    RolloutOffline,
}

#[derive(Debug, Serialize)]
struct Rollout {
    run: usize,
    commit: String,
    sync_to_detect_ms: Option<f64>,
    sync_to_agents_converged_ms: Option<f64>,
    sync_to_broker_converged_ms: Option<f64>,
    detect_to_broker_converged_ms: Option<f64>,
    agents_converged: usize,
    broker_converged: usize,
    per_node_ms: Summary,
    lo_cpu_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Reconnect {
    node: String,
    online_to_first_action_ms: Option<f64>,
    spawn_to_first_action_ms: Option<f64>,
    spawn_to_converged_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
    nodes: usize,
    broker: BrokerKind,
    lo: &'static str,
    broker_process: bool,
    rumqttd_wildcard_segment_mib: usize,
    deployments: usize,
    components: usize,
    latency_ms: u64,
    failure_rate: f64,
    nofile: u64,
    connect_ms: f64,
    initial_converged_ms: Option<f64>,
    rollouts: Vec<Rollout>,
    sync_to_broker_converged_ms: Summary,
    reconnect: Vec<Reconnect>,
    reconnect_online_to_first_action_ms: Summary,
    injected_failures: u64,
    engine_actions: u64,
    status_msgs: u64,
    status_bytes_avg: f64,
    heartbeat_msgs: u64,
    heartbeat_bytes_avg: f64,
    heartbeat_example: Option<String>,
    event_msgs: u64,
    event_bytes_avg: f64,
    lo_rss_kib: Option<u64>,
    lo_peak_rss_kib: Option<u64>,
    lo_idle_cpu_pct: Option<f64>,
    broker_rss_kib: Option<u64>,
    broker_peak_rss_kib: Option<u64>,
    process_rss_kib: Option<u64>,
    process_peak_rss_kib: Option<u64>,
    complete: bool,
}

/// The commit being waited for.
#[derive(Debug, Clone)]
struct Target {
    commit: String,
    t0: Instant,
}

/// One simulated node.
struct Node {
    name: String,
    runtime: Arc<TimedRuntime>,
    handle: Option<en_agent::AgentHandle>,
    token: CancellationToken,
    state_dir: PathBuf,
}

fn agent_config(
    site: &str,
    node: &str,
    broker: &str,
    state_dir: PathBuf,
    heartbeat: Duration,
) -> anyhow::Result<en_agent::Config> {
    let mut cfg = en_agent::Config::new(site, node);
    cfg.broker = Some(broker.parse().map_err(|e| anyhow::anyhow!("{e}"))?);
    cfg.state_dir = state_dir;
    cfg.heartbeat = heartbeat;
    Ok(cfg)
}

/// Reports (node index, commit, elapsed since the target's t0) when a node's own status
/// is converged at the target commit.
fn track(
    idx: usize,
    mut status: watch::Receiver<Option<NodeStatus>>,
    mut target: watch::Receiver<Option<Target>>,
    tx: mpsc::UnboundedSender<(usize, String, Duration)>,
) {
    tokio::spawn(async move {
        let mut done_for: Option<String> = None;
        loop {
            let t = target.borrow_and_update().clone();
            let ok = {
                let s = status.borrow_and_update();
                match (&t, s.as_ref()) {
                    (Some(t), Some(s)) => {
                        s.converged
                            && s.revision.as_ref().is_some_and(|r| r.commit == t.commit)
                            && done_for.as_deref() != Some(t.commit.as_str())
                    }
                    _ => false,
                }
            };
            if let (true, Some(t)) = (ok, t) {
                done_for = Some(t.commit.clone());
                if tx.send((idx, t.commit.clone(), t.t0.elapsed())).is_err() {
                    return;
                }
            }
            tokio::select! {
                r = status.changed() => if r.is_err() { return },
                r = target.changed() => if r.is_err() { return },
            }
        }
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let nofile = bench::raise_nofile();
    // One socket per agent here, one more per node when the broker is in this process,
    // plus files, pipes and the LO.
    let in_process_broker = args.broker == BrokerKind::Rumqttd && args.broker_bin.is_none();
    let per_node = if in_process_broker { 2 } else { 1 };
    let need = (args.nodes as u64) * per_node + 500;
    if nofile < need {
        bail!(
            "open-files limit {nofile} < {need} needed for {} nodes{}: raise `ulimit -n`{}",
            args.nodes,
            if in_process_broker {
                " with rumqttd in this process"
            } else {
                ""
            },
            if in_process_broker {
                " or pass --broker-bin target/release/broker"
            } else {
                ""
            }
        );
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(w) = args.workers {
        rt.worker_threads(w);
    }
    let rt = rt.build()?;
    if args.scenario != ScenarioKind::Commit {
        let report = rt.block_on(bench::rollout::run(rollout_scenario(&args)?))?;
        for line in bench::rollout::describe(&report) {
            eprintln!("{line}");
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
        eprintln!("fleet-sim: {}", if report.pass { "PASS" } else { "FAIL" });
        std::process::exit(if report.pass { 0 } else { 1 });
    }
    let report = rt.block_on(run(args, nofile))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    // Agents and the in-process broker have no cheap orderly shutdown at 10,000 nodes.
    std::process::exit(if report.complete { 0 } else { 2 });
}

fn rollout_scenario(args: &Args) -> anyhow::Result<bench::rollout::Scenario> {
    let state_root = match &args.state_dir {
        Some(p) => p.clone(),
        None if std::path::Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    Ok(bench::rollout::Scenario {
        nodes: args.nodes,
        components: args.components,
        broker: args.broker,
        broker_bin: args.broker_bin.clone(),
        rumqttd_wildcard_segment_mib: args.rumqttd_wildcard_segment_mib,
        lo_bin: args.lo_bin.clone(),
        waves: args.waves.clone(),
        soak: args.soak.clone(),
        wave_timeout: args.wave_timeout.clone(),
        bad: args.bad_release || args.scenario == ScenarioKind::RolloutBad,
        offline_percent: args.offline_percent.unwrap_or(
            if args.scenario == ScenarioKind::RolloutOffline {
                10.0
            } else {
                0.0
            },
        ),
        timeout: Duration::from_secs(args.timeout_s),
        spawn_batch: args.spawn_batch.max(1),
        spawn_pause: Duration::from_millis(args.spawn_pause_ms),
        heartbeat: Duration::from_secs(args.heartbeat_s),
        lo_heartbeat_timeout: None,
        state_root,
        rollback_bound: Duration::from_secs(args.rollback_bound_s),
        return_bound: Duration::from_secs(args.return_bound_s),
    })
}

async fn run(args: Args, nofile: u64) -> anyhow::Result<Report> {
    let site_name = "sim";
    let synth = SynthSite::new(site_name, args.nodes, args.deployments, args.components);
    let work = tempfile::Builder::new().prefix("fleet-sim-").tempdir()?;
    let state_root = match &args.state_dir {
        Some(p) => tempfile::Builder::new()
            .prefix("fleet-sim-")
            .tempdir_in(p)?,
        None if std::path::Path::new("/dev/shm").is_dir() => tempfile::Builder::new()
            .prefix("fleet-sim-")
            .tempdir_in("/dev/shm")?,
        None => tempfile::Builder::new()
            .prefix("fleet-sim-state-")
            .tempdir()?,
    };
    let timeout = Duration::from_secs(args.timeout_s);
    let versions: Vec<String> = (1..=args.runs + 2 + usize::from(args.reconnect > 0))
        .map(|v| format!("{v}.0"))
        .collect();

    // Git.
    let repo = harness::GitRepo::new();
    for (path, text) in synth.files(&versions[0]) {
        repo.write(&path, &text);
    }
    let c1 = repo.commit("fleet-sim: initial");

    // Broker, watcher, LO.
    let broker = Broker::start(
        args.broker,
        args.nodes,
        work.path(),
        args.broker_bin.as_deref(),
        args.rumqttd_wildcard_segment_mib,
    )?;
    eprintln!(
        "fleet-sim: {} broker at {}",
        serde_json::to_string(&args.broker)?,
        broker.url
    );
    let watcher = Watcher::start(broker.port, "fleet", site_name).await?;
    watcher.set_target(&c1, Instant::now());
    let lo = Lo::start(
        args.lo_bin.as_deref(),
        site_name,
        &repo.url(),
        &broker.url,
        &work.path().join("lo-state"),
        &work.path().join("lo.log"),
    )
    .await?;
    let lo_pid = lo.pid();
    eprintln!(
        "fleet-sim: LO {} (pid {:?}) http {}",
        if lo_pid.is_some() {
            "process"
        } else {
            "in process"
        },
        lo_pid,
        lo.http()
    );

    // Agents.
    let (target_tx, target_rx) = watch::channel(Some(Target {
        commit: c1.clone(),
        t0: Instant::now(),
    }));
    let (conv_tx, mut conv_rx) = mpsc::unbounded_channel();
    let root = CancellationToken::new();
    let mut nodes: Vec<Node> = Vec::with_capacity(args.nodes);
    let images: Vec<String> = versions.iter().flat_map(|v| synth.images(v)).collect();
    let t_connect = Instant::now();
    for i in 0..args.nodes {
        let name = node_name(i);
        let fake = FakeRuntime::new();
        for img in &images {
            fake.add_registry_image(img);
        }
        fake.set_latency(Duration::from_millis(args.latency_ms));
        let runtime = Arc::new(TimedRuntime::new(fake, args.failure_rate));
        let state_dir = state_root.path().join(&name);
        let token = root.child_token();
        let cfg = agent_config(
            site_name,
            &name,
            &broker.url,
            state_dir.clone(),
            Duration::from_secs(args.heartbeat_s),
        )?;
        let handle = en_agent::spawn(cfg, runtime.clone(), token.clone())
            .with_context(|| format!("spawn agent {name}"))?;
        track(i, handle.status(), target_rx.clone(), conv_tx.clone());
        nodes.push(Node {
            name,
            runtime,
            handle: Some(handle),
            token,
            state_dir,
        });
        if (i + 1) % args.spawn_batch == 0 {
            eprintln!("fleet-sim: {} agents started", i + 1);
            tokio::time::sleep(Duration::from_millis(args.spawn_pause_ms)).await;
        }
    }
    // Connected = every node's online presence seen.
    let connected = wait_until(timeout, &watcher, |s| s.online.len() >= args.nodes).await;
    let connect_ms = ms(t_connect.elapsed());
    eprintln!(
        "fleet-sim: {} of {} nodes online after {connect_ms:.0} ms",
        lock(&watcher.seen).online.len(),
        args.nodes
    );
    if !connected {
        eprintln!("fleet-sim: not every node came online; continuing");
    }
    // Initial convergence (first deployment to a fresh fleet).
    let initial = wait_broker(timeout, &watcher, args.nodes).await;
    let initial_converged_ms = initial.then(|| ms(t_connect.elapsed()));
    eprintln!(
        "fleet-sim: initial rollout: {} of {} converged ({:?} ms since the first agent started)",
        watcher.converged_count(),
        args.nodes,
        initial_converged_ms.map(|x| x.round())
    );
    let mut complete = initial;

    // Measured rollouts.
    let mut rollouts = Vec::new();
    for (run, v) in versions.iter().enumerate().take(args.runs + 1).skip(1) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        while conv_rx.try_recv().is_ok() {}
        for d in 0..args.deployments {
            repo.write(
                &format!("sites/{site_name}/app{d:02}.yaml"),
                &synth.deployment_yaml(d, v),
            );
        }
        let commit = repo.commit(&format!("fleet-sim: version {v}"));
        let cpu0 = lo_pid.and_then(sim::proc_sample);
        let t0 = Instant::now();
        watcher.set_target(&commit, t0);
        let _ = target_tx.send(Some(Target {
            commit: commit.clone(),
            t0,
        }));
        sim::post_sync(&lo.http()).await?;
        // Agents' own view, then the broker's.
        let mut agent_ms = Vec::with_capacity(args.nodes);
        let deadline = t0 + timeout;
        while agent_ms.len() < args.nodes {
            match tokio::time::timeout_at(deadline.into(), conv_rx.recv()).await {
                Ok(Some((_, c, d))) if c == commit => agent_ms.push(ms(d)),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        let agents_done = agent_ms.len() == args.nodes;
        let sync_to_agents = agents_done.then(|| agent_ms.iter().copied().fold(0.0, f64::max));
        let broker_done = wait_broker(
            deadline.saturating_duration_since(Instant::now()),
            &watcher,
            args.nodes,
        )
        .await;
        let cpu1 = lo_pid.and_then(sim::proc_sample);
        let (lo_served, per_node, n_broker) = {
            let s = lock(&watcher.seen);
            let per: Vec<f64> = s
                .converged
                .values()
                .map(|t| ms(t.duration_since(t0)))
                .collect();
            (s.lo_served, per, s.converged.len())
        };
        let sync_to_broker = broker_done.then(|| per_node.iter().copied().fold(0.0, f64::max));
        let detect = lo_served.map(|t| ms(t.duration_since(t0)));
        let r = Rollout {
            run,
            commit: commit[..12].to_owned(),
            sync_to_detect_ms: detect,
            sync_to_agents_converged_ms: sync_to_agents,
            sync_to_broker_converged_ms: sync_to_broker,
            detect_to_broker_converged_ms: match (sync_to_broker, detect) {
                (Some(b), Some(d)) => Some(b - d),
                _ => None,
            },
            agents_converged: agent_ms.len(),
            broker_converged: n_broker,
            per_node_ms: summarize(&per_node),
            lo_cpu_s: match (cpu0, cpu1) {
                (Some(a), Some(b)) => Some(b.cpu_s - a.cpu_s),
                _ => None,
            },
        };
        eprintln!(
            "fleet-sim: run {run}: detect {:?} ms, agents {:?} ms ({}/{}), broker {:?} ms ({}/{})",
            r.sync_to_detect_ms.map(f64::round),
            r.sync_to_agents_converged_ms.map(f64::round),
            r.agents_converged,
            args.nodes,
            r.sync_to_broker_converged_ms.map(f64::round),
            r.broker_converged,
            args.nodes
        );
        complete &= agents_done && broker_done;
        rollouts.push(r);
    }

    // Reconnect → first action.
    let mut reconnect = Vec::new();
    if args.reconnect > 0 {
        let k = args.reconnect.min(args.nodes);
        // Spread the chosen nodes over the fleet.
        let chosen: Vec<usize> = (0..k).map(|j| j * args.nodes / k).collect();
        for &i in &chosen {
            nodes[i].token.cancel();
            if let Some(h) = nodes[i].handle.take() {
                let _ = tokio::time::timeout(Duration::from_secs(10), h.wait()).await;
            }
        }
        // Let the broker deliver their Wills.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let v = &versions[args.runs + 1];
        for d in 0..args.deployments {
            repo.write(
                &format!("sites/{site_name}/app{d:02}.yaml"),
                &synth.deployment_yaml(d, v),
            );
        }
        let commit = repo.commit(&format!("fleet-sim: version {v} (reconnect)"));
        let t0 = Instant::now();
        watcher.set_target(&commit, t0);
        let _ = target_tx.send(Some(Target {
            commit: commit.clone(),
            t0,
        }));
        sim::post_sync(&lo.http()).await?;
        let others = args.nodes - k;
        wait_until(timeout, &watcher, |s| s.converged.len() >= others).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        for &i in &chosen {
            let node = &mut nodes[i];
            let before = lock(&watcher.seen).online.get(&node.name).map(|x| x.1);
            node.runtime.arm();
            let token = root.child_token();
            let cfg = agent_config(
                site_name,
                &node.name,
                &broker.url,
                node.state_dir.clone(),
                Duration::from_secs(args.heartbeat_s),
            )?;
            let t_spawn = Instant::now();
            let handle = en_agent::spawn(cfg, node.runtime.clone(), token.clone())?;
            let name = node.name.clone();
            let conv = handle
                .wait_status(timeout, |s| {
                    s.converged && s.revision.as_ref().is_some_and(|r| r.commit == commit)
                })
                .await
                .map(|_| t_spawn.elapsed());
            // The presence of the new session (higher epoch) marks its CONNACK.
            wait_until(Duration::from_secs(5), &watcher, |s| {
                s.online.get(&name).map(|x| x.1) > before
            })
            .await;
            let online = lock(&watcher.seen).online.get(&name).map(|x| x.0);
            let first = node.runtime.first_action();
            let rec = Reconnect {
                node: name,
                online_to_first_action_ms: match (online, first) {
                    (Some(o), Some(f)) => Some(ms(f.saturating_duration_since(o))),
                    _ => None,
                },
                spawn_to_first_action_ms: first.map(|f| ms(f.duration_since(t_spawn))),
                spawn_to_converged_ms: conv.map(ms),
            };
            eprintln!("fleet-sim: reconnect {rec:?}");
            complete &= rec.online_to_first_action_ms.is_some();
            reconnect.push(rec);
            node.handle = Some(handle);
            node.token = token;
        }
    }

    // Idle LO CPU.
    let mut lo_idle_cpu_pct = None;
    if let (Some(pid), true) = (lo_pid, args.idle_s > 0) {
        let a = sim::proc_sample(pid);
        tokio::time::sleep(Duration::from_secs(args.idle_s)).await;
        let b = sim::proc_sample(pid);
        if let (Some(a), Some(b)) = (a, b) {
            lo_idle_cpu_pct = Some((b.cpu_s - a.cpu_s) / args.idle_s as f64 * 100.0);
        }
    }

    let lo_mem = lo_pid.and_then(sim::proc_sample);
    let broker_mem = broker.pid().and_then(sim::proc_sample);
    let me = sim::proc_sample(std::process::id());
    let s = lock(&watcher.seen).snapshot();
    let avg = |b: u64, n: u64| if n == 0 { 0.0 } else { b as f64 / n as f64 };
    let broker_ms: Vec<f64> = rollouts
        .iter()
        .filter_map(|r| r.sync_to_broker_converged_ms)
        .collect();
    let rec_ms: Vec<f64> = reconnect
        .iter()
        .filter_map(|r| r.online_to_first_action_ms)
        .collect();
    let report = Report {
        tool: "fleet-sim",
        nodes: args.nodes,
        broker: args.broker,
        lo: if lo_pid.is_some() {
            "process"
        } else {
            "in-process"
        },
        broker_process: broker_mem.is_some(),
        rumqttd_wildcard_segment_mib: args.rumqttd_wildcard_segment_mib,
        deployments: args.deployments,
        components: args.components,
        latency_ms: args.latency_ms,
        failure_rate: args.failure_rate,
        nofile,
        connect_ms,
        initial_converged_ms,
        sync_to_broker_converged_ms: summarize(&broker_ms),
        rollouts,
        reconnect_online_to_first_action_ms: summarize(&rec_ms),
        reconnect,
        injected_failures: nodes
            .iter()
            .map(|n| {
                n.runtime
                    .injected
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum(),
        engine_actions: nodes
            .iter()
            .map(|n| n.runtime.actions.load(std::sync::atomic::Ordering::Relaxed))
            .sum(),
        status_msgs: s.status_msgs,
        status_bytes_avg: avg(s.status_bytes, s.status_msgs),
        heartbeat_msgs: s.heartbeat_msgs,
        heartbeat_bytes_avg: avg(s.heartbeat_bytes, s.heartbeat_msgs),
        heartbeat_example: s.heartbeat_example,
        event_msgs: s.event_msgs,
        event_bytes_avg: avg(s.event_bytes, s.event_msgs),
        lo_rss_kib: lo_mem.map(|m| m.rss_kib),
        lo_peak_rss_kib: lo_mem.map(|m| m.hwm_kib),
        lo_idle_cpu_pct,
        broker_rss_kib: broker_mem.map(|m| m.rss_kib),
        broker_peak_rss_kib: broker_mem.map(|m| m.hwm_kib),
        process_rss_kib: me.map(|m| m.rss_kib),
        process_peak_rss_kib: me.map(|m| m.hwm_kib),
        complete,
    };
    lo.stop().await;
    root.cancel();
    drop(broker);
    Ok(report)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until `pred` holds on what the watcher saw, or `timeout`.
async fn wait_until(
    timeout: Duration,
    watcher: &Watcher,
    mut pred: impl FnMut(&sim::Seen) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let notified = watcher.notify.notified();
        if pred(&lock(&watcher.seen)) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // Re-check at least every 50 ms (a notification may race the check).
        let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
    }
}

/// Waits until every node's converged status at the target crossed the broker.
async fn wait_broker(timeout: Duration, watcher: &Watcher, n: usize) -> bool {
    wait_until(timeout, watcher, |s| s.converged.len() >= n).await
}
