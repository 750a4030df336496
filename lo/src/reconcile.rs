//! The LO's decisions, pure: no tokio, no MQTT, no clock reads, no I/O. The engine
//! (the `engine` module) gathers the inputs, calls these, and performs what they return
//! (persist, publish, audit, count).
//!
//! - [`check_commit`]: a new commit's site files → serve, reject (missing folder, invalid
//!   or oversized documents) or hold (deletion guard).
//! - [`reconcile`]: served revision + observed fleet + persisted records + rollouts → each
//!   deployment's rollout stepped ([`rollout::step`]), what each node is handed now
//!   (rendered, rollback overrides applied, the promoted version where a rollout has not
//!   reached it), the records of the nodes that get a new generation, and the rollout views. Level-triggered: it
//!   re-derives everything from its inputs, never from why it ran.
//! - [`decided`]: the rollback policy's decisions on one status report → the bookkeeping
//!   changes, the audit records and metric labels, and whether to re-render.
//! - [`after_connect`]: which desired documents to (re)publish after a CONNACK.

use crate::audit::AuditEntry;
use crate::observe::Fleet;
use crate::policy::{self, Decision, GuardFlags, RollbackMark};
use crate::render::{self, Dep, Inventory, NodeDesired, PublishedRecord, RollbackOverride};
use crate::rollout::{self, Choice, Happened, NodeIn, Rollout, RolloutSummary, StepIn};
use crate::source::{missing_site_problem, SiteFiles};
use crate::store::Bookkeeping;
use schemas::site::{SiteDocs, SiteLimits};
use schemas::{DeploymentRollout, DocProblem, Revision};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The nodes that announced themselves (a presence or a status), in name order.
fn announced(fleet: &Fleet) -> impl Iterator<Item = &str> {
    fleet
        .nodes()
        .iter()
        .filter(|(_, o)| o.presence.is_some() || o.status.is_some())
        .map(|(n, _)| n.as_str())
}

/// Everything the check of a new commit reads.
#[derive(Debug, Clone, Copy)]
pub struct CommitInput<'a> {
    /// Site name.
    pub site: &'a str,
    /// Site folder in the repository.
    pub site_path: &'a str,
    /// The commit.
    pub commit: &'a str,
    /// Its site files, and the entries refused while reading them.
    pub files: &'a SiteFiles,
    /// Bounds on documents, problems and desired document size.
    pub limits: &'a SiteLimits,
    /// What the nodes report (announced nodes are rendered for the size check).
    pub fleet: &'a Fleet,
    /// Deployment names of the revision served, if any.
    pub served: Option<&'a BTreeSet<String>>,
    /// Operator overrides of the deletion guard.
    pub flags: GuardFlags,
    /// The revision served before a restart, read again (never held by the guard).
    pub restored: bool,
}

/// What becomes of a new commit.
#[derive(Debug, Clone)]
pub enum CommitCheck {
    /// Served: its documents.
    Serve(Box<SiteDocs>),
    /// Rejected; the last good revision stays.
    Reject {
        /// Why, in one line.
        message: &'static str,
        /// The problems (bounded by `limits.max_problems`).
        problems: Vec<DocProblem>,
    },
    /// Held by the deletion guard, with the reason.
    Hold(String),
}

/// Checks a new commit: a missing or empty site folder is rejected (never an order to
/// remove everything), so are refused entries, invalid documents and desired documents too
/// large to publish; a commit removing too many deployments is held
/// ([`policy::deletion_guard`]).
pub fn check_commit(input: &CommitInput<'_>) -> CommitCheck {
    let files = input.files;
    if files.is_empty() {
        // A missing (renamed, deleted, mistyped) or empty site folder is a broken commit,
        // not an order to remove everything: rejected, the last good revision stays.
        return CommitCheck::Reject {
            message: "commit rejected: site folder missing or empty",
            problems: vec![missing_site_problem(input.site_path)],
        };
    }
    let limits = input.limits;
    let loaded = schemas::site::load_site_with(
        input.site,
        files.files.iter().map(|(p, c)| (p.as_str(), c.as_str())),
        limits,
    );
    // Refused entries (links, oversized or non-UTF-8 files) and document problems
    // reject the commit alike; so does a desired document too large to publish.
    let mut problems = files.problems.clone();
    if let Ok(docs) = &loaded {
        let revision = Revision {
            commit: input.commit.to_owned(),
            path: input.site_path.to_owned(),
        };
        let inventory = render::inventory(docs, announced(input.fleet));
        let rendered = render::render(docs, &revision, &inventory, &BTreeMap::new());
        problems.extend(render::oversized_documents(
            docs,
            input.site,
            &rendered,
            limits.max_desired_bytes,
        ));
    }
    let docs = match loaded {
        Ok(d) if problems.is_empty() => d,
        loaded => {
            problems.extend(loaded.err().unwrap_or_default());
            return CommitCheck::Reject {
                message: "commit rejected: invalid site documents",
                problems: schemas::site::bound_problems(problems, limits.max_problems),
            };
        }
    };
    if !input.restored {
        let names: BTreeSet<String> = docs.deployments.keys().cloned().collect();
        if let Some(reason) =
            policy::deletion_guard(input.served, &names, &docs.spec(), input.flags)
        {
            return CommitCheck::Hold(reason);
        }
    }
    CommitCheck::Serve(Box::new(docs))
}

