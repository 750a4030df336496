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

#[test]
fn keygen_writes_a_private_key_0600_refuses_to_overwrite_and_prints_the_public_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("node.key");
    let out = run(&["keygen", "--out", key.to_str().expect("path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("spec.publicKey: "))
        .unwrap_or_else(|| panic!("no publicKey line in {stdout}"));
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let private = std::fs::read_to_string(&key).expect("read key");
    assert!(
        !stdout.contains(private.trim()),
        "the private key is not printed"
    );
    let signing = schemas::sign::signing_key_from_base64(&private).expect("a valid seed");
    assert_eq!(
        schemas::sign::verifying_key_to_base64(&signing.verifying_key()),
        public
    );
    let again = run(&["keygen", "--out", key.to_str().expect("path")]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("never overwritten"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read_to_string(&key).expect("read key"),
        private,
        "the key is untouched"
    );
}

/// `run` with `extra` arguments after a valid identity; returns the refusal's stderr.
fn refused_config(dir: &Path, extra: &[&str]) -> String {
    let state = dir.join("state");
    let mut args = vec![
        "run",
        "--state-dir",
        state.to_str().expect("path"),
        "--docker-host",
        "unix:///nonexistent.sock",
    ];
    let has = |flag: &str| extra.contains(&flag);
    if !has("--site") {
        args.extend(["--site", "s1"]);
    }
    if !has("--node") {
        args.extend(["--node", "n1"]);
    }
    args.extend_from_slice(extra);
    let out = run(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{extra:?}: one line: {err}");
    assert!(err.starts_with("error: configuration: "), "{err}");
    assert!(!state.exists(), "{extra:?}: nothing started");
    err
}

#[test]
fn invalid_configuration_exits_2_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    for root in ["#", "+", "", "a//b", "/fleet", "fleet/#", "a/+/b"] {
        let err = refused_config(dir.path(), &["--topic-root", root]);
        assert!(
            err.contains("topic root") || err.contains("topic_root"),
            "{root:?}: {err}"
        );
    }
    for (flag, name) in [
        ("--site", "a/b"),
        ("--node", "#"),
        ("--node", "+"),
        ("--site", ""),
    ] {
        let err = refused_config(dir.path(), &[flag, name]);
        assert!(err.contains(&flag[2..]), "{flag} {name:?}: {err}");
    }
    let long = "n".repeat(100_000);
    let err = refused_config(dir.path(), &["--node", &long]);
    assert!(
        err.len() < 1_000,
        "a huge name is not echoed: {} bytes",
        err.len()
    );
    let err = refused_config(
        dir.path(),
        &["--broker", "mqtt://user:s3cret-pw@host:notaport"],
    );
    assert!(
        !err.contains("s3cret-pw"),
        "the password is not echoed: {err}"
    );
    // Numbers that would wrap or break every session are refused, not used.
    for (key, value) in [
        ("disk_reserve_mb", "18446744073709551615"),
        ("max_packet_size", "100"),
        ("max_packet_size", "1099511627776"),
        // Retries of a transient failure: not a tight loop, not more than a day apart.
        ("retry_max_backoff", "500ms"),
        ("retry_max_backoff", "2d"),
        ("retry_max_backoff", "often"),
    ] {
        let err = refused_config(dir.path(), &["--set", &format!("{key}={value}")]);
        assert!(err.contains(key), "{key}={value}: {err}");
    }
}

#[test]
fn missing_or_malformed_key_files_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.key");
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not base64 at all!").expect("write");
    let short = dir.path().join("short.key");
    std::fs::write(&short, "AAAA").expect("write");
    for file in [&missing, &bad, &short] {
        let path = file.to_str().expect("path");
        for key in ["report_signing_key_file", "public_key_file"] {
            let err = refused_config(dir.path(), &["--set", &format!("{key}={path}")]);
            assert!(err.contains(key), "{key} {path}: {err}");
        }
    }
    // A key file that never ends (a device, or a wrong path) is not read forever.
    let err = refused_config(dir.path(), &["--set", "report_signing_key_file=/dev/zero"]);
    assert!(err.contains("not a key file"), "{err}");
    let err = refused_config(dir.path(), &["--public-key", "AAAA"]);
    assert!(err.contains("public_key"), "{err}");
}

#[test]
fn keygen_if_missing_keeps_the_key_and_writes_the_public_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("lo.key");
    let public = dir.path().join("lo.pub");
    let args = [
        "keygen",
        "--if-missing",
        "--out",
        key.to_str().expect("path"),
        "--public-out",
        public.to_str().expect("path"),
    ];
    let first = run(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    let private = std::fs::read_to_string(&key).expect("key");
    let pub_text = std::fs::read_to_string(&public).expect("public");
    let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is the owner's only");
    let signing = schemas::sign::signing_key_from_base64(&private).expect("key");
    assert_eq!(
        pub_text.trim(),
        schemas::sign::verifying_key_to_base64(&signing.verifying_key())
    );
    // Every later start keeps the key.
    std::fs::remove_file(&public).expect("rm");
    let second = run(&args);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(std::fs::read_to_string(&key).expect("key"), private);
    assert_eq!(std::fs::read_to_string(&public).expect("public"), pub_text);
    // A file that is not a key is not replaced either.
    std::fs::write(&key, "garbage").expect("write");
    let third = run(&args);
    assert_eq!(third.status.code(), Some(1), "{}", stderr(&third));
    assert_eq!(std::fs::read_to_string(&key).expect("key"), "garbage");
}

#[test]
fn broker_password_file_must_be_readable_and_needs_a_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret-from-file\n").expect("write");
    let pw_arg = format!("broker_password_file={}", pw.display());
    let err = refused_config(
        dir.path(),
        &["--broker", "mqtt://127.0.0.1:1", "--set", &pw_arg],
    );
    assert!(err.contains("no user name"), "{err}");
    let err = refused_config(dir.path(), &["--set", &pw_arg]);
    assert!(err.contains("no broker"), "{err}");
    let missing = format!("broker_password_file={}", dir.path().join("nope").display());
    let err = refused_config(
        dir.path(),
        &["--broker", "mqtt://node@127.0.0.1:1", "--set", &missing],
    );
    assert!(err.contains("broker_password_file"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}
