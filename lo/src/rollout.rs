//! Rollout pacing (`Site.spec.rollout.maxParallel`): a pure decision over which nodes may be
//! handed a new revision now. No I/O.
//!
//! A node is **pending** when the served revision changes what it must run (the set of
//! deployment specs differs from the document it has) and it has had a document before. A
//! node is **in flight** when the document it was last handed changed what it runs and it
//! has not yet reported converged at that generation, nor a failed deployment (failed counts
//! as done: pacing never halts a site). Nodes that are offline do not occupy a slot and are
//! not handed paced documents: they get theirs when they come back, so one dead node never
//! blocks a site. With `maxParallel = N`, pending nodes already in flight are updated at
//! once (they hold a slot), then pending online nodes in name order while fewer than `N`
//! nodes are in flight; the rest wait ("waiting for its turn").
//!
//! Everything here is re-derived from the persisted published records (generation, whether
//! it was a rollout step) and the observed status, so pacing survives an LO restart.

use schemas::{NodeStatus, State};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The pacing inputs of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaceNode {
    /// The served revision changes what the node runs and it does not have that document.
    pub pending: bool,
    /// It is applying a rollout step (see [`in_flight`]) and counts against `maxParallel`.
    pub in_flight: bool,
    /// It is online (only online nodes are handed paced documents).
    pub online: bool,
}

/// The pacing decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pacing {
    /// Pending nodes that get their new document now.
    pub granted: BTreeSet<String>,
    /// Pending nodes that keep their current document for now.
    pub waiting: BTreeSet<String>,
    /// Nodes in flight after this decision (previously in flight, plus granted when paced).
    pub in_flight: BTreeSet<String>,
}

/// Decides which pending nodes get their new document. `max_parallel: None` (no pacing)
/// grants every pending node; `Some(0)` behaves like `Some(1)`.
pub fn pace(max_parallel: Option<u32>, nodes: &BTreeMap<String, PaceNode>) -> Pacing {
    let mut out = Pacing::default();
    let Some(max) = max_parallel else {
        out.granted = nodes
            .iter()
            .filter(|(_, n)| n.pending)
            .map(|(k, _)| k.clone())
            .collect();
        return out;
    };
    let max = max.max(1) as usize;
    out.in_flight = nodes
        .iter()
        .filter(|(_, n)| n.in_flight)
        .map(|(k, _)| k.clone())
        .collect();
    for (name, n) in nodes {
        if !n.pending {
            continue;
        }
        if n.in_flight {
            // Already holds a slot: give it the newest content at once.
            out.granted.insert(name.clone());
        } else if n.online && out.in_flight.len() < max {
            out.granted.insert(name.clone());
            out.in_flight.insert(name.clone());
        } else {
            out.waiting.insert(name.clone());
        }
    }
    out
}

/// Whether a node reported being done with `generation`: converged at it, or a deployment
/// failed at it.
pub fn done(status: Option<&NodeStatus>, generation: u64) -> bool {
    status.is_some_and(|s| {
        s.observed_generation == generation
            && (s.converged
                || s.state == Some(State::Failed)
                || s.deployments.iter().any(|d| d.state == State::Failed))
    })
}

/// Whether a node counts as in flight: its last document was a rollout step
/// (`rollout_step`), it has not reported done at that `generation`, and it is online or not
/// known to be offline yet (`online_or_unknown`; just after an LO restart presence has not
/// been read back).
pub fn in_flight(
    rollout_step: bool,
    generation: u64,
    status: Option<&NodeStatus>,
    online_or_unknown: bool,
) -> bool {
    rollout_step && online_or_unknown && !done(status, generation)
}

/// The rollout part of the site status (`rollout` in `lo/status`), present while pacing is
/// configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSummary {
    /// `Site.spec.rollout.maxParallel`.
    pub max_parallel: u32,
    /// Nodes applying a rollout step.
    pub in_flight: Vec<String>,
    /// Nodes waiting for their turn (they keep their current document).
    pub waiting: Vec<String>,
}

