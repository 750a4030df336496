//! Observed state: a pure state machine over what nodes publish (status, events, heartbeats,
//! presence). Time is passed in (ms since an arbitrary origin), so tests drive it by hand.
//!
//! Presence carries a session epoch: the highest epoch seen per node wins, and a message with
//! a lower epoch (a late Last Will of an old session) is ignored. A node is online when its
//! newest presence says so and it was heard from (heartbeat, status, event, presence) within
//! the heartbeat timeout. Retained messages delivered on subscribe are history, not liveness,
//! except a retained `online: true`, which starts a grace period of one timeout.
//!
//! Presence comes from the broker, which we do not trust: a spoofed `online: false` with a
//! huge epoch must not pin a node offline. So epochs above [`MAX_EPOCH`] are refused, the
//! epoch floor rises by at most [`MAX_EPOCH_STEP`] per message, and a live heartbeat, status
//! or event that arrives after an offline presence marks the node online again.

use schemas::{Event, Heartbeat, NodeStatus, Presence};
use std::collections::BTreeMap;

/// Largest presence epoch accepted (the contract's, `schemas::bounds`).
pub use schemas::bounds::MAX_EPOCH;

/// Largest rise of the epoch floor per presence message. A real agent's epoch grows by one
/// per connection attempt; a jump beyond this is applied (its `online` value counts) but does
/// not raise the floor, so the real agent's next presence is not refused as stale.
pub const MAX_EPOCH_STEP: u64 = 1_000_000;

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
    /// Live traffic (heartbeat, status, event) arrived after the newest offline presence:
    /// the node speaks, whatever a presence said.
    pub live_since_offline: bool,
    /// Last time anything (retained too) was received about it (ms): for forgetting nodes
    /// that are not enrolled.
    pub heard_ms: u64,
}

