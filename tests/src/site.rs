//! A whole site in one test: a broker (ours or Mosquitto), an LO watching a temp Git
//! repository, EN agents managing the local Docker engine, a local registry with real
//! images, and a watcher on `fleet/<site>/#`.

use crate::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Which broker the site runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Our embedded rumqttd (`broker` binary).
    Ours,
    /// Debian's Mosquitto.
    Mosquitto,
}

/// A running test site.
#[derive(Debug)]
pub struct Site {
    /// Unique site name (also the Docker label value).
    pub name: String,
    /// The site's Git repository.
    pub repo: GitRepo,
    /// Local registry.
    pub registry: Registry,
    /// Repo digest of `web:1.0` and `web:2.0` after push.
    pub digests: BTreeMap<String, String>,
    /// Broker port.
    pub port: u16,
    /// Broker kind.
    pub kind: BrokerKind,
    /// Broker process.
    pub broker: Option<Proc>,
    /// LO process.
    pub lo: Option<Proc>,
    /// LO HTTP port.
    pub lo_http: u16,
    /// Agent processes by node.
    pub agents: BTreeMap<String, Proc>,
    /// Watches every topic of the site.
    pub watcher: Watcher,
    // Dropped last: containers are removed after the agents are killed.
    docker: DockerGuard,
    dir: tempfile::TempDir,
}

/// Long enough for pulls and health checks on a loaded 2-core machine, short enough to fail.
pub const CONVERGE: Duration = Duration::from_secs(90);

impl Site {
    /// Starts registry (with `web:1.0` and `web:2.0` pushed), broker, watcher; no LO or agent yet.
    pub fn new(kind: BrokerKind) -> Site {
        let name = unique("e2e");
        let dir = tempfile::tempdir().expect("tempdir");
        let docker = DockerGuard::new(&name);
        let registry = Registry::start(dir.path());
        let mut digests = BTreeMap::new();
        for v in ["1.0", "2.0"] {
            let tag = format!("{}/{name}/web:{v}", registry.addr);
            let digest = build_image(&tag, &format!("web {v}")).expect("pushed image has a digest");
            docker.image(&tag);
            // Remove the local copy: the agent must really pull it.
            let _ = docker.docker(&["rmi", &tag]);
            digests.insert(v.to_owned(), digest);
        }
        let port = free_port();
        let broker = Some(match kind {
            BrokerKind::Ours => start_broker(port, dir.path()),
            BrokerKind::Mosquitto => start_mosquitto(port, dir.path()),
        });
        let watcher = Watcher::start(port, &name);
        let repo = GitRepo::new();
        Site {
            name,
            repo,
            registry,
            digests,
            port,
            kind,
            broker,
            lo: None,
            lo_http: free_port(),
            agents: BTreeMap::new(),
            watcher,
            docker,
            dir,
        }
    }

    /// Where logs and state live.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Image reference of web `version` in the local registry.
    pub fn image(&self, version: &str) -> String {
        format!("{}/{}/web:{version}", self.registry.addr, self.name)
    }

    /// The Docker guard (containers of this site).
    pub fn docker(&self) -> &DockerGuard {
        &self.docker
    }

    fn broker_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Writes `site.yaml` and `nodes.yaml` for these nodes.
    pub fn write_inventory(&self, nodes: &[&str]) {
        let site = &self.name;
        self.repo.write(
            &format!("sites/{site}/site.yaml"),
            &format!(
                "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: {site}\nspec:\n  allowEmpty: true\n  maxDeletePercent: 100\n  policy:\n    attempts: 2\n    backoff: 1s\n"
            ),
        );
        let docs: Vec<String> = nodes
            .iter()
            .map(|n| {
                format!("apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: {n}\n  labels:\n    role: gateway\n")
            })
            .collect();
        self.repo
            .write(&format!("sites/{site}/nodes.yaml"), &docs.join("---\n"));
    }

    /// Writes the `web` deployment: an `api` with a healthcheck and a `web` depending on it.
    pub fn write_web(&self, version: &str) {
        let image = self.image(version);
        self.repo.write(
            &format!("sites/{}/web.yaml", self.name),
            &format!(
                r#"apiVersion: edgefleet.io/v1
kind: Deployment
metadata:
  name: web
spec:
  nodeSelector:
    role: gateway
  components:
    - name: api
      image: {image}
      healthcheck:
        test: ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"]
        interval: 1s
        timeout: 1s
        retries: 2
    - name: web
      image: {image}
      dependsOn: [api]
      env:
        VERSION: "{version}"
"#
            ),
        );
    }