/// The marker of a waiting node in the plan and the site status.
pub const WAITING: &str = "waiting for its turn (rollout maxParallel)";

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &[(&str, bool, bool, bool)]) -> BTreeMap<String, PaceNode> {
        spec.iter()
            .map(|(n, pending, in_flight, online)| {
                (
                    (*n).to_owned(),
                    PaceNode {
                        pending: *pending,
                        in_flight: *in_flight,
                        online: *online,
                    },
                )
            })
            .collect()
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn pacing_decision_table() {
        // (max, nodes (name, pending, in flight, online), granted, waiting, in flight)
        type Row<'a> = (
            Option<u32>,
            Vec<(&'a str, bool, bool, bool)>,
            Vec<&'a str>,
            Vec<&'a str>,
            Vec<&'a str>,
        );
        let rows: Vec<Row<'_>> = vec![
            // No pacing: everyone pending, online or not, gets it.
            (
                None,
                vec![("a", true, false, true), ("b", true, false, false)],
                vec!["a", "b"],
                vec![],
                vec![],
            ),
            // A new revision, max 1, nothing in flight: the first by name.
            (
                Some(1),
                vec![
                    ("a", true, false, true),
                    ("b", true, false, true),
                    ("c", true, false, true),
                ],
                vec!["a"],
                vec!["b", "c"],
                vec!["a"],
            ),
            // a is in flight (got it, not converged): b and c wait.
            (
                Some(1),
                vec![
                    ("a", false, true, true),
                    ("b", true, false, true),
                    ("c", true, false, true),
                ],
                vec![],
                vec!["b", "c"],
                vec!["a"],
            ),
            // a converged (no longer in flight): b goes.
            (
                Some(1),
                vec![
                    ("a", false, false, true),
                    ("b", true, false, true),
                    ("c", true, false, true),
                ],
                vec!["b"],
                vec!["c"],
                vec!["b"],
            ),
            // b is offline: skipped, c goes; b waits for its return.
            (
                Some(1),
                vec![
                    ("a", false, false, true),
                    ("b", true, false, false),
                    ("c", true, false, true),
                ],
                vec!["c"],
                vec!["b"],
                vec!["c"],
            ),
            // Max 2: two at once; an in-flight node with a newer commit is updated in place.
            (
                Some(2),
                vec![
                    ("a", true, true, true),
                    ("b", true, false, true),
                    ("c", true, false, true),
                ],
                vec!["a", "b"],
                vec!["c"],
                vec!["a", "b"],
            ),
            // More in flight than allowed (nodes came back online): nobody new.
            (
                Some(1),
                vec![
                    ("a", false, true, true),
                    ("b", false, true, true),
                    ("c", true, false, true),
                ],
                vec![],
                vec!["c"],
                vec!["a", "b"],
            ),
            // 0 behaves like 1.
            (
                Some(0),
                vec![("a", true, false, true), ("b", true, false, true)],
                vec!["a"],
                vec!["b"],
                vec!["a"],
            ),
            // Nothing pending: nothing granted, nothing waits.
            (
                Some(1),
                vec![("a", false, false, true)],
                vec![],
                vec![],
                vec![],
            ),
        ];
        for (i, (max, spec, granted, waiting, flight)) in rows.into_iter().enumerate() {
            let p = pace(max, &nodes(&spec));
            assert_eq!(p.granted, set(&granted), "row {i}: granted");
            assert_eq!(p.waiting, set(&waiting), "row {i}: waiting");
            assert_eq!(p.in_flight, set(&flight), "row {i}: in flight");
        }
    }

    #[test]
    fn done_and_in_flight_follow_the_status() {
        let mut s: NodeStatus =
            serde_json::from_str(include_str!("../../schemas/examples/status.json"))
                .expect("example status");
        s.observed_generation = 4;
        s.converged = false;
        s.state = Some(State::Installing);
        for d in &mut s.deployments {
            d.state = State::Installing;
        }
        assert!(!done(None, 4));
        assert!(!done(Some(&s), 4));
        assert!(in_flight(true, 4, Some(&s), true));
        // Not a rollout step, or offline: no slot.
        assert!(!in_flight(false, 4, Some(&s), true));
        assert!(!in_flight(true, 4, Some(&s), false));
        // An older generation reported converged: still in flight.
        s.converged = true;
        assert!(in_flight(true, 5, Some(&s), true));
        assert!(done(Some(&s), 4));
        // Failed counts as done.
        s.converged = false;
        s.deployments[0].state = State::Failed;
        assert!(done(Some(&s), 4));
        assert!(!in_flight(true, 4, Some(&s), true));
    }
}