/// Everything one reconcile reads.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileInput<'a> {
    /// The served site documents.
    pub docs: &'a SiteDocs,
    /// The served revision (commit and site folder).
    pub revision: &'a Revision,
    /// What the nodes report (presence, status).
    pub fleet: &'a Fleet,
    /// Monotonic now (ms), for presence timeouts.
    pub mono_ms: u64,
    /// Presence read back after the first CONNACK is complete: before, a node not heard
    /// from yet may be online (it keeps its slot in a rollout, and no wave passes over it).
    pub settled: bool,
    /// The persisted record of the document last published per node.
    pub records: &'a BTreeMap<String, PublishedRecord>,
    /// Per node, the lowest generation the next one must exceed (read back from the broker).
    pub floors: &'a BTreeMap<String, u64>,
    /// What each node was last handed (the content of its current generation).
    pub handed: &'a BTreeMap<String, NodeDesired>,
    /// Rollbacks in force, node → deployment → mark.
    pub rollbacks: &'a BTreeMap<String, BTreeMap<String, RollbackMark>>,
    /// Each deployment's rollout as it stands.
    pub rollouts: &'a BTreeMap<String, Rollout>,
    /// Wall-clock now, ms since the Unix epoch (`published_ms` of new records, rollout
    /// clocks).
    pub now_ms: u64,
    /// `issuedAt` of new documents (RFC 3339).
    pub issued_at: &'a str,
}

/// What one reconcile decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconciled {
    /// Enrolled and unknown nodes at this revision.
    pub inventory: Inventory,
    /// What each node should run at the served revision (nodes that left the site: an
    /// empty document).
    pub target: BTreeMap<String, NodeDesired>,
    /// What each node is handed now: its target, with the promoted version of a deployment
    /// instead of the candidate where the rollout has not reached it (or rolled it back).
    pub handed: BTreeMap<String, NodeDesired>,
    /// The new records of the nodes whose handed content needs a new generation (persist
    /// them before publishing: a generation that went out is never reused).
    pub records: BTreeMap<String, PublishedRecord>,
    /// Each served deployment's rollout after this reconcile (persist with the records).
    pub rollouts: BTreeMap<String, Rollout>,
    /// What happened to rollouts: (deployment, event), in order.
    pub happened: Vec<(String, Happened)>,
    /// The `rollout` object of each deployment for the site status.
    pub views: BTreeMap<String, DeploymentRollout>,
    /// Site-wide pacing summary, when the Site sets `maxParallel`.
    pub rollout: Option<RolloutSummary>,
}

/// The rollback overrides in force, node → deployment → override.
fn overrides(
    rollbacks: &BTreeMap<String, BTreeMap<String, RollbackMark>>,
) -> BTreeMap<String, BTreeMap<String, RollbackOverride>> {
    rollbacks
        .iter()
        .map(|(n, m)| {
            (
                n.clone(),
                m.iter().map(|(d, r)| (d.clone(), r.over.clone())).collect(),
            )
        })
        .collect()
}

/// Hashes of documents, computed once per distinct document: nodes that run the same
/// deployments share one list (by its allocation), so 10,000 nodes cost a few hashes.
#[derive(Default)]
struct HashMemo {
    /// (list allocation, its length, revision commit, revision path) → hash.
    memo: HashMap<(usize, usize, String, String), String>,
}

impl HashMemo {
    fn get(&mut self, nd: &NodeDesired, hash: fn(&NodeDesired) -> String) -> String {
        let key = (
            nd.deployments.as_ptr() as usize,
            nd.deployments.len(),
            nd.revision.commit.clone(),
            nd.revision.path.clone(),
        );
        self.memo.entry(key).or_insert_with(|| hash(nd)).clone()
    }
}

