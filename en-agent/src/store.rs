//! The state directory: the last applied desired document and the session epoch.
//!
//! `desired.json` is written atomically (temp file, fsync, rename, fsync of the
//! directory) before the agent acts on it, so a power cut leaves either the old or the new
//! document. Nothing is written when nothing changes. `epoch` holds the MQTT session
//! epoch (one small write per successful broker session).

use schemas::sign::{self, Ed25519VerifyingKey};
use schemas::{validate_name, DesiredState};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Largest desired document accepted (bytes).
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// The bounds of the contract (`schemas::bounds`): the LO never renders a document above
/// them, so one above them is hostile: applying a generation above `MAX_GENERATION` would
/// pin the agent above every future LO generation (all refused as stale), and checking
/// content is quadratic in the components of a deployment (dependency order).
pub use schemas::bounds::{
    MAX_ATTEMPTS, MAX_BACKOFF_MS, MAX_COMPONENTS, MAX_DEPLOYMENTS, MAX_GENERATION,
    MAX_HEALTHCHECK_MS,
};

/// Why a desired document was refused. Nothing changes when one is.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// Larger than [`MAX_DOCUMENT_BYTES`].
    #[error("document of {0} bytes exceeds the limit of {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge(usize),
    /// Not JSON of `fleet.desired/v1`.
    #[error("malformed document: {0}")]
    Malformed(String),
    /// Addressed to another site or node.
    #[error("document is addressed to {site}/{node}, not to this node")]
    Foreign {
        /// Its site.
        site: String,
        /// Its node.
        node: String,
    },
    /// Generation lower than the one applied (replay or downgrade).
    #[error("stale generation {got}: generation {applied} is already applied")]
    Stale {
        /// Its generation.
        got: u64,
        /// The applied one.
        applied: u64,
    },
    /// Same generation as the applied one, different content.
    #[error("generation {0} is reused with different content")]
    Reused(u64),
    /// Signature missing or wrong while a key is configured.
    #[error("signature refused: {0}")]
    Signature(#[from] sign::SignatureError),
    /// Content inconsistent (names, spec hashes, dependencies) or a value out of range.
    #[error("invalid document: {0}")]
    Invalid(#[from] ContentError),
    /// Generation above [`MAX_GENERATION`].
    #[error("generation {0} is above the highest generation {MAX_GENERATION}")]
    GenerationTooHigh(u64),
}

/// Errors of the state directory itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("state directory {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What [`Store::accept`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A new document, persisted; act on it.
    New,
    /// The document already applied (retained message replayed): nothing to do.
    Unchanged,
}

/// The state directory of one agent.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    site: String,
    node: String,
    key: Option<Ed25519VerifyingKey>,
    current: Option<DesiredState>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically and durably: [`edge_io::fs::write_atomic`]
/// (temporary file in the same directory, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    edge_io::fs::write_atomic(path, bytes).map_err(|e| StoreError::Io {
        path: e.path,
        source: e.source,
    })
}

/// Why a document's content is refused (the text after `invalid document: `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// More deployments than [`MAX_DEPLOYMENTS`].
    #[error("{0} deployments exceed the limit of {MAX_DEPLOYMENTS}")]
    TooManyDeployments(usize),
    /// More components than [`MAX_COMPONENTS`] in all.
    #[error("{0} components exceed the limit of {MAX_COMPONENTS}")]
    TooManyComponents(usize),
    /// A deployment name is not a valid name.
    #[error(transparent)]
    DeploymentName(schemas::NameError),
    /// Two deployments of the same name.
    #[error("deployment {0} appears twice")]
    DuplicateDeployment(String),
    /// `policy.attempts` out of `1..=MAX_ATTEMPTS`.
    #[error("deployment {0}: policy.attempts must be between 1 and {MAX_ATTEMPTS}")]
    Attempts(String),
    /// `policy.backoffMs` above [`MAX_BACKOFF_MS`].
    #[error("deployment {0}: policy.backoffMs must be at most {MAX_BACKOFF_MS}")]
    Backoff(String),
    /// Two components of the same name in a deployment.
    #[error("deployment {0}: duplicate component names")]
    DuplicateComponents(String),
    /// A component name is not a valid name.
    #[error("deployment {deployment}: {source}")]
    ComponentName {
        /// The deployment.
        deployment: String,
        /// Why the name is refused.
        source: schemas::NameError,
    },
    /// A component is refused.
    #[error("deployment {deployment} component {component}: {problem}")]
    Component {
        /// The deployment.
        deployment: String,
        /// The component.
        component: String,
        /// What is wrong with it.
        problem: ComponentProblem,
    },
    /// The components' dependencies form a cycle.
    #[error("deployment {deployment}: dependency cycle through {component}")]
    Cycle {
        /// The deployment.
        deployment: String,
        /// A member of the cycle.
        component: String,
    },
}

