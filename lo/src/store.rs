//! The LO's state directory: one JSON file, `state.json`, written atomically (temp file,
//! fsync, rename, fsync of the directory), so a crash leaves either the old or the new file.
//!
//! It holds what the LO must not forget across restarts: per node the last generation
//! published and its content hash (generations are never reused), the revision served (so a
//! restart serves the last good revision even if the branch head is bad), the LO's presence
//! epoch, and the rollback bookkeeping (last installed version per node and deployment,
//! rollbacks in force, failures already reported). Deployment specs are stored once by hash.
//! Why a file and not an embedded database: see `docs/lo.md`.

use crate::policy::RollbackMark;
use crate::render::{Dep, NodeDesired, PublishedRecord, RollbackOverride};
use crate::rollout::{Rollout, Track};
use schemas::{DesiredDeployment, Revision};
use schemas::{HaltReason, RolloutPhase, WaveStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// State-directory errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("state dir {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `state.json` is not valid.
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The revision last served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedRecord {
    /// Commit id.
    pub commit: String,
    /// When the LO started serving it (RFC 3339).
    pub since: String,
    /// Unix ms of that moment.
    #[serde(default)]
    pub since_ms: u64,
}

/// A rollback as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// Spec hash of the failed spec.
    pub from_spec_hash: String,
    /// Hash of the version rolled back to (key of `specs`).
    pub to: String,
    /// Commit that failed.
    pub failed_commit: String,
    /// The rolled-back version failed too.
    pub failed_again: bool,
}

/// The content of a published document, deduplicated by [`NodeDesired::content_hash`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredContent {
    /// Revision of the document.
    pub revision: Revision,
    /// Its deployments, by [`Dep::hash`] (keys of `published_specs`).
    pub deployments: Vec<String>,
}

/// The content of `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreData {
    /// Format version (1).
    pub version: u32,
    /// Highest presence epoch the LO used.
    pub lo_epoch: u64,
    /// Revision served.
    pub served: Option<ServedRecord>,
    /// Per node: the last document published.
    pub nodes: BTreeMap<String, PublishedRecord>,
    /// Deployment versions referenced below, by [`Dep::hash`].
    pub specs: BTreeMap<String, DesiredDeployment>,
    /// node → deployment → hash of the last version reported installed.
    pub installed: BTreeMap<String, BTreeMap<String, String>>,
    /// node → deployment → rollback in force.
    pub rollbacks: BTreeMap<String, BTreeMap<String, RollbackRecord>>,
    /// node → deployment → spec hash of a failure already reported (hold).
    pub held: BTreeMap<String, BTreeMap<String, String>>,
    /// What the documents of `nodes` contain, by content hash: a node held back by rollout
    /// pacing keeps (and after a restart is republished) exactly the document it has.
    pub contents: BTreeMap<String, StoredContent>,
    /// Deployment versions referenced by `contents`, by [`Dep::hash`].
    pub published_specs: BTreeMap<String, DesiredDeployment>,
    /// deployment → its rollout: the promoted version, the candidate and the nodes handed
    /// it, so an LO restart resumes the same wave with the same nodes.
    pub rollouts: BTreeMap<String, StoredRollout>,
    /// Deployment versions referenced by `rollouts`, by [`Dep::hash`].
    pub rollout_specs: BTreeMap<String, DesiredDeployment>,
}

/// A deployment's rollout as stored (versions by [`Dep::hash`], keys of `rollout_specs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRollout {
    /// The promoted version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<String>,
    /// The candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    /// Phase.
    pub phase: RolloutPhase,
    /// Current wave, 0-based.
    pub wave: usize,
    /// When it started (ms since the Unix epoch).
    pub wave_started_ms: u64,
    /// Nodes handed the candidate.
    #[serde(default)]
    pub nodes: BTreeMap<String, Track>,
    /// Why it halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt: Option<HaltReason>,
    /// The waves of the last completed rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_waves: Vec<WaveStatus>,
}

/// Rollback bookkeeping in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bookkeeping {
    /// node → deployment → last installed version.
    pub installed: BTreeMap<String, BTreeMap<String, Dep>>,
    /// node → deployment → rollback.
    pub rollbacks: BTreeMap<String, BTreeMap<String, RollbackMark>>,
    /// node → deployment → failed spec hash already reported.
    pub held: BTreeMap<String, BTreeMap<String, String>>,
}

impl StoreData {
    /// Stores the bookkeeping (specs deduplicated by hash).
    pub fn set_bookkeeping(&mut self, b: &Bookkeeping) {
        let mut specs = BTreeMap::new();
        let mut keep = |d: &Dep| {
            specs
                .entry(d.hash.clone())
                .or_insert_with(|| (*d.spec).clone());
            d.hash.clone()
        };
        self.installed = b
            .installed
            .iter()
            .map(|(n, m)| {
                (
                    n.clone(),
                    m.iter().map(|(k, d)| (k.clone(), keep(d))).collect(),
                )
            })
            .collect();
        self.rollbacks = b
            .rollbacks
            .iter()
            .map(|(n, m)| {
                let m = m
                    .iter()
                    .map(|(k, r)| {
                        (
                            k.clone(),
                            RollbackRecord {
                                from_spec_hash: r.over.from_spec_hash.clone(),
                                to: keep(&r.over.to),
                                failed_commit: r.failed_commit.clone(),
                                failed_again: r.failed_again,
                            },
                        )
                    })
                    .collect();
                (n.clone(), m)
            })
            .collect();
        self.held = b.held.clone();
        self.specs = specs;
    }

