//! Each `lo` one-shot command run to its output: what it prints on stdout and stderr, and
//! its exit code. `main.rs` parses the flags and calls these; a `CliError` it gets back is
//! printed there as `error: …` with exit code 1.

use super::{CliError, Observed};
use crate::config::{self, ConfigError};
use crate::preview::short;
use schemas::site::SiteLimits;
use schemas::DocProblem;
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// How long `lo plan` waits for one more retained message before it stops reading.
const OBSERVE_QUIET: Duration = Duration::from_millis(700);
/// The longest `lo plan` reads a broker.
const OBSERVE_MAX: Duration = Duration::from_secs(15);

/// Formats problems as `file:line: field: message` lines.
pub fn format_problems(problems: &[DocProblem]) -> String {
    problems
        .iter()
        .map(|p| {
            let mut s = p.file.clone();
            if let Some(l) = p.line {
                s.push_str(&format!(":{l}"));
            }
            if let Some(f) = &p.field {
                s.push_str(&format!(": {f}"));
            }
            format!("{s}: {}\n", p.message)
        })
        .collect()
}

/// The `[limits]` of the LO's configuration for `lo validate` and `lo plan`: the TOML
/// `file` text, then `LO_LIMITS__*` in `env`, over the defaults — the same layers `lo run`
/// reads, so the checks refuse what the LO would refuse. Other keys of the file are read
/// but not needed here.
pub fn limits(
    file: Option<&str>,
    env: &HashMap<String, String>,
) -> Result<SiteLimits, ConfigError> {
    let cfg = config::resolve(file, env, &[])?;
    cfg.limits.validate()?;
    Ok(cfg.limits)
}

