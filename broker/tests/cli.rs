//! The `broker` binary: `broker healthcheck` against a live in-process broker, and logs on
//! stderr without colour codes when stderr is not a terminal. Every wait is bounded.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use broker::BrokerConfig;

const BIN: &str = env!("CARGO_BIN_EXE_broker");

fn start_broker(configure: impl FnOnce(&mut BrokerConfig)) -> SocketAddr {
    let mut cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..BrokerConfig::default()
    };
    configure(&mut cfg);
    let handle = broker::start(&cfg).expect("broker starts");
    let addr = handle.connect_addr();
    // No stop API: the broker lives as long as the test process.
    std::mem::forget(handle);
    addr
}

/// Runs the binary to completion, killing it after 20 s.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("BROKER_CONFIG")
        .env_remove("BROKER_LISTEN")
        .env_remove("BROKER_HEALTH_ADDR")
        .env_remove("BROKER_HEALTH_USER")
        .env_remove("BROKER_HEALTH_PASSWORD")
        .envs(env.iter().copied());
    harness::output_within(&mut cmd, Duration::from_secs(20))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn healthcheck_passes_against_a_live_broker_and_fails_on_a_closed_port() {
    let addr = start_broker(|_| {});
    let out = run(&["healthcheck", "--addr", &addr.to_string()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("healthy: "), "{err}");
    assert!(out.stdout.is_empty());

    // The address from --listen / BROKER_LISTEN when --addr is not given.
    let out = run(&["healthcheck"], &[("BROKER_LISTEN", &addr.to_string())]);
    assert!(out.status.success(), "{}", stderr(&out));

    let closed = format!("127.0.0.1:{}", free_port());
    let t0 = Instant::now();
    let out = run(&["healthcheck", "--addr", &closed], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("unhealthy: ") && err.contains(&closed),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn healthcheck_logs_in_from_flags_env_or_the_config_file() {
    let addr = start_broker(|c| {
        c.users.insert("lo".into(), "s3cret".into());
    });
    let a = addr.to_string();
    // No login: rumqttd closes the connection without CONNACK.
    let out = run(&["healthcheck", "--addr", &a], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("before CONNACK"), "{}", stderr(&out));
    let out = run(
        &[
            "healthcheck",
            "--addr",
            &a,
            "--username",
            "lo",
            "--password",
            "nope",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = run(
        &[
            "healthcheck",
            "--addr",
            &a,
            "--username",
            "lo",
            "--password",
            "s3cret",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &["healthcheck", "--addr", &a],
        &[
            ("BROKER_HEALTH_USER", "lo"),
            ("BROKER_HEALTH_PASSWORD", "s3cret"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The first login of the config file the broker runs with.
    let dir = tempfile_dir();
    let file = dir.join("broker.toml");
    std::fs::write(
        &file,
        format!("listen = \"{a}\"\n[users]\nlo = \"s3cret\"\n"),
    )
    .expect("config");
    let out = run(
        &["healthcheck"],
        &[("BROKER_CONFIG", file.to_str().expect("path"))],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("broker-cli-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
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
    let mut child = Running(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("BROKER_CONFIG")
            .env_remove("BROKER_LISTEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("broker starts"),
    );
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
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let running = line.contains("broker running");
                seen.push(line);
                if running {
                    break;
                }
            }
            Err(_) => panic!("no \"broker running\" line on stderr within 20 s: {seen:?}"),
        }
    }
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
