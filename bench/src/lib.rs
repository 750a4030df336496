//! # edgefleet benchmarks
//!
//! - `benches/lo_plan.rs` (criterion): the LO's pure core on a 10,000-node × 20-deployment
//!   site — load/validate, render, plan.
//! - `src/bin/fleet-sim.rs`: a whole site in one process — a broker (embedded rumqttd or an
//!   external Mosquitto), the real LO (`lo::app::start`), and N agents (`en_agent::spawn`
//!   over `FakeRuntime`) — measuring commit → every node converged.
//! - `benches/docker_commit.rs`: real Docker, commit → containers running (the e2e
//!   harness's site).
//! - `scripts/bench-agent-footprint.sh`: the agent's binary size, idle RSS/PSS/CPU, disk
//!   writes and heartbeat bytes, from `/proc`.
//! - `scripts/bench-*.sh` drive them; `BENCHMARKS.md` has the figures.
//!
//! This file holds what they share: synthetic site generation and small statistics.

pub mod rollout;
pub mod sim;

use std::fmt::Write as _;

/// Node name `i` (zero-padded so names sort like numbers).
pub fn node_name(i: usize) -> String {
    format!("n{i:05}")
}

/// A synthetic site: `Site` + `Node` documents + deployments, as (path, YAML) files.
#[derive(Debug, Clone)]
pub struct SynthSite {
    /// Site name.
    pub site: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Number of deployments.
    pub deployments: usize,
    /// Components per deployment.
    pub components: usize,
    /// Image registry prefix (`reg.local/bench`).
    pub registry: String,
    /// `spec.rollout` of the Site, as YAML lines indented under `rollout:` (None: the
    /// default, one wave of every node).
    pub rollout: Option<String>,
    /// Give every component a healthcheck (the fake runtime reports it healthy on start,
    /// unless the image is marked unhealthy).
    pub healthcheck: bool,
}

impl SynthSite {
    /// `nodes` nodes, `deployments` deployments of `components` components each.
    pub fn new(site: &str, nodes: usize, deployments: usize, components: usize) -> Self {
        SynthSite {
            site: site.to_owned(),
            nodes,
            deployments,
            components,
            registry: "reg.local/bench".to_owned(),
            rollout: None,
            healthcheck: false,
        }
    }

    /// Every image reference a given `version` uses (to make a fake registry pullable).
    pub fn images(&self, version: &str) -> Vec<String> {
        let mut out = Vec::new();
        for d in 0..self.deployments {
            for c in 0..self.components {
                out.push(self.image(d, c, version));
            }
        }
        out
    }

    fn image(&self, d: usize, c: usize, version: &str) -> String {
        format!("{}/d{d:02}c{c}:{version}", self.registry)
    }

    /// `site.yaml`: unpaced rollout (or [`SynthSite::rollout`]), deletion guard open
    /// (benchmarks delete nothing).
    pub fn site_yaml(&self) -> String {
        let mut s = format!(
            "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: {}\nspec:\n  allowEmpty: true\n  maxDeletePercent: 100\n  policy:\n    attempts: 5\n    backoff: 200ms\n",
            self.site
        );
        if let Some(r) = &self.rollout {
            s.push_str("  rollout:\n");
            for line in r.lines() {
                let _ = writeln!(s, "    {line}");
            }
        }
        s
    }

    /// `nodes.yaml`: one `Node` per node; even nodes are `role: gateway`, all `zone: z<i%10>`.
    pub fn nodes_yaml(&self) -> String {
        let mut s = String::with_capacity(self.nodes * 120);
        for i in 0..self.nodes {
            if i > 0 {
                s.push_str("---\n");
            }
            let role = if i % 2 == 0 { "gateway" } else { "sensor" };
            let _ = write!(
                s,
                "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: {}\n  labels:\n    role: {role}\n    zone: z{}\n",
                node_name(i),
                i % 10
            );
        }
        s
    }

