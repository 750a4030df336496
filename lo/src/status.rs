//! The site status (`lo/status`), built from plain inputs: the served revision, the
//! inventory, what the fleet reports, the published records and the rollback bookkeeping.
//! Pure; the engine publishes it, and fits it to the packet limit with [`fit_status`].

use crate::observe::Fleet;
use crate::policy::RollbackMark;
use crate::render::{Inventory, NodeDesired, PublishedRecord};
use crate::rollout::{self, RolloutSummary};
use schemas::site::SiteDocs;
use schemas::{
    DeploymentSummary, NodeSummary, ServedRevision, SiteError, SiteSchema, SiteStatus, StateCounts,
};
use std::collections::BTreeMap;

/// LO version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Largest site status published; above it, converged online nodes are left out.
pub const MAX_STATUS_BYTES: usize = 192 * 1024;
/// Names listed in the site status per list (the counts stay exact).
const MAX_LISTED: usize = 100;
/// Problems of a refused commit listed in the site status.
const MAX_PROBLEMS_LISTED: usize = 100;
/// Longest message (error, problem) in the site status, bytes.
const MAX_STATUS_MESSAGE: usize = 1024;
/// Most node names listed in the `rollout` part of the site status (the counts are exact).
const MAX_ROLLOUT_NAMES: usize = 100;

/// The served revision as the status shows it.
#[derive(Debug, Clone, Copy)]
pub struct ServedView<'a> {
    /// Commit.
    pub commit: &'a str,
    /// Site folder in the repository.
    pub path: &'a str,
    /// When it was first served (RFC 3339).
    pub since: &'a str,
    /// Its documents.
    pub docs: &'a SiteDocs,
}

/// Why reports of nodes are refused, for the `reports` note per node.
#[derive(Debug, Clone, Copy)]
pub struct ReportsView<'a> {
    /// The served Site requires signed reports.
    pub require_signed: bool,
    /// Report-signing keys of the nodes declared in Git.
    pub keys: &'a BTreeMap<String, ed25519_dalek::VerifyingKey>,
    /// Reports refused per declared node.
    pub refused: &'a BTreeMap<String, u64>,
}

/// Everything the site status is built from.
#[derive(Debug)]
pub struct StatusInput<'a> {
    /// Site name.
    pub site: &'a str,
    /// `updatedAt` (RFC 3339).
    pub updated_at: String,
    /// The served revision, if any.
    pub served: Option<ServedView<'a>>,
    /// Last refused commit or source error.
    pub last_error: Option<&'a SiteError>,
    /// Commit held by the deletion guard.
    pub held: Option<&'a SiteError>,
    /// Enrolled and unknown nodes.
    pub inventory: &'a Inventory,
    /// What nodes report.
    pub fleet: &'a Fleet,
    /// Monotonic now (ms), for presence.
    pub now_ms: u64,
    /// Published record per node.
    pub records: &'a BTreeMap<String, PublishedRecord>,
    /// What each node was last handed.
    pub desired: &'a BTreeMap<String, NodeDesired>,
    /// Rollbacks in force, node → deployment → mark.
    pub rollbacks: &'a BTreeMap<String, BTreeMap<String, RollbackMark>>,
    /// The `rollout` object of each deployment.
    pub rollouts: &'a BTreeMap<String, schemas::DeploymentRollout>,
    /// node → (generation, ms from publish to converged).
    pub converged: &'a BTreeMap<String, (u64, u64)>,
    /// Messages of undeclared nodes beyond the tracking bound.
    pub untracked: u64,
    /// Report refusals.
    pub reports: ReportsView<'a>,
}

