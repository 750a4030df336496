//! An in-memory container engine for tests and the fleet simulator.
//!
//! Behaves like a small Docker: images must be pulled from its "registry" before a
//! container can be created, ports conflict, containers with a healthcheck become healthy
//! on start (or unhealthy, for images marked so). Knobs: per-call latency, failure
//! injection per operation and image, killing and removing containers by hand, changing
//! health, making the engine unreachable, free disk, containers that crash (with Docker's
//! restart policy: restart count, `restarting`, doubling delay). Every instance is
//! independent.

mod images;

use super::{ContainerInfo, ContainerRuntime, ContainerSpec, EngineInfo, ImageInfo, RuntimeError};
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use schemas::component::RestartPolicy;
use schemas::Health;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;

/// Operations failures can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `pull_image`.
    Pull,
    /// `create_container`.
    Create,
    /// `start_container`.
    Start,
    /// `remove_container`.
    Remove,
    /// `restart_container`.
    Restart,
    /// `list_containers`.
    List,
}

#[derive(Debug, Clone)]
struct FailRule {
    op: Op,
    image: Option<String>,
    remaining: Option<u32>,
    error: RuntimeError,
}

/// A container of the fake engine, with its creation spec.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    /// What the engine reports.
    pub info: ContainerInfo,
    /// What it was created from.
    pub spec: Option<ContainerSpec>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    containers: BTreeMap<String, FakeContainer>,
    /// Local images by reference.
    images: BTreeMap<String, ImageInfo>,
    /// Bytes of each local image, by id.
    image_sizes: BTreeMap<String, u64>,
    /// Pullable images: reference → (digest, size).
    registry: BTreeMap<String, (String, u64)>,
    unhealthy_images: BTreeSet<String>,
    networks: BTreeMap<String, BTreeMap<String, String>>,
    volumes: BTreeSet<String>,
    unreachable: bool,
    latency: Duration,
    op_latency: BTreeMap<Op, Duration>,
    /// Images whose containers exit with this code right after every start.
    crash_images: BTreeMap<String, i64>,
    fail_rules: Vec<FailRule>,
    free_disk: Option<u64>,
    calls: Vec<String>,
}

