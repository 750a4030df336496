//! Hostile commits against the real `lo` binary: `lo validate` on the working tree, and
//! `lo run` (with our broker) serving a good commit when the hostile one becomes the head.
//! Each case must end in a `file:line: field: message` problem within seconds, with bounded
//! memory, and `lo run` must keep serving the last good revision (and survive a restart
//! with the hostile head, which would otherwise be a crash loop). No Docker needed.

use harness::{
    bin, free_port, output_within, start_broker, unique, wait_for, GitRepo, Proc, Watcher,
};
use serde_json::Value;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Peak resident memory allowed to `lo run` and `lo validate`, kB.
const MAX_RSS_KB: u64 = 200 * 1024;
/// Address space given to `lo validate` (kB): a runaway allocation aborts it instead of
/// eating the machine, and the test then fails on the exit status.
const VALIDATE_VMEM_KB: u64 = 1024 * 1024;
const VALIDATE_WITHIN: Duration = Duration::from_secs(15);
const REJECT_WITHIN: Duration = Duration::from_secs(30);

const NODES: &str = "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: n1\n";
const WEB: &str = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  nodes: [n1]\n  components:\n    - name: web\n      image: busybox:1.36\n";

/// A repository whose first commit is a good site `site`.
fn good_repo(site: &str) -> (GitRepo, String) {
    let repo = GitRepo::new();
    repo.write(&format!("sites/{site}/nodes.yaml"), NODES);
    repo.write(&format!("sites/{site}/web.yaml"), WEB);
    let good = repo.commit("good site");
    (repo, good)
}

/// GNU time, to read the peak memory of a process that has exited.
const GNU_TIME: &str = "/usr/bin/time";

/// `lo validate` on the working tree, bounded in time and address space. Where GNU time is
/// installed, its peak resident memory is checked too (the last stderr line is then
/// `maxrss_kb=N`, removed from the output returned).
fn validate(repo: &Path, site: &str) -> std::process::Output {
    let timed = Path::new(GNU_TIME).is_file();
    let mut cmd = if timed {
        let mut c = Command::new(GNU_TIME);
        c.args(["-f", "maxrss_kb=%M", "sh"]);
        c
    } else {
        Command::new("sh")
    };
    cmd.arg("-c")
        .arg(format!("ulimit -v {VALIDATE_VMEM_KB}; exec \"$0\" \"$@\""))
        .arg(bin("lo"))
        .args(["validate", "--site", site, "--repo"])
        .arg(repo);
    let mut out = output_within(&mut cmd, VALIDATE_WITHIN);
    if timed {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let (rest, last) = stderr
            .trim_end()
            .rsplit_once('\n')
            .unwrap_or(("", stderr.trim_end()));
        let rss: u64 = last
            .strip_prefix("maxrss_kb=")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("GNU time output in {stderr:?}"));
        eprintln!("lo validate peak RSS: {rss} kB");
        assert!(rss < MAX_RSS_KB, "lo validate peaked at {rss} kB");
        out.stderr = format!("{rest}\n").into_bytes();
    }
    out
}

/// Asserts that `lo validate` fails cleanly (exit 1, not a signal) naming every `expected`.
fn validate_rejects(repo: &Path, site: &str, expected: &[&str]) {
    let out = validate(repo, site);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "lo validate: {out:?}");
    for e in expected {
        assert!(stderr.contains(e), "lo validate should say {e:?}: {stderr}");
    }
    // file:line: message lines, not a megabyte of echoed input.
    assert!(stderr.len() < 64 * 1024, "{} bytes of errors", stderr.len());
}

/// `lo run` on its own process (its pid is needed for /proc), killed on drop.
struct Lo {
    child: Child,
    http: u16,
    log: std::path::PathBuf,
}

