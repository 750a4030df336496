//! The rollout scenario of `fleet-sim` (issue #11): a site whose `spec.rollout` has waves,
//! components with a healthcheck, a new release (good, or one whose images the fake runtime
//! reports unhealthy forever), optionally with a share of the nodes offline during the
//! rollout. Measured from outside the LO, on the broker:
//!
//! - `lo/events` (`started`, `wavePassed`, `halted`, `rolledBack`, `complete`) with the time
//!   each crossed the broker;
//! - every node's `desired` document (one exact subscription per node, so no wildcard
//!   commit log can drop one): the distinct nodes whose document **ever** named the
//!   candidate's images;
//! - every node's `status`: which version of the deployment it reports installed
//!   (`converged`, every component `installed` from that version's image).
//!
//! Checks (PASS/FAIL lines on stderr, `checks` in the JSON; any FAIL → exit status 1):
//! bad release: no more nodes received the candidate than the first wave holds, the rollout
//! halted, every node that received the candidate reports the promoted version installed
//! within `--rollback-bound-s` of the halt; good release: complete, every online node
//! installed it; offline nodes: each reports the promoted version installed within
//! `--return-bound-s` of its reconnect (its new `online` presence).

mod watch;

use crate::sim::{self, Broker, BrokerKind, Lo, TimedRuntime};
use crate::{node_name, summarize, Summary, SynthSite};
use anyhow::Context;
use en_agent::runtime::fake::FakeRuntime;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use watch::{lock, Watcher};

/// The deployment rolled out (the only one of the site).
pub const DEPLOYMENT: &str = "app00";

/// The `rollout:` block of a Site: `waves` (each `N` or `N%`), one soak for every wave,
/// `waveTimeout`, `onHalt: rollback`.
pub fn strategy_yaml(waves: &[String], soak: &str, wave_timeout: &str) -> String {
    let mut s = String::from("waves:\n");
    for w in waves {
        let n = if w.ends_with('%') {
            format!("\"{w}\"")
        } else {
            w.clone()
        };
        s.push_str(&format!("  - nodes: {n}\n    soak: {soak}\n"));
    }
    s.push_str(&format!("waveTimeout: {wave_timeout}\nonHalt: rollback\n"));
    s
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Simulated nodes.
    pub nodes: usize,
    /// Components of the deployment (each with a healthcheck).
    pub components: usize,
    /// Broker.
    pub broker: BrokerKind,
    /// Our `broker` binary instead of rumqttd in process.
    pub broker_bin: Option<PathBuf>,
    /// rumqttd commit-log size of the site-wide wildcards (MiB).
    pub rumqttd_wildcard_segment_mib: usize,
    /// The `lo` binary instead of the LO in process.
    pub lo_bin: Option<PathBuf>,
    /// Waves (`nodes` of each, cumulative).
    pub waves: Vec<String>,
    /// Soak of every wave.
    pub soak: String,
    /// `waveTimeout`.
    pub wave_timeout: String,
    /// The release's images never become healthy.
    pub bad: bool,
    /// Percent of the nodes stopped before the commit, started again after the rollout ended.
    pub offline_percent: f64,
    /// Timeout of each phase.
    pub timeout: Duration,
    /// Agents started per batch, and the pause between batches.
    pub spawn_batch: usize,
    /// Pause between batches.
    pub spawn_pause: Duration,
    /// Agent heartbeat interval.
    pub heartbeat: Duration,
    /// The LO's `heartbeat_timeout` (None: its default, 30 s). The LO passes no wave until
    /// this long after it connected (presence read back); the release is committed after.
    pub lo_heartbeat_timeout: Option<Duration>,
    /// Where the agents' state directories go.
    pub state_root: PathBuf,
    /// Bound: halt → every node that received the bad candidate reports the promoted version.
    pub rollback_bound: Duration,
    /// Bound: reconnect → a returning node reports the promoted version.
    pub return_bound: Duration,
}

/// One PASS/FAIL line.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub what: String,
    /// The measured value.
    pub value: String,
    /// The bound.
    pub bound: String,
    /// Met.
    pub pass: bool,
}

