//! Where desired state comes from: the [`DesiredSource`] trait over our own types, and its
//! Git implementation ([`GitSource`], git2). git2 types do not leave this module.
//!
//! The Git source keeps a bare mirror in the state directory, fetches
//! `+refs/heads/<branch>:refs/remotes/origin/<branch>` from the configured URL (a local path,
//! `file://`, `https://` or `ssh://`), and reads trees at a commit without a work tree.
//! Every call blocks: run it in `spawn_blocking`.

use std::path::{Path, PathBuf};

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

impl SourceError {
    /// Fetch errors are usually transient (network, server); all are retried on the next poll.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Git { .. })
    }
}

fn git_err(context: impl Into<String>) -> impl FnOnce(git2::Error) -> SourceError {
    let context = context.into();
    move |e| SourceError::Git {
        context,
        message: e.message().to_owned(),
    }
}

/// A commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Full id.
    pub id: String,
    /// Commit time, seconds since the Unix epoch.
    pub time: i64,
}

/// A source of site files at commits.
pub trait DesiredSource: Send {
    /// Fetches and returns the branch head (`None`: the branch does not exist yet).
    fn fetch(&mut self) -> Result<Option<Commit>, SourceError>;
    /// The YAML files (`.yaml`, `.yml`) under `site_path` at `commit`, as (path, content),
    /// sorted by path. A missing folder gives no files.
    fn read_site(
        &self,
        commit: &str,
        site_path: &str,
    ) -> Result<Vec<(String, String)>, SourceError>;
    /// Whether anything under `path` differs between commits `a` and `b`.
    fn changed(&self, a: &str, b: &str, path: &str) -> Result<bool, SourceError>;
}

/// Git credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitAuth {
    /// User name for https (default `git` for tokens).
    pub username: Option<String>,
    /// Password for https.
    pub password: Option<String>,
    /// Token for https (sent as the password).
    pub token: Option<String>,
    /// Private key for ssh (else the ssh agent is asked).
    pub ssh_key: Option<PathBuf>,
    /// Passphrase of the ssh key.
    pub ssh_passphrase: Option<String>,
}

/// The Git implementation.
pub struct GitSource {
    repo: git2::Repository,
    url: String,
    branch: String,
    auth: GitAuth,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &self.url)
            .field("branch", &self.branch)
            .finish_non_exhaustive()
    }
}

impl GitSource {
    /// Opens (creating) the bare mirror at `mirror` for `url`.
    pub fn open(
        mirror: &Path,
        url: &str,
        branch: &str,
        auth: GitAuth,
    ) -> Result<Self, SourceError> {
        let repo = match git2::Repository::open_bare(mirror) {
            Ok(r) => r,
            Err(_) => {
                std::fs::create_dir_all(mirror).map_err(|source| SourceError::Io {
                    path: mirror.to_owned(),
                    source,
                })?;
                git2::Repository::init_bare(mirror).map_err(git_err("init mirror"))?
            }
        };
        // A relative local path is taken from the current directory.
        let url = match Path::new(url).canonicalize() {
            Ok(p) if !url.contains("://") => p.to_string_lossy().into_owned(),
            _ => url.to_owned(),
        };
        Ok(GitSource {
            repo,
            url,
            branch: branch.to_owned(),
            auth,
        })
    }

    fn commit(&self, id: &str) -> Result<git2::Commit<'_>, SourceError> {
        let oid = git2::Oid::from_str(id).map_err(git_err(format!("commit id {id}")))?;
        self.repo
            .find_commit(oid)
            .map_err(git_err(format!("find commit {id}")))
    }

    fn entry_id(&self, commit: &str, path: &str) -> Result<Option<git2::Oid>, SourceError> {
        let tree = self.commit(commit)?.tree().map_err(git_err("tree"))?;
        let path = path.trim_matches('/');
        if path.is_empty() {
            return Ok(Some(tree.id()));
        }
        Ok(tree.get_path(Path::new(path)).ok().map(|e| e.id()))
    }
}