impl Lo {
    fn start(repo: &GitRepo, site: &str, broker: u16, dir: &Path) -> Lo {
        let http = free_port();
        let log = dir.join(format!("lo-{http}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(bin("lo"))
            .args(["run", "--site", site, "--repo", &repo.url(), "--broker"])
            .arg(format!("mqtt://127.0.0.1:{broker}"))
            .arg("--state-dir")
            .arg(dir.join("lo-state"))
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .env("LO_POLL_INTERVAL", "500ms")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn lo");
        Lo { child, http, log }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET /status`, parsed.
    fn status(&self) -> Option<Value> {
        let resp = harness::site::http(self.http, "GET", "/status").ok()?;
        let body = resp.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    }

    /// Peak resident memory so far (VmHWM), kB.
    fn peak_rss_kb(&self) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("lo is alive");
        text.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    fn sync(&self) {
        let _ = harness::site::http_post(self.http, "/sync");
    }

    fn wait_serving(&mut self, commit: &str) {
        wait_for(&format!("lo serving {commit}"), REJECT_WITHIN, || {
            assert!(self.running(), "lo exited: {}", self.log_tail());
            let st = self.status()?;
            (st["revision"]["commit"] == commit).then_some(())
        });
    }

    /// Waits for the rejection of `bad` while `good` stays served; returns the problems.
    fn wait_rejected(&mut self, bad: &str, good: &str) -> Vec<Value> {
        self.sync();
        let st = wait_for(&format!("rejection of {bad}"), REJECT_WITHIN, || {
            assert!(self.running(), "lo exited: {}", self.log_tail());
            let st = self.status()?;
            (st["lastError"]["commit"] == bad).then_some(st)
        });
        assert_eq!(
            st["revision"]["commit"], good,
            "last good revision kept: {st}"
        );
        // Ready throughout: serving the last good revision and connected (the issue saw
        // /readyz stay 503 while an oversized commit was the head).
        let ready = harness::site::http(self.http, "GET", "/readyz").unwrap_or_default();
        assert!(ready.starts_with("HTTP/1.1 200"), "/readyz: {ready}");
        st["lastError"]["problems"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(30).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Lo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- last lines of lo ----\n{}", self.log_tail());
        }
    }
}

/// One hostile commit after a good one: `lo validate` refuses it naming `expected`, `lo run`
/// rejects it and keeps serving the good commit, on the broker too, within bounded memory,
/// also after a restart with the hostile head. Returns the problems `lo run` reported.
fn hostile_case(write: impl FnOnce(&GitRepo, &str), expected: &[&str]) -> Vec<Value> {
    let site = unique("hostile");
    let (repo, good) = good_repo(&site);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _broker: Proc = start_broker(port, dir.path());
    let watcher = Watcher::start(port, &site);
    let out = validate(repo.path(), &site);
    assert!(out.status.success(), "good site validates: {out:?}");

    let mut lo = Lo::start(&repo, &site, port, dir.path());
    lo.wait_serving(&good);
    write(&repo, &site);
    let bad = repo.commit("hostile");
    validate_rejects(repo.path(), &site, expected);

    let problems = lo.wait_rejected(&bad, &good);
    let text = as_lines(&problems);
    for e in expected {
        assert!(text.contains(e), "lo run should say {e:?}: {text}");
    }
    assert!(text.len() < 64 * 1024, "{} bytes of problems", text.len());
    // The summary on the broker says the same: it was published, so it fits a packet.
    let topic = format!("fleet/{site}/lo/status");
    watcher.wait_until("lo/status with the rejection", REJECT_WITHIN, |t| {
        let st = t.get(&topic)?;
        (st["lastError"]["commit"] == bad.as_str() && st["revision"]["commit"] == good.as_str())
            .then_some(())
    });
    assert!(
        watcher
            .get(&format!("fleet/{site}/nodes/n1/desired"))
            .is_some(),
        "the good revision's desired document stays published"
    );
    let rss = lo.peak_rss_kb();
    eprintln!("lo run peak RSS: {rss} kB");
    assert!(rss < MAX_RSS_KB, "lo run peaked at {rss} kB");
    assert!(lo.running());

    // A restart reads the same head again: rejected again, not a crash loop.
    drop(lo);
    let mut lo = Lo::start(&repo, &site, port, dir.path());
    lo.wait_serving(&good);
    lo.wait_rejected(&bad, &good);
    let rss = lo.peak_rss_kb();
    assert!(rss < MAX_RSS_KB, "restarted lo run peaked at {rss} kB");
    problems
}

/// Problems as `lo validate` prints them: `file:line: field: message`.
fn as_lines(problems: &[Value]) -> String {
    problems
        .iter()
        .map(|p| {
            let mut s = p["file"].as_str().unwrap_or_default().to_owned();
            if let Some(l) = p["line"].as_u64() {
                s.push_str(&format!(":{l}"));
            }
            if let Some(f) = p["field"].as_str() {
                s.push_str(&format!(": {f}"));
            }
            format!("{s}: {}\n", p["message"].as_str().unwrap_or_default())
        })
        .collect()
}

fn laughs(levels: usize) -> String {
    let mut s = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..levels {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    s
}

#[test]
fn billion_laughs_commit_is_rejected_and_lo_keeps_serving() {
    hostile_case(
        |repo, site| repo.write(&format!("sites/{site}/lol.yaml"), &laughs(12)),
        &["lol.yaml:", "max_yaml_nodes"],
    );
}

#[test]
fn deeply_nested_commit_is_rejected_without_stack_overflow() {
    hostile_case(
        |repo, site| {
            let flow = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
            repo.write(&format!("sites/{site}/flow.yaml"), &flow);
            let maps = format!("{}1{}", "{a: ".repeat(5000), "}".repeat(5000));
            repo.write(&format!("sites/{site}/maps.yaml"), &maps);
            let mut block = String::new();
            for i in 0..200 {
                block.push_str(&format!("{}k:\n", " ".repeat(i)));
            }
            repo.write(&format!("sites/{site}/block.yaml"), &block);
        },
        &[
            "flow.yaml:1:",
            "maps.yaml:1:",
            "block.yaml:65:",
            "max_yaml_depth",
        ],
    );
}

#[test]
fn fifty_megabyte_scalar_is_refused_before_reading() {
    hostile_case(
        |repo, site| {
            let big = format!(
                "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: n2\nspec:\n  description: {}\n",
                "x".repeat(50 << 20)
            );
            repo.write(&format!("sites/{site}/big.yaml"), &big);
        },
        &["big.yaml", "max_file_bytes"],
    );
}

#[test]
fn oversized_desired_document_is_rejected_naming_node_and_deployment() {
    hostile_case(
        |repo, site| {
            // 600 variables of 1,000 bytes: a valid file under 1 MiB whose document is not.
            let mut env = String::new();
            for i in 0..600 {
                env.push_str(&format!("        V{i}: {}\n", "v".repeat(1000)));
            }
            let big = format!("apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: big\nspec:\n  nodes: [n1]\n  components:\n    - name: big\n      image: busybox:1.36\n      env:\n{env}");
            repo.write(&format!("sites/{site}/big.yaml"), &big);
        },
        &[
            "big.yaml",
            "desired document for node n1 would be",
            "max_desired_bytes",
            "`big`",
        ],
    );
}

#[test]
fn megabyte_name_rejection_stays_small_in_lo_status() {
    let problems = hostile_case(
        |repo, site| {
            let mut docs = String::new();
            // One megabyte name, and more problems than are kept.
            docs.push_str(&format!(
                "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: {}\n",
                "n".repeat((1 << 20) - 200)
            ));
            repo.write(&format!("sites/{site}/name.yaml"), &docs);
            let mut many = String::new();
            for i in 0..90 {
                many.push_str(&format!(
                    "---\napiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: bad_{i}!\n"
                ));
            }
            repo.write(&format!("sites/{site}/zz-many.yaml"), &many);
        },
        &["name.yaml:", "metadata.name", "more problems"],
    );
    assert!(problems.len() <= 51, "{} problems kept", problems.len());
}

#[test]
fn symlinks_in_the_site_folder_are_refused_and_never_followed() {
    hostile_case(
        |repo, site| {
            let dir = repo.path().join("sites").join(site);
            symlink("..", dir.join("up")).expect("link up");
            symlink("loop-b", dir.join("loop-a")).expect("loop a");
            symlink("loop-a", dir.join("loop-b")).expect("loop b");
            symlink("/etc/passwd", dir.join("passwd.yaml")).expect("outside");
        },
        &["up:", "loop-a:", "passwd.yaml:", "symbolic link"],
    );
}

#[test]
fn non_utf8_file_is_a_problem_not_lossy_text() {
    hostile_case(
        |repo, site| {
            let p = repo.path().join(format!("sites/{site}/latin1.yaml"));
            std::fs::write(
                p,
                b"apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: caf\xe9\n",
            )
            .expect("write");
        },
        &["latin1.yaml", "not UTF-8"],
    );
}

#[test]
fn validate_refuses_hostile_site_names() {
    let (repo, _) = good_repo("s1");
    for name in ["a/b", "#", "..", "+", ""] {
        let out = validate(repo.path(), name);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "site {name:?}: {out:?}");
        assert!(
            stderr.contains("invalid site name"),
            "site {name:?}: {stderr}"
        );
    }
}
