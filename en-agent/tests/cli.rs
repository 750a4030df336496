//! The `en-agent` binary: `en-agent healthcheck` (exit 0/1, one line, no writes) and logs
//! on stderr without colour codes when stderr is not a terminal. Every wait is bounded.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_en-agent");
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    // Nothing from the developer's EN_* environment.
    cmd.env_clear()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs to completion, killing it after 20 s.
fn run(args: &[&str]) -> Output {
    harness::output_within(&mut command(args), Duration::from_secs(20))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn healthcheck(state_dir: &Path, docker_host: &str) -> Output {
    run(&[
        "healthcheck",
        "--site",
        "s1",
        "--node",
        "n1",
        "--state-dir",
        state_dir.to_str().expect("path"),
        "--docker-host",
        docker_host,
    ])
}

/// Names every file under `dir` with its length (the healthcheck must write nothing).
fn snapshot(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().map(|m| m.len()).unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn healthcheck_fails_with_one_line_when_docker_or_the_state_dir_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = format!("unix://{}", dir.path().join("no-docker.sock").display());
    let out = healthcheck(dir.path(), &bogus);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("unhealthy: docker at ") && err.contains("no-docker.sock"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let missing = dir.path().join("missing");
    let out = healthcheck(&missing, &bogus);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("unhealthy: state dir"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists(), "the healthcheck created the state dir");

    // A configuration `run` would refuse is unhealthy too.
    let out = run(&["healthcheck"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("unhealthy: config"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(dir.path()), vec![]);
}

#[test]
fn healthcheck_passes_against_the_real_docker_engine_and_writes_nothing() {
    if std::os::unix::net::UnixStream::connect(DOCKER_SOCKET).is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("docker is mandatory in CI: {DOCKER_SOCKET} does not answer");
        }
        eprintln!("skipping: no Docker engine at {DOCKER_SOCKET}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("desired.json"), "{}").expect("write");
    let before = snapshot(dir.path());
    let out = healthcheck(dir.path(), &format!("unix://{DOCKER_SOCKET}"));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("healthy: docker answers /_ping"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
}

/// Kills the child on drop (also when an assertion fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn logs_go_to_stderr_without_colour_codes_when_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = format!("unix://{}", dir.path().join("no-docker.sock").display());
    let state = dir.path().join("state");
    let mut cmd = command(&[
        "run",
        "--site",
        "s1",
        "--node",
        "n1",
        "--state-dir",
        state.to_str().expect("path"),
        "--docker-host",
        &bogus,
    ]);
    cmd.env("RUST_LOG", "info");
    let mut child = Running(cmd.spawn().expect("en-agent starts"));
    let err = child.0.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    // The start line, then the warning that Docker does not answer.
    while !seen.iter().any(|l: &String| l.contains("cannot observe")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no log lines on stderr within 20 s: {seen:?}"),
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("en-agent starting")),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "colour codes in {seen:?}"
    );
    let mut out = child.0.stdout.take().expect("stdout");
    drop(child);
    let mut stdout = String::new();
    let _ = out.read_to_string(&mut stdout);
    assert_eq!(stdout, "", "nothing on stdout");
}
