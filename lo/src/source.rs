//! Where desired state comes from: the [`DesiredSource`] trait over our own types, and its
//! Git implementation ([`GitSource`], git2). git2 types do not leave this module.
//!
//! The Git source keeps a bare mirror in the state directory, fetches
//! `+refs/heads/<branch>:refs/remotes/origin/<branch>` from the configured URL (a local path,
//! `file://`, `https://` or `ssh://`), and reads trees at a commit without a work tree.
//! Every call blocks: run it in `spawn_blocking`.

use schemas::site::SiteLimits;
use schemas::DocProblem;
use std::io::Read;
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
    /// source's [`SiteLimits`], and the entries refused. A missing folder gives nothing.
    fn read_site(&self, commit: &str, site_path: &str) -> Result<SiteFiles, SourceError>;
    /// Whether anything under `path` differs between commits `a` and `b`.
    fn changed(&self, a: &str, b: &str, path: &str) -> Result<bool, SourceError>;
}

/// Git credentials. `Debug` says which are set, never their values.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| o.as_ref().map(|_| "***");
        f.debug_struct("GitAuth")
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("token", &set(&self.token))
            .field("ssh_key", &self.ssh_key)
            .field("ssh_passphrase", &set(&self.ssh_passphrase))
            .finish()
    }
}

/// The Git implementation.
pub struct GitSource {
    repo: git2::Repository,
    url: String,
    branch: String,
    auth: GitAuth,
    limits: SiteLimits,
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
            limits: SiteLimits::default(),
        })
    }

    /// Reads sites within `limits` (default: [`SiteLimits::default`]).
    pub fn with_limits(mut self, limits: SiteLimits) -> Self {
        self.limits = limits;
        self
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

    fn read_site(&self, commit: &str, site_path: &str) -> Result<SiteFiles, SourceError> {
        let tree = self.commit(commit)?.tree().map_err(git_err("tree"))?;
        let site_path = site_path.trim_matches('/');
        let entry = match tree.get_path(Path::new(site_path)) {
            Ok(e) => e,
            Err(_) => return Ok(SiteFiles::default()),
        };
        let root = match git_kind(entry.filemode()) {
            Kind::Dir => entry.id(),
            Kind::Symlink | Kind::Submodule => {
                return Ok(SiteFiles {
                    files: Vec::new(),
                    problems: vec![refused(site_path, git_kind(entry.filemode()))],
                })
            }
            _ => return Ok(SiteFiles::default()),
        };
        let odb = self.repo.odb().map_err(git_err("object database"))?;
        let folder = GitFolder {
            repo: &self.repo,
            odb,
        };
        walk_site(&folder, root, site_path, &self.limits)
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

/// What a site folder entry is. Git trees and working trees are read through the same
/// [`walk_site`], so `lo validate` and `lo run` accept and refuse the same things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    /// A regular file of this many bytes (known before reading it).
    File(u64),
    Symlink,
    Submodule,
    /// FIFOs, sockets, devices: reading one could block or never end.
    Special,
}

fn git_kind(mode: i32) -> Kind {
    match mode & 0o170000 {
        0o040000 => Kind::Dir,
        0o120000 => Kind::Symlink,
        0o160000 => Kind::Submodule,
        0o100000 => Kind::File(0),
        _ => Kind::Special,
    }
}

/// An entry of a folder: name (`None`: not UTF-8), kind, handle.
type Listed<N> = (Option<String>, Kind, N);

/// A folder tree to walk: a Git tree at a commit, or a working tree.
trait Folder {
    type Node;
    /// The entries of a folder, at most `max + 1` (one more tells the caller the folder
    /// holds more than `max`, without listing a folder of millions).
    fn list(&self, dir: &Self::Node, max: usize) -> Result<Vec<Listed<Self::Node>>, SourceError>;
    /// The content of a file, at most `max + 1` bytes (one more notices a file that grew
    /// after its size was read).
    fn read(&self, file: &Self::Node, max: u64) -> Result<Vec<u8>, SourceError>;
}

struct GitFolder<'r> {
    repo: &'r git2::Repository,
    odb: git2::Odb<'r>,
}

