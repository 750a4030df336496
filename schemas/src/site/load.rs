//! Loading a site: the bounds on Git input ([`SiteLimits`]), the documents of every file
//! read by kind, and the problems of a rejected commit ([`bound_problems`]).

use super::component::resolve_logging;
use super::context::Ctx;
use super::deployment::{resolve_deployment, resolve_policy};
use super::rollout::resolve_rollout;
use super::security::{check_security_spec, public_key_ok};
use super::yaml;
use super::{Deployment, Node, NodeEntry, Site, SiteDocs, Targets};
use crate::wire::DocProblem;
use serde::{Deserialize, Serialize};

/// Bounds on a site's Git input. Every one that is exceeded is a [`DocProblem`] (the
/// commit is rejected and the last good revision stays). The readers of Git trees and
/// working trees apply the size and count limits before reading a file into memory;
/// [`load_site_with`] checks them again on what it is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteLimits {
    /// Largest YAML file, bytes (default 2 MiB: 10,000 nodes in one file take about 1.1 MB).
    pub max_file_bytes: u64,
    /// Largest site (all YAML files together), bytes (default 16 MiB).
    pub max_site_bytes: u64,
    /// Most YAML files in a site (default 1,000).
    pub max_site_files: usize,
    /// Most entries (files and folders of any kind) walked in the site folder
    /// (default 10,000).
    pub max_site_entries: usize,
    /// Deepest folder nesting under the site folder (default 16).
    pub max_folder_depth: usize,
    /// Most YAML documents in one file (default 20,000).
    pub max_docs_per_file: usize,
    /// Most YAML documents in a site (default 25,000).
    pub max_docs_per_site: usize,
    /// Deepest nesting of YAML sequences and mappings (default 64).
    pub max_yaml_depth: usize,
    /// Most YAML nodes one file may produce, each alias counting what it copies
    /// (default 500,000; a Node document is about 15).
    pub max_yaml_nodes: usize,
    /// Most bytes of scalar text one file may produce, aliases included (default 4 MiB).
    pub max_yaml_text_bytes: usize,
    /// Largest desired document the LO may publish to one node, bytes (default 252 KiB:
    /// 4 KiB below the embedded broker's default packet limit of 256 KiB, room for the
    /// topic and the MQTT header); must stay below every packet limit on the way (the
    /// LO's `max_packet_size`, the broker's, the agents').
    pub max_desired_bytes: usize,
    /// Most problems reported for one commit; the rest are counted in a last entry
    /// (default 50).
    pub max_problems: usize,
}

/// Why a set of [`SiteLimits`] cannot be used ([`SiteLimits::validate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A limit is zero (the name of the limit).
    #[error("limits.{0} must be positive")]
    NotPositive(&'static str),
    /// `max_yaml_depth` is above what the loader's recursion allows.
    #[error("limits.max_yaml_depth must be at most 256")]
    YamlTooDeep,
    /// `max_folder_depth` is above what the readers' stacks allow.
    #[error("limits.max_folder_depth must be at most 64")]
    FoldersTooDeep,
    /// `max_problems` leaves no room in the site status for the closing count entry.
    #[error("limits.max_problems must be at most 99")]
    TooManyProblems,
}

impl Default for SiteLimits {
    fn default() -> Self {
        SiteLimits {
            max_file_bytes: 2 * 1024 * 1024,
            max_site_bytes: 16 * 1024 * 1024,
            max_site_files: 1000,
            max_site_entries: 10_000,
            max_folder_depth: 16,
            max_docs_per_file: 20_000,
            max_docs_per_site: 25_000,
            max_yaml_depth: 64,
            max_yaml_nodes: 500_000,
            max_yaml_text_bytes: 4 * 1024 * 1024,
            max_desired_bytes: 252 * 1024,
            max_problems: 50,
        }
    }
}