    /// Commits everything in the repository.
    pub fn commit(&self, message: &str) -> String {
        let id = self.repo.commit(message);
        self.sync();
        id
    }

    /// Asks the LO to fetch now (`POST /sync`), if it runs; polling would find it too.
    pub fn sync(&self) {
        if self.lo.is_some() {
            let _ = http_post(self.lo_http, "/sync");
        }
    }

    /// Starts (or restarts) the LO.
    pub fn start_lo(&mut self) {
        let mut cmd = Command::new(bin("lo"));
        cmd.args([
            "run",
            "--site",
            &self.name,
            "--repo",
            &self.repo.url(),
            "--broker",
        ])
        .arg(self.broker_url())
        .arg("--state-dir")
        .arg(self.dir().join("lo-state"))
        .args(["--http-listen", &format!("127.0.0.1:{}", self.lo_http)])
        .env("LO_POLL_INTERVAL", "1s")
        .env("LO_HEARTBEAT_TIMEOUT", "10s")
        .env("RUST_LOG", "info,lo=debug");
        self.lo = Some(Proc::spawn("lo", cmd, &self.dir()));
    }

    /// Starts (or restarts) the agent of `node`.
    pub fn start_agent(&mut self, node: &str) {
        self.start_agent_with(node, &[]);
    }

    /// Starts (or restarts) the agent of `node` with extra `--set key=value` settings.
    pub fn start_agent_with(&mut self, node: &str, settings: &[&str]) {
        let mut cmd = Command::new(bin("en-agent"));
        cmd.args(["run", "--site", &self.name, "--node", node, "--broker"])
            .arg(self.broker_url())
            .arg("--state-dir")
            .arg(self.dir().join(format!("agent-{node}")))
            .args(["--heartbeat", "2s", "--resync", "5s"])
            // Tests of several sites share one engine and reuse node names.
            .args([
                "--set",
                &format!("container_prefix=ef-{}-{node}", self.name),
            ])
            .env("RUST_LOG", "info,en_agent=debug");
        for s in settings {
            cmd.args(["--set", s]);
        }
        self.agents.insert(
            node.to_owned(),
            Proc::spawn(&format!("agent-{node}"), cmd, &self.dir()),
        );
    }

    /// Kills (SIGKILL) and restarts the broker on the same port: retained state is lost.
    pub fn restart_broker(&mut self) {
        if let Some(mut b) = self.broker.take() {
            b.kill();
        }
        self.broker = Some(match self.kind {
            BrokerKind::Ours => start_broker(self.port, &self.dir()),
            BrokerKind::Mosquitto => start_mosquitto(self.port, &self.dir()),
        });
    }

    /// The latest payload of `fleet/<site>/<rest>`.
    pub fn get(&self, rest: &str) -> Option<Value> {
        self.watcher.get(&format!("fleet/{}/{rest}", self.name))
    }

    /// Waits until every node reports converged on `commit` with the desired generation
    /// and the site summary agrees; returns each node's status.
    pub fn wait_converged(&self, commit: &str, nodes: &[&str]) -> BTreeMap<String, Value> {
        let site = self.name.clone();
        self.watcher.wait_until(
            &format!("{nodes:?} converged on {commit}"),
            CONVERGE,
            |latest| {
                let mut out = BTreeMap::new();
                for n in nodes {
                    let desired = latest.get(&format!("fleet/{site}/nodes/{n}/desired"))?;
                    let status = latest.get(&format!("fleet/{site}/nodes/{n}/status"))?;
                    let ok = desired["revision"]["commit"] == commit
                        && status["revision"]["commit"] == commit
                        && status["observedGeneration"] == desired["generation"]
                        && status["converged"] == true;
                    if !ok {
                        return None;
                    }
                    out.insert((*n).to_owned(), status.clone());
                }
                let summary = latest.get(&format!("fleet/{site}/lo/status"))?;
                if summary["revision"]["commit"] != commit {
                    return None;
                }
                let all = nodes.iter().all(|n| {
                    summary["nodes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|s| s["node"] == *n && s["converged"] == true)
                });
                all.then_some(out)
            },
        )
    }
}

/// The status of component `component` of deployment `deployment` in a node status.
pub fn component<'a>(status: &'a Value, deployment: &str, component: &str) -> Option<&'a Value> {
    status["deployments"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == deployment)?["components"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == component)
}

/// A minimal HTTP/1.1 POST to 127.0.0.1; returns the status line.
pub fn http_post(port: u16, path: &str) -> std::io::Result<String> {
    http(port, "POST", path)
}

/// A minimal HTTP/1.1 request to 127.0.0.1; returns the whole response.
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