    /// Stores the content of the documents published (`published`: node → the content its
    /// record's `content_hash` stands for), each distinct content and deployment once.
    pub fn set_published(&mut self, published: &BTreeMap<String, NodeDesired>) {
        let mut contents = BTreeMap::new();
        let mut specs = BTreeMap::new();
        for (node, nd) in published {
            let Some(rec) = self.nodes.get(node) else {
                continue;
            };
            if contents.contains_key(&rec.content_hash) {
                continue;
            }
            let deployments = nd
                .deployments
                .iter()
                .map(|d| {
                    specs
                        .entry(d.hash.clone())
                        .or_insert_with(|| (*d.spec).clone());
                    d.hash.clone()
                })
                .collect();
            contents.insert(
                rec.content_hash.clone(),
                StoredContent {
                    revision: nd.revision.clone(),
                    deployments,
                },
            );
        }
        self.contents = contents;
        self.published_specs = specs;
    }

    /// The content of every node's published document, where it was stored and still hashes
    /// to the record's `content_hash` (a state file of an older LO has none).
    pub fn published(&self) -> BTreeMap<String, NodeDesired> {
        let deps: BTreeMap<&String, Dep> = self
            .published_specs
            .iter()
            .map(|(h, s)| (h, Dep::new(s.clone())))
            .collect();
        let docs: BTreeMap<&String, NodeDesired> = self
            .contents
            .iter()
            .filter_map(|(hash, c)| {
                let deployments: Option<Arc<[Dep]>> =
                    c.deployments.iter().map(|h| deps.get(h).cloned()).collect();
                let nd = NodeDesired {
                    revision: c.revision.clone(),
                    deployments: deployments?,
                };
                (nd.content_hash() == *hash).then_some((hash, nd))
            })
            .collect();
        self.nodes
            .iter()
            .filter_map(|(n, r)| docs.get(&r.content_hash).map(|d| (n.clone(), d.clone())))
            .collect()
    }

    /// Stores every deployment's rollout (versions deduplicated by hash).
    pub fn set_rollouts(&mut self, rollouts: &BTreeMap<String, Rollout>) {
        let mut specs = BTreeMap::new();
        let mut keep = |d: &Dep| {
            specs
                .entry(d.hash.clone())
                .or_insert_with(|| (*d.spec).clone());
            d.hash.clone()
        };
        self.rollouts = rollouts
            .iter()
            .map(|(name, r)| {
                (
                    name.clone(),
                    StoredRollout {
                        promoted: r.promoted.as_ref().map(&mut keep),
                        candidate: r.candidate.as_ref().map(&mut keep),
                        phase: r.phase,
                        wave: r.wave,
                        wave_started_ms: r.wave_started_ms,
                        nodes: r.nodes.clone(),
                        halt: r.halt.clone(),
                        last_waves: r.last_waves.clone(),
                    },
                )
            })
            .collect();
        self.rollout_specs = specs;
    }

    /// Every deployment's rollout as stored. A rollout whose versions are missing or do not
    /// hash to their key (a damaged file) is dropped: the deployment starts afresh.
    pub fn rollouts(&self) -> BTreeMap<String, Rollout> {
        let dep = |h: &String| {
            self.rollout_specs
                .get(h)
                .map(|s| Dep::new(s.clone()))
                .filter(|d| &d.hash == h)
        };
        self.rollouts
            .iter()
            .filter_map(|(name, r)| {
                let promoted = match &r.promoted {
                    Some(h) => Some(dep(h)?),
                    None => None,
                };
                let candidate = match &r.candidate {
                    Some(h) => Some(dep(h)?),
                    None => None,
                };
                Some((
                    name.clone(),
                    Rollout {
                        promoted,
                        candidate,
                        phase: r.phase,
                        wave: r.wave,
                        wave_started_ms: r.wave_started_ms,
                        nodes: r.nodes.clone(),
                        halt: r.halt.clone(),
                        last_waves: r.last_waves.clone(),
                    },
                ))
            })
            .collect()
    }

