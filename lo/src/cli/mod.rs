//! The one-shot commands: `lo validate`, `lo plan`, `lo history`, `lo acl`, `lo keygen`,
//! `lo healthcheck`. `main.rs` parses the flags and calls [`commands`], which prints and
//! gives the exit code; the rest is the library side the tests call.
//!
//! - this file: [`validate`] a working tree as `lo run` validates a commit, and
//!   [`plan_worktree`] (the [`crate::preview`] of a working tree);
//! - [`commands`]: each command run to its output and exit code;
//! - `broker`: [`observe_broker`], what `lo plan` reads from a running site;
//! - `acl`: [`mosquitto_acl`] and [`node_username`].

mod acl;
mod broker;
pub mod commands;

pub use acl::{mosquitto_acl, node_username};
pub use broker::{observe_broker, MAX_OBSERVED_NODES};
pub use commands::format_problems;

use crate::preview::{self, NodeInput, Plan};
use crate::render;
use crate::source::{missing_site_problem, read_worktree, worktree_head, SourceError};
use schemas::site::{SiteDocs, SiteLimits};
use schemas::{DocProblem, NodeStatus, Revision};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors of the one-shot commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The working tree could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The site does not validate.
    #[error("{} problem(s) in the site", .0.len())]
    Invalid(Vec<DocProblem>),
    /// The broker could not be read.
    #[error("broker: {0}")]
    Broker(String),
    /// `--broker` is not a broker address (the text never shows a password).
    #[error("{0}")]
    BrokerAddress(String),
    /// An ACL cannot be generated for this site or node name (`what` says which).
    #[error("acl: {what}: {reason}")]
    AclName {
        /// `site` or `node`.
        what: &'static str,
        /// Why the name is refused.
        reason: schemas::NameError,
    },
    /// An ACL cannot be generated for this topic root.
    #[error("acl: root: {0}")]
    AclRoot(schemas::TopicError),
    /// The LO's broker user cannot be written in an ACL.
    #[error("acl: lo user must be non-empty, without `@`, `:` or spaces")]
    AclLoUser,
    /// The audit log could not be read.
    #[error("reading the audit log in {}", .dir.display())]
    AuditLog {
        /// The LO's state directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A result could not be written as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Validates the site in a working tree with the default [`SiteLimits`].
pub fn validate(repo: &Path, site: &str, site_path: &str) -> Result<SiteDocs, CliError> {
    validate_with(repo, site, site_path, &SiteLimits::default())
}

/// Validates the site in a working tree within `limits`, as `lo run` validates a commit:
/// the same reader rules, the same document checks, and every desired document of the
/// nodes declared in Git within `max_desired_bytes` (without a broker, announcing nodes
/// are unknown here).
pub fn validate_with(
    repo: &Path,
    site: &str,
    site_path: &str,
    limits: &SiteLimits,
) -> Result<SiteDocs, CliError> {
    if let Err(e) = schemas::validate_name(site) {
        return Err(CliError::Invalid(vec![DocProblem {
            file: schemas::shorten(site_path, 256),
            line: None,
            field: Some("site".into()),
            message: format!("invalid site name: {e}"),
        }]));
    }
    let read = read_worktree(repo, site_path, limits)?;
    if read.is_empty() {
        return Err(CliError::Invalid(vec![missing_site_problem(site_path)]));
    }
    let loaded = schemas::site::load_site_with(
        site,
        read.files.iter().map(|(p, c)| (p.as_str(), c.as_str())),
        limits,
    );
    let mut problems = read.problems;
    let docs = match loaded {
        Ok(docs) => docs,
        Err(more) => {
            problems.extend(more);
            return Err(CliError::Invalid(schemas::site::bound_problems(
                problems,
                limits.max_problems,
            )));
        }
    };
    let revision = Revision {
        commit: worktree_head(repo).unwrap_or_else(|| "0".repeat(40)),
        path: site_path.to_owned(),
    };
    let inv = render::inventory(&docs, std::iter::empty());
    let rendered = render::render(&docs, &revision, &inv, &BTreeMap::new());
    problems.extend(render::oversized_documents(
        &docs,
        site,
        &rendered,
        limits.max_desired_bytes,
    ));
    if problems.is_empty() {
        Ok(docs)
    } else {
        Err(CliError::Invalid(schemas::site::bound_problems(
            problems,
            limits.max_problems,
        )))
    }
}

/// What `lo plan` plans against, per node: last status and whether online.
pub type Observed = BTreeMap<String, (Option<NodeStatus>, bool)>;

/// Plans the site in a working tree against `observed` (empty: nothing running; nodes
/// without observation count as online so the plan shows what they would get), with the
/// wave of each node in the rollout of each deployment it would get a new spec of.
pub fn plan_worktree(
    repo: &Path,
    site: &str,
    site_path: &str,
    observed: &Observed,
    assume_online: bool,
    limits: &SiteLimits,
) -> Result<Plan, CliError> {
    let docs = validate_with(repo, site, site_path, limits)?;
    let commit = worktree_head(repo).unwrap_or_else(|| "worktree".into());
    let revision = Revision {
        commit: commit.clone(),
        path: site_path.to_owned(),
    };
    let inv = render::inventory(&docs, observed.keys().map(String::as_str));
    let rendered = render::render(&docs, &revision, &inv, &BTreeMap::new());
    let desired: BTreeMap<&str, Vec<&schemas::DesiredDeployment>> = rendered
        .iter()
        .map(|(n, d)| (n.as_str(), d.deployments.iter().map(|x| &*x.spec).collect()))
        .collect();
    // Observed nodes that are not in the site: their deployments are deleted.
    let empty: Vec<&schemas::DesiredDeployment> = Vec::new();
    let online = |n: &str| observed.get(n).map_or(assume_online, |(_, o)| *o);
    let mut inputs: Vec<(&str, NodeInput<'_>)> = Vec::new();
    for (n, ds) in &desired {
        let status = observed.get(*n).and_then(|(s, _)| s.as_ref());
        let online = online(n);
        inputs.push((
            n,
            NodeInput {
                desired: ds.as_slice(),
                observed: status,
                online,
                paced: false,
            },
        ));
    }
    for (n, (s, online)) in observed {
        if !desired.contains_key(n.as_str()) && !inv.unknown.contains(n) {
            inputs.push((
                n.as_str(),
                NodeInput {
                    desired: &empty,
                    observed: s.as_ref(),
                    online: *online,
                    paced: false,
                },
            ));
        }
    }
    let mut plan = preview::plan(site, &commit, inputs);
    // Which wave of each deployment's rollout a node is in, as the LO would start it now.
    let deployments = preview::waves::deployments(&docs, &inv, online);
    preview::waves::annotate(&mut plan, &deployments, |n| {
        observed.get(n).and_then(|(s, _)| s.as_ref())
    });
    Ok(plan)
}
