//! The Docker implementation of [`ContainerRuntime`] (bollard over the unix socket).
//!
//! Docker types stay in this file. The client is created and the API version negotiated
//! lazily, so an agent that starts before dockerd (or outlives a dockerd restart) simply
//! reports `docker_unreachable` until the engine answers.

#[path = "host.rs"]
mod host;
use super::auth::{self, RegistryAuth};
use super::{ContainerInfo, ContainerRuntime, ContainerSpec, EngineInfo, ImageInfo, RuntimeError};
use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig, Mount,
    MountType, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
    RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use schemas::component::{RestartPolicy as Restart, VolumeKind};
use schemas::wire::error_code;
use schemas::Health;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod images;

/// How long a non-streaming Docker call may take before the engine counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Container event actions that can change what the agent reports.
const RELEVANT: &[&str] = &[
    "create", "start", "restart", "die", "stop", "kill", "oom", "destroy", "pause", "unpause",
    "rename", "update",
];

#[derive(Debug)]
struct Inner {
    socket: String,
    disk_path: Option<PathBuf>,
    client: Mutex<Option<Docker>>,
    data_root: Mutex<Option<String>>,
}

/// Docker over its unix socket.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
    auth: Arc<RegistryAuth>,
}

/// What a Docker call was doing, to classify its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Pull,
    Create,
    Start,
    Remove,
    Other,
}

/// Maps a Docker error to ours.
fn classify(e: DockerError, ctx: Ctx) -> RuntimeError {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => classify_message(Some(status_code), message, ctx),
        DockerError::DockerStreamError { error } => classify_message(None, error, ctx),
        DockerError::SocketNotFoundError(p) => {
            RuntimeError::Unreachable(format!("socket {p} not found"))
        }
        DockerError::RequestTimeoutError => RuntimeError::Unreachable("request timed out".into()),
        e @ (DockerError::HyperLegacyError { .. }
        | DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. }) => RuntimeError::Unreachable(e.to_string()),
        other => RuntimeError::Other {
            code: error_code::INTERNAL,
            message: other.to_string(),
        },
    }
}

/// Words of a pull error that say the registry could not be reached or answered with a
/// server error: whatever else the message says (a proxy's "not found" page, "permission
/// denied" on a socket), trying again later may succeed. Measured against Docker 20.10
/// and Debian's `docker-registry`: a stopped registry gives `Get "http://…/v2/": dial tcp
/// …: connect: connection refused` (HTTP 500), a registry answering 503 gives `received
/// unexpected HTTP status: 503 Service Unavailable` or `read: connection reset by peer`.
const UNREACHABLE_REGISTRY: &[&str] = &[
    "connection refused",
    "connection reset",
    "dial tcp",
    "dial udp",
    "i/o timeout",
    "no such host",
    "network is unreachable",
    "no route to host",
    "tls handshake timeout",
    "timeout exceeded",
    "context deadline exceeded",
    "server misbehaving",
    "temporary failure",
    "eof",
    "unexpected http status: 5",
    "service unavailable",
    "bad gateway",
    "gateway timeout",
    "internal server error",
    "toomanyrequests",
    "too many requests",
];

fn classify_message(status: Option<u16>, message: String, ctx: Ctx) -> RuntimeError {
    let m = message.to_lowercase();
    if m.contains("port is already allocated") || m.contains("address already in use") {
        return RuntimeError::PortInUse(message);
    }
    if m.contains("no space left on device") {
        return RuntimeError::NoDisk(message);
    }
    if ctx == Ctx::Pull {
        if UNREACHABLE_REGISTRY.iter().any(|w| m.contains(w)) {
            return RuntimeError::PullFailed(message);
        }
        if status == Some(401)
            || status == Some(403)
            || m.contains("unauthorized")
            || m.contains("denied")
            || m.contains("no basic auth credentials")
        {
            return RuntimeError::PullDenied(message);
        }
        if status == Some(404) || m.contains("not found") || m.contains("manifest unknown") {
            return RuntimeError::ImageNotFound(message);
        }
        if status == Some(400) {
            // `invalid reference format` and the like.
            return RuntimeError::Invalid {
                code: error_code::PULL_FAILED,
                message,
            };
        }
        return RuntimeError::PullFailed(message);
    }
    let code = match ctx {
        Ctx::Create => error_code::CREATE_FAILED,
        Ctx::Start => error_code::START_FAILED,
        Ctx::Remove => error_code::REMOVE_FAILED,
        _ => error_code::INTERNAL,
    };
    match status {
        // Docker's "invalid parameter": a mount or option it refuses at create, an
        // entrypoint missing from the image at start. The same request fails again.
        Some(400) if matches!(ctx, Ctx::Create | Ctx::Start) => {
            RuntimeError::Invalid { code, message }
        }
        Some(404) => RuntimeError::NotFound(message),
        Some(409) => RuntimeError::Conflict(message),
        _ => RuntimeError::Other { code, message },
    }
}