/// What is wrong with one component of a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentProblem {
    /// `memoryBytes` out of `1..=i64::MAX`.
    #[error("memoryBytes {0} is out of range (1..={max})", max = schemas::bounds::MAX_RESOURCE)]
    MemoryBytes(u64),
    /// `nanoCpus` out of `1..=i64::MAX`.
    #[error("nanoCpus {0} is out of range (1..={max})", max = schemas::bounds::MAX_RESOURCE)]
    NanoCpus(u64),
    /// A healthcheck duration above [`MAX_HEALTHCHECK_MS`].
    #[error("healthcheck.{field} {ms} is above {MAX_HEALTHCHECK_MS}")]
    HealthcheckDuration {
        /// `intervalMs`, `timeoutMs` or `startPeriodMs`.
        field: &'static str,
        /// Its value.
        ms: u64,
    },
    /// A port mapping with container port 0 (shown as written).
    #[error("port mapping {0}: container port 0")]
    ContainerPortZero(String),
    /// A `logging` that breaks `schemas::logging::Logging::check` (e.g. `max-size: -1`).
    #[error("logging: {0}")]
    Logging(schemas::logging::LoggingError),
    /// A host-access field that breaks `schemas::host::check` (e.g. an unknown capability).
    #[error("{0}")]
    Host(schemas::host::HostError),
    /// `specHash` is not the hash of the spec.
    #[error("specHash does not match the spec")]
    SpecHash,
    /// `dependsOn` names a component the deployment does not have.
    #[error("depends on unknown component {0}")]
    UnknownDependency(String),
}

/// Checks a document's content: names, spec hashes, dependencies (known, acyclic).
pub fn check_content(doc: &DesiredState) -> Result<(), ContentError> {
    if doc.deployments.len() > MAX_DEPLOYMENTS {
        return Err(ContentError::TooManyDeployments(doc.deployments.len()));
    }
    let components: usize = doc.deployments.iter().map(|d| d.components.len()).sum();
    if components > MAX_COMPONENTS {
        return Err(ContentError::TooManyComponents(components));
    }
    let mut deps = BTreeSet::new();
    for d in &doc.deployments {
        validate_name(&d.name).map_err(ContentError::DeploymentName)?;
        if !deps.insert(d.name.as_str()) {
            return Err(ContentError::DuplicateDeployment(d.name.clone()));
        }
        if d.policy.attempts == 0 || d.policy.attempts > MAX_ATTEMPTS {
            return Err(ContentError::Attempts(d.name.clone()));
        }
        if d.policy.backoff_ms > MAX_BACKOFF_MS {
            return Err(ContentError::Backoff(d.name.clone()));
        }
        let names: BTreeSet<&str> = d.components.iter().map(|c| c.name.as_str()).collect();
        if names.len() != d.components.len() {
            return Err(ContentError::DuplicateComponents(d.name.clone()));
        }
        for c in &d.components {
            validate_name(&c.name).map_err(|source| ContentError::ComponentName {
                deployment: d.name.clone(),
                source,
            })?;
            let refused = |problem| ContentError::Component {
                deployment: d.name.clone(),
                component: c.name.clone(),
                problem,
            };
            check_numbers(c).map_err(refused)?;
            if !c.hash_is_valid() {
                return Err(refused(ComponentProblem::SpecHash));
            }
            if let Some(x) = c.depends_on.iter().find(|x| !names.contains(x.as_str())) {
                return Err(refused(ComponentProblem::UnknownDependency(x.clone())));
            }
        }
        let order = crate::plan::start_order(&d.components);
        // A cycle leaves members whose dependencies come after them.
        let mut seen = BTreeSet::new();
        for i in order {
            let c = &d.components[i];
            if c.depends_on.iter().any(|x| !seen.contains(x.as_str())) {
                return Err(ContentError::Cycle {
                    deployment: d.name.clone(),
                    component: c.name.clone(),
                });
            }
            seen.insert(c.name.as_str());
        }
    }
    Ok(())
}