    /// The bookkeeping (entries whose spec is missing are dropped).
    pub fn bookkeeping(&self) -> Bookkeeping {
        let deps: BTreeMap<&String, Dep> = self
            .specs
            .iter()
            .map(|(h, s)| (h, Dep::new(s.clone())))
            .collect();
        Bookkeeping {
            installed: self
                .installed
                .iter()
                .map(|(n, m)| {
                    let m = m
                        .iter()
                        .filter_map(|(k, h)| deps.get(h).map(|d| (k.clone(), d.clone())))
                        .collect();
                    (n.clone(), m)
                })
                .collect(),
            rollbacks: self
                .rollbacks
                .iter()
                .map(|(n, m)| {
                    let m = m
                        .iter()
                        .filter_map(|(k, r)| {
                            deps.get(&r.to).map(|d| {
                                (
                                    k.clone(),
                                    RollbackMark {
                                        over: RollbackOverride {
                                            from_spec_hash: r.from_spec_hash.clone(),
                                            to: d.clone(),
                                        },
                                        failed_commit: r.failed_commit.clone(),
                                        failed_again: r.failed_again,
                                    },
                                )
                            })
                        })
                        .collect();
                    (n.clone(), m)
                })
                .collect(),
            held: self.held.clone(),
        }
    }
}

/// The state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The data; call [`Store::save`] after changing it.
    pub data: StoreData,
}

impl Store {
    /// Opens (creating) the state directory and loads `state.json` if present.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("state.json");
        let data = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreData {
                version: 1,
                ..StoreData::default()
            },
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Ok(Store {
            dir: dir.to_owned(),
            data,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `state.json` atomically and durably.
    pub fn save(&self) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&self.data).map_err(|source| StoreError::Corrupt {
            path: self.dir.join("state.json"),
            source,
        })?;
        write_atomic(&self.dir, "state.json", &bytes)
    }
}

/// Writes `dir/name` atomically and durably: [`edge_io::fs::write_atomic`] (temporary file,
/// fsync, rename, fsync of the directory).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    edge_io::fs::write_atomic(&dir.join(name), bytes).map_err(|e| StoreError::Io {
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        s.data.nodes.insert(
            "n1".into(),
            PublishedRecord {
                generation: 7,
                content_hash: "h".into(),
                issued_at: "t".into(),
                published_ms: 1,
            },
        );
        let dep = Dep::new(DesiredDeployment {
            name: "web".into(),
            commit: "c1".into(),
            policy: Default::default(),
            components: vec![],
        });
        let mut b = Bookkeeping::default();
        b.installed
            .entry("n1".into())
            .or_default()
            .insert("web".into(), dep.clone());
        s.data.set_bookkeeping(&b);
        s.save().expect("save");
        let again = Store::open(dir.path()).expect("reopen");
        assert_eq!(again.data.nodes["n1"].generation, 7);
        assert_eq!(again.data.bookkeeping(), b);
    }

    #[test]
    fn published_documents_survive_reopen_deduplicated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        let dep = Dep::new(DesiredDeployment {
            name: "web".into(),
            commit: "c1".into(),
            policy: Default::default(),
            components: vec![],
        });
        let nd = NodeDesired {
            revision: Revision {
                commit: "c1".into(),
                path: "sites/s1".into(),
            },
            deployments: vec![dep].into(),
        };
        let mut published = BTreeMap::new();
        for n in ["n1", "n2"] {
            s.data.nodes.insert(
                n.into(),
                PublishedRecord {
                    generation: 3,
                    content_hash: nd.content_hash(),
                    issued_at: "t".into(),
                    published_ms: 1,
                },
            );
            published.insert(n.to_owned(), nd.clone());
        }
        s.data.set_published(&published);
        assert_eq!(s.data.contents.len(), 1);
        s.save().expect("save");
        let again = Store::open(dir.path()).expect("reopen");
        assert_eq!(again.data.published(), published);
        // A record whose content was not stored is left out (an older state file).
        let mut older = again.data.clone();
        older.contents.clear();
        assert!(older.published().is_empty());
    }

    #[test]
    fn rollouts_survive_reopen_and_a_damaged_version_starts_afresh() {
        use crate::rollout::Outcome;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        let dep = |image: &str, commit: &str| {
            Dep::new(DesiredDeployment {
                name: "web".into(),
                commit: commit.into(),
                policy: Default::default(),
                components: vec![schemas::Component {
                    name: "web".into(),
                    image: image.into(),
                    ..Default::default()
                }
                .with_hash()],
            })
        };
        let mut r = Rollout::idle(Some(dep("web:1", "c1")));
        r.candidate = Some(dep("web:2", "c2"));
        r.phase = RolloutPhase::Progressing;
        r.wave = 1;
        r.wave_started_ms = 5;
        r.nodes.insert(
            "n1".into(),
            Track {
                wave: 0,
                since_ms: 1,
                outcome: Outcome::Passed,
                healthy_since_ms: Some(2),
                restarts: 1,
                was_offline: false,
                seen_online: true,
                failure: None,
            },
        );
        let rollouts: BTreeMap<String, Rollout> = [("web".to_owned(), r)].into();
        s.data.set_rollouts(&rollouts);
        s.save().expect("save");
        let again = Store::open(dir.path()).expect("reopen");
        assert_eq!(again.data.rollouts(), rollouts);
        // A version that no longer hashes to its key is not trusted: that rollout is
        // dropped (the deployment starts afresh), never resumed with the wrong spec.
        let mut damaged = again.data.clone();
        for spec in damaged.rollout_specs.values_mut() {
            spec.components[0].image = "evil:1".into();
        }
        assert!(damaged.rollouts().is_empty());
    }
}