    /// Deployment `d` at image `version`. Deployment 0 targets every node; the others
    /// alternate between every node and `role: gateway` so selectors are exercised.
    pub fn deployment_yaml(&self, d: usize, version: &str) -> String {
        let mut s = format!(
            "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app{d:02}\nspec:\n"
        );
        if d % 2 == 1 {
            s.push_str("  nodeSelector:\n    role: gateway\n");
        }
        s.push_str("  components:\n");
        for c in 0..self.components {
            let _ = write!(
                s,
                "    - name: c{c}\n      image: {}\n      env:\n        INDEX: \"{c}\"\n      restart: unless-stopped\n",
                self.image(d, c, version)
            );
            if self.healthcheck {
                s.push_str(
                    "      healthcheck:\n        test: [\"CMD\", \"/bin/check\"]\n        interval: 1s\n",
                );
            }
            if c > 0 {
                let _ = writeln!(s, "      dependsOn: [c{}]", c - 1);
            }
        }
        s
    }

    /// All files at `version`, paths relative to the repository root.
    pub fn files(&self, version: &str) -> Vec<(String, String)> {
        let base = format!("sites/{}", self.site);
        let mut out = vec![
            (format!("{base}/site.yaml"), self.site_yaml()),
            (format!("{base}/nodes.yaml"), self.nodes_yaml()),
        ];
        for d in 0..self.deployments {
            out.push((
                format!("{base}/app{d:02}.yaml"),
                self.deployment_yaml(d, version),
            ));
        }
        out
    }
}

/// Median, min, max and the sample count of some measurements.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
}

/// Summarises `xs` (empty: all zero).
pub fn summarize(xs: &[f64]) -> Summary {
    if xs.is_empty() {
        return Summary {
            n: 0,
            median: 0.0,
            min: 0.0,
            max: 0.0,
            p90: 0.0,
        };
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let p90 = v[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1];
    Summary {
        n,
        median,
        min: v[0],
        max: v[n - 1],
        p90,
    }
}

/// Raises the soft open-files limit to the hard limit (10,000 nodes need ~20,000 sockets in
/// one process when broker, LO and agents share it; ~10,000 with the broker apart).
/// Returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // No libc/unsafe here: read the limits from /proc and ask `prlimit` (util-linux) to set
    // them for this process.
    let pid = std::process::id().to_string();
    let hard = nofile_hard();
    let _ = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .stderr(std::process::Stdio::null())
        .status();
    nofile_soft()
}

/// The soft open-files limit.
pub fn nofile_soft() -> u64 {
    nofile_field(3)
}

/// The hard open-files limit.
pub fn nofile_hard() -> u64 {
    nofile_field(4)
}

/// A field of the `Max open files` line of `/proc/self/limits`.
fn nofile_field(i: usize) -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(i).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_site_is_valid() {
        let s = SynthSite::new("s1", 10, 4, 3);
        let files = s.files("1");
        let docs =
            schemas::site::load_site("s1", files.iter().map(|(a, b)| (a.as_str(), b.as_str())))
                .expect("valid");
        assert_eq!(docs.nodes.len(), 10);
        assert_eq!(docs.deployments.len(), 4);
    }

    #[test]
    fn synthetic_site_with_rollout_is_valid() {
        let mut s = SynthSite::new("s1", 10, 1, 2);
        s.rollout = Some(rollout::strategy_yaml(
            &["1".into(), "50%".into(), "100%".into()],
            "1s",
            "20s",
        ));
        s.healthcheck = true;
        let files = s.files("1");
        let docs =
            schemas::site::load_site("s1", files.iter().map(|(a, b)| (a.as_str(), b.as_str())))
                .expect("valid");
        let dep = docs.deployments.values().next().expect("one deployment");
        assert_eq!(dep.rollout.waves.len(), 3);
        assert!(dep.components.iter().all(|c| c.healthcheck.is_some()));
    }

    #[test]
    fn summary() {
        let s = summarize(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!(s.median, 2.5);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 10.0);
    }
}
