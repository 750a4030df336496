//! Test helpers: Git repositories in temp dirs, an in-process broker, a scripted node, a TCP
//! proxy that simulates a broker restart, and `wait_until`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use schemas::{
    AgentInfo, ComponentStatus, DeploymentStatus, DesiredState, Health, NodeStatus, Presence,
    PresenceSchema, RuntimeInfo, State, StatusSchema,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const SITE: &str = "s1";

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout`.
pub async fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Git repository with a work tree, on branch `main`.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub repo: git2::Repository,
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = git2::RepositoryInitOptions::new();
        opts.initial_head("main");
        let repo = git2::Repository::init_opts(dir.path(), &opts).unwrap();
        Repo { dir, repo }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (Some) or deletes (None) files and commits; returns the commit id.
    pub fn commit(&self, files: &[(&str, Option<&str>)], msg: &str) -> String {
        for (p, content) in files {
            let full = self.dir.path().join(p);
            match content {
                Some(c) => {
                    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                    std::fs::write(&full, c).unwrap();
                }
                None => {
                    let _ = std::fs::remove_file(&full);
                }
            }
        }
        let mut index = self.repo.index().unwrap();
        index
            .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.update_all(["*"].iter(), None).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("test", "test@example.invalid").unwrap();
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents)
            .unwrap()
            .to_string()
    }
}

pub fn node_doc(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n{labels}"
    )
}

pub fn deployment_doc(name: &str, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n{extra_spec}  components:\n    - name: main\n      image: {image}\n"
    )
}

pub fn start_broker() -> broker::BrokerHandle {
    broker::start(&broker::BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .expect("broker starts")
}

pub fn lo_config(repo: &Path, state: &Path, broker: SocketAddr) -> lo::config::Config {
    lo::config::Config {
        site: SITE.into(),
        repo: repo.to_string_lossy().into_owned(),
        state_dir: state.to_owned(),
        broker: format!("mqtt://{broker}"),
        http_listen: "127.0.0.1:0".into(),
        poll_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

pub struct Lo {
    pub running: lo::app::Running,
    pub shutdown: CancellationToken,
    pub state: PathBuf,
}

impl Lo {
    pub async fn start(cfg: lo::config::Config) -> Lo {
        let shutdown = CancellationToken::new();
        let state = cfg.state_dir.clone();
        let source = lo::app::open_git_source(&cfg).await.expect("git source");
        let running = lo::app::start(cfg, source, shutdown.clone())
            .await
            .expect("lo starts");
        Lo {
            running,
            shutdown,
            state,
        }
    }

    pub fn status(&self) -> Option<schemas::SiteStatus> {
        self.running.shared.site_status()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running.join)
            .await
            .expect("lo stops in time")
            .expect("engine task");
    }
}

/// What a scripted node client received.
#[derive(Default)]
pub struct Inbox {
    pub desired: Vec<DesiredState>,
    pub other: Vec<(String, Vec<u8>)>,
}

/// A scripted MQTT client.
pub struct Client {
    pub client: AsyncClient,
    pub inbox: Arc<Mutex<Inbox>>,
    stop: CancellationToken,
}

impl Client {
    pub async fn connect(addr: SocketAddr, id: &str, will: Option<(String, Vec<u8>)>) -> Client {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_keep_alive(Duration::from_secs(5));
        if let Some((t, p)) = will {
            opts.set_last_will(rumqttc::LastWill::new(t, p, QoS::AtLeastOnce, true));
        }
        let (client, mut ev) = AsyncClient::new(opts, 10_000);
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let (i2, s2) = (inbox.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let e = tokio::select! { _ = s2.cancelled() => break, e = ev.poll() => e };
                match e {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let mut g = i2.lock().unwrap();
                        if p.topic.ends_with("/desired") {
                            if let Ok(d) = serde_json::from_slice::<DesiredState>(&p.payload) {
                                g.desired.push(d);
                                continue;
                            }
                        }
                        g.other.push((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("client connects");
        Client {
            client,
            inbox,
            stop,
        }
    }

    pub fn last_desired(&self, node: &str) -> Option<DesiredState> {
        self.inbox
            .lock()
            .unwrap()
            .desired
            .iter()
            .rev()
            .find(|d| d.node == node)
            .cloned()
    }

    pub fn last_other(&self, topic: &str) -> Option<Vec<u8>> {
        self.inbox
            .lock()
            .unwrap()
            .other
            .iter()
            .rev()
            .find(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
    }

    pub async fn publish(&self, topic: String, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn presence(online: bool, epoch: u64) -> Vec<u8> {
    serde_json::to_vec(&Presence {
        signature: None,
        schema: PresenceSchema::V1,
        online,
        epoch,
        version: None,
    })
    .unwrap()
}

/// A status that reports `doc` fully installed (or a deployment failed).
pub fn status_for(doc: &DesiredState, failed: Option<&str>) -> NodeStatus {
    let deployments: Vec<DeploymentStatus> = doc
        .deployments
        .iter()
        .map(|d| {
            let state = if failed == Some(d.name.as_str()) {
                State::Failed
            } else {
                State::Installed
            };
            DeploymentStatus {
                name: d.name.clone(),
                state,
                commit: Some(d.commit.clone()),
                components: d
                    .components
                    .iter()
                    .map(|c| ComponentStatus {
                        name: c.name.clone(),
                        state,
                        spec_hash: Some(c.spec_hash.clone()),
                        container_id: Some("c".into()),
                        container_status: Some("running".into()),
                        health: Health::None,
                        restart_count: 0,
                        image: Some(c.image.clone()),
                        image_id: None,
                        repo_digest: None,
                        attempts: 0,
                        error: None,
                        retrying: false,
                        next_attempt_at: None,
                    })
                    .collect(),
            }
        })
        .collect();
    let converged = failed.is_none();
    NodeStatus {
        signature: None,
        schema: StatusSchema::V1,
        site: doc.site.clone(),
        node: doc.node.clone(),
        observed_generation: doc.generation,
        revision: Some(doc.revision.clone()),
        state: schemas::rollup(deployments.iter().map(|d| d.state)),
        converged,
        reported_at: schemas::now_rfc3339(),
        deployments,
        unmanaged: vec![],
        runtime: RuntimeInfo {
            kind: "fake".into(),
            version: None,
            reachable: true,
            error: None,
        },
        agent: AgentInfo {
            rejected_documents: 0,
            images_removed: 0,
            image_bytes_freed: 0,
            version: "test".into(),
            uptime_s: 1,
        },
        rejected: None,
    }
}

/// A TCP proxy: clients connect to `addr`; `switch` points it at another backend and drops
/// every open connection (a broker restart as the clients see it).
pub struct Proxy {
    pub addr: SocketAddr,
    backend: Arc<Mutex<(SocketAddr, CancellationToken)>>,
}

impl Proxy {
    pub async fn start(backend: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new((backend, CancellationToken::new())));
        let s2 = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (target, token) = s2.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            backend: state,
        }
    }

    pub fn switch(&self, backend: SocketAddr) {
        let mut g = self.backend.lock().unwrap();
        g.1.cancel();
        *g = (backend, CancellationToken::new());
    }
}
