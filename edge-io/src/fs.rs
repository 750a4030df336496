//! Durable file writes.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A file write that failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WriteError {
    /// The file the failing step worked on (the temporary file or the target).
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The temporary file [`write_atomic`] writes `path` through: `.<name>.tmp` beside it (hidden,
/// and distinct for `a.json` and `a.yaml`).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `path` atomically and durably: a temporary file in the same directory
/// ([`temp_path`]), fsync, rename over `path`, then fsync of the directory. A crash at any
/// point leaves either the old file or the new one, never a mix. The directory fsync (which
/// makes the rename durable) is best effort: not every file system supports it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| WriteError { path, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = temp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
    f.write_all(bytes).map_err(err(&tmp))?;
    f.sync_all().map_err(err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err(path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("state.json");
        write_atomic(&file, b"old").expect("first write");
        write_atomic(&file, b"new").expect("second write");
        assert_eq!(std::fs::read(&file).expect("read"), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("epoch");
        write_atomic(&file, b"7\n").expect("write");
        // The temporary path is taken by a directory: creating the temporary file fails
        // before the target is touched.
        std::fs::create_dir(temp_path(&file)).expect("block the temporary");
        let err = write_atomic(&file, b"8\n").expect_err("refused");
        assert_eq!(err.path, temp_path(&file));
        assert_eq!(std::fs::read(&file).expect("read"), b"7\n");
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("no-such-dir").join("x");
        let err = write_atomic(&file, b"x").expect_err("refused");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn temporaries_are_hidden_and_distinct_per_name() {
        let p = Path::new("/s/desired.json");
        assert_eq!(temp_path(p), Path::new("/s/.desired.json.tmp"));
        assert_ne!(temp_path(p), temp_path(Path::new("/s/desired.yaml")));
        assert_eq!(temp_path(Path::new("epoch")), Path::new(".epoch.tmp"));
    }
}
