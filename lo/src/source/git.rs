//! The git2 implementation of [`DesiredSource`]: a bare mirror in the state directory,
//! fetched from the configured URL, read at a commit without a work tree. git2 types do not
//! leave this file.

use super::walk::{is_yaml, refused, walk_site, Folder, Kind, Listed};
use super::{Commit, DesiredSource, SiteFiles, SourceError};
use schemas::site::SiteLimits;
use std::path::{Path, PathBuf};

fn git_err(context: impl Into<String>) -> impl FnOnce(git2::Error) -> SourceError {
    let context = context.into();
    move |e| SourceError::Git {
        context,
        message: e.message().to_owned(),
    }
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

fn git_kind(mode: i32) -> Kind {
    match mode & 0o170000 {
        0o040000 => Kind::Dir,
        0o120000 => Kind::Symlink,
        0o160000 => Kind::Submodule,
        0o100000 => Kind::File(0),
        _ => Kind::Special,
    }
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
}