impl Folder for GitFolder<'_> {
    type Node = git2::Oid;

    fn list(&self, dir: &git2::Oid, max: usize) -> Result<Vec<Listed<git2::Oid>>, SourceError> {
        let tree = self
            .repo
            .find_tree(*dir)
            .map_err(git_err(format!("tree {dir}")))?;
        let mut out = Vec::with_capacity(tree.len().min(max.saturating_add(1)));
        for entry in tree.iter().take(max.saturating_add(1)) {
            let name = entry.name().ok().map(str::to_owned);
            let kind = match git_kind(entry.filemode()) {
                // The size from the object header: a blob is not loaded to learn it.
                Kind::File(_) if name.as_deref().is_some_and(is_yaml) => {
                    let (size, _) = self
                        .odb
                        .read_header(entry.id())
                        .map_err(git_err(format!("blob {}", entry.id())))?;
                    Kind::File(size as u64)
                }
                k => k,
            };
            out.push((name, kind, entry.id()));
        }
        Ok(out)
    }

    fn read(&self, file: &git2::Oid, _max: u64) -> Result<Vec<u8>, SourceError> {
        // Blob objects are immutable: the header size checked before is the size read.
        let blob = self
            .repo
            .find_blob(*file)
            .map_err(git_err(format!("read blob {file}")))?;
        Ok(blob.content().to_vec())
    }
}

struct WorkFolder;

impl Folder for WorkFolder {
    type Node = PathBuf;

    fn list(&self, dir: &PathBuf, max: usize) -> Result<Vec<Listed<PathBuf>>, SourceError> {
        let io = |source| SourceError::Io {
            path: dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)
            .map_err(io)?
            .take(max.saturating_add(1))
        {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            // symlink_metadata: a link is reported as a link, never followed.
            let meta = std::fs::symlink_metadata(&path).map_err(|source| SourceError::Io {
                path: path.clone(),
                source,
            })?;
            let ft = meta.file_type();
            let kind = if ft.is_symlink() {
                Kind::Symlink
            } else if ft.is_dir() && std::fs::symlink_metadata(path.join(".git")).is_ok() {
                // A checked-out submodule (or nested repository): what the Git tree shows as
                // a commit entry, refused alike.
                Kind::Submodule
            } else if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                Kind::File(meta.len())
            } else {
                Kind::Special
            };
            out.push((entry.file_name().to_str().map(str::to_owned), kind, path));
        }
        Ok(out)
    }

    fn read(&self, file: &PathBuf, max: u64) -> Result<Vec<u8>, SourceError> {
        let io = |source| SourceError::Io {
            path: file.clone(),
            source,
        };
        let mut content = Vec::new();
        std::fs::File::open(file)
            .map_err(io)?
            .take(max.saturating_add(1))
            .read_to_end(&mut content)
            .map_err(io)?;
        Ok(content)
    }
}

fn problem(file: &str, message: String) -> DocProblem {
    DocProblem {
        file: schemas::shorten(file, 256),
        line: None,
        field: None,
        message,
    }
}

fn refused(path: &str, kind: Kind) -> DocProblem {
    let message = match kind {
        Kind::Symlink => {
            "symbolic link in the site folder: refused (a link can point outside the repository or loop); commit the file itself"
        }
        Kind::Submodule => {
            "submodule in the site folder: refused (its files are not in this repository)"
        }
        _ => "not a regular file: refused",
    };
    problem(path, message.into())
}