/// The site status, and how many enrolled nodes are online and converged (for the gauges).
pub fn site_status(input: &StatusInput<'_>) -> (SiteStatus, i64, i64) {
    let mut nodes = Vec::new();
    let (mut online_n, mut converged_n) = (0, 0);
    for node in input.inventory.nodes.keys() {
        let obs = input.fleet.get(node);
        let status = obs.and_then(|o| o.status.as_ref());
        let desired_generation = input.records.get(node).map_or(0, |r| r.generation);
        let observed_generation = status.map_or(0, |s| s.observed_generation);
        let converged =
            status.is_some_and(|s| s.converged) && observed_generation == desired_generation;
        let online = input.fleet.online(node, input.now_ms);
        online_n += i64::from(online);
        converged_n += i64::from(converged);
        nodes.push(NodeSummary {
            node: node.clone(),
            online,
            desired_generation,
            observed_generation,
            commit: status.and_then(|s| s.revision.as_ref().map(|r| r.commit.clone())),
            state: status.and_then(|s| s.state),
            converged,
            converged_in_ms: input
                .converged
                .get(node)
                .filter(|c| c.0 == desired_generation)
                .map(|c| c.1),
            last_seen: obs.and_then(|o| o.last_seen.clone()),
            // Filled in by `status_json`, which knows the pacing state.
            waiting: None,
            reports: reports_note(&input.reports, node),
        });
    }
    let mut deployments = Vec::new();
    if let Some(served) = &input.served {
        for name in served.docs.deployments.keys() {
            let mut counts = StateCounts::default();
            let mut targeted = 0;
            let mut rolled_back = Vec::new();
            for (node, nd) in input.desired {
                let Some(dep) = nd.get(name) else { continue };
                targeted += 1;
                let rec_gen = input.records.get(node).map_or(0, |r| r.generation);
                let state = input
                    .fleet
                    .get(node)
                    .and_then(|o| o.status.as_ref())
                    .filter(|s| s.observed_generation == rec_gen)
                    .and_then(|s| s.deployments.iter().find(|d| &d.name == name))
                    .map_or(schemas::State::Pending, |d| d.state);
                counts.add(state);
                if input
                    .rollbacks
                    .get(node)
                    .and_then(|m| m.get(name))
                    .is_some_and(|m| m.over.to.hash == dep.hash)
                {
                    rolled_back.push(node.clone());
                }
            }
            deployments.push(DeploymentSummary {
                name: name.clone(),
                nodes: targeted,
                counts,
                rolled_back,
                rollout: input.rollouts.get(name).cloned(),
            });
        }
    }
    let unknown = &input.inventory.unknown;
    let st = SiteStatus {
        schema: SiteSchema::V1,
        site: input.site.to_owned(),
        updated_at: input.updated_at.clone(),
        lo_version: VERSION.into(),
        revision: input.served.map(|s| ServedRevision {
            commit: s.commit.to_owned(),
            path: s.path.to_owned(),
            since: s.since.to_owned(),
        }),
        last_error: input.last_error.cloned(),
        held: input.held.cloned(),
        nodes,
        deployments,
        rollout: None,
        unknown_nodes: unknown.iter().take(MAX_LISTED).cloned().collect(),
        unknown_nodes_count: (unknown.len() > MAX_LISTED)
            .then(|| u32::try_from(unknown.len()).unwrap_or(u32::MAX)),
        unknown_nodes_untracked: (input.untracked > 0).then_some(input.untracked),
        nodes_count: None,
        problems_count: None,
    };
    (st, online_n, converged_n)
}

/// Why a node's reports are refused, for the site status.
pub fn reports_note(reports: &ReportsView<'_>, node: &str) -> Option<String> {
    if reports.require_signed && !reports.keys.contains_key(node) {
        return Some("unsigned refused: no publicKey in Git".into());
    }
    reports
        .refused
        .get(node)
        .map(|n| format!("{n} refused (unsigned, bad signature or replay)"))
}

/// Cuts the lists of a site status that grow with outside input (unknown nodes, problems,
/// messages) to fixed sizes, with counts.
pub(crate) fn cap_status(st: &mut SiteStatus) {
    if st.unknown_nodes.len() > MAX_LISTED {
        st.unknown_nodes_count
            .get_or_insert(u32::try_from(st.unknown_nodes.len()).unwrap_or(u32::MAX));
        st.unknown_nodes.truncate(MAX_LISTED);
    }
    for e in [&mut st.last_error, &mut st.held].into_iter().flatten() {
        e.message = schemas::shorten(&e.message, MAX_STATUS_MESSAGE);
        for p in &mut e.problems {
            p.message = schemas::shorten(&p.message, MAX_STATUS_MESSAGE);
            p.file = schemas::shorten(&p.file, MAX_STATUS_MESSAGE);
            p.field = p
                .field
                .as_deref()
                .map(|f| schemas::shorten(f, MAX_STATUS_MESSAGE));
        }
    }
    if let Some(e) = &mut st.last_error {
        if e.problems.len() > MAX_PROBLEMS_LISTED {
            st.problems_count = Some(u32::try_from(e.problems.len()).unwrap_or(u32::MAX));
            e.problems.truncate(MAX_PROBLEMS_LISTED);
        }
    }
}