impl SiteLimits {
    fn yaml(&self) -> yaml::Limits {
        yaml::Limits {
            max_depth: self.max_yaml_depth,
            max_nodes: self.max_yaml_nodes,
            max_text_bytes: self.max_yaml_text_bytes,
            max_docs: self.max_docs_per_file,
        }
    }

    /// Checks the limits themselves (all positive, depth within what the loader's fixed
    /// stacks allow).
    pub fn validate(&self) -> Result<(), LimitsError> {
        let counts = [
            ("max_file_bytes", self.max_file_bytes as usize),
            ("max_site_bytes", self.max_site_bytes as usize),
            ("max_site_files", self.max_site_files),
            ("max_site_entries", self.max_site_entries),
            ("max_folder_depth", self.max_folder_depth),
            ("max_docs_per_file", self.max_docs_per_file),
            ("max_docs_per_site", self.max_docs_per_site),
            ("max_yaml_depth", self.max_yaml_depth),
            ("max_yaml_nodes", self.max_yaml_nodes),
            ("max_yaml_text_bytes", self.max_yaml_text_bytes),
            ("max_desired_bytes", self.max_desired_bytes),
            ("max_problems", self.max_problems),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, v)| *v == 0) {
            return Err(LimitsError::NotPositive(name));
        }
        // serde deserialisation and `Value` drop recurse once per level: keep them shallow.
        if self.max_yaml_depth > 256 {
            return Err(LimitsError::YamlTooDeep);
        }
        if self.max_folder_depth > 64 {
            return Err(LimitsError::FoldersTooDeep);
        }
        // The LO's site status lists at most 100 problems: the loader's list, with its
        // closing `… and N more problems` entry, must fit whole.
        if self.max_problems > 99 {
            return Err(LimitsError::TooManyProblems);
        }
        Ok(())
    }

    /// The problem of a file above `max_file_bytes`.
    pub fn file_too_large(&self, file: &str, size: u64) -> DocProblem {
        DocProblem {
            file: crate::names::shorten(file, 256),
            line: None,
            field: None,
            message: format!(
                "file is {size} bytes, above the {} byte limit (max_file_bytes)",
                self.max_file_bytes
            ),
        }
    }

    /// The problem of a site above `max_site_bytes`, noticed at `file`.
    pub fn site_too_large(&self, file: &str) -> DocProblem {
        DocProblem {
            file: crate::names::shorten(file, 256),
            line: None,
            field: None,
            message: format!(
                "the site's YAML files exceed {} bytes together (max_site_bytes)",
                self.max_site_bytes
            ),
        }
    }

    /// The problem of a site with more than `max_site_files` YAML files.
    pub fn too_many_files(&self, file: &str) -> DocProblem {
        DocProblem {
            file: crate::names::shorten(file, 256),
            line: None,
            field: None,
            message: format!(
                "more than {} YAML files in the site (max_site_files)",
                self.max_site_files
            ),
        }
    }
}

/// Caps what a rejection carries: at most `max` problems, each with a bounded file, field
/// and message, and a last entry counting the ones left out. Problems end up in the LO's
/// retained status, which must stay far below the MQTT packet limit.
pub fn bound_problems(mut problems: Vec<DocProblem>, max: usize) -> Vec<DocProblem> {
    let max = max.max(1);
    let extra = problems.len().saturating_sub(max);
    problems.truncate(max);
    for p in &mut problems {
        p.file = crate::names::shorten(&p.file, 256);
        p.field = p.field.as_deref().map(|f| crate::names::shorten(f, 256));
        p.message = crate::names::shorten(&p.message, 512);
    }
    if extra > 0 {
        let file = problems.last().map(|p| p.file.clone()).unwrap_or_default();
        problems.push(DocProblem {
            file,
            line: None,
            field: None,
            message: format!("… and {extra} more problems"),
        });
    }
    problems
}

