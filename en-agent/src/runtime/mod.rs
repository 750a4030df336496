//! The container runtime boundary: a trait over our own types.
//!
//! [`ContainerRuntime`] is everything the agent asks of a container engine. The Docker
//! implementation ([`docker::DockerRuntime`], bollard) is the only place Docker types
//! appear; `fake::FakeRuntime` (cargo feature `fake`, off by default: tests and the fleet
//! simulator only) is an in-memory engine with knobs.

pub mod auth;
pub mod docker;
#[cfg(feature = "fake")]
pub mod fake;
mod logging;
pub mod spec;

pub use spec::{ContainerSpec, Mount};

use crate::retry::ErrorKind;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use schemas::wire::error_code;
use schemas::Health;
use std::collections::BTreeMap;
use std::time::Duration;

/// Label keys the agent puts on what it creates.
pub mod label {
    /// `true` on everything an edgefleet agent created.
    pub const MANAGED: &str = "io.edgefleet.managed";
    /// Site of the agent that created it.
    pub const SITE: &str = "io.edgefleet.site";
    /// Node of the agent that created it.
    pub const NODE: &str = "io.edgefleet.node";
    /// Deployment name.
    pub const DEPLOYMENT: &str = "io.edgefleet.deployment";
    /// Component name.
    pub const COMPONENT: &str = "io.edgefleet.component";
    /// Spec hash of the component the container was created from.
    pub const SPEC_HASH: &str = "io.edgefleet.spec-hash";
    /// Generation of the desired document that created it.
    pub const GENERATION: &str = "io.edgefleet.generation";
    /// Comma-separated `dependsOn` of the component (for reverse-order removal).
    pub const DEPENDS_ON: &str = "io.edgefleet.depends-on";
}

/// A container as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    /// Container id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image reference it was created from.
    pub image: String,
    /// Local image id (`sha256:…`).
    pub image_id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Docker status: `created`, `running`, `restarting`, `exited`, `paused`, `dead`.
    pub status: String,
    /// Exit code of the last run, when exited.
    pub exit_code: Option<i64>,
    /// Health.
    pub health: Health,
    /// Docker's restart count.
    pub restart_count: u32,
}

impl ContainerInfo {
    /// `status == "running"`.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }

    /// A label value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// A local image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageInfo {
    /// Image id (`sha256:…`).
    pub id: String,
    /// `repo@sha256:…` digests.
    pub repo_digests: Vec<String>,
}

/// An image as the engine lists it (`docker images`, dangling ones included).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalImage {
    /// Image id (`sha256:…`).
    pub id: String,
    /// `repo:tag` names (none for a dangling image).
    pub repo_tags: Vec<String>,
    /// `repo@sha256:…` digests.
    pub repo_digests: Vec<String>,
    /// Bytes of its layers, as `docker images` shows them.
    pub size: u64,
    /// Bytes of those layers other images share, when the engine tells (Docker 23 and
    /// later; `None` on Docker 20.10).
    pub shared_size: Option<u64>,
}

/// The engine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineInfo {
    /// Engine version.
    pub version: String,
    /// Engine data root (Docker's `DockerRootDir`), if known.
    pub data_root: Option<String>,
}

/// Why a runtime call failed. Messages are the engine's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The engine cannot be reached (socket missing, connection refused, timeout).
    #[error("docker unreachable: {0}")]
    Unreachable(String),
    /// The image or tag does not exist in the registry.
    #[error("image not found: {0}")]
    ImageNotFound(String),
    /// The registry refused the pull.
    #[error("pull denied: {0}")]
    PullDenied(String),
    /// Any other pull failure.
    #[error("pull failed: {0}")]
    PullFailed(String),
    /// Not enough free disk.
    #[error("no disk: {0}")]
    NoDisk(String),
    /// A host port is taken.
    #[error("port in use: {0}")]
    PortInUse(String),
    /// The object (container, network …) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A name is already taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The engine refused the request as invalid (HTTP 400: a mount or option it does not
    /// accept, an entrypoint that does not exist in the image): the same request fails the
    /// same way until the desired state changes.
    #[error("{message}")]
    Invalid {
        /// One of [`error_code`]'s constants (`create_failed`, `start_failed` …).
        code: &'static str,
        /// The engine's words.
        message: String,
    },
    /// Any other engine error, with the wire error code to report.
    #[error("{message}")]
    Other {
        /// One of [`error_code`]'s constants.
        code: &'static str,
        /// The engine's words.
        message: String,
    },
}