/// The version of `name` most nodes were last handed: the promoted version of a deployment
/// the LO has no rollout record of (state written by an older LO).
fn most_handed<'a>(handed: &'a BTreeMap<String, NodeDesired>, name: &str) -> Option<&'a Dep> {
    let mut count: HashMap<&str, (usize, &Dep)> = HashMap::new();
    for nd in handed.values() {
        if let Some(d) = nd.get(name) {
            count.entry(&d.spec_hash).or_insert((0, d)).0 += 1;
        }
    }
    count
        .into_values()
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.spec_hash.cmp(&a.1.spec_hash)))
        .map(|(_, d)| d)
}

/// Renders every node, steps every deployment's rollout, hands each node the versions its
/// rollouts allow, and assigns generations. See [`ReconcileInput`] and [`Reconciled`].
pub fn reconcile(input: &ReconcileInput<'_>) -> Reconciled {
    let fleet = input.fleet;
    let inventory = render::inventory(input.docs, announced(fleet));
    let mut target = render::render(
        input.docs,
        input.revision,
        &inventory,
        &overrides(input.rollbacks),
    );
    // Each served deployment's rollout, stepped on what its nodes report at their current
    // generation.
    let served = render::site_deployments(input.docs, &input.revision.commit);
    let mut rollouts = BTreeMap::new();
    let mut happened = Vec::new();
    let mut views = BTreeMap::new();
    let mut targeted: BTreeMap<&str, Vec<NodeIn<'_>>> = BTreeMap::new();
    for (name, (dep, resolved)) in &served {
        let prev = input.rollouts.get(name);
        // No rollout under way and none starting (the common case): the step only takes
        // the served commit, and no node is looked at — at 10,000 nodes × 20 deployments
        // that is most of a reconcile's cost.
        let quiet = prev.is_some_and(|p| {
            p.candidate.is_none()
                && p.promoted
                    .as_ref()
                    .is_some_and(|d| d.spec_hash == dep.spec_hash)
        });
        let nodes: Vec<NodeIn<'_>> = if quiet {
            Vec::new()
        } else {
            rollout::order(
                inventory
                    .nodes
                    .iter()
                    .filter(|(n, l)| resolved.targets.matches(n, l))
                    .map(|(n, l)| (n.as_str(), l)),
            )
            .into_iter()
            .map(|node| {
                let obs = fleet.get(node);
                let generation = input.records.get(node).map(|r| r.generation);
                let report = obs
                    .and_then(|o| o.status.as_ref())
                    .filter(|s| Some(s.observed_generation) == generation)
                    .and_then(|s| s.deployments.iter().find(|d| &d.name == name));
                NodeIn {
                    name: node,
                    online: fleet.online(node, input.mono_ms),
                    known: input.settled
                        || obs.is_some_and(|o| o.presence.is_some() || o.status.is_some()),
                    report,
                }
            })
            .collect()
        };
        let (next, events) = rollout::step(
            prev,
            &StepIn {
                served: dep,
                strategy: &resolved.rollout,
                nodes: &nodes,
                now_ms: input.now_ms,
                // Without a record: the version most nodes were handed (state of an older
                // LO); for an LO that never handed anything (first start, lost state) the
                // served version, as the deletion guard trusts the first revision.
                fallback_promoted: match prev {
                    Some(_) => None,
                    None if input.records.is_empty() => Some(dep),
                    None => most_handed(input.handed, name),
                },
            },
        );
        happened.extend(events.into_iter().map(|e| (name.clone(), e)));
        // A quiet deployment shows its promoted version (and its last rollout's waves).
        views.insert(
            name.clone(),
            rollout::status(&next, &resolved.rollout, &nodes),
        );
        rollouts.insert(name.clone(), next);
        targeted.insert(name.as_str(), nodes);
    }
    // Nodes published before and no longer in the site get an explicit empty document.
    for node in input.records.keys() {
        if !target.contains_key(node) {
            let doc = match input.handed.get(node) {
                Some(d) if d.deployments.is_empty() => d.clone(),
                _ => NodeDesired::empty(input.revision.clone()),
            };
            target.insert(node.clone(), doc);
        }
    }
    let (mut handed, held) = choose(&target, &rollouts);
    // A node a rollout holds back keeps the document it has while what it runs is the
    // same (only the revision moved on): no new generation, nothing on the link.
    let mut runs = HashMemo::default();
    for node in &held {
        if let (Some(prev), Some(next)) = (input.handed.get(node), handed.get_mut(node)) {
            if input.records.contains_key(node)
                && runs.get(prev, NodeDesired::run_hash) == runs.get(next, NodeDesired::run_hash)
            {
                *next = prev.clone();
            }
        }
    }
    let mut records = BTreeMap::new();
    let mut contents = HashMemo::default();
    for (node, content) in &handed {
        let hash = contents.get(content, NodeDesired::content_hash);
        let floor = input.floors.get(node).copied().unwrap_or(0);
        if let Some(generation) = render::next_generation(input.records.get(node), &hash, floor) {
            records.insert(
                node.clone(),
                PublishedRecord {
                    generation,
                    content_hash: hash,
                    issued_at: input.issued_at.to_owned(),
                    published_ms: input.now_ms,
                },
            );
        }
    }
    let rollout = input
        .docs
        .spec()
        .rollout
        .as_ref()
        .and_then(|r| r.max_parallel)
        .map(|m| {
            rollout::site_summary(
                m,
                rollouts
                    .iter()
                    .filter_map(|(name, r)| targeted.get(name.as_str()).map(|n| (r, n.as_slice()))),
            )
        });
    Reconciled {
        inventory,
        target,
        handed,
        records,
        rollouts,
        happened,
        views,
        rollout,
    }
}