/// Walks a site folder with an explicit stack, bounded in depth and entries, without
/// following links, reading YAML files within the size limits (checked before reading).
fn walk_site<F: Folder>(
    folder: &F,
    root: F::Node,
    site_path: &str,
    limits: &SiteLimits,
) -> Result<SiteFiles, SourceError> {
    let mut out = SiteFiles::default();
    let mut stack = vec![(root, String::new(), 0usize)];
    let (mut entries, mut files, mut bytes) = (0usize, 0usize, 0u64);
    'walk: while let Some((dir, rel, depth)) = stack.pop() {
        let listed = folder.list(&dir, limits.max_site_entries)?;
        if listed.len() > limits.max_site_entries {
            // Hidden entries count here too: a folder is never listed past the bound.
            out.problems.push(problem(
                &format!("{site_path}/{rel}"),
                format!(
                    "more than {} entries in one folder (max_site_entries)",
                    limits.max_site_entries
                ),
            ));
            break 'walk;
        }
        for (name, kind, node) in listed {
            let Some(name) = name else {
                out.problems.push(problem(
                    &format!("{site_path}/{rel}"),
                    "a file name in this folder is not UTF-8".into(),
                ));
                continue;
            };
            // Hidden entries are skipped in both trees alike.
            if name.starts_with('.') {
                continue;
            }
            let path = format!("{site_path}/{rel}{name}");
            entries += 1;
            if entries > limits.max_site_entries {
                out.problems.push(problem(
                    &path,
                    format!(
                        "more than {} entries in the site folder (max_site_entries)",
                        limits.max_site_entries
                    ),
                ));
                break 'walk;
            }
            match kind {
                Kind::Symlink | Kind::Submodule => out.problems.push(refused(&path, kind)),
                Kind::Dir if depth + 1 > limits.max_folder_depth => out.problems.push(problem(
                    &path,
                    format!(
                        "folders nested deeper than {} levels (max_folder_depth)",
                        limits.max_folder_depth
                    ),
                )),
                Kind::Dir => stack.push((node, format!("{rel}{name}/"), depth + 1)),
                Kind::Special if is_yaml(&name) => out.problems.push(refused(&path, kind)),
                Kind::File(size) if is_yaml(&name) => {
                    files += 1;
                    if files > limits.max_site_files {
                        out.problems.push(limits.too_many_files(&path));
                        break 'walk;
                    }
                    if size > limits.max_file_bytes {
                        out.problems.push(limits.file_too_large(&path, size));
                        continue;
                    }
                    bytes += size;
                    if bytes > limits.max_site_bytes {
                        out.problems.push(limits.site_too_large(&path));
                        break 'walk;
                    }
                    let content = folder.read(&node, limits.max_file_bytes)?;
                    if content.len() as u64 > limits.max_file_bytes {
                        out.problems
                            .push(limits.file_too_large(&path, content.len() as u64));
                        continue;
                    }
                    match String::from_utf8(content) {
                        Ok(text) => out.files.push((path, text)),
                        Err(e) => out.problems.push(problem(
                            &path,
                            format!(
                                "not UTF-8 text (invalid byte at offset {})",
                                e.utf8_error().valid_up_to()
                            ),
                        )),
                    }
                }
                Kind::File(_) | Kind::Special => {}
            }
        }
    }
    out.files.sort();
    out.problems.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// The YAML files under `root/site_path` in a working tree (paths relative to `root`),
/// read within `limits` exactly as [`GitSource::read_site`] reads a commit: hidden entries
/// skipped, links and special files refused, never followed.
pub fn read_worktree(
    root: &Path,
    site_path: &str,
    limits: &SiteLimits,
) -> Result<SiteFiles, SourceError> {
    let site_path = site_path.trim_matches('/');
    let mut base = root.to_owned();
    // The site folder and the folders leading to it must be folders, not links.
    for part in Path::new(site_path).components() {
        base.push(part);
        match std::fs::symlink_metadata(&base) {
            Err(_) => return Ok(SiteFiles::default()),
            Ok(m) if m.file_type().is_symlink() => {
                let rel = base.strip_prefix(root).unwrap_or(&base);
                return Ok(SiteFiles {
                    files: Vec::new(),
                    problems: vec![refused(&rel.to_string_lossy(), Kind::Symlink)],
                });
            }
            Ok(m) if !m.is_dir() => return Ok(SiteFiles::default()),
            Ok(_) => {}
        }
    }
    walk_site(&WorkFolder, base, site_path, limits)
}

