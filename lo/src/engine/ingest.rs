//! What comes in over MQTT: CONNACKs (subscribe, presence, republish), node reports
//! (topic, signature, size and admission checks, then presence, status, heartbeats,
//! events), deleted retained topics, and desired documents read back from the broker.

use super::{now_ms, Engine};
use crate::audit::AuditEntry;
use crate::metrics::Metrics;
use crate::mqtt::MqttEvent;
use crate::observe::PresenceOutcome;
use crate::policy;
use crate::reconcile::{self, Republish};
use crate::reports::{
    self, check_report, follow_generation, oversized_report, MAX_UNDECLARED_NODES,
};
use edge_io::mqtt::qos;
use schemas::{DesiredState, Event, Heartbeat, NodeChannel, NodeStatus, Presence, Topic};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A node's desired document is re-asserted at most this often.
const REASSERT_INTERVAL: Duration = Duration::from_secs(1);

impl Engine {
    pub(super) async fn on_mqtt(&mut self, ev: MqttEvent) {
        match ev {
            MqttEvent::Connected {
                session_present,
                epoch,
            } => {
                tracing::info!(session_present, epoch, "mqtt connected");
                if self.ever_connected {
                    self.shared.metrics.mqtt_reconnects.inc();
                }
                self.connected = true;
                self.shared.mqtt_connected.store(true, Ordering::SeqCst);
                if self.settle_at.is_none() {
                    // Retained presence and status arrive within a heartbeat timeout.
                    self.settle_at =
                        Some(self.mono_ms() + self.cfg.heartbeat_timeout.as_millis() as u64);
                }
                self.store.data.lo_epoch = epoch;
                self.save();
                let subs = [
                    NodeChannel::Status,
                    NodeChannel::Online,
                    NodeChannel::Desired,
                    NodeChannel::Heartbeat,
                    NodeChannel::Events,
                ]
                .map(|c| {
                    rumqttc::SubscribeFilter::new(
                        self.topics.all_nodes(&self.site, c),
                        qos(c.lo_subscribe_qos()),
                    )
                });
                if session_present && !self.ever_connected {
                    // A new process on a kept session: rumqttd sends retained messages only
                    // for a subscription the session does not have yet (and only unsubscribes
                    // a restored one after it was subscribed on this connection). Subscribe,
                    // unsubscribe, and subscribe again below, so the retained status, presence
                    // and desired documents are read back.
                    if let Err(e) = self.client.subscribe_many(subs.clone()).await {
                        tracing::warn!(error = %e, "cannot subscribe");
                    }
                    for f in &subs {
                        if let Err(e) = self.client.unsubscribe(f.path.clone()).await {
                            tracing::warn!(error = %e, "cannot unsubscribe");
                        }
                    }
                }
                if let Err(e) = self.client.subscribe_many(subs).await {
                    tracing::warn!(error = %e, "cannot subscribe");
                }
                self.publish_presence(true, epoch).await;
                let first = !self.ever_connected;
                self.ever_connected = true;
                match reconcile::after_connect(first, session_present, &self.desired, &self.unsent)
                {
                    Republish::All(nodes) => {
                        tracing::info!(nodes = nodes.len(), "republishing every desired document");
                        for node in nodes {
                            self.publish_desired(&node).await;
                        }
                    }
                    Republish::Unsent(nodes) => {
                        for node in nodes {
                            self.publish_desired(&node).await;
                        }
                    }
                }
                self.status_dirty = true;
                self.last_status = None;
            }
            MqttEvent::Disconnected(reason) => {
                if self.connected {
                    tracing::warn!(reason = %reason, "mqtt disconnected");
                }
                self.connected = false;
                self.shared.mqtt_connected.store(false, Ordering::SeqCst);
            }
            MqttEvent::Message {
                topic,
                payload,
                retain,
            } => self.on_message(&topic, &payload, retain),
        }
    }

    pub(super) fn refuse(&self, topic: &str, reason: &str, detail: &str) {
        // Both come from outside (serde quotes the offending value): cut them, so one
        // message cannot write megabytes to the log.
        let topic = schemas::shorten(topic, 256);
        let detail = schemas::shorten(detail, 256);
        tracing::warn!(topic = %topic, reason, detail = %detail, "message refused");
        self.shared
            .metrics
            .messages_rejected
            .get_or_create(&Metrics::kind(reason))
            .inc();
    }