/// A handed list: the target's list (by its shared allocation) and, per deployment, the
/// version chosen (0 the served one, 1 the promoted one, 2 left out).
type ListKey = (*const Dep, Vec<u8>);

/// Each node's target with its rollouts applied: a deployment whose rollout has not reached
/// the node (or rolled it back) is replaced by its promoted version, or left out when there
/// is none. Nodes that end with the same list share it. Also returns the nodes held back.
fn choose(
    target: &BTreeMap<String, NodeDesired>,
    rollouts: &BTreeMap<String, Rollout>,
) -> (BTreeMap<String, NodeDesired>, BTreeSet<String>) {
    let active: BTreeMap<&str, &Rollout> = rollouts
        .iter()
        .filter(|(_, r)| r.candidate.is_some())
        .map(|(n, r)| (n.as_str(), r))
        .collect();
    let mut held = BTreeSet::new();
    if active.is_empty() {
        return (target.clone(), held);
    }
    // (list of the target, the versions chosen) → the list handed.
    let mut shared: HashMap<ListKey, Arc<[Dep]>> = HashMap::new();
    let handed = target
        .iter()
        .map(|(node, nd)| {
            let picks: Vec<Choice<'_>> = nd
                .deployments
                .iter()
                .map(|d| {
                    active
                        .get(d.name())
                        .map_or(Choice::Served, |r| r.choice(node))
                })
                .collect();
            if picks.iter().all(|c| *c == Choice::Served) {
                return (node.clone(), nd.clone());
            }
            held.insert(node.clone());
            // Per deployment one promoted version: the kind of choice says which version.
            let key = (
                nd.deployments.as_ptr(),
                picks
                    .iter()
                    .map(|c| match c {
                        Choice::Served => 0u8,
                        Choice::Promoted(_) => 1,
                        Choice::Omit => 2,
                    })
                    .collect(),
            );
            let list = shared
                .entry(key)
                .or_insert_with(|| {
                    nd.deployments
                        .iter()
                        .zip(&picks)
                        .filter_map(|(d, c)| match c {
                            Choice::Served => Some(d.clone()),
                            Choice::Promoted(p) => Some((*p).clone()),
                            Choice::Omit => None,
                        })
                        .collect()
                })
                .clone();
            (
                node.clone(),
                NodeDesired {
                    revision: nd.revision.clone(),
                    deployments: list,
                },
            )
        })
        .collect();
    (handed, held)
}

/// A change to the rollback bookkeeping of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookChange {
    /// Remember this version as the deployment's rollback target.
    Installed {
        /// Deployment.
        deployment: String,
        /// The installed version.
        dep: Dep,
    },
    /// The failure of this spec was reported (not reported again).
    Held {
        /// Deployment.
        deployment: String,
        /// The failed spec hash (empty when the node was handed no such deployment).
        spec_hash: String,
    },
    /// A rollback is in force.
    Rollback {
        /// Deployment.
        deployment: String,
        /// The rollback.
        mark: RollbackMark,
    },
    /// The rolled-back version failed too.
    RollbackFailedAgain {
        /// Deployment.
        deployment: String,
    },
}