/// `lo validate`: `<site_path>: ok (…)` and exit 0, or the problems on stderr and exit 1.
/// `limits` are the LO's `[limits]` (`lo validate --config`), so it refuses what `lo run`
/// would refuse.
pub fn validate(
    repo: &Path,
    site: &str,
    site_path: &str,
    limits: &SiteLimits,
) -> Result<ExitCode, CliError> {
    match super::validate_with(repo, site, site_path, limits) {
        Ok(docs) => {
            println!(
                "{site_path}: ok ({} deployments, {} nodes)",
                docs.deployments.len(),
                docs.nodes.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(CliError::Invalid(problems)) => {
            eprint!("{}", format_problems(&problems));
            eprintln!("{site_path}: {} problem(s)", problems.len());
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e),
    }
}

/// What `lo plan` compares and how it prints.
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest<'a> {
    /// Repository working tree.
    pub repo: &'a Path,
    /// Site name.
    pub site: &'a str,
    /// Site folder in the working tree.
    pub site_path: &'a str,
    /// Compare against the retained state on this broker (else against nothing running).
    pub broker: Option<&'a str>,
    /// For an `mqtts://` broker: the CA certificates to trust.
    pub tls_ca_file: Option<&'a Path>,
    /// Topic root.
    pub topic_root: &'a str,
    /// Print JSON instead of text.
    pub json: bool,
    /// Bounds on the site's files and documents (the LO's `[limits]`).
    pub limits: &'a SiteLimits,
}

/// `lo plan`: prints the preview; exit 0 without changes, 2 with changes, 1 when the site
/// does not validate (the problems on stderr).
pub async fn plan(req: PlanRequest<'_>) -> Result<ExitCode, CliError> {
    let topics = schemas::Topics::new(req.topic_root);
    let observed: Observed = match req.broker {
        Some(url) => {
            let url: schemas::BrokerUrl = url
                .parse()
                .map_err(|e| CliError::BrokerAddress(config::broker_error(url, &e)))?;
            super::observe_broker(
                &url,
                req.tls_ca_file,
                &topics,
                req.site,
                OBSERVE_QUIET,
                OBSERVE_MAX,
                super::MAX_OBSERVED_NODES,
            )
            .await?
        }
        None => Default::default(),
    };
    match super::plan_worktree(
        req.repo,
        req.site,
        req.site_path,
        &observed,
        req.broker.is_none(),
        req.limits,
    ) {
        Ok(plan) => {
            if req.json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{plan}");
            }
            Ok(if plan.has_changes() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(CliError::Invalid(problems)) => {
            eprint!("{}", format_problems(&problems));
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e),
    }
}

/// `lo acl`: prints the ACL of `site` for `nodes` and, with `repo`, the nodes of the site's
/// Node documents. Exit 1 when that site does not validate, 2 when a name cannot be
/// written in an ACL.
pub fn acl(
    site: &str,
    root: &str,
    repo: Option<&Path>,
    site_path: &str,
    mut nodes: Vec<String>,
    lo_user: Option<String>,
) -> Result<ExitCode, CliError> {
    if let Some(repo) = repo {
        match super::validate(repo, site, site_path) {
            Ok(docs) => nodes.extend(docs.nodes.keys().cloned()),
            Err(CliError::Invalid(problems)) => {
                eprint!("{}", format_problems(&problems));
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e),
        }
    }
    let lo_user = lo_user.unwrap_or_else(|| format!("lo-{site}"));
    match super::mosquitto_acl(site, root, &lo_user, &nodes) {
        Ok(acl) => {
            print!("{acl}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `lo history`: the last `limit` audit entries of the LO with this state directory, for
/// one node and/or deployment, one per line (JSON lines with `json`).
pub fn history(
    state_dir: &Path,
    node: Option<&str>,
    deployment: Option<&str>,
    limit: usize,
    json: bool,
) -> Result<ExitCode, CliError> {
    let entries = crate::audit::history(&state_dir.join("audit"), node, deployment, limit)
        .map_err(|source| CliError::AuditLog {
            dir: state_dir.to_owned(),
            source,
        })?;
    for e in entries {
        if json {
            println!("{}", serde_json::to_string(&e)?);
        } else {
            let mut who = Vec::new();
            if let Some(n) = &e.node {
                who.push(format!("node={n}"));
            }
            if let Some(d) = &e.deployment {
                who.push(format!("deployment={d}"));
            }
            if let Some(g) = e.generation {
                who.push(format!("gen={g}"));
            }
            if let Some(c) = &e.commit {
                who.push(format!("commit={}", short(c)));
            }
            println!("{} {:<9} {} {}", e.at, e.kind, who.join(" "), e.message);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `lo healthcheck`: GETs `url`, by default `/readyz` on the `http_listen` that the
/// configuration file and `env` resolve to. Exit 0 on a 2xx answer, 1 with the one-line
/// reason on stderr. No runtime, no threads.
pub fn healthcheck(
    url: Option<String>,
    config_file: Option<&Path>,
    env: &HashMap<String, String>,
    timeout: Duration,
) -> ExitCode {
    let url = match url {
        Some(u) => u,
        None => {
            let file = match config_file.map(std::fs::read_to_string).transpose() {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("healthcheck: reading the configuration: {e}");
                    return ExitCode::from(1);
                }
            };
            match config::resolve(file.as_deref(), env, &[]) {
                Ok(cfg) => crate::healthcheck::default_url(&cfg.http_listen),
                Err(e) => {
                    eprintln!("healthcheck: configuration: {e}");
                    return ExitCode::from(1);
                }
            }
        }
    };
    match crate::healthcheck::check(&url, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            ExitCode::from(1)
        }
    }
}

/// A configuration that cannot work: the reason (never a password) and exit code 2 (1 is a
/// failure at run time).
pub fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {}", schemas::redact_urls_in(&e.to_string()));
    ExitCode::from(2)
}

/// `lo keygen`: prints a new key pair, 32 bytes from the kernel's CSPRNG as the ed25519 seed.
pub fn keygen() -> ExitCode {
    use std::io::Read;
    let mut seed = [0u8; 32];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed)) {
        eprintln!("error: cannot read /dev/urandom: {e}");
        return ExitCode::from(1);
    }
    let key = schemas::sign::Ed25519SigningKey::from_bytes(&seed);
    println!("# lo (keep secret): LO_SIGNING_KEY or signing_key in the LO config");
    println!(
        "signing_key = \"{}\"",
        schemas::sign::signing_key_to_base64(&key)
    );
    println!("# every en-agent: EN_PUBLIC_KEY or public_key in the agent config");
    println!(
        "public_key = \"{}\"",
        schemas::sign::verifying_key_to_base64(&key.verifying_key())
    );
    ExitCode::SUCCESS
}
