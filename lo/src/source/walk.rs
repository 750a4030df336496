//! The bounded walker over a site folder, shared by Git trees ([`super::git`]) and working
//! trees ([`read_worktree`], behind `lo validate`): hidden entries skipped, links and special
//! files refused (never followed), depth, entries, files and bytes bounded.

use super::{SiteFiles, SourceError};
use schemas::site::SiteLimits;
use schemas::DocProblem;
use std::io::Read;
use std::path::{Path, PathBuf};

pub(super) fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// What a site folder entry is. Git trees and working trees are read through the same
/// [`walk_site`], so `lo validate` and `lo run` accept and refuse the same things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    /// A regular file of this many bytes (known before reading it).
    File(u64),
    Symlink,
    Submodule,
    /// FIFOs, sockets, devices: reading one could block or never end.
    Special,
}

/// An entry of a folder: name (`None`: not UTF-8), kind, handle.
pub(super) type Listed<N> = (Option<String>, Kind, N);

/// A folder tree to walk: a Git tree at a commit, or a working tree.
pub(super) trait Folder {
    type Node;
    /// The entries of a folder, at most `max + 1` (one more tells the caller the folder
    /// holds more than `max`, without listing a folder of millions).
    fn list(&self, dir: &Self::Node, max: usize) -> Result<Vec<Listed<Self::Node>>, SourceError>;
    /// The content of a file, at most `max + 1` bytes (one more notices a file that grew
    /// after its size was read).
    fn read(&self, file: &Self::Node, max: u64) -> Result<Vec<u8>, SourceError>;
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

pub(super) fn refused(path: &str, kind: Kind) -> DocProblem {
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
pub(super) fn walk_site<F: Folder>(
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
/// read within `limits` exactly as [`super::GitSource`] reads a commit: hidden entries
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::process::Command;

    fn messages(files: &SiteFiles) -> Vec<String> {
        files
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.file, p.message))
            .collect()
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