impl BookChange {
    /// Applies the change to the bookkeeping of `node`.
    pub fn apply_to(self, book: &mut Bookkeeping, node: &str) {
        match self {
            BookChange::Installed { deployment, dep } => {
                book.installed
                    .entry(node.to_owned())
                    .or_default()
                    .insert(deployment, dep);
            }
            BookChange::Held {
                deployment,
                spec_hash,
            } => {
                book.held
                    .entry(node.to_owned())
                    .or_default()
                    .insert(deployment, spec_hash);
            }
            BookChange::Rollback { deployment, mark } => {
                book.rollbacks
                    .entry(node.to_owned())
                    .or_default()
                    .insert(deployment, mark);
            }
            BookChange::RollbackFailedAgain { deployment } => {
                if let Some(m) = book
                    .rollbacks
                    .get_mut(node)
                    .and_then(|m| m.get_mut(&deployment))
                {
                    m.failed_again = true;
                }
            }
        }
    }
}

/// One decision worth an audit record and a `decisions` count.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The `kind` label of the `decisions` metric: `hold`, `rollback`, `rollback_failed`.
    pub kind: &'static str,
    /// The audit record.
    pub audit: AuditEntry,
}

/// What the decisions on one status report lead to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionOutcome {
    /// Bookkeeping changes, in order.
    pub changes: Vec<BookChange>,
    /// Decisions to audit and count, in order.
    pub decided: Vec<Decided>,
    /// A rollback changed what the node must run: render again.
    pub rerender: bool,
}

/// Turns the policy's decisions on a status report of `node` (handed `handed`) into
/// bookkeeping changes, audit records (stamped `at`) and metric labels.
pub fn decided(
    node: &str,
    handed: Option<&NodeDesired>,
    decisions: Vec<Decision>,
    at: &str,
) -> DecisionOutcome {
    let mut out = DecisionOutcome::default();
    for d in decisions {
        match d {
            Decision::Installed { deployment, dep } => {
                out.changes.push(BookChange::Installed { deployment, dep });
            }
            Decision::Hold {
                deployment,
                commit,
                reason,
            } => {
                out.decided.push(Decided {
                    kind: "hold",
                    audit: AuditEntry::at(at, "decided", format!("hold: {reason}"))
                        .node(node)
                        .deployment(&deployment)
                        .commit(&commit),
                });
                let spec_hash = handed
                    .and_then(|nd| nd.get(&deployment))
                    .map(|d| d.spec_hash.clone())
                    .unwrap_or_default();
                out.changes.push(BookChange::Held {
                    deployment,
                    spec_hash,
                });
            }
            Decision::Rollback { deployment, mark } => {
                out.decided.push(Decided {
                    kind: "rollback",
                    audit: AuditEntry::at(
                        at,
                        "decided",
                        format!(
                            "rollback to the version of commit {}",
                            mark.over.to.spec.commit
                        ),
                    )
                    .node(node)
                    .deployment(&deployment)
                    .commit(&mark.failed_commit),
                });
                out.changes.push(BookChange::Rollback { deployment, mark });
                out.rerender = true;
            }
            Decision::RollbackFailed { deployment, commit } => {
                out.decided.push(Decided {
                    kind: "rollback_failed",
                    audit: AuditEntry::at(at, "decided", "rollback failed too: no further action")
                        .node(node)
                        .deployment(&deployment)
                        .commit(&commit),
                });
                out.changes
                    .push(BookChange::RollbackFailedAgain { deployment });
            }
        }
    }
    out
}

/// Which desired documents to publish after a CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Republish {
    /// Every node's document: the first connection of this process, or the broker lost
    /// the session (its retained copies may be gone).
    All(Vec<String>),
    /// Only those not sent yet: the session was kept.
    Unsent(Vec<String>),
}

/// What to (re)publish after a CONNACK: `first` is this process's first connection,
/// `session_present` the CONNACK's flag, `handed` what each node was last handed, `unsent`
/// the nodes whose document was not sent.
pub fn after_connect(
    first: bool,
    session_present: bool,
    handed: &BTreeMap<String, NodeDesired>,
    unsent: &BTreeSet<String>,
) -> Republish {
    if first || !session_present {
        Republish::All(handed.keys().cloned().collect())
    } else {
        Republish::Unsent(unsent.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests;
