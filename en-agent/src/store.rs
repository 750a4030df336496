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
    Invalid(String),
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

/// Checks a document's content: names, spec hashes, dependencies (known, acyclic).
pub fn check_content(doc: &DesiredState) -> Result<(), String> {
    if doc.deployments.len() > MAX_DEPLOYMENTS {
        return Err(format!(
            "{} deployments exceed the limit of {MAX_DEPLOYMENTS}",
            doc.deployments.len()
        ));
    }
    let components: usize = doc.deployments.iter().map(|d| d.components.len()).sum();
    if components > MAX_COMPONENTS {
        return Err(format!(
            "{components} components exceed the limit of {MAX_COMPONENTS}"
        ));
    }
    let mut deps = BTreeSet::new();
    for d in &doc.deployments {
        validate_name(&d.name).map_err(|e| e.to_string())?;
        if !deps.insert(d.name.as_str()) {
            return Err(format!("deployment {} appears twice", d.name));
        }
        if d.policy.attempts == 0 || d.policy.attempts > MAX_ATTEMPTS {
            return Err(format!(
                "deployment {}: policy.attempts must be between 1 and {MAX_ATTEMPTS}",
                d.name
            ));
        }
        if d.policy.backoff_ms > MAX_BACKOFF_MS {
            return Err(format!(
                "deployment {}: policy.backoffMs must be at most {MAX_BACKOFF_MS}",
                d.name
            ));
        }
        let names: BTreeSet<&str> = d.components.iter().map(|c| c.name.as_str()).collect();
        if names.len() != d.components.len() {
            return Err(format!("deployment {}: duplicate component names", d.name));
        }
        for c in &d.components {
            validate_name(&c.name).map_err(|e| format!("deployment {}: {e}", d.name))?;
            check_numbers(c)
                .map_err(|e| format!("deployment {} component {}: {e}", d.name, c.name))?;
            if !c.hash_is_valid() {
                return Err(format!(
                    "deployment {} component {}: specHash does not match the spec",
                    d.name, c.name
                ));
            }
            if let Some(x) = c.depends_on.iter().find(|x| !names.contains(x.as_str())) {
                return Err(format!(
                    "deployment {} component {}: depends on unknown component {x}",
                    d.name, c.name
                ));
            }
        }
        let order = crate::plan::start_order(&d.components);
        // A cycle leaves members whose dependencies come after them.
        let mut seen = BTreeSet::new();
        for i in order {
            let c = &d.components[i];
            if c.depends_on.iter().any(|x| !seen.contains(x.as_str())) {
                return Err(format!(
                    "deployment {}: dependency cycle through {}",
                    d.name, c.name
                ));
            }
            seen.insert(c.name.as_str());
        }
    }
    Ok(())
}

/// The numbers of a component that reach Docker as signed integers or durations: refused
/// when out of range rather than wrapped, saturated or silently dropped (a memory limit
/// that does not fit Docker's i64 would otherwise mean no limit at all).
fn check_numbers(c: &schemas::Component) -> Result<(), String> {
    let i64_max = schemas::bounds::MAX_RESOURCE;
    if let Some(m) = c.resources.memory_bytes {
        if m == 0 || m > i64_max {
            return Err(format!("memoryBytes {m} is out of range (1..={i64_max})"));
        }
    }
    if let Some(n) = c.resources.nano_cpus {
        if n == 0 || n > i64_max {
            return Err(format!("nanoCpus {n} is out of range (1..={i64_max})"));
        }
    }
    if let Some(h) = &c.healthcheck {
        for (field, ms) in [
            ("intervalMs", h.interval_ms),
            ("timeoutMs", h.timeout_ms),
            ("startPeriodMs", h.start_period_ms),
        ] {
            if ms > MAX_HEALTHCHECK_MS {
                return Err(format!(
                    "healthcheck.{field} {ms} is above {MAX_HEALTHCHECK_MS}"
                ));
            }
        }
    }
    if let Some(p) = c.ports.iter().find(|p| p.container == 0) {
        return Err(format!("port mapping {p:?}: container port 0"));
    }
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
        check_content(&doc).map_err(Rejection::Invalid)?;
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

    /// The stored session epoch (0 when none).
    pub fn load_epoch(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("epoch"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Persists the session epoch.
    pub fn save_epoch(&self, epoch: u64) -> Result<(), StoreError> {
        write_atomic(&self.dir.join("epoch"), format!("{epoch}\n").as_bytes())
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