async fn timed<T>(
    ctx: Ctx,
    f: impl std::future::Future<Output = Result<T, DockerError>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| classify(e, ctx)),
        Err(_) => Err(RuntimeError::Unreachable(format!(
            "no answer within {}s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

fn health_of(h: Option<HealthStatusEnum>) -> Health {
    match h {
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        _ => Health::None,
    }
}

/// Health from the `Status` column (`Up 3 minutes (healthy)`).
fn health_from_status(status: &str) -> Health {
    if status.contains("(healthy)") {
        Health::Healthy
    } else if status.contains("(unhealthy)") {
        Health::Unhealthy
    } else if status.contains("(health: starting)") {
        Health::Starting
    } else {
        Health::None
    }
}

fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

fn to_hash_map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The Docker create body: the component's own fields read straight from it, the
/// agent-derived ones (name, labels, mounts, network, aliases) from the spec.
fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let c = &spec.component;
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &c.ports {
        let key = format!("{}/{}", p.container, p.protocol.as_str());
        exposed.push(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.host_ip.clone(),
                host_port: p.host.map(|h| h.to_string()),
            });
    }
    let mounts = spec
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: (!m.source.is_empty()).then(|| m.source.clone()),
            typ: Some(match m.kind {
                VolumeKind::Volume => MountType::VOLUME,
                VolumeKind::Bind => MountType::BIND,
                VolumeKind::Tmpfs => MountType::TMPFS,
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let restart = match c.restart {
        Restart::No => RestartPolicyNameEnum::NO,
        Restart::Always => RestartPolicyNameEnum::ALWAYS,
        Restart::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
    };
    let mut body = ContainerCreateBody {
        image: Some(c.image.clone()),
        cmd: c.command.clone(),
        entrypoint: c.entrypoint.clone(),
        env: Some(c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(to_hash_map(&spec.labels)),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: c.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: Some(ms_to_ns(h.interval_ms)),
            timeout: Some(ms_to_ns(h.timeout_ms)),
            retries: Some(i64::from(h.retries)),
            start_period: Some(ms_to_ns(h.start_period_ms)),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            mounts: Some(mounts),
            memory: c.resources.memory_bytes.and_then(|m| i64::try_from(m).ok()),
            nano_cpus: c.resources.nano_cpus.and_then(|m| i64::try_from(m).ok()),
            network_mode: Some(spec.network.clone()),
            log_config: Some(super::logging::log_config(c)),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                spec.network.clone(),
                EndpointSettings {
                    aliases: Some(spec.aliases.clone()),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    host::apply(c, &mut body);
    body
}

impl DockerRuntime {
    /// A runtime for `host` (`unix:///var/run/docker.sock` or a socket path). Nothing is
    /// contacted yet. `disk_path` overrides where free disk is measured.
    pub fn new(host: &str, disk_path: Option<PathBuf>) -> Result<Self, RuntimeError> {
        let socket = if let Some(p) = host.strip_prefix("unix://") {
            p.to_owned()
        } else if host.starts_with('/') {
            host.to_owned()
        } else {
            return Err(RuntimeError::Other {
                code: error_code::INTERNAL,
                message: format!(
                    "unsupported docker host {host:?}: only unix sockets are supported"
                ),
            });
        };
        Ok(DockerRuntime {
            inner: Arc::new(Inner {
                socket,
                disk_path,
                client: Mutex::new(None),
                data_root: Mutex::new(None),
            }),
            auth: Arc::new(RegistryAuth::new()),
        })
    }

    /// Pulls send these credentials (matched by the image's registry host).
    pub fn with_registry_auth(mut self, auth: RegistryAuth) -> Self {
        self.auth = Arc::new(auth);
        self
    }

    async fn client(&self) -> Result<Docker, RuntimeError> {
        if let Some(c) = self
            .inner
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(c);
        }
        // Long client timeout: pulls stream for minutes on slow links; other calls are
        // bounded by CALL_TIMEOUT.
        let c = Docker::connect_with_unix(&self.inner.socket, 3_600, bollard::API_DEFAULT_VERSION)
            .map_err(|e| classify(e, Ctx::Other))?;
        let c = timed(Ctx::Other, c.negotiate_version()).await?;
        *self.inner.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// Forgets the client after a connection failure so the next call reconnects and
    /// renegotiates (dockerd may have been upgraded).
    fn check<T>(&self, r: Result<T, RuntimeError>) -> Result<T, RuntimeError> {
        if matches!(r, Err(RuntimeError::Unreachable(_))) {
            *self.inner.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        r
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let d = self.client().await?;
        let opts = ListContainersOptionsBuilder::new().all(true).build();
        let summaries = timed(Ctx::Other, d.list_containers(Some(opts))).await?;
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let labels: BTreeMap<String, String> =
                s.labels.unwrap_or_default().into_iter().collect();
            let status_text = s.status.unwrap_or_default();
            let mut info = ContainerInfo {
                id: s.id.unwrap_or_default(),
                name: s
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                image: s.image.unwrap_or_default(),
                image_id: s.image_id.unwrap_or_default(),
                status: s.state.map(|st| st.to_string()).unwrap_or_default(),
                health: health_from_status(&status_text),
                labels,
                exit_code: None,
                restart_count: 0,
            };
            if info.label(super::label::MANAGED) == Some("true") {
                // Ours (or another agent's): the exact state needs an inspect.
                match timed(Ctx::Other, d.inspect_container(&info.id, None)).await {
                    Ok(i) => {
                        if let Some(st) = i.state {
                            info.health = health_of(st.health.and_then(|h| h.status));
                            info.exit_code = st.exit_code;
                            if let Some(s) = st.status {
                                info.status = s.to_string();
                            }
                        }
                        info.restart_count =
                            u32::try_from(i.restart_count.unwrap_or(0)).unwrap_or(0);
                        if let Some(img) = i.config.and_then(|c| c.image) {
                            info.image = img;
                        }
                        if let Some(img) = i.image {
                            info.image_id = img;
                        }
                    }
                    // Removed between list and inspect.
                    Err(RuntimeError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            out.push(info);
        }
        Ok(out)
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn info(&self) -> Result<EngineInfo, RuntimeError> {
        let r = async {
            let d = self.client().await?;
            let info = timed(Ctx::Other, d.info()).await?;
            *self
                .inner
                .data_root
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = info.docker_root_dir.clone();
            Ok(EngineInfo {
                version: info.server_version.unwrap_or_default(),
                data_root: info.docker_root_dir,
            })
        }
        .await;
        self.check(r)
    }

    async fn list_containers(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let r = self.list().await;
        self.check(r)
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let r = async {
            let d = self.client().await?;
            match timed(Ctx::Other, d.inspect_image(reference)).await {
                Ok(i) => Ok(Some(ImageInfo {
                    id: i.id.unwrap_or_default(),
                    repo_digests: i.repo_digests.unwrap_or_default(),
                })),
                Err(RuntimeError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        }
        .await;
        self.check(r)
    }

    async fn pull_image(&self, reference: &str) -> Result<(), RuntimeError> {
        let r = async {
            let d = self.client().await?;
            let opts = CreateImageOptionsBuilder::new()
                .from_image(reference)
                .build();
            let (host, creds) = self.auth.for_image(reference);
            let sent = creds.is_some();
            // A refused pull names the registry, never the engine's words (which could
            // echo what the registry sent back) nor, of course, the credentials.
            let denied = |e| match e {
                RuntimeError::PullDenied(m) => {
                    RuntimeError::PullDenied(auth::denied_message(&host, reference, sent, &m))
                }
                e => e,
            };
            let mut stream = d.create_image(Some(opts), None, creds);
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| denied(classify(e, Ctx::Pull)))?;
                if let Some(msg) = info.error_detail.and_then(|e| e.message) {
                    return Err(denied(classify_message(None, msg, Ctx::Pull)));
                }
                if let Some(s) = info.status {
                    tracing::trace!(image = %reference, status = %s, "pull progress");
                }
            }
            Ok(())
        }
        .await;
        self.check(r)
    }

    async fn list_images(&self) -> Result<Vec<super::LocalImage>, RuntimeError> {
        self.images().await
    }
    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        self.delete_image(reference).await
    }

    async fn free_disk_bytes(&self) -> Result<Option<u64>, RuntimeError> {
        let path = match &self.inner.disk_path {
            Some(p) => p.clone(),
            None => {
                let known = self
                    .inner
                    .data_root
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                match known {
                    Some(r) => PathBuf::from(r),
                    None => match self.info().await?.data_root {
                        Some(r) => PathBuf::from(r),
                        None => return Ok(None),
                    },
                }
            }
        };
        match rustix::fs::statvfs(&path) {
            Ok(s) => Ok(Some(s.f_bavail.saturating_mul(s.f_frsize))),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot measure free disk");
                Ok(None)
            }
        }
    }

    async fn list_networks(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, RuntimeError> {
        let r = async {
            let d = self.client().await?;
            let filter: HashMap<&str, Vec<String>> = HashMap::from([(
                "label",
                labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            )]);
            let opts = ListNetworksOptionsBuilder::new().filters(&filter).build();
            let nets = timed(Ctx::Other, d.list_networks(Some(opts))).await?;
            Ok(nets.into_iter().filter_map(|n| n.name).collect())
        }
        .await;
        self.check(r)
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let r = async {
            let d = self.client().await?;
            let filter: HashMap<&str, Vec<String>> =
                HashMap::from([("name", vec![name.to_owned()])]);
            let opts = ListNetworksOptionsBuilder::new().filters(&filter).build();
            let nets = timed(Ctx::Other, d.list_networks(Some(opts))).await?;
            if nets.iter().any(|n| n.name.as_deref() == Some(name)) {
                return Ok(());
            }
            let req = NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".into()),
                labels: Some(to_hash_map(labels)),
                ..Default::default()
            };
            match timed(Ctx::Create, d.create_network(req)).await {
                Ok(_) | Err(RuntimeError::Conflict(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        .await;
        self.check(r)
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        let r = async {
            let d = self.client().await?;
            match timed(Ctx::Remove, d.remove_network(name)).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        .await;
        self.check(r)
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let r = async {
            let d = self.client().await?;
            let req = VolumeCreateRequest {
                name: Some(name.to_owned()),
                labels: Some(to_hash_map(labels)),
                ..Default::default()
            };
            timed(Ctx::Create, d.create_volume(req)).await.map(|_| ())
        }
        .await;
        self.check(r)
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let r = async {
            let d = self.client().await?;
            let opts = CreateContainerOptionsBuilder::new()
                .name(&spec.name)
                .build();
            let resp = timed(
                Ctx::Create,
                d.create_container(Some(opts), create_body(spec)),
            )
            .await;
            match resp {
                Ok(r) => Ok(r.id),
                Err(RuntimeError::NotFound(m)) => Err(RuntimeError::ImageNotFound(m)),
                Err(e) => Err(e),
            }
        }
        .await;
        self.check(r)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let r = async {
            let d = self.client().await?;
            match timed(Ctx::Start, d.start_container(id, None)).await {
                Err(RuntimeError::Other { message, .. }) if message.contains("304") => Ok(()),
                r => r,
            }
        }
        .await;
        self.check(r)
    }

    async fn restart_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let r = async {
            let d = self.client().await?;
            let t = host::stop_secs(&d, id, timeout).await;
            let opts = RestartContainerOptionsBuilder::new().t(t).build();
            timed(Ctx::Start, d.restart_container(id, Some(opts))).await
        }
        .await;
        self.check(r)
    }

    async fn remove_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let r = async {
            let d = self.client().await?;
            let t = host::stop_secs(&d, id, timeout).await;
            let opts = StopContainerOptionsBuilder::new().t(t).build();
            match timed(Ctx::Remove, d.stop_container(id, Some(opts))).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                // 304: already stopped.
                Err(RuntimeError::Other { .. } | RuntimeError::Invalid { .. }) => {}
                Err(e) => return Err(e),
            }
            let opts = RemoveContainerOptionsBuilder::new().force(true).build();
            match timed(Ctx::Remove, d.remove_container(id, Some(opts))).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        .await;
        self.check(r)
    }

    fn changes(&self) -> BoxStream<'static, Result<(), RuntimeError>> {
        let this = self.clone();
        futures_util::stream::once(async move {
            match this.client().await {
                Ok(d) => {
                    let filter: HashMap<&str, Vec<&str>> =
                        HashMap::from([("type", vec!["container"])]);
                    let opts = EventsOptionsBuilder::new().filters(&filter).build();
                    d.events(Some(opts))
                        .filter_map(|ev| async move {
                            match ev {
                                Ok(m) => {
                                    let a = m.action.unwrap_or_default();
                                    (RELEVANT.contains(&a.as_str())
                                        || a.starts_with("health_status"))
                                    .then_some(Ok(()))
                                }
                                Err(e) => Some(Err(classify(e, Ctx::Other))),
                            }
                        })
                        .boxed()
                }
                Err(e) => futures_util::stream::iter([Err(e)]).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

#[cfg(test)]
mod tests;
