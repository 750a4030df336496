//! `broker`: runs the edgefleet MQTT broker until SIGTERM or ctrl-c; `broker healthcheck`
//! probes a running one (for `FROM scratch` images: no shell, no curl).
//!
//! Configuration: defaults < `--config` file (`BROKER_CONFIG`) < `--listen` (`BROKER_LISTEN`).
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON; no colour
//! codes unless stderr is a terminal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(about = "edgefleet MQTT broker (embedded rumqttd)")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (see broker.toml); without it, the defaults.
    #[arg(long, env = "BROKER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Listen address, overriding the file's `listen`.
    #[arg(long, env = "BROKER_LISTEN", global = true)]
    listen: Option<SocketAddr>,
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe a running broker: MQTT CONNECT, CONNACK 0 within 3 s. Exit 0 (healthy) or 1,
    /// with one line on stderr.
    Healthcheck(HealthArgs),
}

#[derive(Debug, clap::Args)]
struct HealthArgs {
    /// Broker address. Default: the configured listen address (`--listen`, the config
    /// file) with 0.0.0.0 as 127.0.0.1, else 127.0.0.1:1883.
    #[arg(long, env = "BROKER_HEALTH_ADDR")]
    addr: Option<SocketAddr>,
    /// Login. Default: the first user of the config file's `[users]`, if any.
    #[arg(long, env = "BROKER_HEALTH_USER")]
    username: Option<String>,
    /// Password of `--username`.
    #[arg(long, env = "BROKER_HEALTH_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// How long the healthcheck waits for the whole exchange.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Healthcheck(h)) = &args.command {
        match healthcheck(&args, h) {
            Ok(line) => {
                eprintln!("healthy: {line}");
                return Ok(());
            }
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                std::process::exit(1);
            }
        }
    }
    edge_io::trace::init(
        match args.log_format {
            LogFormat::Text => edge_io::trace::Format::Text,
            LogFormat::Json => edge_io::trace::Format::Json,
        },
        "info",
    );

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
    runtime
        .block_on(edge_io::shutdown::try_signal())
        .context("waiting for SIGTERM or ctrl-c")?;
    // rumqttd has no stop API: returning from main ends its threads.
    tracing::info!("shutdown signal received, exiting");
    Ok(())
}

/// `broker healthcheck`: one CONNECT/CONNACK exchange; the line to print when healthy.
fn healthcheck(args: &Args, h: &HealthArgs) -> anyhow::Result<String> {
    let config = match &args.config {
        Some(path) => Some(broker::BrokerConfig::load(path)?),
        None => None,
    };
    let addr = h.addr.unwrap_or_else(|| {
        let mut c = config.clone().unwrap_or_default();
        if let Some(listen) = args.listen {
            c.listen = listen;
        }
        c.connect_addr()
    });
    let login = match (&h.username, &h.password) {
        (Some(u), p) => Some((u.clone(), p.clone().unwrap_or_default())),
        (None, Some(_)) => anyhow::bail!("--password without --username"),
        (None, None) => config
            .as_ref()
            .and_then(|c| c.users.iter().next())
            .map(|(u, p)| (u.clone(), p.clone())),
    };
    let client_id = format!("edgefleet-healthcheck-{:016x}", random_u64());
    broker::check_health(
        addr,
        login.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        &client_id,
        HEALTH_TIMEOUT,
    )?;
    Ok(format!("{addr} answered CONNECT with CONNACK 0"))
}

/// A random number from std alone (the hasher keys are random per process).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}
