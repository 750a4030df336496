//! The record of the images this agent pulled, per component, in order of last use.
//!
//! Image garbage collection only ever removes an image named here: an image the agent did
//! not pull (the user's own, one that was on the engine before the agent pulled its tag)
//! is never a candidate. The record is `images.json` in the state directory, written
//! atomically and only when it changes (a pull that brought a new image, a component that
//! runs another of its images than before, an image removed or gone) — never while the
//! node is idle. It survives an agent restart; a missing or unreadable file means "nothing
//! is ours" (images are then kept, never guessed).

use crate::runtime::spec::CompKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The file in the state directory.
pub const FILE: &str = "images.json";

/// Entries kept at most; beyond, the oldest are forgotten (and so never removed).
pub const MAX_ENTRIES: usize = 512;

/// Largest file read (a full ledger is far below).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The file's text (`None` when absent), bounded.
fn read(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(Some(text))
}

/// One image a component got through a pull of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Deployment.
    pub deployment: String,
    /// Component.
    pub component: String,
    /// Image id (`sha256:…`).
    pub id: String,
    /// The references the agent pulled it as.
    pub refs: BTreeSet<String>,
}

impl Entry {
    fn is(&self, key: &CompKey, id: &str) -> bool {
        self.deployment == key.0 && self.component == key.1 && self.id == id
    }

    /// `(deployment, component)`.
    pub fn key(&self) -> CompKey {
        (self.deployment.clone(), self.component.clone())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct FileForm {
    version: u32,
    images: Vec<Entry>,
}

/// The images the agent pulled, oldest use first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ledger {
    path: Option<PathBuf>,
    entries: Vec<Entry>,
}

impl Ledger {
    /// A ledger kept in memory only (tests, the simulator).
    pub fn in_memory(entries: Vec<Entry>) -> Ledger {
        Ledger {
            path: None,
            entries,
        }
    }

    /// Reads `images.json` of `dir` (absent or unreadable: empty, so nothing is removed).
    pub fn load(dir: &Path) -> Ledger {
        let path = dir.join(FILE);
        let entries = match read(&path) {
            Ok(None) => Vec::new(),
            Ok(Some(text)) => match serde_json::from_str::<FileForm>(&text) {
                Ok(f) if f.version == 1 => f.images,
                Ok(f) => {
                    tracing::warn!(file = %path.display(), version = f.version, "unknown image record version, no image will be removed until it is rewritten");
                    Vec::new()
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable image record, no image will be removed until it is rewritten");
                    Vec::new()
                }
            },
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the image record");
                Vec::new()
            }
        };
        Ledger {
            path: Some(path),
            entries,
        }
    }

    /// Oldest use first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// True when some component got `id` through a pull of the agent.
    pub fn is_ours(&self, id: &str) -> bool {
        self.entries.iter().any(|e| e.id == id)
    }

    /// Records that `key` pulled `reference`, which is image `id` now: the entry is added
    /// (or gets the reference) and becomes the component's latest. True when it changed.
    pub fn record(&mut self, key: &CompKey, reference: &str, id: &str) -> bool {
        let mut changed = self.touch(key, id);
        match self.entries.iter_mut().find(|e| e.is(key, id)) {
            Some(e) => changed |= e.refs.insert(reference.to_owned()),
            None => {
                self.entries.push(Entry {
                    deployment: key.0.clone(),
                    component: key.1.clone(),
                    id: id.to_owned(),
                    refs: BTreeSet::from([reference.to_owned()]),
                });
                if self.entries.len() > MAX_ENTRIES {
                    let drop = self.entries.len() - MAX_ENTRIES;
                    self.entries.drain(..drop);
                }
                changed = true;
            }
        }
        changed
    }

    /// Makes `(key, id)` the component's latest image if it is recorded and not already
    /// so. True when it changed.
    pub fn touch(&mut self, key: &CompKey, id: &str) -> bool {
        let Some(i) = self.entries.iter().position(|e| e.is(key, id)) else {
            return false;
        };
        let later = self.entries[i + 1..]
            .iter()
            .any(|e| e.deployment == key.0 && e.component == key.1);
        if later {
            let e = self.entries.remove(i);
            self.entries.push(e);
        }
        later
    }

    /// Forgets every entry of `id`. True when it changed.
    pub fn forget(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.id != id);
        self.entries.len() != before
    }

    /// Forgets the entries of images no longer on the engine. True when it changed.
    pub fn retain_present(&mut self, present: &BTreeSet<&str>) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| present.contains(e.id.as_str()));
        self.entries.len() != before
    }

    /// Writes `images.json` (atomically); nothing for an in-memory ledger.
    pub fn save(&self) -> Result<(), crate::store::StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let form = FileForm {
            version: 1,
            images: self.entries.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&form).unwrap_or_default();
        crate::store::write_atomic(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str) -> CompKey {
        ("app".into(), c.into())
    }

    #[test]
    fn record_orders_by_last_use_and_reports_changes() {
        let mut l = Ledger::default();
        assert!(l.record(&key("web"), "r/web:v1", "sha256:1"));
        assert!(l.record(&key("web"), "r/web:v2", "sha256:2"));
        assert!(l.record(&key("db"), "r/db:v1", "sha256:9"));
        // The same pull again: nothing changes (no write while idle).
        assert!(!l.record(&key("web"), "r/web:v2", "sha256:2"));
        // Back to v1: it becomes web's latest.
        assert!(l.touch(&key("web"), "sha256:1"));
        assert!(!l.touch(&key("web"), "sha256:1"));
        let order: Vec<&str> = l.entries().iter().map(|e| e.id.as_str()).collect();
        assert_eq!(order, ["sha256:2", "sha256:9", "sha256:1"]);
        // Not recorded: not ours, nothing added.
        assert!(!l.touch(&key("web"), "sha256:7"));
        assert!(!l.is_ours("sha256:7"));
        assert!(l.forget("sha256:2"));
        assert!(!l.forget("sha256:2"));
        let present = BTreeSet::from(["sha256:1"]);
        assert!(l.retain_present(&present));
        assert_eq!(l.entries().len(), 1);
    }

    #[test]
    fn the_file_round_trips_and_a_bad_one_means_nothing_is_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut l = Ledger::load(dir.path());
        assert!(l.entries().is_empty());
        l.record(&key("web"), "r/web:v1", "sha256:1");
        l.save().expect("save");
        assert_eq!(Ledger::load(dir.path()), l);
        std::fs::write(dir.path().join(FILE), "{not json").expect("write");
        assert!(Ledger::load(dir.path()).entries().is_empty());
    }

    #[test]
    fn the_ledger_is_bounded() {
        let mut l = Ledger::default();
        for i in 0..MAX_ENTRIES + 10 {
            l.record(&key("web"), &format!("r/web:{i}"), &format!("sha256:{i}"));
        }
        assert_eq!(l.entries().len(), MAX_ENTRIES);
        assert!(!l.is_ours("sha256:0"), "the oldest are forgotten");
    }
}
