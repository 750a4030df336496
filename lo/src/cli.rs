//! The one-shot commands: `lo validate`, `lo plan`, `lo history`, `lo acl` (the library side;
//! `main.rs` parses flags and prints).

use crate::observe::Fleet;
use crate::preview::{self, NodeInput, Plan};
use crate::render;
use crate::source::{missing_site_problem, read_worktree, worktree_head, SourceError};
use schemas::site::{SiteDocs, SiteLimits};
use schemas::{BrokerUrl, DocProblem, NodeChannel, NodeStatus, Presence, Revision, Topic, Topics};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

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
    /// An ACL cannot be generated from these names.
    #[error("acl: {0}")]
    Acl(String),
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

/// What `lo plan` plans against, per node: last status and whether online.
pub type Observed = BTreeMap<String, (Option<NodeStatus>, bool)>;

/// Plans the site in a working tree against `observed` (empty: nothing running; nodes
/// without observation count as online so the plan shows what they would get).
pub fn plan_worktree(
    repo: &Path,
    site: &str,
    site_path: &str,
    observed: &Observed,
    assume_online: bool,
) -> Result<Plan, CliError> {
    let docs = validate(repo, site, site_path)?;
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
    let mut inputs: Vec<(&str, NodeInput<'_>)> = Vec::new();
    for (n, ds) in &desired {
        let (status, online) = observed
            .get(*n)
            .map(|(s, o)| (s.as_ref(), *o))
            .unwrap_or((None, assume_online));
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
    Ok(preview::plan(site, &commit, inputs))
}

/// Most nodes `lo plan` reads from the broker (the LO's own bound for auto-enrolled nodes).
pub const MAX_OBSERVED_NODES: usize = 20_000;

/// Reads the retained `status` and `online` topics of a site from a broker, waiting until no
/// message arrived for `quiet` (at most `max`), for at most `max_nodes` nodes (anyone on the
/// broker can invent node names; `lo plan` uses [`MAX_OBSERVED_NODES`]). `tls_ca_file` as in
/// the LO's configuration.
pub async fn observe_broker(
    broker: &BrokerUrl,
    tls_ca_file: Option<&std::path::Path>,
    topics: &Topics,
    site: &str,
    quiet: Duration,
    max: Duration,
    max_nodes: usize,
) -> Result<Observed, CliError> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let id = format!("lo-plan-{}-{}", site, fastrand::u32(..));
    let mut opts = MqttOptions::new(id, broker.host.clone(), broker.port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    if let (Some(u), Some(p)) = (&broker.username, &broker.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    crate::mqtt::Transport::for_broker(broker, tls_ca_file)
        .map_err(CliError::Broker)?
        .apply(&mut opts);
    let (client, mut ev) = AsyncClient::new(opts, 16);
    let mut fleet = Fleet::new(u64::MAX / 2);
    let deadline = tokio::time::Instant::now() + max;
    let mut subscribed = false;
    loop {
        let next = tokio::time::timeout(quiet, ev.poll());
        let polled = tokio::select! {
            r = next => r,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match polled {
            Err(_) if subscribed => break,
            Err(_) => continue,
            Ok(Err(e)) => return Err(CliError::Broker(e.to_string())),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                for c in [NodeChannel::Status, NodeChannel::Online] {
                    client
                        .subscribe(topics.all_nodes(site, c), QoS::AtMostOnce)
                        .await
                        .map_err(|e| CliError::Broker(e.to_string()))?;
                }
                subscribed = true;
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let Ok(Topic::Node { node, channel, .. }) = topics.parse(&p.topic) else {
                    continue;
                };
                // Anyone on the broker can invent node names: what is kept is bounded.
                if fleet.get(&node).is_none() && fleet.nodes().len() >= max_nodes {
                    continue;
                }
                match channel {
                    NodeChannel::Status => {
                        if let Ok(s) = serde_json::from_slice::<NodeStatus>(&p.payload) {
                            fleet.status(&node, s, 0, false, "");
                        }
                    }
                    NodeChannel::Online => {
                        if let Ok(pr) = serde_json::from_slice::<Presence>(&p.payload) {
                            fleet.presence(&node, &pr, 0, false, "");
                        }
                    }
                    _ => {}
                }
            }
            Ok(Ok(_)) => {}
        }
    }
    let _ = client.disconnect().await;
    Ok(fleet
        .nodes()
        .iter()
        .map(|(n, o)| {
            (
                n.clone(),
                (o.status.clone(), o.presence.unwrap_or(o.status.is_some())),
            )
        })
        .collect())
}

/// The broker username of `node` of `site` in the ACL `lo acl` prints: `<node>@<site>`. `@`
/// is not allowed in names, so no two (site, node) pairs share a username (a `.` would:
/// `a.b`+`c` and `a`+`b.c`); brokers take it as is, and in a broker URL it needs no escaping
/// (`mqtt://n1@plant-1:secret@broker`, the last `@` ends the user part).
pub fn node_username(site: &str, node: &str) -> String {
    format!("{node}@{site}")
}

/// A Mosquitto ACL (`acl_file`) for one site: the LO user may write every node's `desired`
/// and the site's `lo/…` topics and read the site; each node user may write only its own
/// report topics and read only its own desired document. Explicit `user` blocks rather than
/// `pattern` rules: a pattern's `%u` cannot say which site a node belongs to, so two sites'
/// nodes of the same name would share one scope. Several sites on one broker: concatenate
/// the outputs.
pub fn mosquitto_acl(
    site: &str,
    root: &str,
    lo_user: &str,
    nodes: &[String],
) -> Result<String, CliError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| CliError::Acl(format!("{what}: {e}"));
    schemas::validate_name(site).map_err(|e| bad("site", &e))?;
    schemas::validate_root(root).map_err(|e| bad("root", &e))?;
    if lo_user.is_empty()
        || lo_user.contains('@')
        || lo_user
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
    {
        return Err(CliError::Acl(
            "lo user must be non-empty, without `@`, `:` or spaces".into(),
        ));
    }
    let mut out = format!(
        "# edgefleet ACL for site {site} (topic root {root}), generated by `lo acl`.\n\
         # Users: the LO `{lo_user}`, each node `<node>@{site}`.\n\n\
         user {lo_user}\n\
         topic write {root}/{site}/nodes/+/desired\n\
         topic write {root}/{site}/lo/#\n\
         topic read {root}/{site}/#\n"
    );
    let mut sorted: Vec<&String> = nodes.iter().collect();
    sorted.sort();
    sorted.dedup();
    for node in sorted {
        schemas::validate_name(node).map_err(|e| bad("node", &e))?;
        let user = node_username(site, node);
        out.push_str(&format!("\nuser {user}\n"));
        for ch in ["status", "events", "heartbeat", "online"] {
            out.push_str(&format!("topic write {root}/{site}/nodes/{node}/{ch}\n"));
        }
        out.push_str(&format!("topic read {root}/{site}/nodes/{node}/desired\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod acl_tests {
    use super::*;

    #[test]
    fn acl_scopes_each_node_to_its_site_and_name() {
        let acl = mosquitto_acl(
            "s1",
            "fleet",
            "lo-s1",
            &["b".into(), "a".into(), "a".into()],
        )
        .expect("acl");
        assert!(acl.contains("user a@s1\ntopic write fleet/s1/nodes/a/status\n"));
        assert!(acl.contains("topic read fleet/s1/nodes/b/desired\n"));
        assert_eq!(acl.matches("user a@s1").count(), 1);
        assert!(!acl.contains("pattern"));
        assert!(!acl.contains("fleet/+/"));
        assert!(mosquitto_acl("s1", "#", "lo", &[]).is_err());
        assert!(mosquitto_acl("s1", "fleet", "lo", &["a/b".into()]).is_err());
        assert!(mosquitto_acl("s1", "fleet", "x@y", &[]).is_err());
    }
}