/// The site status encoded within `limit` bytes: lists capped, then converged online nodes
/// left out, then nodes, deployments and problems cut (counts stay exact). `None` when even
/// the smallest form does not fit: then nothing is sent (a publish above the broker's limit
/// would cost the connection, and be retried after every reconnect).
pub fn fit_status(
    st: &SiteStatus,
    rollout: Option<&RolloutSummary>,
    limit: usize,
) -> Option<Vec<u8>> {
    let mut st = st.clone();
    cap_status(&mut st);
    let encode =
        |st: &SiteStatus| serde_json::to_vec(&status_json(st, rollout)).unwrap_or_default();
    let mut payload = encode(&st);
    if payload.len() <= limit {
        return Some(payload);
    }
    let total = st.nodes.len();
    st.nodes_count = Some(u32::try_from(total).unwrap_or(u32::MAX));
    // Keep the nodes that need attention; the counts stay complete.
    st.nodes.retain(|n| !(n.online && n.converged));
    payload = encode(&st);
    while payload.len() > limit && !st.nodes.is_empty() {
        let keep = st.nodes.len() * 3 / 4;
        st.nodes.truncate(keep);
        payload = encode(&st);
    }
    while payload.len() > limit && !st.deployments.is_empty() {
        let keep = st.deployments.len() * 3 / 4;
        st.deployments.truncate(keep);
        payload = encode(&st);
    }
    if payload.len() > limit {
        if let Some(e) = &mut st.last_error {
            st.problems_count
                .get_or_insert(u32::try_from(e.problems.len()).unwrap_or(u32::MAX));
            e.problems.clear();
        }
        st.unknown_nodes_count
            .get_or_insert(u32::try_from(st.unknown_nodes.len()).unwrap_or(u32::MAX));
        st.unknown_nodes.clear();
        payload = encode(&st);
    }
    tracing::debug!(
        total,
        listed = st.nodes.len(),
        bytes = payload.len(),
        "site status trimmed to fit the packet limit"
    );
    (payload.len() <= limit).then_some(payload)
}

/// The site status document with the rollout fields filled in: `rollout`, and `waiting` on
/// every node held back by pacing.
pub fn status_json(st: &SiteStatus, rollout: Option<&RolloutSummary>) -> serde_json::Value {
    let mut st = st.clone();
    if let Some(r) = rollout {
        for n in &mut st.nodes {
            if r.waiting.binary_search(&n.node).is_ok() {
                n.waiting = Some(rollout::WAITING.to_owned());
            }
        }
        let listed = |names: &[String]| names.iter().take(MAX_ROLLOUT_NAMES).cloned().collect();
        st.rollout = Some(schemas::RolloutStatus {
            max_parallel: r.max_parallel,
            in_flight: listed(&r.in_flight),
            waiting: listed(&r.waiting),
            in_flight_count: u32::try_from(r.in_flight.len()).unwrap_or(u32::MAX),
            waiting_count: u32::try_from(r.waiting.len()).unwrap_or(u32::MAX),
        });
    }
    serde_json::to_value(&st).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::DocProblem;

    fn site_status(nodes: usize, unknown: usize, problems: usize) -> SiteStatus {
        SiteStatus {
            schema: SiteSchema::V1,
            site: "s".into(),
            updated_at: "t".into(),
            lo_version: "v".into(),
            revision: None,
            last_error: Some(SiteError {
                commit: "c".into(),
                at: "t".into(),
                message: "m".repeat(100_000),
                problems: (0..problems)
                    .map(|i| DocProblem {
                        file: format!("f{i}.yaml"),
                        line: Some(1),
                        field: None,
                        message: "x".repeat(200),
                    })
                    .collect(),
            }),
            held: None,
            nodes: (0..nodes)
                .map(|i| NodeSummary {
                    node: format!("node-{i:05}"),
                    online: i % 2 == 0,
                    desired_generation: 1,
                    observed_generation: 1,
                    commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                    state: None,
                    converged: i % 4 == 0,
                    converged_in_ms: None,
                    last_seen: Some("2026-01-01T00:00:00.000Z".into()),
                    waiting: None,
                    reports: None,
                })
                .collect(),
            deployments: Vec::new(),
            rollout: None,
            unknown_nodes: (0..unknown).map(|i| format!("ghost-{i:05}")).collect(),
            unknown_nodes_count: None,
            unknown_nodes_untracked: None,
            nodes_count: None,
            problems_count: None,
        }
    }

    #[test]
    fn site_status_always_fits_the_limit_with_counts() {
        let st = site_status(5_000, 5_000, 10_000);
        for limit in [64 * 1024, 192 * 1024] {
            let payload = fit_status(&st, None, limit).expect("fits");
            assert!(payload.len() <= limit, "{} > {limit}", payload.len());
            let back: SiteStatus = serde_json::from_slice(&payload).expect("decodes");
            assert_eq!(back.nodes_count, Some(5_000));
            assert_eq!(back.unknown_nodes_count, Some(5_000));
            assert_eq!(back.problems_count, Some(10_000));
            assert!(back.unknown_nodes.len() <= MAX_LISTED);
            let e = back.last_error.expect("error kept");
            assert!(e.message.len() < 2 * MAX_STATUS_MESSAGE);
            assert!(e.problems.len() <= MAX_PROBLEMS_LISTED);
        }
        // Far too small: nothing rather than something the broker refuses.
        assert_eq!(fit_status(&st, None, 100), None);
        // A small status is untouched.
        let small = site_status(3, 0, 0);
        let back: SiteStatus =
            serde_json::from_slice(&fit_status(&small, None, 64 * 1024).expect("fits"))
                .expect("decodes");
        assert_eq!(back.nodes.len(), 3);
        assert_eq!(back.nodes_count, None);
    }
}