/// The fake engine. Clones share the same engine.
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<()>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    /// An empty engine with plenty of disk and no latency.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(64);
        FakeRuntime {
            state: Arc::new(Mutex::new(State {
                free_disk: Some(100 << 30),
                ..State::default()
            })),
            changes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        let _ = self.changes.send(());
    }

    /// Makes `reference` pullable (digest derived from the reference, 10 MB).
    pub fn add_registry_image(&self, reference: &str) {
        self.add_registry_image_sized(reference, 10 << 20);
    }

    /// Makes `reference` pullable with a download size.
    pub fn add_registry_image_sized(&self, reference: &str, size: u64) {
        let digest = format!("sha256:{:064x}", fnv(reference));
        self.lock()
            .registry
            .insert(reference.to_owned(), (digest, size));
    }

    /// Containers of this image report `unhealthy` when they have a healthcheck.
    pub fn make_image_unhealthy(&self, reference: &str) {
        self.lock().unhealthy_images.insert(reference.to_owned());
    }

    /// Clears [`FakeRuntime::make_image_unhealthy`].
    pub fn make_image_healthy(&self, reference: &str) {
        self.lock().unhealthy_images.remove(reference);
    }

    /// Latency added to every call.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Extra latency of one operation (on top of [`FakeRuntime::set_latency`]), e.g. a slow
    /// pull.
    pub fn set_op_latency(&self, op: Op, latency: Duration) {
        self.lock().op_latency.insert(op, latency);
    }

    /// Containers of `reference` exit with `exit_code` right after every start, from now
    /// on (`None`: they run normally again; a container Docker is restarting then comes
    /// up at its next restart). Docker's restart policy applies as in
    /// [`FakeRuntime::crash`].
    pub fn set_image_crash(&self, reference: &str, exit_code: Option<i64>) {
        let mut s = self.lock();
        match exit_code {
            Some(code) => s.crash_images.insert(reference.to_owned(), code),
            None => s.crash_images.remove(reference),
        };
    }

    /// The process of a container exits with `exit_code`, as Docker handles it: with
    /// restart policy `no` (or `on-failure` and code 0) it stays `exited`; otherwise it is
    /// `restarting`, its restart count goes up, and it is started again after 100 ms,
    /// 200 ms, 400 ms … (capped at 1 min) — crashing again at once while its image is
    /// marked by [`FakeRuntime::set_image_crash`]. Needs a tokio runtime for the restarts.
    pub fn crash(&self, id: &str, exit_code: i64) {
        let restarting = Self::exit(&mut self.lock(), id, exit_code);
        self.notify();
        if restarting {
            self.spawn_restarter(id.to_owned());
        }
    }

    /// Applies an exit; true when Docker's restart policy restarts the container.
    fn exit(s: &mut State, id: &str, exit_code: i64) -> bool {
        let Some(c) = s.containers.get_mut(id) else {
            return false;
        };
        let policy = c
            .spec
            .as_ref()
            .map_or(RestartPolicy::No, |sp| sp.component.restart);
        let restarts = match policy {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        };
        c.info.exit_code = Some(exit_code);
        c.info.health = Health::None;
        if restarts {
            c.info.status = "restarting".into();
            c.info.restart_count += 1;
        } else {
            c.info.status = "exited".into();
        }
        restarts
    }

    /// Docker's restart manager for one container: while it is `restarting`, start it
    /// after a doubling delay; it crashes again while its image is marked.
    /// Runs container `id` (stopping it first when `restart`), as Docker would, including a
    /// crash on start for images set to crash; wakes the change stream.
    fn run_and_notify(&self, id: &str, restart: bool) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        if restart {
            if let Some(c) = s.containers.get_mut(id) {
                c.info.status = "exited".into();
            }
        }
        let r = Self::run(&mut s, id);
        let restarting = r.is_ok() && Self::crash_on_start(&mut s, id);
        drop(s);
        self.notify();
        if restarting {
            self.spawn_restarter(id.to_owned());
        }
        r
    }

    fn spawn_restarter(&self, id: String) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        handle.spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                tokio::time::sleep(delay).await;
                let mut s = this.lock();
                let Some(c) = s.containers.get(&id) else {
                    return;
                };
                if c.info.status != "restarting" {
                    return;
                }
                let crash = s.crash_images.get(&c.info.image).copied();
                let restarting = match crash {
                    Some(code) => Self::exit(&mut s, &id, code),
                    None => {
                        let _ = Self::run(&mut s, &id);
                        false
                    }
                };
                drop(s);
                this.notify();
                if !restarting {
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        });
    }

    /// Free disk reported (`None`: unknown).
    pub fn set_free_disk(&self, bytes: Option<u64>) {
        self.lock().free_disk = bytes;
    }

    /// Every call fails with `Unreachable` while set; changes are signalled on recovery.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
        if !unreachable {
            self.notify();
        }
    }

    /// Injects `error` into `op` (for calls about `image` when given), `times` times or
    /// forever (`None`).
    pub fn fail(&self, op: Op, image: Option<&str>, error: RuntimeError, times: Option<u32>) {
        self.lock().fail_rules.push(FailRule {
            op,
            image: image.map(str::to_owned),
            remaining: times,
            error,
        });
    }

    /// Removes every injected failure.
    pub fn clear_failures(&self) {
        self.lock().fail_rules.clear();
    }

    /// Kills a container by hand (exit code 137, Docker's restart policy not applied).
    pub fn kill(&self, id: &str) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.info.status = "exited".into();
            c.info.exit_code = Some(137);
            c.info.health = Health::None;
        }
        self.notify();
    }

    /// Removes a container by hand.
    pub fn remove_by_hand(&self, id: &str) {
        self.lock().containers.remove(id);
        self.notify();
    }

    /// Sets a container's health.
    pub fn set_health(&self, id: &str, health: Health) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.info.health = health;
        }
        self.notify();
    }

    /// Adds a container the agent did not create (running, no edgefleet labels unless given).
    pub fn add_foreign_container(
        &self,
        name: &str,
        image: &str,
        labels: BTreeMap<String, String>,
    ) -> String {
        let mut s = self.lock();
        s.next_id += 1;
        let id = format!("{:012x}{:052x}", s.next_id, fnv(name));
        // The local image's id when present, as Docker shows it.
        let image_id = s
            .images
            .get(image)
            .map_or_else(|| format!("sha256:{:064x}", fnv(image)), |i| i.id.clone());
        s.containers.insert(
            id.clone(),
            FakeContainer {
                info: ContainerInfo {
                    id: id.clone(),
                    name: name.to_owned(),
                    image: image.to_owned(),
                    image_id,
                    labels,
                    status: "running".into(),
                    ..ContainerInfo::default()
                },
                spec: None,
            },
        );
        drop(s);
        self.notify();
        id
    }

    /// A snapshot of every container.
    pub fn containers(&self) -> Vec<FakeContainer> {
        self.lock().containers.values().cloned().collect()
    }

    /// The container named `name`.
    pub fn container_named(&self, name: &str) -> Option<FakeContainer> {
        self.lock()
            .containers
            .values()
            .find(|c| c.info.name == name)
            .cloned()
    }

    /// Names of the networks.
    pub fn networks(&self) -> Vec<String> {
        self.lock().networks.keys().cloned().collect()
    }

    /// Names of the volumes.
    pub fn volumes(&self) -> Vec<String> {
        self.lock().volumes.iter().cloned().collect()
    }

    /// Local image references.
    pub fn images(&self) -> Vec<String> {
        self.lock().images.keys().cloned().collect()
    }

    /// Every mutating call so far (`pull x`, `create name`, `start name`, `remove name`,
    /// `restart name`), in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// How many calls start with `prefix`.
    pub fn count_calls(&self, prefix: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    async fn enter(
        &self,
        op: Option<Op>,
        image: Option<&str>,
        call: Option<String>,
    ) -> Result<(), RuntimeError> {
        let latency = {
            let s = self.lock();
            s.latency
                + op.and_then(|o| s.op_latency.get(&o).copied())
                    .unwrap_or_default()
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut s = self.lock();
        if s.unreachable {
            return Err(RuntimeError::Unreachable(
                "connection refused (fake engine down)".into(),
            ));
        }
        if let Some(call) = call {
            s.calls.push(call);
        }
        let Some(op) = op else { return Ok(()) };
        let hit = s.fail_rules.iter_mut().position(|r| {
            r.op == op
                && r.remaining != Some(0)
                && (r.image.is_none() || r.image.as_deref() == image)
        });
        if let Some(i) = hit {
            let rule = &mut s.fail_rules[i];
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            return Err(rule.error.clone());
        }
        Ok(())
    }

    fn image_and_name(&self, id: &str) -> (Option<String>, String) {
        let s = self.lock();
        match s.containers.get(id) {
            Some(c) => (Some(c.info.image.clone()), c.info.name.clone()),
            None => (None, id.to_owned()),
        }
    }

    fn run(s: &mut State, id: &str) -> Result<(), RuntimeError> {
        let Some(c) = s.containers.get(id) else {
            return Err(RuntimeError::NotFound(format!("no such container: {id}")));
        };
        let ports: Vec<u16> = c
            .spec
            .as_ref()
            .map(|sp| sp.component.ports.iter().filter_map(|p| p.host).collect())
            .unwrap_or_default();
        for other in s.containers.values() {
            if other.info.id == id || !other.info.is_running() {
                continue;
            }
            let taken = other
                .spec
                .as_ref()
                .map(|sp| {
                    sp.component
                        .ports
                        .iter()
                        .filter_map(|p| p.host)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            if let Some(p) = ports.iter().find(|p| taken.contains(p)) {
                return Err(RuntimeError::PortInUse(format!(
                    "Bind for 0.0.0.0:{p} failed: port is already allocated"
                )));
            }
        }
        let unhealthy = s.unhealthy_images.contains(&c.info.image);
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
        c.info.status = "running".into();
        c.info.exit_code = None;
        let has_hc = c
            .spec
            .as_ref()
            .is_some_and(|sp| sp.component.healthcheck.is_some());
        c.info.health = match (has_hc, unhealthy) {
            (false, _) => Health::None,
            (true, true) => Health::Unhealthy,
            (true, false) => Health::Healthy,
        };
        Ok(())
    }
}

impl FakeRuntime {
    /// A container of a crashing image exits right after it started; true when Docker's
    /// restart policy restarts it.
    fn crash_on_start(s: &mut State, id: &str) -> bool {
        let code = s
            .containers
            .get(id)
            .and_then(|c| s.crash_images.get(&c.info.image).copied());
        match code {
            Some(code) => Self::exit(s, id, code),
            None => false,
        }
    }
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn info(&self) -> Result<EngineInfo, RuntimeError> {
        self.enter(None, None, None).await?;
        Ok(EngineInfo {
            version: "fake-1.0".into(),
            data_root: None,
        })
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.enter(Some(Op::List), None, None).await?;
        Ok(self
            .lock()
            .containers
            .values()
            .map(|c| c.info.clone())
            .collect())
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        self.enter(None, None, None).await?;
        let s = self.lock();
        Ok(s.images
            .get(reference)
            .cloned()
            .or_else(|| s.images.values().find(|i| i.id == reference).cloned()))
    }

    async fn pull_image(&self, reference: &str) -> Result<(), RuntimeError> {
        self.enter(
            Some(Op::Pull),
            Some(reference),
            Some(format!("pull {reference}")),
        )
        .await?;
        let mut s = self.lock();
        let Some((digest, size)) = s.registry.get(reference).cloned() else {
            return Err(RuntimeError::ImageNotFound(format!(
                "manifest for {reference} not found: manifest unknown"
            )));
        };
        if let Some(free) = s.free_disk.as_mut() {
            if *free < size {
                return Err(RuntimeError::NoDisk("no space left on device".into()));
            }
            *free -= size;
        }
        let repo = super::image_repo(reference);
        let id = format!("sha256:{:064x}", fnv(&digest));
        s.image_sizes.insert(id.clone(), size);
        let repo_digests = vec![format!("{repo}@{digest}")];
        s.images
            .insert(reference.to_owned(), ImageInfo { id, repo_digests });
        Ok(())
    }

    async fn image_size_hint(&self, reference: &str) -> Option<u64> {
        self.lock().registry.get(reference).map(|(_, size)| *size)
    }

    async fn list_images(&self) -> Result<Vec<super::LocalImage>, RuntimeError> {
        self.enter(None, None, None).await?;
        Ok(Self::listed_images(&self.lock()))
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        let call = Some(format!("remove-image {reference}"));
        self.enter(None, None, call).await?;
        Self::delete_image(&mut self.lock(), reference)
    }

    async fn free_disk_bytes(&self) -> Result<Option<u64>, RuntimeError> {
        self.enter(None, None, None).await?;
        Ok(self.lock().free_disk)
    }

    async fn list_networks(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, RuntimeError> {
        self.enter(None, None, None).await?;
        Ok(self
            .lock()
            .networks
            .iter()
            .filter(|(_, l)| labels.iter().all(|(k, v)| l.get(k) == Some(v)))
            .map(|(n, _)| n.clone())
            .collect())
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.enter(None, None, None).await?;
        self.lock()
            .networks
            .entry(name.to_owned())
            .or_insert_with(|| labels.clone());
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.enter(None, None, Some(format!("remove-network {name}")))
            .await?;
        let mut s = self.lock();
        s.networks.remove(name);
        Ok(())
    }

    async fn ensure_volume(
        &self,
        name: &str,
        _labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.enter(None, None, None).await?;
        self.lock().volumes.insert(name.to_owned());
        Ok(())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.enter(
            Some(Op::Create),
            Some(&spec.component.image),
            Some(format!("create {}", spec.name)),
        )
        .await?;
        let mut s = self.lock();
        let Some(image) = s.images.get(&spec.component.image).cloned() else {
            return Err(RuntimeError::ImageNotFound(format!(
                "no such image: {}",
                spec.component.image
            )));
        };
        if s.containers.values().any(|c| c.info.name == spec.name) {
            return Err(RuntimeError::Conflict(format!(
                "the container name \"/{}\" is already in use",
                spec.name
            )));
        }
        s.next_id += 1;
        let id = format!("{:012x}{:052x}", s.next_id, fnv(&spec.name));
        s.containers.insert(
            id.clone(),
            FakeContainer {
                info: ContainerInfo {
                    id: id.clone(),
                    name: spec.name.clone(),
                    image: spec.component.image.clone(),
                    image_id: image.id,
                    labels: spec.labels.clone(),
                    status: "created".into(),
                    ..ContainerInfo::default()
                },
                spec: Some(spec.clone()),
            },
        );
        drop(s);
        self.notify();
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let (image, name) = self.image_and_name(id);
        self.enter(
            Some(Op::Start),
            image.as_deref(),
            Some(format!("start {name}")),
        )
        .await?;
        self.run_and_notify(id, false)
    }

    async fn restart_container(&self, id: &str, _timeout: Duration) -> Result<(), RuntimeError> {
        let (image, name) = self.image_and_name(id);
        self.enter(
            Some(Op::Restart),
            image.as_deref(),
            Some(format!("restart {name}")),
        )
        .await?;
        self.run_and_notify(id, true)
    }

    async fn remove_container(&self, id: &str, _timeout: Duration) -> Result<(), RuntimeError> {
        let (image, name) = self.image_and_name(id);
        self.enter(
            Some(Op::Remove),
            image.as_deref(),
            Some(format!("remove {name}")),
        )
        .await?;
        let mut s = self.lock();
        s.containers.remove(id);
        drop(s);
        self.notify();
        Ok(())
    }

    fn changes(&self) -> BoxStream<'static, Result<(), RuntimeError>> {
        let rx = self.changes.subscribe();
        futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Some((Ok(()), rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed()
    }
}
