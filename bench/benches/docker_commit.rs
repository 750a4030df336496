//! Real Docker: `git commit` → the new containers running, with the images already present,
//! the LO polling Git every second (no `POST /sync`, no webhook).
//!
//! The e2e harness's site (`harness::site::Site`): our broker, the `lo` binary, one
//! `en-agent` binary on the local engine, the `web` deployment (`api` with a 1 s
//! healthcheck, `web` depending on it), images built from busybox in a local registry.
//! Both versions are deployed once first so every measured switch finds its image present.
//! Then `BENCH_RUNS` (default 5) switches between `web:1.0` and `web:2.0`, each timed from
//! the commit to (a) the first new container running, (b) both running, (c) the node's
//! converged status at that commit on the broker.
//!
//! Needs Docker, busybox-static and docker-registry (as the e2e tests). Build the binaries
//! first: `cargo build --release -p edgefleet-lo -p edgefleet-agent -p edgefleet-broker`,
//! then `cargo bench -p edgefleet-bench --bench docker_commit` (`scripts/bench-docker.sh`).
//! Under `cargo test` it does nothing.

use harness::site::{BrokerKind, Site};
use std::time::{Duration, Instant};

fn running_images(site: &Site) -> Vec<(String, String)> {
    let filter = format!("label=io.edgefleet.site={}", site.name);
    site.docker()
        .docker(&[
            "ps",
            "--filter",
            &filter,
            "--format",
            "{{.Label \"io.edgefleet.component\"}} {{.Image}}",
        ])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(c, i)| (c.to_owned(), i.to_owned()))
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("docker_commit: run with `cargo bench` (skipped)");
        return;
    }
    if !harness::require_docker() {
        println!("docker_commit: no Docker engine (skipped)");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut site = Site::new(BrokerKind::Ours);
    site.write_inventory(&["n1"]);
    site.write_web("1.0");
    let c1 = site.repo.commit("web 1.0");
    site.start_lo();
    site.start_agent("n1");
    site.wait_converged(&c1, &["n1"]);
    site.write_web("2.0");
    let c2 = site.repo.commit("web 2.0");
    site.wait_converged(&c2, &["n1"]);
    eprintln!("docker_commit: both versions pulled; measuring {runs} switches at a 1 s poll");

    let mut results = Vec::new();
    for run in 0..runs {
        let version = if run % 2 == 0 { "1.0" } else { "2.0" };
        let image = site.image(version);
        // Let the previous switch settle and the poll phase drift.
        std::thread::sleep(Duration::from_millis(1300));
        site.write_web(version);
        let t0 = Instant::now();
        let commit = site.repo.commit(&format!("web {version}, run {run}"));
        let (mut first, mut all) = (None, None);
        let deadline = t0 + Duration::from_secs(60);
        while all.is_none() && Instant::now() < deadline {
            let imgs = running_images(&site);
            let new = imgs.iter().filter(|(_, i)| *i == image).count();
            if new >= 1 && first.is_none() {
                first = Some(t0.elapsed());
            }
            if new >= 2 && imgs.len() == 2 {
                all = Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        site.wait_converged(&commit, &["n1"]);
        let converged = t0.elapsed();
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1000.0).round());
        let line = serde_json::json!({
            "run": run + 1,
            "version": version,
            "commit_to_first_running_ms": ms(first),
            "commit_to_all_running_ms": ms(all),
            "commit_to_converged_status_ms": ms(Some(converged)),
        });
        eprintln!("docker_commit: {line}");
        results.push(line);
    }
    let col = |k: &str| -> Vec<f64> {
        results
            .iter()
            .filter_map(|r| r[k].as_f64())
            .collect::<Vec<_>>()
    };
    let out = serde_json::json!({
        "tool": "docker_commit",
        "poll_interval_s": 1,
        "runs": results,
        "commit_to_first_running_ms": bench::summarize(&col("commit_to_first_running_ms")),
        "commit_to_all_running_ms": bench::summarize(&col("commit_to_all_running_ms")),
        "commit_to_converged_status_ms": bench::summarize(&col("commit_to_converged_status_ms")),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
}