impl DesiredSource for GitSource {
    fn fetch(&mut self) -> Result<Option<Commit>, SourceError> {
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(git_err(format!("remote {}", self.url)))?;
        let mut callbacks = git2::RemoteCallbacks::new();
        let auth = self.auth.clone();
        let mut tries = 0;
        callbacks.credentials(move |_url, user_from_url, allowed| {
            tries += 1;
            if tries > 3 {
                return Err(git2::Error::from_str("authentication failed"));
            }
            if allowed.contains(git2::CredentialType::SSH_KEY) {
                let user = user_from_url.or(auth.username.as_deref()).unwrap_or("git");
                return match &auth.ssh_key {
                    Some(key) => {
                        git2::Cred::ssh_key(user, None, key, auth.ssh_passphrase.as_deref())
                    }
                    None => git2::Cred::ssh_key_from_agent(user),
                };
            }
            if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                if let Some(token) = &auth.token {
                    let user = auth.username.as_deref().unwrap_or("git");
                    return git2::Cred::userpass_plaintext(user, token);
                }
                if let (Some(u), Some(p)) = (&auth.username, &auth.password) {
                    return git2::Cred::userpass_plaintext(u, p);
                }
            }
            if allowed.contains(git2::CredentialType::USERNAME) {
                return git2::Cred::username(auth.username.as_deref().unwrap_or("git"));
            }
            git2::Cred::default()
        });
        let mut opts = git2::FetchOptions::new();
        opts.remote_callbacks(callbacks);
        let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.branch);
        remote
            .fetch(&[refspec.as_str()], Some(&mut opts), None)
            .map_err(git_err(format!("fetch {} from {}", self.branch, self.url)))?;
        let name = format!("refs/remotes/origin/{}", self.branch);
        let Ok(oid) = self.repo.refname_to_id(&name) else {
            return Ok(None);
        };
        let c = self
            .repo
            .find_commit(oid)
            .map_err(git_err("find fetched commit"))?;
        Ok(Some(Commit {
            id: oid.to_string(),
            time: c.time().seconds(),
        }))
    }

    fn read_site(
        &self,
        commit: &str,
        site_path: &str,
    ) -> Result<Vec<(String, String)>, SourceError> {
        let tree = self.commit(commit)?.tree().map_err(git_err("tree"))?;
        let site_path = site_path.trim_matches('/');
        let sub = match tree.get_path(Path::new(site_path)) {
            Ok(e) if e.kind() == Some(git2::ObjectType::Tree) => self
                .repo
                .find_tree(e.id())
                .map_err(git_err(format!("tree {site_path}")))?,
            _ => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        let mut err = None;
        sub.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let Ok(name) = entry.name() else {
                return git2::TreeWalkResult::Ok;
            };
            if entry.kind() != Some(git2::ObjectType::Blob) || !is_yaml(name) {
                return git2::TreeWalkResult::Ok;
            }
            match self.repo.find_blob(entry.id()) {
                Ok(blob) => {
                    let path = format!("{site_path}/{dir}{name}");
                    out.push((path, String::from_utf8_lossy(blob.content()).into_owned()));
                    git2::TreeWalkResult::Ok
                }
                Err(e) => {
                    err = Some(e);
                    git2::TreeWalkResult::Abort
                }
            }
        })
        .map_err(git_err("walk tree"))?;
        if let Some(e) = err {
            return Err(git_err("read blob")(e));
        }
        out.sort();
        Ok(out)
    }

    fn changed(&self, a: &str, b: &str, path: &str) -> Result<bool, SourceError> {
        Ok(self.entry_id(a, path)? != self.entry_id(b, path)?)
    }
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

fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// The YAML files under `root/site_path` in a working tree, as (path relative to `root`,
/// content), sorted. Hidden entries are skipped.
pub fn read_worktree(root: &Path, site_path: &str) -> Result<Vec<(String, String)>, SourceError> {
    let mut out = Vec::new();
    let base = root.join(site_path.trim_matches('/'));
    if !base.exists() {
        return Ok(out);
    }
    let mut stack = vec![base];
    while let Some(dir) = stack.pop() {
        let io = |source| SourceError::Io {
            path: dir.clone(),
            source,
        };
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if is_yaml(name) {
                let content = std::fs::read_to_string(&path).map_err(|source| SourceError::Io {
                    path: path.clone(),
                    source,
                })?;
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push((rel.to_string_lossy().into_owned(), content));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The HEAD commit of the repository containing `root`, if it is one.
pub fn worktree_head(root: &Path) -> Option<String> {
    let repo = git2::Repository::discover(root).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    Some(head.id().to_string())
}
