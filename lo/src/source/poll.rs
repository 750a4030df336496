//! Polling a [`DesiredSource`]: the task that fetches the branch, notices which new heads
//! change the site folder, reads their files and hands them to the engine as [`SourceMsg`].

use super::{Commit, DesiredSource, SiteFiles};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// What the source task reports.
#[derive(Debug)]
pub enum SourceMsg {
    /// A commit whose site files changed (or the revision restored at start).
    Commit {
        /// The commit.
        commit: Commit,
        /// Its site files (empty when `changed` is false).
        files: SiteFiles,
        /// The revision served before a restart, read again.
        restored: bool,
        /// False for a new head that does not touch the site (not forwarded).
        changed: bool,
    },
    /// The source failed.
    Error(String),
    /// The source works again (clears a source error).
    Ok,
}

/// A source error as it may be shown: git2 errors carry the remote URL, with its token when
/// the URL has one, and this text goes to the log, the audit log and `lo/status`.
pub fn source_error(text: &str) -> SourceMsg {
    SourceMsg::Error(schemas::redact_urls_in(&schemas::shorten(text, 4096)))
}

/// A piece of blocking work on the source.
pub type SourceJob = Box<dyn FnOnce(&mut dyn DesiredSource) -> SourceMsg + Send>;

/// Polls `source` every `poll` (or when `sync` is notified, `POST /sync`) until `shutdown`:
/// first re-reads `start_commit` (the revision served before a restart, `restored`), then
/// hands the engine every new head that changes the site folder, source errors, and the
/// return to health after an error. Blocking source calls run in `spawn_blocking`.
pub async fn poll_source(
    source: Box<dyn DesiredSource>,
    site_path: String,
    start_commit: Option<String>,
    poll: Duration,
    sync: Arc<Notify>,
    tx: mpsc::Sender<SourceMsg>,
    shutdown: CancellationToken,
) {
    let source = Arc::new(Mutex::new(source));
    let blocking = |f: SourceJob| {
        let source = source.clone();
        async move {
            tokio::task::spawn_blocking(move || match source.lock() {
                Ok(mut s) => f(s.as_mut()),
                Err(_) => SourceMsg::Error("source lock poisoned".into()),
            })
            .await
            .unwrap_or_else(|e| SourceMsg::Error(e.to_string()))
        }
    };
    // The commit whose site files were last handed over (None: nothing yet).
    let mut last: Option<String> = None;
    if let Some(c) = start_commit {
        let path = site_path.clone();
        let id = c.clone();
        let msg = blocking(Box::new(move |s| match s.read_site(&id, &path) {
            Ok(files) => SourceMsg::Commit {
                commit: Commit { id, time: 0 },
                files,
                restored: true,
                changed: true,
            },
            Err(e) => source_error(&format!("cannot restore served revision: {e}")),
        }))
        .await;
        if matches!(msg, SourceMsg::Commit { .. }) {
            last = Some(c);
        }
        if tx.send(msg).await.is_err() {
            return;
        }
    }
    let mut failing = false;
    loop {
        let path = site_path.clone();
        let prev = last.clone();
        let msg = blocking(Box::new(move |s| {
            let head = match s.fetch() {
                Ok(Some(h)) => h,
                Ok(None) => return SourceMsg::Error("branch not found in the repository".into()),
                Err(e) => return source_error(&e.to_string()),
            };
            if prev.as_deref() == Some(head.id.as_str()) {
                return SourceMsg::Ok;
            }
            let changed = match &prev {
                None => true,
                Some(p) => s.changed(p, &head.id, &path).unwrap_or(true),
            };
            if !changed {
                tracing::debug!(commit = %head.id, "commit does not touch the site");
                return SourceMsg::Commit {
                    commit: head,
                    files: Default::default(),
                    restored: false,
                    changed: false,
                };
            }
            match s.read_site(&head.id, &path) {
                Ok(files) => SourceMsg::Commit {
                    commit: head,
                    files,
                    restored: false,
                    changed: true,
                },
                Err(e) => source_error(&e.to_string()),
            }
        }))
        .await;
        let forward = match &msg {
            SourceMsg::Commit {
                commit, changed, ..
            } => {
                last = Some(commit.id.clone());
                failing = false;
                *changed
            }
            SourceMsg::Error(_) => {
                failing = true;
                true
            }
            SourceMsg::Ok => {
                let was = failing;
                failing = false;
                was
            }
        };
        if forward && tx.send(msg).await.is_err() {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
            _ = sync.notified() => {}
        }
    }
}
