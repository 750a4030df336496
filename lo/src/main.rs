//! The `lo` binary: flags, configuration, telemetry, then the library (`lo run` in
//! [`lo::app`], the one-shot commands in [`lo::cli::commands`]).

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lo::cli::commands::{self, config_error, PlanRequest};
use lo::config::{self, LogFormat};
use schemas::site::SiteLimits;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "lo",
    version,
    about = "edgefleet local orchestrator: Git to per-node desired state, and back"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the orchestrator.
    Run(RunArgs),
    /// Validate a site in a working tree; exit 1 with the errors.
    Validate {
        /// The LO's configuration file (TOML): its `[limits]` apply, as in `lo run`
        /// (`LO_LIMITS__*` in the environment too).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Repository working tree.
        #[arg(long)]
        repo: PathBuf,
        /// Site name.
        #[arg(long)]
        site: String,
        /// Site folder (default sites/<site>).
        #[arg(long)]
        site_path: Option<String>,
    },
    /// Show what would change: exit 0 no changes, 2 changes, 1 error.
    Plan {
        /// The LO's configuration file (TOML): its `[limits]` apply, as in `lo run`
        /// (`LO_LIMITS__*` in the environment too).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Repository working tree.
        #[arg(long)]
        repo: PathBuf,
        /// Site name.
        #[arg(long)]
        site: String,
        /// Site folder (default sites/<site>).
        #[arg(long)]
        site_path: Option<String>,
        /// Plan against the retained status on this broker (else against nothing running).
        /// Read from `LO_BROKER` when not given, so a password need not be on the command
        /// line (`ps`): inside the LO's container, `lo plan` uses the LO's broker login.
        #[arg(long, env = "LO_BROKER", hide_env_values = true)]
        broker: Option<String>,
        /// For an `mqtts://` broker: trust the CA certificates in this PEM file (default: the
        /// system store).
        #[arg(long)]
        tls_ca_file: Option<PathBuf>,
        /// Topic root.
        #[arg(long, default_value = "fleet")]
        topic_root: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print a Mosquitto ACL (`acl_file`) for a site: the LO user writes desired documents
    /// and `lo/…`, each node user `<node>@<site>` writes only its own reports and reads only
    /// its own desired document.
    Acl {
        /// Site name.
        #[arg(long)]
        site: String,
        /// Topic root.
        #[arg(long, default_value = "fleet")]
        root: String,
        /// Take the nodes from the site's Node documents in this working tree.
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Site folder (default sites/<site>).
        #[arg(long)]
        site_path: Option<String>,
        /// A node (repeatable; added to those from --repo).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// The LO's broker username (default lo-<site>).
        #[arg(long)]
        lo_user: Option<String>,
    },
    /// Generate an ed25519 key pair for signing desired documents: the seed goes in the LO's
    /// `signing_key`, the public key in every agent's `public_key`.
    Keygen,
    /// Show the last audit entries for a node or deployment.
    History {
        /// State directory of the LO.
        #[arg(long, env = "LO_STATE_DIR", default_value = "/var/lib/edgefleet-lo")]
        state_dir: PathBuf,
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        /// Only this deployment.
        #[arg(long)]
        deployment: Option<String>,
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Check a running LO over HTTP (for images without a shell): exit 0 on a 2xx answer,
    /// 1 otherwise with the reason on stderr.
    Healthcheck {
        /// URL to GET (default: /readyz on http_listen from --config / LO_HTTP_LISTEN,
        /// 0.0.0.0 as 127.0.0.1).
        #[arg(long)]
        url: Option<String>,
        /// Configuration file to read http_listen from.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Give up after this long.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Site name.
    #[arg(long)]
    site: Option<String>,
    /// Git repository (path or URL).
    #[arg(long)]
    repo: Option<String>,
    /// Branch.
    #[arg(long)]
    branch: Option<String>,
    /// Broker URL.
    #[arg(long)]
    broker: Option<String>,
    /// State directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// HTTP listen address.
    #[arg(long)]
    http_listen: Option<String>,
    /// Accept a commit that removes every deployment.
    #[arg(long)]
    allow_empty: bool,
    /// Accept a commit that removes more than maxDeletePercent of the deployments.
    #[arg(long)]
    allow_mass_delete: bool,
    /// Log format.
    #[arg(long)]
    log_format: Option<String>,
}

/// Logs to stderr, `RUST_LOG` or `info`, colours only at a terminal (`edge_io::trace`).
fn init_tracing(format: LogFormat) {
    edge_io::trace::init(
        match format {
            LogFormat::Json => edge_io::trace::Format::Json,
            LogFormat::Text => edge_io::trace::Format::Text,
        },
        "info",
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Healthcheck {
        url,
        config,
        timeout,
    } = &cli.command
    {
        // No runtime, no threads: one GET.
        return healthcheck(url.clone(), config.as_deref(), *timeout);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Errors of git2 and of the config layers may carry a URL with its password.
            eprintln!("error: {}", schemas::redact_urls_in(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

fn healthcheck(url: Option<String>, config: Option<&Path>, timeout: Duration) -> ExitCode {
    let env: HashMap<String, String> = std::env::vars().collect();
    commands::healthcheck(url, config, &env, timeout)
}

/// The site folder: `--site-path`, or `sites/<site>`.
fn site_folder(site: &str, site_path: Option<String>) -> String {
    site_path.unwrap_or_else(|| format!("sites/{site}"))
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let code = match cli.command {
        Command::Healthcheck {
            url,
            config,
            timeout,
        } => healthcheck(url, config.as_deref(), timeout),
        Command::Keygen => commands::keygen(),
        Command::Acl {
            site,
            root,
            repo,
            site_path,
            nodes,
            lo_user,
        } => {
            let path = site_folder(&site, site_path);
            commands::acl(&site, &root, repo.as_deref(), &path, nodes, lo_user)?
        }
        Command::Run(args) => return run(args).await,
        Command::Validate {
            config,
            repo,
            site,
            site_path,
        } => {
            let limits = match site_limits(config.as_deref())? {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            commands::validate(&repo, &site, &site_folder(&site, site_path), &limits)?
        }
        Command::Plan {
            config,
            repo,
            site,
            site_path,
            broker,
            tls_ca_file,
            topic_root,
            format,
        } => {
            let limits = match site_limits(config.as_deref())? {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let path = site_folder(&site, site_path);
            commands::plan(PlanRequest {
                repo: &repo,
                site: &site,
                site_path: &path,
                broker: broker.as_deref(),
                tls_ca_file: tls_ca_file.as_deref(),
                topic_root: &topic_root,
                json: matches!(format, Format::Json),
                limits: &limits,
            })
            .await?
        }
        Command::History {
            state_dir,
            node,
            deployment,
            limit,
            json,
        } => commands::history(
            &state_dir,
            node.as_deref(),
            deployment.as_deref(),
            limit,
            json,
        )?,
    };
    Ok(code)
}

/// The `[limits]` for `lo validate` / `lo plan` (an unusable configuration: exit 2).
fn site_limits(config: Option<&Path>) -> anyhow::Result<Result<SiteLimits, ExitCode>> {
    let file = match config {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    Ok(commands::limits(file.as_deref(), &env).map_err(|e| config_error(&e)))
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut flags = Vec::new();
    let mut set = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            flags.push((k.to_owned(), v));
        }
    };
    set("site", args.site);
    set("repo", args.repo);
    set("branch", args.branch);
    set("broker", args.broker);
    set(
        "state_dir",
        args.state_dir.map(|p| p.to_string_lossy().into_owned()),
    );
    set("http_listen", args.http_listen);
    set("log_format", args.log_format);
    if args.allow_empty {
        set("allow_empty", Some("true".into()));
    }
    if args.allow_mass_delete {
        set("allow_mass_delete", Some("true".into()));
    }
    // A configuration that cannot work exits with 2 (1 is a failure at run time), with the
    // reason and never a password.
    let cfg = match config::resolve(file.as_deref(), &env, &flags) {
        Ok(c) => c,
        Err(e) => return Ok(config_error(&e)),
    };
    init_tracing(cfg.log_format);
    if let Err(e) = cfg.validate() {
        return Ok(config_error(&e));
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        edge_io::shutdown::signal().await;
        tracing::info!("signal received");
        signal.cancel();
    });
    match lo::app::run(cfg, shutdown).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(lo::app::AppError::Config(e)) => Ok(config_error(&e)),
        Err(e) => Err(e.into()),
    }
}