    pub(super) fn on_message(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let (node, channel) = match self.topics.parse(topic) {
            Ok(Topic::Node {
                site,
                node,
                channel,
            }) if site == self.site => (node, channel),
            Ok(_) => return self.refuse(topic, "wrong_topic", "not a node topic of this site"),
            Err(e) => return self.refuse(topic, "wrong_topic", &e.to_string()),
        };
        if payload.is_empty() {
            // A deleted retained topic.
            return self.on_deleted(&node, channel);
        }
        self.shared
            .metrics
            .messages
            .get_or_create(&Metrics::kind(channel.as_str()))
            .inc();
        if channel == NodeChannel::Desired {
            return self.on_desired_readback(&node, payload);
        }
        // One parse into a value: the signature covers the raw JSON (fields a newer agent
        // added included), and sizes are checked before typed decoding.
        let raw: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => return self.refuse(topic, "malformed", &e.to_string()),
        };
        let key = (node.clone(), channel);
        let last = self.report_seq.get(&key).copied();
        // A session's presences (`online: true` after CONNACK, then its Will, signed before
        // it) are ordered by the session only: within one epoch both count, whatever their
        // sequence numbers; an older session's presence is a replay.
        let presence = channel == NodeChannel::Online;
        let last = last.map(|(e, s)| if presence { (e, 0) } else { (e, s) });
        match check_report(
            &raw,
            topic,
            presence,
            self.keys.get(&node),
            self.require_signed,
            last,
        ) {
            Ok(Some((epoch, seq))) => {
                if self.keys.contains_key(&node) {
                    let seq = if presence { 0 } else { seq };
                    self.report_seq.insert(key, (epoch, seq));
                }
            }
            Ok(None) => {}
            Err(why) => {
                if self.declared(&node) {
                    *self.refused_reports.entry(node.clone()).or_default() += 1;
                    self.status_dirty = true;
                }
                return self.refuse(topic, why.as_str(), "report signature check failed");
            }
        }
        if !self.admit(&node) {
            self.untracked += 1;
            self.shared.metrics.unknown_nodes_untracked.inc();
            if self.untracked.is_power_of_two() {
                tracing::warn!(node = %schemas::shorten(&node, 64), untracked = self.untracked, limit = MAX_UNDECLARED_NODES, "too many undeclared nodes; messages of further ones are counted only");
            }
            self.status_dirty = true;
            return;
        }
        let now = self.mono_ms();
        let wall = schemas::now_rfc3339();
        let known = self
            .fleet
            .get(&node)
            .is_some_and(|o| o.presence.is_some() || o.status.is_some());
        match channel {
            NodeChannel::Status => {
                if let Some(why) = oversized_report(&raw) {
                    return self.refuse(topic, "oversized", &why);
                }
                let mut s: NodeStatus = match serde_json::from_value(raw) {
                    Ok(s) => s,
                    Err(e) => return self.refuse(topic, "malformed", &e.to_string()),
                };
                if !self.declared(&node) && !self.auto_enrol() {
                    // A node that gets nothing: only its announcement matters. Its lists are
                    // not kept (1,000 of them could hold a packet each).
                    s.deployments.clear();
                    s.unmanaged.clear();
                }
                if s.node != node || s.site != self.site {
                    return self.refuse(
                        topic,
                        "wrongly_addressed",
                        "site or node differ from the topic",
                    );
                }
                self.on_status(&node, s, now, retain, &wall);
            }
            NodeChannel::Online => {
                let p: Presence = match serde_json::from_value(raw) {
                    Ok(p) => p,
                    Err(e) => return self.refuse(topic, "malformed", &e.to_string()),
                };
                match self.fleet.presence(&node, &p, now, retain, &wall) {
                    PresenceOutcome::Stale => {
                        tracing::info!(node = %node, epoch = p.epoch, "stale presence ignored");
                        self.audit.log(
                            AuditEntry::new(
                                "observed",
                                format!("stale presence (epoch {}) ignored", p.epoch),
                            )
                            .node(&node),
                        );
                    }
                    PresenceOutcome::OutOfRange => {
                        return self.refuse(topic, "out_of_range", "presence epoch above 2^53-1");
                    }
                    outcome => {
                        if outcome == PresenceOutcome::Jump {
                            tracing::warn!(node = %node, epoch = p.epoch, "presence epoch jumped; applied without raising the floor");
                        }
                        self.audit.log(
                            AuditEntry::new(
                                "observed",
                                format!("online={} epoch={}", p.online, p.epoch),
                            )
                            .node(&node),
                        );
                    }
                }
                self.status_dirty = true;
                self.pace_dirty = true;
            }
            NodeChannel::Heartbeat => match serde_json::from_value::<Heartbeat>(raw) {
                Ok(hb) => self.fleet.heartbeat(&node, hb, now, &wall),
                Err(e) => return self.refuse(topic, "malformed", &e.to_string()),
            },
            NodeChannel::Events => match serde_json::from_value::<Event>(raw) {
                Ok(ev) => {
                    tracing::debug!(node = %node, deployment = %ev.deployment, to = %ev.to, "event");
                    self.fleet.event(&node, ev, now, &wall);
                }
                Err(e) => return self.refuse(topic, "malformed", &e.to_string()),
            },
            NodeChannel::Desired => {}
        }
        if !known
            && self
                .fleet
                .get(&node)
                .is_some_and(|o| o.presence.is_some() || o.status.is_some())
        {
            // A node announced itself: the inventory may change (auto-enrolment, unknown).
            self.reconcile_pending = true;
        }
    }

    /// Whether the served Site enrols announcing nodes.
    pub(super) fn auto_enrol(&self) -> bool {
        self.served
            .as_ref()
            .and_then(|s| s.docs.site.as_ref())
            .and_then(|site| site.spec.enrollment.as_ref())
            .is_some_and(|e| e.auto)
    }

    /// Whether `node` has a `Node` document at the served revision.
    pub(super) fn declared(&self, node: &str) -> bool {
        self.served
            .as_ref()
            .is_some_and(|s| s.docs.nodes.contains_key(node))
    }

    /// Whether what `node` says is kept: declared nodes and nodes already tracked always;
    /// others while fewer than [`MAX_UNDECLARED_NODES`] undeclared ones are tracked
    /// ([`MAX_AUTO_ENROLLED_NODES`] with auto-enrolment).
    pub(super) fn admit(&self, node: &str) -> bool {
        if self.declared(node) || self.fleet.get(node).is_some() {
            return true;
        }
        let limit = reports::undeclared_limit(self.auto_enrol());
        if self.fleet.len() < limit {
            return true;
        }
        // Counting the undeclared nodes walks the whole fleet: done again only when the
        // fleet or the served revision changed, so a flood of invented names past the bound
        // costs a lookup per message, not a walk.
        let at = (
            self.fleet.len(),
            self.served.as_ref().map(|s| s.commit.clone()),
        );
        if let Some((when, undeclared)) = self.undeclared_count.take() {
            if when == at {
                self.undeclared_count.set(Some((when, undeclared)));
                return undeclared < limit;
            }
        }
        let undeclared = self
            .fleet
            .nodes()
            .keys()
            .filter(|n| !self.declared(n))
            .count();
        self.undeclared_count.set(Some((at, undeclared)));
        undeclared < limit
    }

    /// A retained topic was deleted (empty payload).
    pub(super) fn on_deleted(&mut self, node: &str, channel: NodeChannel) {
        match channel {
            // Someone deleted a document we hold: a fresh agent would get nothing.
            NodeChannel::Desired if self.desired_doc(node).is_some() => {
                tracing::warn!(node = %node, "retained desired document deleted on the broker; re-asserting it");
                let now = self.mono_ms();
                self.suspect.entry(node.to_owned()).or_insert(now);
            }
            // Only nodes that are not enrolled are forgotten: an enrolled node keeps its
            // workloads whatever happens to its report topics.
            NodeChannel::Status | NodeChannel::Online if self.inventory.unknown.contains(node) => {
                if channel == NodeChannel::Status {
                    self.fleet.status_deleted(node);
                } else {
                    self.fleet.presence_deleted(node);
                }
                if self.fleet.get(node).is_none() {
                    tracing::info!(node = %node, "unknown node's retained topics deleted; forgotten");
                    self.reconcile_pending = true;
                }
                self.status_dirty = true;
            }
            _ => {}
        }
    }

    /// A retained desired document read back from the broker. The broker is not trusted:
    /// what it holds is compared with what we published; anything else is re-asserted, and
    /// a generation above ours is followed only within bounds (and signed by us when we
    /// sign), so no message can wrap or exhaust a node's generations.
    pub(super) fn on_desired_readback(&mut self, node: &str, payload: &[u8]) {
        let ours_known = self.store.data.nodes.contains_key(node) || self.declared(node);
        if !ours_known {
            // Not a node we publish for: nothing to follow, nothing kept.
            return;
        }
        // Our own publish coming back (the common case) is recognised by its digest; only
        // before our first publish of this process is the document rendered to compare.
        let ours_now = match self.published_digest.get(node) {
            Some(d) => Some(*d == self.digest(payload)),
            None => self
                .desired_payload(node)
                .map(|(_, p)| p.as_slice() == payload),
        };
        if ours_now == Some(true) {
            self.suspect.remove(node);
            return;
        }
        let ours = self.store.data.nodes.get(node).map_or(0, |r| r.generation);
        if let Ok(doc) = serde_json::from_slice::<DesiredState>(payload) {
            if doc.generation > ours {
                let trusted = match &self.signing {
                    Some(k) => schemas::sign::verify(&doc, &k.verifying_key()).is_ok(),
                    None => true,
                };
                match follow_generation(ours, doc.generation, trusted) {
                    Some(g) => {
                        tracing::warn!(node = %node, generation = g, ours, "broker holds a newer desired generation; superseding it");
                        let f = self.floors.entry(node.to_owned()).or_default();
                        *f = (*f).max(g);
                        self.reconcile_pending = true;
                    }
                    None => {
                        tracing::warn!(node = %node, generation = doc.generation, ours, trusted, "desired generation read back not followed (too far ahead, above the maximum, or not signed by us)");
                        self.shared.metrics.generations_ignored.inc();
                    }
                }
            }
        }
        if ours_now.is_some() {
            let now = self.mono_ms();
            self.suspect.entry(node.to_owned()).or_insert(now);
        }
    }

    /// Re-publishes the desired documents the broker holds wrongly, at most once per
    /// [`REASSERT_INTERVAL`] per node (a writer fighting us costs one publish a second).
    pub(super) async fn reassert(&mut self) {
        if self.suspect.is_empty() || !self.connected {
            return;
        }
        let now = self.mono_ms();
        let due: Vec<String> = self
            .suspect
            .iter()
            .filter(|(n, since)| {
                now.saturating_sub(**since) >= 300
                    && self
                        .reasserted
                        .get(*n)
                        .is_none_or(|(t, _)| t.elapsed() >= REASSERT_INTERVAL)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for node in due {
            let count = {
                let e = self
                    .reasserted
                    .entry(node.clone())
                    .or_insert((Instant::now(), 0));
                *e = (Instant::now(), e.1 + 1);
                e.1
            };
            if count.is_power_of_two() {
                tracing::warn!(node = %node, count, "broker holds another desired document than ours; re-asserting");
            }
            self.shared.metrics.desired_reasserted.inc();
            self.publish_desired(&node).await;
            self.suspect.remove(&node);
        }
    }

    pub(super) fn on_status(
        &mut self,
        node: &str,
        s: NodeStatus,
        now: u64,
        retain: bool,
        wall: &str,
    ) {
        let prev = self
            .fleet
            .get(node)
            .and_then(|o| o.status.as_ref())
            .map(|p| (p.observed_generation, p.state, p.converged));
        if prev != Some((s.observed_generation, s.state, s.converged)) {
            self.audit.log(
                AuditEntry::new(
                    "observed",
                    format!(
                        "status state={} converged={}",
                        s.state.map_or("none", |st| st.as_str()),
                        s.converged
                    ),
                )
                .node(node)
                .generation(s.observed_generation),
            );
        }
        if let (Some(d), Some(rec)) = (self.desired.get(node), self.store.data.nodes.get(node)) {
            let empty = BTreeMap::new();
            let empty_rb = BTreeMap::new();
            let empty_h = BTreeMap::new();
            let decisions = policy::decide(
                d,
                rec.generation,
                &s,
                self.book.installed.get(node).unwrap_or(&empty),
                self.book.rollbacks.get(node).unwrap_or(&empty_rb),
                self.book.held.get(node).unwrap_or(&empty_h),
            );
            if s.converged
                && s.observed_generation == rec.generation
                && self.converged.get(node).map(|c| c.0) != Some(rec.generation)
            {
                let took = now_ms().saturating_sub(rec.published_ms);
                tracing::info!(node = %node, generation = rec.generation, converged_in_ms = took, "node converged");
                self.converged
                    .insert(node.to_owned(), (rec.generation, took));
            }
            self.apply(node, decisions);
        }
        self.fleet.status(node, s, now, retain, wall);
        self.status_dirty = true;
        self.pace_dirty = true;
    }
}
