//! `en-agent`: thin binary edge — flags, config, logging, signals, then [`en_agent::run`].

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use en_agent::runtime::docker::DockerRuntime;
use schemas::sign::Ed25519SigningKey;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "en-agent", about = "edgefleet edge-node agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (defaults < --config file < EN_* environment < flags).
    Run(Box<RunArgs>),
    /// Check the agent's dependencies with the same configuration as `run`: the Docker
    /// endpoint answers /_ping within 3 s and the state directory is readable. Exit 0 or 1
    /// with one line on stderr. Writes nothing. For container healthchecks (FROM scratch).
    Healthcheck(Box<RunArgs>),
    /// Make this node's report signing key: writes the private key (base64 of the 32-byte
    /// seed) to FILE with mode 0600, refusing to overwrite, and prints the public key line
    /// for the Node document (`spec.publicKey`). Point `report_signing_key_file` at FILE.
    Keygen {
        /// Where to write the private key.
        #[arg(long, default_value = "report-signing.key")]
        out: PathBuf,
        /// Also write the public key (base64, one line) to this file: what an agent's
        /// `public_key_file` reads when the key is an LO's.
        #[arg(long)]
        public_out: Option<PathBuf>,
        /// When `--out` already holds a valid key, keep it and (re)write the other files
        /// from it instead of failing: for a one-shot service run at every start.
        #[arg(long)]
        if_missing: bool,
    },
    /// Print the version.
    Version,
}

/// Exit code of a refused configuration (flags, file, environment, key files).
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// TOML config file (see en-agent.example.toml).
    #[arg(long, short = 'c', env = "EN_CONFIG")]
    config: Option<PathBuf>,
    /// Site name.
    #[arg(long)]
    site: Option<String>,
    /// Node name.
    #[arg(long)]
    node: Option<String>,
    /// mqtt://[user:pass@]host:port or mqtts://…
    #[arg(long)]
    broker: Option<String>,
    /// State directory.
    #[arg(long)]
    state_dir: Option<String>,
    /// Docker socket (unix:///var/run/docker.sock).
    #[arg(long)]
    docker_host: Option<String>,
    /// Topic root.
    #[arg(long)]
    topic_root: Option<String>,
    /// Heartbeat interval (e.g. 10s).
    #[arg(long)]
    heartbeat: Option<String>,
    /// Resync interval (e.g. 30s).
    #[arg(long)]
    resync: Option<String>,
    /// Base64 ed25519 key desired documents must be signed with.
    #[arg(long)]
    public_key: Option<String>,
    /// Other settings as key=value (any config file key).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// Logs go to stderr (stdout stays free for command output), `RUST_LOG` or `info`, with
/// colour codes only when stderr is a terminal (`edge_io::trace`).
fn init_logging(format: LogFormat) {
    edge_io::trace::init(
        match format {
            LogFormat::Json => edge_io::trace::Format::Json,
            LogFormat::Text => edge_io::trace::Format::Text,
        },
        "info",
    );
}

fn flags(args: &RunArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for (k, v) in [
        ("site", &args.site),
        ("node", &args.node),
        ("broker", &args.broker),
        ("state_dir", &args.state_dir),
        ("docker_host", &args.docker_host),
        ("topic_root", &args.topic_root),
        ("heartbeat", &args.heartbeat),
        ("resync", &args.resync),
        ("public_key", &args.public_key),
    ] {
        if let Some(v) = v {
            m.insert(k.to_owned(), v.clone());
        }
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        m.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(m)
}

/// How long `healthcheck` waits for Docker.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Defaults < file < environment < flags, as `run` and `healthcheck` both see them.
fn load_config(args: &RunArgs) -> anyhow::Result<en_agent::Config> {
    let file = match &args.config {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    Ok(en_agent::resolve(file.as_deref(), &env, &flags(args)?)?)
}

async fn shutdown_signal(token: CancellationToken) {
    edge_io::shutdown::signal().await;
    tracing::info!("shutting down (containers keep running)");
    token.cancel();
}

/// Creates `path` with `text`, mode 0600 when `secret`; `create_new`: never replaces a file.
fn write_new(path: &std::path::Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "creating {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes `text` to `path` through a temp file and a rename (derived files, rewritten).
fn replace_file(path: &std::path::Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, text, secret)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// The key in `out`, or a new one written there (0600, never overwriting a file).
fn keygen(out: &std::path::Path, if_missing: bool) -> anyhow::Result<(Ed25519SigningKey, bool)> {
    use std::io::Read as _;
    if if_missing && out.exists() {
        let text = std::fs::read_to_string(out)
            .with_context(|| format!("reading the existing key {}", out.display()))?;
        let key = schemas::sign::signing_key_from_base64(&text)
            .with_context(|| format!("{} exists but is not a key", out.display()))?;
        return Ok((key, false));
    }
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom")?;
    let key = Ed25519SigningKey::from_bytes(&seed);
    write_new(
        out,
        &format!("{}\n", schemas::sign::signing_key_to_base64(&key)),
        true,
    )?;
    Ok((key, true))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Version => {
            println!("en-agent {}", en_agent::VERSION);
            return Ok(());
        }
        Command::Keygen {
            out,
            public_out,
            if_missing,
        } => {
            let (key, created) = keygen(&out, if_missing)?;
            let public = schemas::sign::verifying_key_to_base64(&key.verifying_key());
            if let Some(p) = &public_out {
                replace_file(p, &format!("{public}\n"), false)?;
            }
            eprintln!(
                "private key {} {} (mode 0600): set report_signing_key_file to it",
                if created { "written to" } else { "kept in" },
                out.display()
            );
            println!("# the Node document of this node (Git):");
            println!("spec.publicKey: {public}");
            return Ok(());
        }
        Command::Healthcheck(args) => {
            let result = load_config(&args)
                .map_err(|e| format!("config: {e:#}"))
                .and_then(|c| {
                    en_agent::health::check(&c, HEALTH_TIMEOUT).map_err(|e| e.to_string())
                });
            match result {
                Ok(line) => {
                    eprintln!("healthy: {line}");
                    return Ok(());
                }
                Err(reason) => {
                    eprintln!("unhealthy: {reason}");
                    std::process::exit(1);
                }
            }
        }
        Command::Run(args) => args,
    };
    init_logging(args.log_format);
    // A refused configuration exits 2 with one line, before anything starts: a supervisor
    // restarting it would only repeat the same error.
    let config = match load_config(&args).and_then(|c| {
        c.keys()?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration: {e:#}");
            std::process::exit(i32::from(EXIT_CONFIG));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Registry credentials were read (bounded) while resolving the configuration; the
        // log names hosts only, never a credential.
        for what in config.registry_auth.ignored() {
            tracing::warn!(
                file = %config.registry_auth_file.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                ignored = %what,
                "registry_auth_file: credential helpers are not run by en-agent; put the credentials in auths or in [[registries]]"
            );
        }
        if !config.registry_auth.is_empty() {
            tracing::info!(hosts = ?config.registry_auth.hosts(), "registry credentials loaded");
        }
        let docker = DockerRuntime::new(&config.docker_host, config.disk_path.clone())?
            .with_registry_auth(config.registry_auth.clone());
        tracing::info!(
            site = %config.site,
            node = %config.node,
            broker = %config.broker.as_ref().map_or("none (offline)".to_owned(), ToString::to_string),
            state_dir = %config.state_dir.display(),
            version = en_agent::VERSION,
            "en-agent starting"
        );
        let token = CancellationToken::new();
        tokio::spawn(shutdown_signal(token.clone()));
        en_agent::run(config, Arc::new(docker), token).await?;
        Ok(())
    })
}
