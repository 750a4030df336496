//! The shutdown signal: SIGINT (ctrl-c) or SIGTERM (what `docker stop`, systemd and
//! Kubernetes send) as a future. The caller decides what stopping means, usually by
//! cancelling its `CancellationToken`.

/// Completes at the first SIGINT or SIGTERM. Where no SIGTERM handler can be installed
/// (or off Unix) it waits for SIGINT alone; where that cannot be waited for either it
/// completes at once, so the caller shuts down rather than running unstoppable.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Like [`signal`], but a handler that cannot be installed (or waited on) is an error: for a
/// binary that would rather not start than be unstoppable.
pub async fn try_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            res = tokio::signal::ctrl_c() => res,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