/// The HEAD commit of the repository containing `root`, if it is one.
pub fn worktree_head(root: &Path) -> Option<String> {
    let repo = git2::Repository::discover(root).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    Some(head.id().to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    /// A repository with `files` committed, plus a gitlink (submodule entry) at
    /// `sites/s1/vendored`; returns the source and the commit.
    fn repo_with(
        files: &[(&str, &[u8])],
        limits: SiteLimits,
    ) -> (tempfile::TempDir, GitSource, String) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir_all(&root).unwrap();
        git(&root, &["init", "-q", "-b", "main"]);
        git(&root, &["config", "user.email", "t@example.invalid"]);
        git(&root, &["config", "user.name", "t"]);
        for (path, content) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        git(&root, &["add", "-A"]);
        let gitlink = format!("160000,{},sites/s1/vendored", "a".repeat(40));
        git(&root, &["update-index", "--add", "--cacheinfo", &gitlink]);
        git(&root, &["commit", "-q", "-m", "c"]);
        let mut src = GitSource::open(
            &dir.path().join("mirror.git"),
            &root.to_string_lossy(),
            "main",
            GitAuth::default(),
        )
        .unwrap()
        .with_limits(limits);
        let head = src.fetch().unwrap().unwrap().id;
        (dir, src, head)
    }

    fn messages(files: &SiteFiles) -> Vec<String> {
        files
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.file, p.message))
            .collect()
    }

    #[test]
    fn git_tree_refuses_submodules_oversized_and_non_utf8_files() {
        let limits = SiteLimits {
            max_file_bytes: 100,
            ..SiteLimits::default()
        };
        let big = vec![b'x'; 101];
        let (_dir, src, head) = repo_with(
            &[
                ("sites/s1/ok.yaml", b"a: 1\n"),
                ("sites/s1/big.yaml", &big),
                ("sites/s1/latin1.yml", b"a: caf\xe9\n"),
                ("sites/s1/.hidden.yaml", b"ignored: true\n"),
                ("sites/s1/notes.txt", &big),
            ],
            limits,
        );
        let read = src.read_site(&head, "sites/s1").unwrap();
        assert_eq!(
            read.files,
            vec![("sites/s1/ok.yaml".to_owned(), "a: 1\n".to_owned())]
        );
        let m = messages(&read);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(
            m[0].starts_with("sites/s1/big.yaml: file is 101 bytes")
                && m[0].contains("max_file_bytes"),
            "{m:?}"
        );
        assert!(
            m[1].starts_with("sites/s1/latin1.yml: not UTF-8 text (invalid byte at offset 6)"),
            "{m:?}"
        );
        assert!(m[2].starts_with("sites/s1/vendored: submodule"), "{m:?}");
    }

    #[test]
    fn git_tree_bounds_site_bytes_and_file_count() {
        let files: Vec<(String, Vec<u8>)> = (0..5)
            .map(|i| (format!("sites/s1/f{i}.yaml"), vec![b'#'; 40]))
            .collect();
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        let (_dir, src, head) = repo_with(
            &refs,
            SiteLimits {
                max_site_bytes: 100,
                ..SiteLimits::default()
            },
        );
        let read = src.read_site(&head, "sites/s1").unwrap();
        assert!(
            messages(&read).iter().any(|m| m.contains("max_site_bytes")),
            "{read:?}"
        );
        let (_dir, src, head) = repo_with(
            &refs,
            SiteLimits {
                max_site_files: 3,
                ..SiteLimits::default()
            },
        );
        let read = src.read_site(&head, "sites/s1").unwrap();
        assert!(
            messages(&read).iter().any(|m| m.contains("max_site_files")),
            "{read:?}"
        );
        assert!(read.files.len() <= 3);
    }

    #[test]
    fn worktree_refuses_links_and_fifos_without_following_or_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("sites/s1");
        std::fs::create_dir_all(site.join("sub")).unwrap();
        std::fs::write(site.join("sub/ok.yaml"), "a: 1\n").unwrap();
        std::os::unix::fs::symlink("../..", site.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", site.join("outside.yaml")).unwrap();
        let fifo = site.join("pipe.yaml");
        let made = Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        let read = read_worktree(dir.path(), "sites/s1", &SiteLimits::default()).unwrap();
        assert_eq!(read.files.len(), 1, "{read:?}");
        let m = messages(&read);
        assert!(
            m.iter()
                .any(|m| m.starts_with("sites/s1/outside.yaml: symbolic link")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|m| m.starts_with("sites/s1/sub/up: symbolic link")),
            "{m:?}"
        );
        if made {
            assert!(
                m.iter()
                    .any(|m| m.starts_with("sites/s1/pipe.yaml: not a regular file")),
                "{m:?}"
            );
        }
        // A nested repository (a checked-out submodule) is refused as in a Git tree.
        std::fs::create_dir_all(site.join("vendored/.git")).unwrap();
        std::fs::write(site.join("vendored/x.yaml"), "a: 1\n").unwrap();
        let read = read_worktree(dir.path(), "sites/s1", &SiteLimits::default()).unwrap();
        assert_eq!(read.files.len(), 1, "{read:?}");
        assert!(
            messages(&read)
                .iter()
                .any(|m| m.starts_with("sites/s1/vendored: submodule")),
            "{read:?}"
        );
        // The site folder itself as a link.
        std::os::unix::fs::symlink("s1", dir.path().join("sites/s2")).unwrap();
        let read = read_worktree(dir.path(), "sites/s2", &SiteLimits::default()).unwrap();
        assert!(read.files.is_empty());
        assert!(
            messages(&read)[0].starts_with("sites/s2: symbolic link"),
            "{read:?}"
        );
    }

    #[test]
    fn a_folder_is_never_listed_past_the_entry_bound_hidden_entries_included() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("sites/s1");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::write(site.join("a.yaml"), "a: 1\n").unwrap();
        for i in 0..30 {
            std::fs::write(site.join(format!(".hidden-{i}")), "").unwrap();
        }
        let limits = SiteLimits {
            max_site_entries: 10,
            ..SiteLimits::default()
        };
        let read = read_worktree(dir.path(), "sites/s1", &limits).unwrap();
        assert!(
            messages(&read)
                .iter()
                .any(|m| m.contains("entries in one folder")),
            "{read:?}"
        );
        // Within the bound, hidden entries are skipped as before.
        let read = read_worktree(dir.path(), "sites/s1", &SiteLimits::default()).unwrap();
        assert!(read.problems.is_empty(), "{read:?}");
        assert_eq!(read.files.len(), 1);
    }

    #[test]
    fn worktree_walk_is_bounded_in_depth_and_entries() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("sites/s1").join(["d"; 20].join("/"));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("x.yaml"), "a: 1\n").unwrap();
        let read = read_worktree(dir.path(), "sites/s1", &SiteLimits::default()).unwrap();
        assert!(
            messages(&read)
                .iter()
                .any(|m| m.contains("max_folder_depth")),
            "{read:?}"
        );
        for i in 0..30 {
            std::fs::write(dir.path().join(format!("sites/s1/n{i}.txt")), "").unwrap();
        }
        let limits = SiteLimits {
            max_site_entries: 10,
            ..SiteLimits::default()
        };
        let read = read_worktree(dir.path(), "sites/s1", &limits).unwrap();
        assert!(
            messages(&read)
                .iter()
                .any(|m| m.contains("max_site_entries")),
            "{read:?}"
        );
    }
}