impl RuntimeError {
    /// The wire error code (`schemas::wire::error_code`).
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::Unreachable(_) => error_code::DOCKER_UNREACHABLE,
            RuntimeError::ImageNotFound(_) => error_code::IMAGE_NOT_FOUND,
            RuntimeError::PullDenied(_) => error_code::PULL_DENIED,
            RuntimeError::PullFailed(_) => error_code::PULL_FAILED,
            RuntimeError::NoDisk(_) => error_code::NO_DISK,
            RuntimeError::PortInUse(_) => error_code::PORT_IN_USE,
            RuntimeError::NotFound(_) | RuntimeError::Conflict(_) => error_code::INTERNAL,
            RuntimeError::Invalid { code, .. } | RuntimeError::Other { code, .. } => code,
        }
    }

    /// What the failure says about retrying; [`crate::retry::after_failure`] decides on it.
    ///
    /// The engine unreachable or not answering in time: not counted (retried at the next
    /// observation). A missing image or tag, a refused pull and a request the engine calls
    /// invalid: permanent. Everything else — a registry down or unreachable (`PullFailed`:
    /// connection refused, DNS, timeouts, 5xx), a full disk, a taken port, an engine error —
    /// may heal by itself: transient.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::Unreachable(_) => ErrorKind::EngineDown,
            RuntimeError::ImageNotFound(_)
            | RuntimeError::PullDenied(_)
            | RuntimeError::Invalid { .. } => ErrorKind::Permanent,
            RuntimeError::PullFailed(_)
            | RuntimeError::NoDisk(_)
            | RuntimeError::PortInUse(_)
            | RuntimeError::NotFound(_)
            | RuntimeError::Conflict(_)
            | RuntimeError::Other { .. } => ErrorKind::Transient,
        }
    }

    /// As reported on the wire.
    pub fn to_info(&self) -> schemas::ErrorInfo {
        schemas::ErrorInfo::new(self.code(), self.to_string())
    }
}

/// A container engine, as the agent needs it. Implementations are cheap to share
/// (`Arc<dyn ContainerRuntime>`).
#[async_trait]
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug {
    /// `docker`, `fake`.
    fn kind(&self) -> &'static str;
    /// Engine version and data root; also the reachability probe.
    async fn info(&self) -> Result<EngineInfo, RuntimeError>;
    /// Every container, running or not, with labels, health and restart count.
    async fn list_containers(&self) -> Result<Vec<ContainerInfo>, RuntimeError>;
    /// A local image by reference or id; `None` when absent.
    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError>;
    /// Pulls an image.
    async fn pull_image(&self, reference: &str) -> Result<(), RuntimeError>;
    /// The download size of an image, when the runtime can tell before pulling.
    async fn image_size_hint(&self, _reference: &str) -> Option<u64> {
        None
    }
    /// Every local image (top level, dangling ones included). The default (a runtime
    /// without image listing) refuses, so image garbage collection removes nothing.
    async fn list_images(&self) -> Result<Vec<LocalImage>, RuntimeError> {
        Err(RuntimeError::Other {
            code: error_code::INTERNAL,
            message: format!("{}: listing images is not supported", self.kind()),
        })
    }
    /// Removes an image by id or name, never forced (Docker: `noprune` false, so its
    /// untagged parents go too). An image a container uses is refused with
    /// [`RuntimeError::Conflict`] (Docker's 409); an absent one is [`RuntimeError::NotFound`].
    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::Other {
            code: error_code::INTERNAL,
            message: format!("{}: removing images is not supported", reference),
        })
    }
    /// Free bytes where the engine stores images; `None` when unknown.
    async fn free_disk_bytes(&self) -> Result<Option<u64>, RuntimeError>;
    /// Names of the networks carrying every label of `labels`.
    async fn list_networks(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, RuntimeError>;
    /// Creates a bridge network unless it exists.
    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError>;
    /// Removes a network (absent is fine).
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError>;
    /// Creates a named volume unless it exists.
    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError>;
    /// Creates a container; returns its id.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    /// Starts a container.
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError>;
    /// Restarts a running container.
    async fn restart_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError>;
    /// Stops (with `timeout` before SIGKILL) and removes a container (absent is fine).
    async fn remove_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError>;
    /// A stream that yields whenever a container changed (start, die, health, destroy).
    /// It ends or errs when the engine connection is lost; the caller reopens it.
    fn changes(&self) -> BoxStream<'static, Result<(), RuntimeError>>;
}

