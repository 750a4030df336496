//! The tracing subscriber every edgefleet binary installs.

use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors on devices).
    Json,
}

/// Installs the global subscriber: the level filter from `RUST_LOG` (`default_filter`
/// when unset or invalid, e.g. `"info"`), lines to stderr (stdout stays free for command
/// output), colour codes only when stderr is a terminal (journald, files and container logs
/// show them as garbage). Call once, early in `main`.
pub fn init(format: Format, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        Format::Json => builder.json().init(),
        Format::Text => builder.init(),
    }
}
