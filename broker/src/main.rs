//! `broker`: runs the edgefleet MQTT broker until SIGTERM or ctrl-c.
//!
//! Configuration: defaults < `--config` file (`BROKER_CONFIG`) < `--listen` (`BROKER_LISTEN`).
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(about = "edgefleet MQTT broker (embedded rumqttd)")]
struct Args {
    /// TOML configuration file (see broker.toml); without it, the defaults.
    #[arg(long, env = "BROKER_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding the file's `listen`.
    #[arg(long, env = "BROKER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let mut config = match &args.config {
        Some(path) => broker::BrokerConfig::load(path)?,
        None => broker::BrokerConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let handle = broker::start(&config).context("starting the broker")?;
    tracing::info!(listen = %handle.local_addr(), "broker running; stop with SIGTERM or ctrl-c");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    runtime.block_on(shutdown_signal())?;
    // rumqttd has no stop API: returning from main ends its threads.
    tracing::info!("shutdown signal received, exiting");
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            res = tokio::signal::ctrl_c() => res.context("waiting for ctrl-c"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for ctrl-c")
    }
}