/// Parses Docker's `Status` health suffix and health words.
pub fn parse_health(word: &str) -> Health {
    match word {
        "healthy" => Health::Healthy,
        "unhealthy" => Health::Unhealthy,
        "starting" => Health::Starting,
        _ => Health::None,
    }
}

/// The repository part of an image reference (`host:5000/a/b:tag` → `host:5000/a/b`).
pub fn image_repo(reference: &str) -> &str {
    if let Some((repo, _)) = reference.split_once('@') {
        return repo;
    }
    match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => &reference[..i],
        _ => reference,
    }
}

/// True for `repo@sha256:…` references.
pub fn is_digest_reference(reference: &str) -> bool {
    reference.contains('@')
}

/// The repo digest of `image` that belongs to `reference`'s repository (else the first).
pub fn repo_digest_for(reference: &str, image: &ImageInfo) -> Option<String> {
    let repo = image_repo(reference);
    image
        .repo_digests
        .iter()
        .find(|d| image_repo(d) == repo)
        .or_else(|| image.repo_digests.first())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_retry_kind() {
        let m = || "x".to_owned();
        let cases = [
            (RuntimeError::Unreachable(m()), ErrorKind::EngineDown),
            (RuntimeError::ImageNotFound(m()), ErrorKind::Permanent),
            (RuntimeError::PullDenied(m()), ErrorKind::Permanent),
            (
                RuntimeError::Invalid {
                    code: error_code::CREATE_FAILED,
                    message: m(),
                },
                ErrorKind::Permanent,
            ),
            (RuntimeError::PullFailed(m()), ErrorKind::Transient),
            (RuntimeError::NoDisk(m()), ErrorKind::Transient),
            (RuntimeError::PortInUse(m()), ErrorKind::Transient),
            (RuntimeError::NotFound(m()), ErrorKind::Transient),
            (RuntimeError::Conflict(m()), ErrorKind::Transient),
            (
                RuntimeError::Other {
                    code: error_code::START_FAILED,
                    message: m(),
                },
                ErrorKind::Transient,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.kind(), want, "{e:?}");
        }
    }

    #[test]
    fn image_repo_strips_tag_and_digest_but_not_port() {
        for (r, want) in [
            ("busybox", "busybox"),
            ("busybox:1", "busybox"),
            ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b@sha256:00", "127.0.0.1:5000/a/b"),
        ] {
            assert_eq!(image_repo(r), want, "{r}");
        }
    }

    #[test]
    fn repo_digest_matches_the_reference_repository() {
        let img = ImageInfo {
            id: "sha256:1".into(),
            repo_digests: vec!["other/x@sha256:aa".into(), "reg:5000/web@sha256:bb".into()],
        };
        assert_eq!(
            repo_digest_for("reg:5000/web:v2", &img).as_deref(),
            Some("reg:5000/web@sha256:bb")
        );
        assert_eq!(
            repo_digest_for("nope:1", &img).as_deref(),
            Some("other/x@sha256:aa")
        );
    }
}