/// Result of ingesting a presence message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceOutcome {
    /// Applied.
    Applied,
    /// Ignored: its epoch is lower than one already seen.
    Stale,
    /// Ignored: its epoch is above [`MAX_EPOCH`].
    OutOfRange,
    /// Applied, but its epoch jumped by more than [`MAX_EPOCH_STEP`]: the floor was not
    /// raised to it.
    Jump,
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
        if p.epoch > MAX_EPOCH {
            return PresenceOutcome::OutOfRange;
        }
        let obs = self.entry(node);
        obs.heard_ms = now_ms;
        let known = obs.presence.is_some();
        if known && p.epoch < obs.epoch {
            return PresenceOutcome::Stale;
        }
        let outcome = if known && p.epoch - obs.epoch > MAX_EPOCH_STEP {
            // Keep the floor: whoever sent this cannot lock the real agent out.
            PresenceOutcome::Jump
        } else {
            obs.epoch = p.epoch;
            PresenceOutcome::Applied
        };
        obs.presence = Some(p.online);
        if !p.online {
            obs.live_since_offline = false;
        }
        if p.online {
            // A retained `online: true` starts a grace period; a live one is liveness.
            obs.last_live_ms = Some(now_ms);
            if !retained {
                obs.last_seen = Some(wall.to_owned());
            }
        }
        outcome
    }

    /// Ingests a full status report.
    pub fn status(&mut self, node: &str, s: NodeStatus, now_ms: u64, retained: bool, wall: &str) {
        let obs = self.entry(node);
        obs.heard_ms = now_ms;
        if !retained {
            obs.last_live_ms = Some(now_ms);
            obs.last_seen = Some(wall.to_owned());
            obs.live_since_offline = true;
        } else if obs.last_seen.is_none() {
            obs.last_seen = Some(s.reported_at.clone());
        }
        obs.status = Some(s);
    }

    /// Ingests a heartbeat.
    pub fn heartbeat(&mut self, node: &str, hb: Heartbeat, now_ms: u64, wall: &str) {
        let obs = self.entry(node);
        obs.heard_ms = now_ms;
        obs.last_live_ms = Some(now_ms);
        obs.last_seen = Some(wall.to_owned());
        obs.live_since_offline = true;
        obs.heartbeat = Some(hb);
    }

    /// Ingests an event.
    pub fn event(&mut self, node: &str, ev: Event, now_ms: u64, wall: &str) {
        let obs = self.entry(node);
        obs.heard_ms = now_ms;
        obs.last_live_ms = Some(now_ms);
        obs.last_seen = Some(wall.to_owned());
        obs.live_since_offline = true;
        obs.last_event = Some(ev);
    }

    /// How many nodes are tracked.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is tracked.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The retained status of `node` was deleted (empty retained payload): forget it, and
    /// the node entirely when nothing else is known about it.
    pub fn status_deleted(&mut self, node: &str) {
        if let Some(o) = self.nodes.get_mut(node) {
            o.status = None;
        }
        self.drop_if_silent(node);
    }

    /// The retained presence of `node` was deleted: forget it (and the node, as above).
    pub fn presence_deleted(&mut self, node: &str) {
        if let Some(o) = self.nodes.get_mut(node) {
            o.presence = None;
            o.epoch = 0;
        }
        self.drop_if_silent(node);
    }

    fn drop_if_silent(&mut self, node: &str) {
        if self
            .nodes
            .get(node)
            .is_some_and(|o| o.presence.is_none() && o.status.is_none())
        {
            self.nodes.remove(node);
        }
    }

    /// Forgets every node for which `forgettable` holds and nothing was heard since
    /// `older_than_ms` before `now_ms`; returns how many were forgotten.
    pub fn forget_silent(
        &mut self,
        now_ms: u64,
        older_than_ms: u64,
        forgettable: impl Fn(&str) -> bool,
    ) -> usize {
        let before = self.nodes.len();
        self.nodes.retain(|name, o| {
            !(forgettable(name) && now_ms.saturating_sub(o.heard_ms) > older_than_ms)
        });
        before - self.nodes.len()
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
    (o.presence != Some(false) || o.live_since_offline)
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

    fn hb() -> Heartbeat {
        Heartbeat {
            signature: None,
            schema: schemas::HeartbeatSchema::V1,
            seq: 1,
            uptime_s: 1,
            observed_generation: 0,
            converged: false,
        }
    }

    #[test]
    fn spoofed_max_epoch_offline_presence_does_not_pin_the_node_offline() {
        let mut f = Fleet::new(30_000);
        f.presence("n1", &p(true, 7), 0, false, "t");
        assert_eq!(
            f.presence("n1", &p(false, u64::MAX), 1, false, "t"),
            PresenceOutcome::OutOfRange
        );
        assert!(f.online("n1", 2));
        // Just below the range bound: applied (offline) but the floor does not jump.
        assert_eq!(
            f.presence("n1", &p(false, MAX_EPOCH), 3, false, "t"),
            PresenceOutcome::Jump
        );
        assert!(!f.online("n1", 4));
        assert_eq!(f.get("n1").map(|o| o.epoch), Some(7));
        // The real agent reconnects with its next epoch: not stale.
        assert_eq!(
            f.presence("n1", &p(true, 8), 5, false, "t"),
            PresenceOutcome::Applied
        );
        assert!(f.online("n1", 6));
    }

    #[test]
    fn live_heartbeat_after_an_offline_presence_marks_the_node_online() {
        let mut f = Fleet::new(30_000);
        // A retained offline presence with a high epoch, read at start (first presence: the
        // floor cannot be checked against anything).
        f.presence("n1", &p(false, 1 << 40), 0, true, "t");
        assert!(!f.online("n1", 1));
        // The real agent (epoch 3) is refused as stale, but its heartbeats are liveness.
        assert_eq!(
            f.presence("n1", &p(true, 3), 2, false, "t"),
            PresenceOutcome::Stale
        );
        f.heartbeat("n1", hb(), 3, "t");
        assert!(f.online("n1", 4));
        // A later offline presence counts again, until the node speaks.
        f.presence("n1", &p(false, 1 << 40), 5, false, "t");
        assert!(!f.online("n1", 6));
        // Heartbeat timeout still applies.
        f.heartbeat("n1", hb(), 7, "t");
        assert!(f.online("n1", 8));
        assert!(!f.online("n1", 30_008));
    }

    #[test]
    fn epoch_steps_are_bounded_table() {
        // (floor, incoming, outcome, floor after)
        let cases = [
            (5, 4, PresenceOutcome::Stale, 5),
            (5, 5, PresenceOutcome::Applied, 5),
            (
                5,
                5 + MAX_EPOCH_STEP,
                PresenceOutcome::Applied,
                5 + MAX_EPOCH_STEP,
            ),
            (5, 6 + MAX_EPOCH_STEP, PresenceOutcome::Jump, 5),
            (5, MAX_EPOCH + 1, PresenceOutcome::OutOfRange, 5),
            (MAX_EPOCH, MAX_EPOCH, PresenceOutcome::Applied, MAX_EPOCH),
        ];
        for (floor, incoming, outcome, after) in cases {
            let mut f = Fleet::new(1_000);
            f.presence("n", &p(true, floor), 0, false, "t");
            assert_eq!(
                f.presence("n", &p(true, incoming), 1, false, "t"),
                outcome,
                "{floor} then {incoming}"
            );
            assert_eq!(
                f.get("n").map(|o| o.epoch),
                Some(after),
                "{floor} then {incoming}"
            );
        }
    }

    #[test]
    fn deleted_topics_and_silence_forget_nodes() {
        let mut f = Fleet::new(1_000);
        f.presence("a", &p(true, 1), 0, true, "t");
        f.presence("b", &p(true, 1), 0, true, "t");
        f.presence("c", &p(true, 1), 50_000, true, "t");
        f.presence_deleted("a");
        assert!(f.get("a").is_none());
        // Silent for longer than the bound and forgettable: gone; enrolled ones stay.
        assert_eq!(f.forget_silent(60_000, 30_000, |n| n != "b"), 0);
        assert_eq!(f.forget_silent(100_000, 30_000, |n| n != "b"), 1);
        assert!(f.get("b").is_some());
        assert!(f.get("c").is_none());
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
