//! The audit log (the seeds' WAL): append-only JSON lines of observations, decisions and
//! publications in `<state_dir>/audit/audit.log`, fsync'd, rotated by size into
//! `audit.log.1` … `audit.log.<keep>`.
//!
//! Writes go through a channel to one writer thread that appends everything waiting and then
//! fsyncs once (group commit), so a burst of 10,000 entries costs a few fsyncs, not 10,000,
//! and the orchestrator never waits for the disk.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (RFC 3339).
    pub at: String,
    /// `observed`, `decided`, `published`, `rejected`, `held`, `served`, `source`.
    pub kind: String,
    /// Node concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Deployment concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Commit concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Generation concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// What happened.
    pub message: String,
}

/// Longest audit message kept, bytes.
const MAX_MESSAGE: usize = 4096;

impl AuditEntry {
    /// An entry stamped now.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self::at(&schemas::now_rfc3339(), kind, message)
    }

    /// An entry stamped `at` (RFC 3339), for code that reads no clock.
    pub fn at(at: &str, kind: &str, message: impl Into<String>) -> Self {
        AuditEntry {
            at: at.to_owned(),
            kind: kind.to_owned(),
            node: None,
            deployment: None,
            commit: None,
            generation: None,
            // The audit log is read by people who must not see credentials (a git2 error
            // carries the remote URL, token included) nor megabytes of someone's input.
            message: schemas::redact_urls_in(&schemas::shorten(&message.into(), MAX_MESSAGE)),
        }
    }

    /// Sets the node.
    pub fn node(mut self, n: &str) -> Self {
        self.node = Some(n.to_owned());
        self
    }

    /// Sets the deployment.
    pub fn deployment(mut self, d: &str) -> Self {
        self.deployment = Some(d.to_owned());
        self
    }

    /// Sets the commit.
    pub fn commit(mut self, c: &str) -> Self {
        self.commit = Some(c.to_owned());
        self
    }

    /// Sets the generation.
    pub fn generation(mut self, g: u64) -> Self {
        self.generation = Some(g);
        self
    }
}

/// Where to send entries. Cloning is cheap; the writer thread stops when every handle is
/// dropped.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<AuditEntry>>,
}

impl Audit {
    /// A log that drops everything (tests, `lo plan`).
    pub fn disabled() -> Self {
        Audit { tx: None }
    }

    /// Opens `dir/audit.log` and starts the writer thread.
    pub fn open(dir: &Path, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = mpsc::channel::<AuditEntry>();
        let mut w = Writer::open(dir.to_owned(), max_bytes, keep.max(1))?;
        std::thread::Builder::new()
            .name("lo-audit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    if let Err(e) = w.write(&batch) {
                        tracing::error!(error = %e, "cannot write the audit log");
                    }
                }
            })?;
        Ok(Audit { tx: Some(tx) })
    }

    /// Appends an entry (never blocks).
    pub fn log(&self, entry: AuditEntry) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(entry);
        }
    }
}

struct Writer {
    dir: PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl Writer {
    fn open(dir: PathBuf, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        let path = dir.join("audit.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            dir,
            file,
            size,
            max_bytes,
            keep,
        })
    }

    fn write(&mut self, batch: &[AuditEntry]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for e in batch {
            serde_json::to_writer(&mut buf, e)?;
            buf.push(b'\n');
            if self.size + buf.len() as u64 >= self.max_bytes {
                self.flush(&buf)?;
                buf.clear();
                self.rotate()?;
            }
        }
        self.flush(&buf)
    }

    fn flush(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(buf)?;
        self.file.sync_data()?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for i in (1..self.keep).rev() {
            let from = self.dir.join(format!("audit.log.{i}"));
            if from.exists() {
                std::fs::rename(&from, self.dir.join(format!("audit.log.{}", i + 1)))?;
            }
        }
        std::fs::rename(self.dir.join("audit.log"), self.dir.join("audit.log.1"))?;
        *self = Writer::open(self.dir.clone(), self.max_bytes, self.keep)?;
        Ok(())
    }
}

/// The last `limit` entries about `node` and/or `deployment` (oldest first), reading the
/// rotated files too. Lines that do not parse are skipped.
pub fn history(
    dir: &Path,
    node: Option<&str>,
    deployment: Option<&str>,
    limit: usize,
) -> std::io::Result<Vec<AuditEntry>> {
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == "audit.log" {
            files.push((0, path));
        } else if let Some(n) = name.strip_prefix("audit.log.").and_then(|n| n.parse().ok()) {
            files.push((n, path));
        }
    }
    // Oldest first: the highest suffix is the oldest.
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut out = std::collections::VecDeque::new();
    for (_, path) in files {
        let f = std::io::BufReader::new(std::fs::File::open(&path)?);
        for line in f.lines() {
            let Ok(e) = serde_json::from_str::<AuditEntry>(&line?) else {
                continue;
            };
            if node.is_some_and(|n| e.node.as_deref() != Some(n)) {
                continue;
            }
            if deployment.is_some_and(|d| e.deployment.as_deref() != Some(d)) {
                continue;
            }
            out.push_back(e);
            if out.len() > limit {
                out.pop_front();
            }
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {

    #[test]
    fn entries_never_carry_credentials_or_megabytes() {
        let e = AuditEntry::new(
            "source",
            format!(
                "fetch from https://lo:tok3n@git.example/x.git failed: {}",
                "x".repeat(1 << 20)
            ),
        );
        assert!(!e.message.contains("tok3n"), "{}", &e.message[..200]);
        assert!(e.message.contains("https://lo:***@git.example/x.git"));
        assert!(e.message.len() < 2 * MAX_MESSAGE);
    }

    use super::*;

    #[test]
    fn rotates_and_history_reads_across_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Writer::open(dir.path().to_owned(), 400, 3).expect("open");
        let batch: Vec<AuditEntry> = (0..20)
            .map(|i| {
                AuditEntry::new("published", format!("doc {i}"))
                    .node(if i % 2 == 0 { "n1" } else { "n2" })
                    .generation(i)
            })
            .collect();
        w.write(&batch).expect("write");
        assert!(dir.path().join("audit.log.1").exists());
        assert!(!dir.path().join("audit.log.4").exists());
        let h = history(dir.path(), Some("n1"), None, 2).expect("history");
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].generation, Some(18));
        assert_eq!(h[0].generation, Some(16));
    }
}