/// The numbers of a component that reach Docker as signed integers or durations: refused
/// when out of range rather than wrapped, saturated or silently dropped (a memory limit
/// that does not fit Docker's i64 would otherwise mean no limit at all).
fn check_numbers(c: &schemas::Component) -> Result<(), ComponentProblem> {
    let i64_max = schemas::bounds::MAX_RESOURCE;
    if let Some(m) = c.resources.memory_bytes {
        if m == 0 || m > i64_max {
            return Err(ComponentProblem::MemoryBytes(m));
        }
    }
    if let Some(n) = c.resources.nano_cpus {
        if n == 0 || n > i64_max {
            return Err(ComponentProblem::NanoCpus(n));
        }
    }
    if let Some(h) = &c.healthcheck {
        for (field, ms) in [
            ("intervalMs", h.interval_ms),
            ("timeoutMs", h.timeout_ms),
            ("startPeriodMs", h.start_period_ms),
        ] {
            if ms > MAX_HEALTHCHECK_MS {
                return Err(ComponentProblem::HealthcheckDuration { field, ms });
            }
        }
    }
    if let Some(p) = c.ports.iter().find(|p| p.container == 0) {
        return Err(ComponentProblem::ContainerPortZero(format!("{p:?}")));
    }
    if let Some(l) = &c.logging {
        l.check().map_err(ComponentProblem::Logging)?;
    }
    schemas::host::check(c).map_err(ComponentProblem::Host)?;
    Ok(())
}

impl Store {
    /// Opens (creating) the state directory and loads the last applied document. A
    /// corrupt document is logged and ignored (the next retained message replaces it).
    pub fn open(
        dir: &Path,
        site: &str,
        node: &str,
        key: Option<Ed25519VerifyingKey>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut store = Store {
            dir: dir.to_owned(),
            site: site.to_owned(),
            node: node.to_owned(),
            key,
            current: None,
        };
        let path = store.desired_path();
        match std::fs::read(&path) {
            Ok(bytes) => match store.validate(&bytes) {
                Ok(doc) => store.current = Some(doc),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring stored desired document")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        Ok(store)
    }

    fn desired_path(&self) -> PathBuf {
        self.dir.join("desired.json")
    }

    /// The document being applied.
    pub fn current(&self) -> Option<&DesiredState> {
        self.current.as_ref()
    }

    /// Generation of the document being applied (0: none).
    pub fn generation(&self) -> u64 {
        self.current.as_ref().map_or(0, |d| d.generation)
    }

    fn validate(&self, bytes: &[u8]) -> Result<DesiredState, Rejection> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(Rejection::TooLarge(bytes.len()));
        }
        // serde_json refuses nesting deeper than 128 levels, so a deep document costs a
        // bounded recursion; the size limit above bounds everything else.
        let doc: DesiredState = serde_json::from_slice(bytes)
            .map_err(|e| Rejection::Malformed(schemas::shorten(&e.to_string(), 200)))?;
        if doc.site != self.site || doc.node != self.node {
            // Shortened: the names come from the wire and end up in status and logs.
            return Err(Rejection::Foreign {
                site: schemas::shorten(&doc.site, 80),
                node: schemas::shorten(&doc.node, 80),
            });
        }
        if let Some(key) = &self.key {
            sign::verify(&doc, key)?;
        }
        if doc.generation > MAX_GENERATION {
            return Err(Rejection::GenerationTooHigh(doc.generation));
        }
        check_content(&doc)?;
        Ok(doc)
    }

    /// Validates a received document and, when it is new, persists it atomically before
    /// returning. A refused document changes nothing.
    pub fn accept(&mut self, bytes: &[u8]) -> Result<Result<Accepted, Rejection>, StoreError> {
        let doc = match self.validate(bytes) {
            Ok(d) => d,
            Err(r) => return Ok(Err(r)),
        };
        if let Some(cur) = &self.current {
            if doc.generation < cur.generation {
                return Ok(Err(Rejection::Stale {
                    got: doc.generation,
                    applied: cur.generation,
                }));
            }
            if doc.generation == cur.generation {
                return Ok(if doc.same_content(cur) {
                    Ok(Accepted::Unchanged)
                } else {
                    Err(Rejection::Reused(doc.generation))
                });
            }
        }
        let text = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        write_atomic(&self.desired_path(), &text)?;
        self.current = Some(doc);
        Ok(Ok(Accepted::New))
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
