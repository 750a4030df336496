//! Private registries (#12) against the real Docker engine and Debian's `docker-registry`
//! with htpasswd auth on loopback: the right credentials pull and the component is
//! installed; a wrong password or no credential at all ends `failed` with `pull_denied`
//! naming the registry, after the policy's attempts only (no retry storm), with no secret
//! in the status or the events. Mandatory when `CI=true`; skipped with one line otherwise.
//! Everything a test creates (containers, networks, images, the registry) is removed, also
//! on failure.

#[macro_use]
mod common;

use base64::Engine as _;
use common::*;
use en_agent::runtime::docker::DockerRuntime;
use en_agent::runtime::label;
use en_agent::AgentHandle;
use harness::registry::{TEST_PASSWORD, TEST_USER};
use harness::{must_docker as must, DockerGuard, Registry, ScratchImage};
use schemas::wire::{error_code, ComponentStatus, DesiredDeployment, Event, NodeStatus};
use schemas::State;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WRONG_PASSWORD: &str = "ef-wrong-password";

/// One test's world; dropped in order: containers, networks and images, then the registry.
struct Lab {
    node: String,
    image: String,
    docker: DockerGuard,
    registry: Registry,
    dir: tempfile::TempDir,
}

impl Lab {
    /// A registry holding `<registry>/ef-auth-<node>/app:v1`, pushed before auth was turned
    /// on; the local copy is removed so the agent really pulls.
    fn new(tag: &str) -> Lab {
        let node = format!("ra{tag}{:06x}", fastrand::u32(..0xff_ffff));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut registry = Registry::start(dir.path());
        let repo = format!("{}/ef-auth-{node}/app", registry.addr);
        let docker = DockerGuard::by_label(label::NODE, &node);
        docker.image(&repo);
        let image = format!("{repo}:v1");
        ScratchImage::busybox_at("/busybox")
            .file("/version", "v1")
            .cmd(&SLEEP_LOOP)
            .build(&image)
            .expect("pushed image has a digest");
        must(&["rmi", &image]);
        registry.require_auth();
        Lab {
            node,
            image,
            docker,
            registry,
            dir,
        }
    }

    /// An agent configured from a TOML file, as `en-agent run --config` would be; `extra`
    /// goes last (it may open `[[registries]]` tables).
    fn spawn(&self, extra: &str, stop: &CancellationToken) -> AgentHandle {
        let file = format!(
            "site = \"ra\"\nnode = \"{node}\"\nstate_dir = {state:?}\nstop_timeout = \"2s\"\n\
             resync = \"5s\"\ncontainer_prefix = \"ef-{node}\"\nretry_max_backoff = \"2s\"\n{extra}",
            node = self.node,
            state = self.dir.path().join("state"),
        );
        let c = en_agent::resolve(Some(&file), &HashMap::new(), &BTreeMap::new())
            .expect("config resolves");
        let rt = DockerRuntime::new("unix:///var/run/docker.sock", None)
            .expect("runtime")
            .with_registry_auth(c.registry_auth.clone());
        en_agent::spawn(c, Arc::new(rt), stop.clone()).expect("agent")
    }

    /// Writes `text` to a file of the lab and returns its path (TOML-quoted).
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        format!("{p:?}")
    }

    /// Generation 1 with one deployment holding `web` = the lab's image, default policy
    /// (3 attempts, 2 s backoff).
    fn doc(&self) -> Vec<u8> {
        let mut d = doc(
            1,
            vec![default_policy(deployment(
                "app",
                vec![comp("web", &self.image)],
            ))],
        );
        d.site = "ra".into();
        d.node = self.node.clone();
        bytes(&d)
    }

    fn image_is_local(&self) -> bool {
        harness::docker(&["image", "inspect", &self.image]).is_ok()
    }
}

fn default_policy(mut d: DesiredDeployment) -> DesiredDeployment {
    d.policy = Default::default();
    d
}

/// Every event the agent emits from now on, as JSON text.
fn record_events(agent: &AgentHandle) -> Arc<Mutex<Vec<String>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut rx = agent.events();
    let sink = out.clone();
    tokio::spawn(async move {
        while let Ok(e) = rx.recv().await {
            let e: Event = e;
            sink.lock()
                .expect("lock")
                .push(serde_json::to_string(&e).expect("event json"));
        }
    });
    out
}

