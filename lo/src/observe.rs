//! Observed state: a pure state machine over what nodes publish (status, events, heartbeats,
//! presence). Time is passed in (ms since an arbitrary origin), so tests drive it by hand.
//!
//! Presence carries a session epoch: the highest epoch seen per node wins, and a message with
//! a lower epoch (a late Last Will of an old session) is ignored. A node is online when its
//! newest presence says so and it was heard from (heartbeat, status, event, presence) within
//! the heartbeat timeout. Retained messages delivered on subscribe are history, not liveness,
//! except a retained `online: true`, which starts a grace period of one timeout.

use schemas::{Event, Heartbeat, NodeStatus, Presence};
use std::collections::BTreeMap;

/// What the LO knows about one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeObs {
    /// Highest presence epoch seen.
    pub epoch: u64,
    /// What the newest presence said (`None`: no presence seen).
    pub presence: Option<bool>,
    /// Last time the node was heard from live (ms).
    pub last_live_ms: Option<u64>,
    /// Last full report.
    pub status: Option<NodeStatus>,
    /// Last heartbeat.
    pub heartbeat: Option<Heartbeat>,
    /// Last event.
    pub last_event: Option<Event>,
    /// Wall-clock time of the last message (RFC 3339).
    pub last_seen: Option<String>,
    /// Whether the last [`Fleet::expire`] considered it online.
    pub was_online: bool,
}

/// Result of ingesting a presence message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceOutcome {
    /// Applied.
    Applied,
    /// Ignored: its epoch is lower than one already seen.
    Stale,
}

/// Every node heard from.
#[derive(Debug, Clone)]
pub struct Fleet {
    nodes: BTreeMap<String, NodeObs>,
    timeout_ms: u64,
}

impl Fleet {
    /// An empty fleet with a heartbeat timeout.
    pub fn new(timeout_ms: u64) -> Self {
        Fleet {
            nodes: BTreeMap::new(),
            timeout_ms,
        }
    }

    /// Every node heard from.
    pub fn nodes(&self) -> &BTreeMap<String, NodeObs> {
        &self.nodes
    }

    /// One node.
    pub fn get(&self, node: &str) -> Option<&NodeObs> {
        self.nodes.get(node)
    }

    fn entry(&mut self, node: &str) -> &mut NodeObs {
        if !self.nodes.contains_key(node) {
            self.nodes.insert(node.to_owned(), NodeObs::default());
        }
        // Inserted above.
        self.nodes.entry(node.to_owned()).or_default()
    }

    /// Ingests a presence message (`retained`: delivered from the broker's store on
    /// subscribe).
    pub fn presence(
        &mut self,
        node: &str,
        p: &Presence,
        now_ms: u64,
        retained: bool,
        wall: &str,
    ) -> PresenceOutcome {
        let obs = self.entry(node);
        if obs.presence.is_some() && p.epoch < obs.epoch {
            return PresenceOutcome::Stale;
        }
        obs.epoch = p.epoch;
        obs.presence = Some(p.online);
        if p.online {
            // A retained `online: true` starts a grace period; a live one is liveness.
            obs.last_live_ms = Some(now_ms);
            if !retained {
                obs.last_seen = Some(wall.to_owned());
            }
        }
        PresenceOutcome::Applied
    }

    /// Ingests a full status report.
    pub fn status(&mut self, node: &str, s: NodeStatus, now_ms: u64, retained: bool, wall: &str) {
        let obs = self.entry(node);
        if !retained {
            obs.last_live_ms = Some(now_ms);
            obs.last_seen = Some(wall.to_owned());
        } else if obs.last_seen.is_none() {
            obs.last_seen = Some(s.reported_at.clone());
        }
        obs.status = Some(s);
    }

    /// Ingests a heartbeat.
    pub fn heartbeat(&mut self, node: &str, hb: Heartbeat, now_ms: u64, wall: &str) {
        let obs = self.entry(node);
        obs.last_live_ms = Some(now_ms);
        obs.last_seen = Some(wall.to_owned());
        obs.heartbeat = Some(hb);
    }

    /// Ingests an event.
    pub fn event(&mut self, node: &str, ev: Event, now_ms: u64, wall: &str) {
        let obs = self.entry(node);
        obs.last_live_ms = Some(now_ms);
        obs.last_seen = Some(wall.to_owned());
        obs.last_event = Some(ev);
    }

    /// Whether `node` is online at `now_ms`.
    pub fn online(&self, node: &str, now_ms: u64) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|o| is_online(o, now_ms, self.timeout_ms))
    }

    /// Re-evaluates liveness; returns the nodes whose online state changed since the last
    /// call, with their new state.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(String, bool)> {
        let timeout = self.timeout_ms;
        let mut changed = Vec::new();
        for (name, o) in &mut self.nodes {
            let online = is_online(o, now_ms, timeout);
            if online != o.was_online {
                o.was_online = online;
                changed.push((name.clone(), online));
            }
        }
        changed
    }
}

fn is_online(o: &NodeObs, now_ms: u64, timeout_ms: u64) -> bool {
    o.presence != Some(false)
        && o.last_live_ms
            .is_some_and(|t| now_ms.saturating_sub(t) <= timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::PresenceSchema;

    fn p(online: bool, epoch: u64) -> Presence {
        Presence {
            signature: None,
            schema: PresenceSchema::V1,
            online,
            epoch,
            version: None,
        }
    }

    #[test]
    fn stale_will_does_not_mark_newer_session_offline() {
        let mut f = Fleet::new(30_000);
        assert_eq!(
            f.presence("n1", &p(true, 5), 0, false, "t"),
            PresenceOutcome::Applied
        );
        assert!(f.online("n1", 1));
        // The Will of session 4 arrives late.
        assert_eq!(
            f.presence("n1", &p(false, 4), 2, false, "t"),
            PresenceOutcome::Stale
        );
        assert!(f.online("n1", 3));
        // The Will of session 5 is not stale.
        assert_eq!(
            f.presence("n1", &p(false, 5), 4, false, "t"),
            PresenceOutcome::Applied
        );
        assert!(!f.online("n1", 5));
    }

    #[test]
    fn heartbeat_timeout_marks_offline_and_back() {
        let mut f = Fleet::new(30_000);
        f.presence("n1", &p(true, 1), 0, false, "t");
        assert_eq!(f.expire(10), vec![("n1".to_owned(), true)]);
        assert!(f.expire(20_000).is_empty());
        assert_eq!(f.expire(30_001), vec![("n1".to_owned(), false)]);
        let hb = Heartbeat {
            signature: None,
            schema: schemas::HeartbeatSchema::V1,
            seq: 1,
            uptime_s: 1,
            observed_generation: 0,
            converged: false,
        };
        f.heartbeat("n1", hb, 40_000, "t");
        assert_eq!(f.expire(40_001), vec![("n1".to_owned(), true)]);
    }

    #[test]
    fn retained_status_alone_is_not_liveness() {
        let mut f = Fleet::new(1_000);
        let s: NodeStatus =
            serde_json::from_str(include_str!("../../schemas/examples/status.json"))
                .expect("example status");
        f.status("n1", s, 0, true, "t");
        assert!(!f.online("n1", 0));
        assert!(f.get("n1").and_then(|o| o.status.as_ref()).is_some());
    }
}