/// Validates every document of a site with the default [`SiteLimits`]; see
/// [`load_site_with`].
pub fn load_site<'a, I>(site: &str, files: I) -> Result<SiteDocs, Vec<DocProblem>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    load_site_with(site, files, &SiteLimits::default())
}

/// Validates every document of a site within `limits`. `files` are `(path, content)` pairs
/// of the YAML files under the site folder; `site` is the folder's name. Any problem rejects
/// the whole set: the caller keeps what it served before. The problems returned are
/// bounded ([`bound_problems`]).
pub fn load_site_with<'a, I>(
    site: &str,
    files: I,
    limits: &SiteLimits,
) -> Result<SiteDocs, Vec<DocProblem>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    load_site_inner(site, files, limits).map_err(|p| bound_problems(p, limits.max_problems))
}

fn load_site_inner<'a, I>(
    site: &str,
    files: I,
    limits: &SiteLimits,
) -> Result<SiteDocs, Vec<DocProblem>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut problems = Vec::new();
    let mut docs = SiteDocs::default();
    let mut deployment_files: Vec<(Deployment, Ctx<'_>)> = Vec::new();
    // The Site's `spec.logging`, resolved: the logging of every component that sets none.
    let mut site_logging = None;
    let yaml_limits = limits.yaml();
    let mut parsed: Vec<(&str, Result<Vec<yaml::YamlDoc>, yaml::YamlError>)> = Vec::new();
    let (mut site_bytes, mut file_count, mut doc_count) = (0u64, 0usize, 0usize);
    for (path, src) in files {
        file_count += 1;
        if file_count > limits.max_site_files {
            problems.push(limits.too_many_files(path));
            break;
        }
        let size = src.len() as u64;
        if size > limits.max_file_bytes {
            problems.push(limits.file_too_large(path, size));
            continue;
        }
        site_bytes += size;
        if site_bytes > limits.max_site_bytes {
            problems.push(limits.site_too_large(path));
            break;
        }
        let result = yaml::parse_with(src, &yaml_limits);
        if let Ok(docs) = &result {
            doc_count += docs.len();
            if doc_count > limits.max_docs_per_site {
                problems.push(DocProblem {
                    file: crate::names::shorten(path, 256),
                    line: docs.first().map(|d| d.line),
                    field: None,
                    message: format!(
                        "more than {} YAML documents in the site (max_docs_per_site)",
                        limits.max_docs_per_site
                    ),
                });
                break;
            }
        }
        parsed.push((path, result));
    }
    for (file, result) in &parsed {
        let ydocs = match result {
            Ok(d) => d,
            Err(e) => {
                problems.push(DocProblem {
                    file: (*file).to_owned(),
                    line: Some(e.line),
                    field: None,
                    message: format!("invalid YAML: {}", e.message),
                });
                continue;
            }
        };
        for ydoc in ydocs {
            let ctx = Ctx { file, doc: ydoc };
            let kind = ydoc
                .value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("");
            match kind {
                "Deployment" => {
                    if let Some(d) = ctx.parse::<Deployment>(&mut problems) {
                        deployment_files.push((d, ctx));
                    }
                }
                "Node" => {
                    if let Some(n) = ctx.parse::<Node>(&mut problems) {
                        if let Some(key) = &n.spec.public_key {
                            if let Err(e) = public_key_ok(key) {
                                ctx.problem(&mut problems, "spec.publicKey", e.to_string());
                            }
                        }
                        if ctx.name_ok(&n.metadata.name, &mut problems) {
                            if let Some(prev) = docs.nodes.get(&n.metadata.name) {
                                ctx.problem(
                                    &mut problems,
                                    "metadata.name",
                                    format!(
                                        "node `{}` is already declared in {}",
                                        n.metadata.name, prev.file
                                    ),
                                );
                            } else {
                                docs.nodes.insert(
                                    n.metadata.name.clone(),
                                    NodeEntry {
                                        labels: n.metadata.labels.clone(),
                                        file: (*file).to_owned(),
                                        public_key: n.spec.public_key.clone(),
                                    },
                                );
                            }
                        }
                    }
                }
                "Site" => {
                    if let Some(s) = ctx.parse::<Site>(&mut problems) {
                        if s.metadata.name != site {
                            ctx.problem(
                                &mut problems,
                                "metadata.name",
                                format!(
                                    "Site is named `{}` but lives in the folder of site `{site}`",
                                    s.metadata.name
                                ),
                            );
                        } else if docs.site.is_some() {
                            ctx.problem(&mut problems, "kind", "a second Site document".into());
                        } else {
                            if let Some(p) = s.spec.max_delete_percent {
                                if p > 100 {
                                    ctx.problem(
                                        &mut problems,
                                        "spec.maxDeletePercent",
                                        format!("{p} is not a percentage (0 to 100)"),
                                    );
                                }
                            }
                            if let Some(policy) = &s.spec.policy {
                                resolve_policy(&ctx, "spec.policy", policy, &[], &mut problems);
                            }
                            if let Some(rollout) = &s.spec.rollout {
                                resolve_rollout(
                                    &ctx,
                                    "spec.rollout",
                                    Some(rollout),
                                    None,
                                    &mut problems,
                                );
                            }
                            if let Some(sec) = &s.spec.security {
                                check_security_spec(&ctx, sec, &mut problems);
                            }
                            if let Some(logging) = &s.spec.logging {
                                site_logging =
                                    resolve_logging(&ctx, "spec.logging", logging, &mut problems);
                            }
                            docs.site = Some(s);
                        }
                    }
                }
                other => ctx.problem(
                    &mut problems,
                    "kind",
                    if other.is_empty() {
                        "missing `kind` (one of Deployment, Node, Site)".to_owned()
                    } else {
                        format!("unknown kind `{other}` (expected Deployment, Node or Site)")
                    },
                ),
            }
        }
    }
    let site_spec = docs.spec();
    let site_policy = site_spec.policy.clone().unwrap_or_default();
    let auto_enroll = site_spec.enrollment.as_ref().is_some_and(|e| e.auto);
    let security = site_spec.security.clone().unwrap_or_default();
    for (d, ctx) in &deployment_files {
        let Some(resolved) = resolve_deployment(
            ctx,
            d,
            &site_policy,
            site_spec.rollout.as_ref(),
            &security,
            site_logging.as_ref(),
            &mut problems,
        ) else {
            continue;
        };
        if let Targets::Nodes(nodes) = &resolved.targets {
            if !auto_enroll {
                for (i, n) in nodes.iter().enumerate() {
                    if !docs.nodes.contains_key(n) {
                        ctx.problem(
                            &mut problems,
                            &format!("spec.nodes[{i}]"),
                            format!("node `{n}` is not declared by a Node document (and the Site does not allow auto-enrollment)"),
                        );
                    }
                }
            }
        }
        if let Some(prev) = docs.deployments.get(&resolved.name) {
            ctx.problem(
                &mut problems,
                "metadata.name",
                format!(
                    "deployment `{}` is already declared in {}",
                    resolved.name, prev.file
                ),
            );
            continue;
        }
        docs.deployments.insert(resolved.name.clone(), resolved);
    }
    if problems.is_empty() {
        Ok(docs)
    } else {
        problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Err(problems)
    }
}

/// Parses a YAML stream into JSON values (one per non-empty document), with the same
/// scalar rules as [`load_site`]. Used to validate Git documents against the JSON Schemas.
pub fn parse_yaml_values(src: &str) -> Result<Vec<serde_json::Value>, DocProblem> {
    yaml::parse(src)
        .map(|docs| docs.into_iter().map(|d| d.value).collect())
        .map_err(|e| DocProblem {
            file: String::new(),
            line: Some(e.line),
            field: None,
            message: e.message,
        })
}