async fn until(
    agent: &AgentHandle,
    what: &str,
    within: Duration,
    pred: impl FnMut(&NodeStatus) -> bool,
) -> NodeStatus {
    match agent.wait_status(within, pred).await {
        Some(s) => s,
        None => panic!(
            "timed out after {within:?} waiting for {what}; last status: {}",
            serde_json::to_string_pretty(&*agent.status().borrow()).unwrap_or_default()
        ),
    }
}

fn web(s: &NodeStatus) -> &ComponentStatus {
    s.deployments
        .iter()
        .flat_map(|d| &d.components)
        .find(|c| c.name == "web")
        .unwrap_or_else(|| panic!("no web in {s:#?}"))
}

/// None of `secrets` in `text`.
fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} holds a secret ({s}): {text}");
    }
}

/// Waits for the component to fail for good with `pull_denied`, then checks the failure
/// stays put (no attempt after the budget: neither the count nor the registry's 401s grow)
/// and that no secret reached the status or the events. Returns the error message.
async fn denied_for_good(
    lab: &Lab,
    agent: &AgentHandle,
    events: &Mutex<Vec<String>>,
    secrets: &[&str],
) -> String {
    let s = until(agent, "failed", Duration::from_secs(90), |s| {
        s.state == Some(State::Failed)
    })
    .await;
    let c = web(&s);
    let e = c.error.clone().expect("error");
    assert_eq!(e.code, error_code::PULL_DENIED, "{e:?}");
    assert!(
        e.message.contains(&lab.registry.addr),
        "names the registry: {}",
        e.message
    );
    assert!(
        !c.retrying && c.next_attempt_at.is_none(),
        "given up: {c:?}"
    );
    // The default policy: 3 attempts (about 1-2 s, then 2-4 s apart), then failed until a
    // new generation.
    assert_eq!(c.attempts, 3, "{c:?}");
    let refused = lab.registry.refused_requests();
    eprintln!("{refused} requests refused with 401 for 3 attempts");
    assert!(
        (3..=12).contains(&refused),
        "one to four 401s per attempt (Docker 20.10: 1 without, 3 with credentials), 3 attempts: {refused}\n{}",
        lab.registry.log()
    );
    // Nothing more happens (with retries it would grow every 2 s: retry_max_backoff).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = agent.status().borrow().clone().expect("status");
    assert_eq!(web(&s).attempts, 3);
    assert!(!web(&s).retrying);
    assert_eq!(lab.registry.refused_requests(), refused, "no retry storm");
    assert!(!lab.image_is_local());
    assert_no_secret("status", &serde_json::to_string(&s).expect("json"), secrets);
    let events = events.lock().expect("lock").join("\n");
    assert!(
        events.contains(error_code::PULL_DENIED),
        "a failed event: {events}"
    );
    assert_no_secret("events", &events, secrets);
    e.message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_right_credentials_pull_from_a_private_registry() {
    require_docker!();
    let lab = Lab::new("ok");
    let pw = lab.file("registry.password", &format!("{TEST_PASSWORD}\n"));
    let stop = CancellationToken::new();
    let agent = lab.spawn(
        &format!(
            "[[registries]]\nhost = \"{}\"\nusername = \"{TEST_USER}\"\npassword_file = {pw}\n",
            lab.registry.addr
        ),
        &stop,
    );
    let events = record_events(&agent);
    agent.submit_desired(lab.doc());
    let s = until(&agent, "installed", Duration::from_secs(90), |s| {
        s.converged && s.observed_generation == 1
    })
    .await;
    let c = web(&s);
    assert_eq!(c.state, State::Installed, "{c:?}");
    assert_eq!(c.container_status.as_deref(), Some("running"));
    assert_eq!(c.image.as_deref(), Some(lab.image.as_str()));
    assert!(lab.image_is_local(), "pulled");
    assert_eq!(lab.docker.containers().len(), 1, "one container");
    assert_no_secret(
        "status",
        &serde_json::to_string(&s).expect("json"),
        &[TEST_PASSWORD],
    );
    assert_no_secret(
        "events",
        &events.lock().expect("lock").join("\n"),
        &[TEST_PASSWORD],
    );
    stop.cancel();
    agent.wait().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_wrong_password_fails_once_with_pull_denied() {
    require_docker!();
    let lab = Lab::new("wp");
    // A Docker config.json whose auth is base64 of user:wrong-password.
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{TEST_USER}:{WRONG_PASSWORD}"));
    let cfg = lab.file(
        "config.json",
        &format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{auth}\"}}}}}}",
            lab.registry.addr
        ),
    );
    let stop = CancellationToken::new();
    let agent = lab.spawn(&format!("registry_auth_file = {cfg}\n"), &stop);
    let events = record_events(&agent);
    agent.submit_desired(lab.doc());
    let message = denied_for_good(&lab, &agent, &events, &[WRONG_PASSWORD, &auth]).await;
    assert_eq!(
        message,
        format!(
            "pull denied: registry {} refused the credentials for {} (unauthorized)",
            lab.registry.addr, lab.image
        )
    );
    stop.cancel();
    agent.wait().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_no_credential_fails_once_with_pull_denied() {
    require_docker!();
    let lab = Lab::new("nc");
    // Credentials for another port of the same host: not sent to this registry.
    let pw = lab.file("registry.password", &format!("{TEST_PASSWORD}\n"));
    let stop = CancellationToken::new();
    let agent = lab.spawn(
        &format!(
            "[[registries]]\nhost = \"127.0.0.1:1\"\nusername = \"{TEST_USER}\"\npassword_file = {pw}\n"
        ),
        &stop,
    );
    let events = record_events(&agent);
    agent.submit_desired(lab.doc());
    let message = denied_for_good(&lab, &agent, &events, &[TEST_PASSWORD]).await;
    assert_eq!(
        message,
        format!(
            "pull denied: registry {addr} refused {} without credentials (no credentials sent; none are configured for {addr} on this node)",
            lab.image,
            addr = lab.registry.addr
        )
    );
    stop.cancel();
    agent.wait().await.expect("agent stops");
}

/// The `en-agent` binary, killed on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary, offline, converging from a `desired.json` in its state directory, with
/// every log level on (`RUST_LOG=trace`, bollard's included): a wrong password ends in the
/// give-up line naming the registry, and neither the log, the process arguments (`ps`) nor
/// its environment hold the password or the `config.json` auth.
#[test]
fn docker_binary_never_logs_or_shows_a_registry_secret() {
    if !harness::require_docker_registry() {
        return;
    }
    let lab = Lab::new("bn");
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{TEST_USER}:{WRONG_PASSWORD}"));
    let cfg = lab.file(
        "config.json",
        &format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{auth}\"}}}}, \"credsStore\": \"desktop\"}}",
            lab.registry.addr
        ),
    );
    let state = lab.dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(state.join("desired.json"), lab.doc()).expect("desired.json");
    let config = lab.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "site = \"ra\"\nnode = \"{node}\"\nstate_dir = {state:?}\nstop_timeout = \"2s\"\n\
             resync = \"5s\"\ncontainer_prefix = \"ef-{node}\"\nregistry_auth_file = {cfg}\n",
            node = lab.node
        ),
    )
    .expect("agent.toml");
    let log = lab.dir.path().join("agent.log");
    let out = std::fs::File::create(&log).expect("log file");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_en-agent"))
        .env_clear()
        .env("RUST_LOG", "trace")
        .args(["run", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .expect("en-agent starts");
    let agent = Running(child);
    let pid = agent.0.id();
    let text = harness::wait_for(
        "the give-up line in the agent's log",
        Duration::from_secs(90),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("giving up until the desired state changes")
                .then_some(text)
        },
    );
    let proc_file = |name: &str| {
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/{name}")).unwrap_or_default())
            .into_owned()
    };
    let (cmdline, environ) = (proc_file("cmdline"), proc_file("environ"));
    drop(agent);
    assert!(
        cmdline.contains("--config"),
        "read /proc/{pid}/cmdline: {cmdline:?}"
    );
    for (what, text) in [("log", &text), ("ps", &cmdline), ("environ", &environ)] {
        assert_no_secret(what, text, &[WRONG_PASSWORD, &auth]);
        assert!(
            !text.to_ascii_lowercase().contains("x-registry-auth"),
            "{what} shows the auth header"
        );
    }
    let give_up = text
        .lines()
        .find(|l| l.contains("giving up until the desired state changes"))
        .expect("give-up line");
    assert!(
        give_up.contains("pull_denied") && give_up.contains(&lab.registry.addr),
        "{give_up}"
    );
    assert!(
        text.contains("registry credentials loaded") && text.contains("credsStore"),
        "start lines: {text}"
    );
}
