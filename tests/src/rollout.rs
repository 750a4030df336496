//! Harness pieces for rollout scenarios: a registry outage (stop, then start again on the
//! same port with the same storage), everything a [`Watcher`] saw in order (to check that a
//! node was never handed something), each node's containers, the LO killed with SIGKILL,
//! and an image whose healthcheck always fails.

use crate::site::Site;
use crate::{docker, wait_for, Proc, Registry, ScratchImage, Watcher};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

impl Registry {
    /// Stops it (SIGKILL: no goodbye) and waits until its port refuses connections.
    pub fn stop(&mut self) {
        self.proc.kill();
        let port = self.port();
        wait_for("the registry port closed", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        });
    }

    /// Starts it again on the same port with the same storage (what was pushed is there).
    pub fn restart(&mut self) {
        self.proc.kill();
        let mut cmd = Command::new(crate::registry_path().expect("docker-registry installed"));
        cmd.arg("serve").arg(&self.conf);
        self.proc = Proc::spawn("registry", cmd, &self.log_dir);
        crate::wait_port(self.port());
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("registry address has a port")
    }
}

impl Watcher {
    /// Every payload received so far but heartbeats, `(topic, payload)` in arrival order
    /// (retained messages again after a reconnect).
    pub fn history(&self) -> Vec<(String, Value)> {
        self.history.lock().expect("lock").clone()
    }

    /// Every payload received so far on `topic`, in arrival order.
    pub fn history_of(&self, topic: &str) -> Vec<Value> {
        self.history
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// How many payloads were received so far (a mark for [`Watcher::history_of_since`]).
    pub fn mark(&self) -> usize {
        self.history.lock().expect("lock").len()
    }

    /// The payloads received on `topic` after `mark` ([`Watcher::mark`]), in arrival order.
    pub fn history_of_since(&self, topic: &str, mark: usize) -> Vec<Value> {
        self.history
            .lock()
            .expect("lock")
            .iter()
            .skip(mark)
            .filter(|(t, _)| t == topic)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// One container of a node, as `docker ps -a` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Name.
    pub name: String,
    /// Image reference it was created from.
    pub image: String,
    /// `running`, `exited`, `created`, `restarting`…
    pub state: String,
    /// Its `io.edgefleet.component` label.
    pub component: String,
}

impl Site {
    /// Kills the LO with SIGKILL (no clean shutdown, nothing flushed); [`Site::start_lo`]
    /// starts it again with the same state directory.
    pub fn kill_lo(&mut self) {
        if let Some(mut lo) = self.lo.take() {
            lo.kill();
        }
    }

    /// Every container (any state) of `node` of this site, by the agent's labels.
    pub fn node_containers(&self, node: &str) -> Vec<Container> {
        docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.edgefleet.site={}", self.name),
            "--filter",
            &format!("label=io.edgefleet.node={node}"),
            "--format",
            "{{.Names}}\t{{.Image}}\t{{.State}}\t{{.Label \"io.edgefleet.component\"}}",
        ])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some(Container {
                name: f.next()?.to_owned(),
                image: f.next()?.to_owned(),
                state: f.next()?.to_owned(),
                component: f.next().unwrap_or_default().to_owned(),
            })
        })
        .collect()
    }

    /// Every desired document of `node` the watcher saw, in arrival order.
    pub fn desired_history(&self, node: &str) -> Vec<Value> {
        self.watcher
            .history_of(&format!("fleet/{}/nodes/{node}/desired", self.name))
    }

    /// Every status of `node` the watcher saw, in arrival order.
    pub fn status_history(&self, node: &str) -> Vec<Value> {
        self.watcher
            .history_of(&format!("fleet/{}/nodes/{node}/status", self.name))
    }

    /// Every rollout event (`lo/events`) the watcher saw, in arrival order.
    pub fn lo_events(&self) -> Vec<Value> {
        self.watcher
            .history_of(&format!("fleet/{}/lo/events", self.name))
    }

    /// Builds an image like `web:<version>` (busybox httpd on 8080) but without
    /// `/www/health`, so the `web` deployment's healthcheck always fails; pushes it as
    /// [`Site::image`]`(version)`, removes the local copy (a node must really pull it) and
    /// has it removed at the end. Returns its repo digest.
    pub fn push_unhealthy_image(&self, version: &str) -> String {
        let tag = self.image(version);
        let digest = ScratchImage::busybox_at("/bin/busybox")
            .file("/www/index.html", format!("{version}\n"))
            .entrypoint(&["/bin/busybox"])
            .cmd(&[
                "sh",
                "-c",
                "/bin/busybox httpd -f -p 8080 -h /www & pid=$!; trap 'kill $pid; exit 0' TERM; wait",
            ])
            .build(&tag)
            .expect("pushed image has a digest");
        self.docker().image(&tag);
        let _ = docker(&["rmi", &tag]);
        digest
    }
}

/// The `rollout` object of deployment `deployment` in a site status (`lo/status`).
pub fn deployment_rollout<'a>(summary: &'a Value, deployment: &str) -> Option<&'a Value> {
    summary["deployments"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == deployment)?
        .get("rollout")
}

/// The image of every component of every deployment in a desired document or a status.
pub fn images(doc: &Value) -> Vec<String> {
    doc["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["components"].as_array().into_iter().flatten())
        .filter_map(|c| c["image"].as_str().map(str::to_owned))
        .collect()
}