/// A rollout event as it crossed the broker.
#[derive(Debug, Clone, Serialize)]
pub struct SeenEvent {
    /// `started`, `wavePassed`, …
    pub kind: String,
    /// 1-based wave.
    pub wave: u64,
    /// ms since the sync that started the rollout.
    pub since_sync_ms: f64,
    /// The LO's `at`.
    pub at: String,
}

/// A wave's duration: from its start (`started`, or the previous `wavePassed`) to its end.
#[derive(Debug, Clone, Serialize)]
pub struct WaveTime {
    /// 1-based.
    pub wave: u64,
    /// Nodes whose desired document named the candidate, published for this wave.
    pub handed: usize,
    /// First → last of those documents on the broker.
    pub handed_spread_ms: f64,
    /// Start → `wavePassed` (or `complete`, or the halt).
    pub ms: f64,
    /// How it ended.
    pub ended_by: String,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `fleet-sim --scenario rollout`.
    pub tool: &'static str,
    /// Nodes.
    pub nodes: usize,
    /// Broker.
    pub broker: BrokerKind,
    /// LO in process or as a process.
    pub lo: &'static str,
    /// The Site's `rollout:` block.
    pub strategy: String,
    /// Bad release.
    pub bad_release: bool,
    /// Nodes stopped during the rollout.
    pub offline_nodes: usize,
    /// Nodes in the first wave (the bound on who receives a bad candidate).
    pub first_wave_nodes: usize,
    /// Fleet connected, ms.
    pub connect_ms: f64,
    /// Rollout events.
    pub events: Vec<SeenEvent>,
    /// Sync → `started`.
    pub sync_to_started_ms: Option<f64>,
    /// Per wave.
    pub waves: Vec<WaveTime>,
    /// `started` → `complete`.
    pub total_ms: Option<f64>,
    /// `started` → halt event.
    pub started_to_halt_ms: Option<f64>,
    /// The halt reason.
    pub halt_reason: Option<serde_json::Value>,
    /// Distinct nodes whose desired document ever named the candidate (once a rollout
    /// completes, every node is handed it, offline ones too: it is the promoted version).
    pub received_candidate: usize,
    /// Of those, nodes that were offline (stopped) during the rollout.
    pub received_while_offline: usize,
    /// Documents naming the candidate published with `complete` (the promoted version for
    /// the nodes no wave reached: offline ones).
    pub handed_with_complete: usize,
    /// Those documents: ms after the last `started`/`wavePassed` event crossed the broker
    /// (a few ms: published before it, delivered after; about a second or more: handed by a
    /// later reconcile).
    pub handed_with_complete_ms: Vec<f64>,
    /// Halt → each node that received the candidate reports the promoted version installed.
    pub halt_to_promoted_installed_ms: Summary,
    /// Nodes that received the candidate and never reported the promoted version back.
    pub not_back_to_promoted: Vec<String>,
    /// `complete` → every online node reports the candidate installed.
    pub complete_to_online_installed_ms: Option<f64>,
    /// Reconnect (new `online` presence) → the returning node reports the promoted version.
    pub reconnect_to_promoted_installed_ms: Summary,
    /// Returning nodes that never reported it.
    pub returning_not_converged: Vec<String>,
    /// PASS/FAIL.
    pub checks: Vec<Check>,
    /// Every check passed.
    pub pass: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Node {
    name: String,
    runtime: Arc<TimedRuntime>,
    handle: Option<en_agent::AgentHandle>,
    token: CancellationToken,
    state_dir: PathBuf,
}

fn spawn_agent(
    sc: &Scenario,
    site: &str,
    broker: &str,
    node: &mut Node,
    root: &CancellationToken,
) -> anyhow::Result<()> {
    let mut cfg = en_agent::Config::new(site, &node.name);
    cfg.broker = Some(broker.parse().map_err(|e| anyhow::anyhow!("{e}"))?);
    cfg.state_dir = node.state_dir.clone();
    cfg.heartbeat = sc.heartbeat;
    node.token = root.child_token();
    node.handle = Some(
        en_agent::spawn(cfg, node.runtime.clone(), node.token.clone())
            .with_context(|| format!("spawn agent {}", node.name))?,
    );
    Ok(())
}

fn check(checks: &mut Vec<Check>, what: &str, value: String, bound: String, pass: bool) {
    eprintln!(
        "fleet-sim: {} {what}: {value} (bound {bound})",
        if pass { "PASS" } else { "FAIL" }
    );
    checks.push(Check {
        what: what.to_owned(),
        value,
        bound,
        pass,
    });
}

/// Runs the scenario (see the module doc).
pub async fn run(sc: Scenario) -> anyhow::Result<Report> {
    let site = "sim";
    let (v1, v2) = ("1.0", "2.0");
    let mut synth = SynthSite::new(site, sc.nodes, 1, sc.components);
    let strategy = strategy_yaml(&sc.waves, &sc.soak, &sc.wave_timeout);
    synth.rollout = Some(strategy.clone());
    synth.healthcheck = true;
    // The first wave's size, as the LO computes it.
    let docs = schemas::site::load_site(
        site,
        synth
            .files(v1)
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str())),
    )
    .map_err(|p| anyhow::anyhow!("synthetic site invalid: {p:?}"))?;
    let first_wave_nodes = docs
        .deployments
        .get(DEPLOYMENT)
        .context("deployment")?
        .rollout
        .reach(0, sc.nodes);
    let work = tempfile::Builder::new().prefix("fleet-sim-").tempdir()?;
    let state_root = tempfile::Builder::new()
        .prefix("fleet-sim-")
        .tempdir_in(&sc.state_root)?;
    let repo = harness::GitRepo::new();
    for (path, text) in synth.files(v1) {
        repo.write(&path, &text);
    }
    repo.commit("fleet-sim: initial (1.0)");

    let broker = Broker::start(
        sc.broker,
        sc.nodes,
        work.path(),
        sc.broker_bin.as_deref(),
        sc.rumqttd_wildcard_segment_mib,
    )?;
    let names: Vec<String> = (0..sc.nodes).map(node_name).collect();
    let watcher = Watcher::start(broker.port, "fleet", site, &names).await?;
    let lo = Lo::start_with(
        sc.lo_bin.as_deref(),
        site,
        &repo.url(),
        &broker.url,
        &work.path().join("lo-state"),
        &work.path().join("lo.log"),
        sc.lo_heartbeat_timeout,
    )
    .await?;
    let settled_at = Instant::now()
        + sc.lo_heartbeat_timeout
            .unwrap_or(lo::config::Config::default().heartbeat_timeout)
        + Duration::from_secs(1);
    eprintln!(
        "fleet-sim: rollout scenario, {} nodes, broker {}, LO {}",
        sc.nodes,
        broker.url,
        lo.http()
    );

    // Agents, at 1.0.
    let root = CancellationToken::new();
    let images: Vec<String> = [v1, v2].iter().flat_map(|v| synth.images(v)).collect();
    let mut nodes = Vec::with_capacity(sc.nodes);
    let t_connect = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let fake = FakeRuntime::new();
        for img in &images {
            fake.add_registry_image(img);
        }
        if sc.bad {
            for img in synth.images(v2) {
                fake.make_image_unhealthy(&img);
            }
        }
        let mut node = Node {
            name: name.clone(),
            runtime: Arc::new(TimedRuntime::new(fake, 0.0)),
            handle: None,
            token: root.child_token(),
            state_dir: state_root.path().join(name),
        };
        spawn_agent(&sc, site, &broker.url, &mut node, &root)?;
        nodes.push(node);
        if (i + 1) % sc.spawn_batch == 0 {
            tokio::time::sleep(sc.spawn_pause).await;
        }
    }
    let all_v1 = watcher
        .until(sc.timeout, |s| {
            names.iter().all(|n| s.current(n) == Some(v1))
        })
        .await;
    let connect_ms = ms(t_connect.elapsed());
    eprintln!(
        "fleet-sim: fleet at 1.0 after {connect_ms:.0} ms ({})",
        if all_v1 {
            "every node"
        } else {
            "NOT every node"
        }
    );
    anyhow::ensure!(all_v1, "the fleet did not converge on 1.0");

    // Offline nodes: stopped before the commit, spread over the fleet.
    let k = ((sc.nodes as f64) * sc.offline_percent / 100.0).round() as usize;
    let offline: Vec<usize> = (0..k).map(|j| j * sc.nodes / k.max(1)).collect();
    let t_stop = Instant::now();
    for &i in &offline {
        nodes[i].token.cancel();
        if let Some(h) = nodes[i].handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h.wait()).await;
        }
    }
    if k > 0 {
        let gone = watcher
            .until(sc.timeout, |s| {
                offline.iter().all(|&i| s.offline_seen(&names[i], t_stop))
            })
            .await;
        eprintln!("fleet-sim: {k} nodes stopped (offline presence seen: {gone})");
        // Let the LO take the presences in.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    // The LO passes no wave before it settled (a heartbeat timeout after it connected):
    // commit after that, so the waves measure the rollout, not the LO's start.
    let wait = settled_at.saturating_duration_since(Instant::now());
    if !wait.is_zero() {
        eprintln!(
            "fleet-sim: waiting {} ms for the LO to settle",
            wait.as_millis()
        );
        tokio::time::sleep(wait).await;
    }

    // The release.
    lock(&watcher.seen).candidate_tag = Some(format!(":{v2}"));
    repo.write(
        &format!("sites/{site}/{DEPLOYMENT}.yaml"),
        &synth.deployment_yaml(0, v2),
    );
    repo.commit(&format!(
        "fleet-sim: version {v2}{}",
        if sc.bad { " (never healthy)" } else { "" }
    ));
    let t_sync = Instant::now();
    sim::post_sync(&lo.http()).await?;
    // The end (or the timeout, reported as such below).
    watcher
        .until(sc.timeout, |s| {
            s.event(&["complete", "halted", "rolledBack"]).is_some()
        })
        .await;
    let (end_kind, t_end) = {
        let s = lock(&watcher.seen);
        match s.event(&["complete", "halted", "rolledBack"]) {
            Some(e) => (e.0.clone(), Some(e.2)),
            None => (String::from("timeout"), None),
        }
    };
    eprintln!(
        "fleet-sim: rollout ended: {end_kind} after {:?} ms",
        t_end.map(|t| ms(t - t_sync).round())
    );
    let complete = end_kind == "complete";
    let promoted = if complete { v2 } else { v1 };
    let online: Vec<&String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| !offline.contains(i))
        .map(|(_, n)| n)
        .collect();

    // After the end: the nodes that received the candidate go back to 1.0 (halt), or every
    // online node has 2.0 (complete).
    let mut halt_ms = Vec::new();
    let mut not_back = Vec::new();
    let mut complete_to_online = None;
    if let Some(t_end) = t_end {
        if complete {
            let ok = watcher
                .until(sc.timeout, |s| {
                    online.iter().all(|n| s.current(n) == Some(v2))
                })
                .await;
            let s = lock(&watcher.seen);
            complete_to_online = ok.then(|| {
                online
                    .iter()
                    .filter_map(|n| s.installed_since(n, v2, t_end, false))
                    .map(|t| ms(t - t_end))
                    .fold(0.0, f64::max)
            });
        } else {
            let received: Vec<String> = lock(&watcher.seen).received.keys().cloned().collect();
            watcher
                .until(sc.rollback_bound + Duration::from_secs(30), |s| {
                    received
                        .iter()
                        .filter(|n| !offline.iter().any(|&i| &names[i] == *n))
                        .all(|n| s.current(n) == Some(v1))
                })
                .await;
            let s = lock(&watcher.seen);
            for n in &received {
                if offline.iter().any(|&i| &names[i] == n) {
                    continue;
                }
                match s.installed_since(n, v1, t_end, false) {
                    Some(t) => halt_ms.push(ms(t - t_end)),
                    None => not_back.push(n.clone()),
                }
            }
        }
    }

    // Returning nodes.
    let mut returning_ms = Vec::new();
    let mut returning_not = Vec::new();
    if k > 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t_back = Instant::now();
        for &i in &offline {
            nodes[i].runtime.arm();
            spawn_agent(&sc, site, &broker.url, &mut nodes[i], &root)?;
        }
        let back: Vec<&String> = offline.iter().map(|&i| &names[i]).collect();
        watcher
            .until(sc.timeout, |s| {
                back.iter().all(|n| {
                    s.online_after(n, t_back).is_some()
                        && s.installed_since(n, promoted, t_back, true).is_some()
                })
            })
            .await;
        // Statuses may still be on their way: a short grace for a late one that differs.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = lock(&watcher.seen);
        // A status of the new session may cross the broker before its presence does (no
        // order across topics): statuses since the restart count, timed from the presence
        // (0 when before it).
        for n in back {
            match s
                .online_after(n, t_back)
                .and_then(|on| Some((on, s.installed_since(n, promoted, t_back, true)?)))
            {
                Some((on, t)) => returning_ms.push(ms(t.saturating_duration_since(on))),
                None => returning_not.push(n.clone()),
            }
        }
    }

    // Figures.
    let mut report = {
        let s = lock(&watcher.seen);
        let started = s.event(&["started"]).map(|e| e.2);
        let events: Vec<SeenEvent> = s
            .events
            .iter()
            .map(|(kind, wave, t, v)| SeenEvent {
                kind: kind.clone(),
                wave: *wave,
                since_sync_ms: ms(t.saturating_duration_since(t_sync)),
                at: v["at"].as_str().unwrap_or("").to_owned(),
            })
            .collect();
        let mut waves = Vec::new();
        let mut handed_with_complete = 0;
        let mut after_last_start_ms = Vec::new();
        if let Some(mut start) = started {
            // A wave's documents go out in the reconcile that emits `started` (wave 1) or the
            // previous wave's `wavePassed`, just before the event (the LO publishes documents,
            // then events): a document belongs to the wave that the first `started` or
            // `wavePassed` received after it starts. Those published with `complete` are the
            // promoted version handed to the nodes no wave reached (offline ones).
            let starts: Vec<Instant> = s
                .events
                .iter()
                .filter(|e| e.0 == "started" || e.0 == "wavePassed")
                .map(|e| e.2)
                .collect();
            let mut handed: Vec<Vec<Instant>> = vec![Vec::new(); starts.len() + 1];
            for r in s.received.values() {
                if t_end.is_some_and(|e| *r > e) {
                    continue;
                }
                handed[starts.iter().filter(|b| **b < *r).count()].push(*r);
            }
            handed_with_complete = handed.last().map_or(0, Vec::len);
            if let (Some(last), Some(docs)) = (starts.last(), handed.last()) {
                after_last_start_ms = docs
                    .iter()
                    .map(|r| ms(r.saturating_duration_since(*last)))
                    .collect();
                after_last_start_ms.sort_by(f64::total_cmp);
            }
            for (kind, wave, t, _) in &s.events {
                if !matches!(
                    kind.as_str(),
                    "wavePassed" | "complete" | "halted" | "rolledBack"
                ) {
                    continue;
                }
                let docs = handed.get(waves.len()).cloned().unwrap_or_default();
                let spread = match (docs.iter().min(), docs.iter().max()) {
                    (Some(a), Some(b)) => ms(b.saturating_duration_since(*a)),
                    _ => 0.0,
                };
                waves.push(WaveTime {
                    wave: *wave,
                    handed: docs.len(),
                    handed_spread_ms: spread,
                    ms: ms(t.saturating_duration_since(start)),
                    ended_by: kind.clone(),
                });
                start = *t;
            }
        }
        let halt = s.event(&["halted", "rolledBack"]);
        let offline_names: BTreeSet<&String> = offline.iter().map(|&i| &names[i]).collect();
        let received_while_offline = s
            .received
            .keys()
            .filter(|n| offline_names.contains(n))
            .count();
        let received = s.received.len();
        Report {
            tool: "fleet-sim --scenario rollout",
            nodes: sc.nodes,
            broker: sc.broker,
            lo: if lo.pid().is_some() {
                "process"
            } else {
                "in-process"
            },
            strategy,
            bad_release: sc.bad,
            offline_nodes: k,
            first_wave_nodes,
            connect_ms,
            sync_to_started_ms: started.map(|t| ms(t.saturating_duration_since(t_sync))),
            total_ms: match (started, s.event(&["complete"])) {
                (Some(a), Some(b)) => Some(ms(b.2.saturating_duration_since(a))),
                _ => None,
            },
            started_to_halt_ms: match (started, halt) {
                (Some(a), Some(b)) => Some(ms(b.2.saturating_duration_since(a))),
                _ => None,
            },
            halt_reason: halt.map(|e| e.3["haltReason"].clone()),
            events,
            waves,
            received_candidate: received,
            received_while_offline,
            handed_with_complete,
            handed_with_complete_ms: after_last_start_ms,
            halt_to_promoted_installed_ms: summarize(&halt_ms),
            not_back_to_promoted: not_back,
            complete_to_online_installed_ms: complete_to_online,
            reconnect_to_promoted_installed_ms: summarize(&returning_ms),
            returning_not_converged: returning_not,
            checks: Vec::new(),
            pass: false,
        }
    };
    let mut checks = Vec::new();
    if sc.bad {
        check(
            &mut checks,
            "nodes that ever received the bad candidate (desired documents on the broker)",
            report.received_candidate.to_string(),
            format!("<= {first_wave_nodes} (the first wave)"),
            report.received_candidate <= first_wave_nodes,
        );
        check(
            &mut checks,
            "the rollout halted",
            end_kind.clone(),
            "rolledBack".into(),
            end_kind == "rolledBack",
        );
        let worst = report.halt_to_promoted_installed_ms.max;
        check(
            &mut checks,
            "halt -> every node that received it reports the promoted version installed",
            format!(
                "max {worst:.0} ms over {} nodes, {} never",
                report.halt_to_promoted_installed_ms.n,
                report.not_back_to_promoted.len()
            ),
            format!("<= {} ms", sc.rollback_bound.as_millis()),
            end_kind == "rolledBack"
                && report.not_back_to_promoted.is_empty()
                && report.halt_to_promoted_installed_ms.n > 0
                && worst <= ms(sc.rollback_bound),
        );
    } else {
        check(
            &mut checks,
            "the rollout completed",
            end_kind.clone(),
            "complete".into(),
            complete,
        );
        check(
            &mut checks,
            "every online node reports the new version installed",
            format!("{:?} ms after complete", complete_to_online.map(f64::round)),
            format!("{} nodes", online.len()),
            complete_to_online.is_some(),
        );
    }
    if k > 0 {
        let r = report.reconnect_to_promoted_installed_ms;
        check(
            &mut checks,
            "reconnect -> returning node reports the promoted version installed",
            format!(
                "max {:.0} ms, p50 {:.0} ms over {} nodes, {} never",
                r.max,
                r.median,
                r.n,
                report.returning_not_converged.len()
            ),
            format!("<= {} ms each", sc.return_bound.as_millis()),
            report.returning_not_converged.is_empty() && r.n == k && r.max <= ms(sc.return_bound),
        );
        if sc.bad {
            check(
                &mut checks,
                "offline nodes ever handed the bad candidate",
                report.received_while_offline.to_string(),
                "0 (offline nodes are skipped)".into(),
                report.received_while_offline == 0,
            );
        }
    }
    report.pass = checks.iter().all(|c| c.pass);
    report.checks = checks;
    lo.stop().await;
    root.cancel();
    drop(broker);
    Ok(report)
}

/// The wave figures in a line each (stderr).
pub fn describe(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for w in &r.waves {
        out.push(format!(
            "fleet-sim: wave {}: {:.0} ms, {} nodes handed the candidate (documents over {:.0} ms), ended by {}",
            w.wave, w.ms, w.handed, w.handed_spread_ms, w.ended_by
        ));
    }
    out
}
