//! Where desired state comes from: the [`DesiredSource`] trait over our own types, and its
//! Git implementation ([`GitSource`], git2). git2 types do not leave this module.
//!
//! The Git source keeps a bare mirror in the state directory, fetches
//! `+refs/heads/<branch>:refs/remotes/origin/<branch>` from the configured URL (a local path,
//! `file://`, `https://` or `ssh://`), and reads trees at a commit without a work tree.
//! Every call blocks: run it in `spawn_blocking`.
//!
//! Layout: this file holds the trait and its types; [`git`] the git2 implementation,
//! [`walk`] the bounded folder walker shared by Git trees and working trees (`lo validate`),
//! [`poll`] the task that polls a source and hands changed site files to the engine.

pub mod git;
pub mod poll;
pub mod walk;

pub use git::{worktree_head, GitAuth, GitSource};
pub use walk::read_worktree;

use schemas::DocProblem;
use std::path::PathBuf;

/// Source errors.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A git operation failed.
    #[error("git: {context}: {message}")]
    Git {
        /// What was being done.
        context: String,
        /// What git said.
        message: String,
    },
    /// A working tree could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Full id.
    pub id: String,
    /// Commit time, seconds since the Unix epoch.
    pub time: i64,
}

/// The YAML files of a site folder, and what was refused while reading it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteFiles {
    /// `(path, content)` of the YAML files (`.yaml`, `.yml`), sorted by path.
    pub files: Vec<(String, String)>,
    /// Entries refused (symbolic links, submodules, files above the size limits, text that
    /// is not UTF-8, …): any problem rejects the commit.
    pub problems: Vec<DocProblem>,
}

impl SiteFiles {
    /// No file and no problem: the folder is missing or holds no YAML.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.problems.is_empty()
    }
}

/// A source of site files at commits.
pub trait DesiredSource: Send {
    /// Fetches and returns the branch head (`None`: the branch does not exist yet).
    fn fetch(&mut self) -> Result<Option<Commit>, SourceError>;
    /// The YAML files (`.yaml`, `.yml`) under `site_path` at `commit`, read within the
    /// source's [`SiteLimits`](schemas::site::SiteLimits), and the entries refused. A missing folder gives nothing.
    fn read_site(&self, commit: &str, site_path: &str) -> Result<SiteFiles, SourceError>;
    /// Whether anything under `path` differs between commits `a` and `b`.
    fn changed(&self, a: &str, b: &str, path: &str) -> Result<bool, SourceError>;
}

/// The problem of a commit (or working tree) whose site folder is missing or holds no YAML
/// document: always an error, never "zero deployments" (a renamed or deleted folder must not
/// remove what runs).
pub fn missing_site_problem(site_path: &str) -> schemas::DocProblem {
    schemas::DocProblem {
        file: site_path.trim_matches('/').to_owned(),
        line: None,
        field: None,
        message: "site folder is missing or holds no .yaml/.yml document".into(),
    }
}
