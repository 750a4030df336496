//! What goes out over MQTT: each node's desired document (built from the record and the
//! content handed, signed, checked against the packet limit), the site status, and the LO's
//! presence. QoS and retain come from the channel declarations in [`schemas::topic`].

use super::Engine;
use crate::audit::AuditEntry;
use crate::metrics::Metrics;
use crate::mqtt;
use crate::rollout::Happened;
use crate::status::{
    self, fit_status, ReportsView, ServedView, StatusInput, MAX_STATUS_BYTES, VERSION,
};
use edge_io::mqtt::publish;
use schemas::{
    DesiredState, LoChannel, LoEvent, LoEventSchema, NodeChannel, RolloutEventKind, SiteStatus,
    VersionRef,
};
use std::time::Instant;

/// Room for the fixed header and topic length of a PUBLISH, besides topic and payload.
const PUBLISH_OVERHEAD: usize = 16;

impl Engine {
    /// Publishes the LO's presence (retained; the Will says offline).
    pub(super) async fn publish_presence(&mut self, online: bool, epoch: u64) {
        let topic = self.topics.lo(&self.site, LoChannel::Online);
        let payload = mqtt::presence(online, epoch, VERSION);
        let _ = publish(&self.client, &topic, LoChannel::Online.publish(), payload).await;
    }

    /// The site status now (see [`status::site_status`]); sets the online and converged
    /// gauges.
    pub(super) fn site_status(&self) -> SiteStatus {
        let (st, online, converged) = status::site_status(&StatusInput {
            site: &self.site,
            updated_at: schemas::now_rfc3339(),
            served: self.served.as_ref().map(|s| ServedView {
                commit: &s.commit,
                path: &self.site_path,
                since: &s.since,
                docs: &s.docs,
            }),
            last_error: self.last_error.as_ref(),
            held: self.held.as_ref(),
            inventory: &self.inventory,
            fleet: &self.fleet,
            now_ms: self.mono_ms(),
            records: &self.store.data.nodes,
            desired: &self.desired,
            rollbacks: &self.book.rollbacks,
            rollouts: &self.views,
            converged: &self.converged,
            untracked: self.untracked,
            reports: ReportsView {
                require_signed: self.require_signed,
                keys: &self.keys,
                refused: &self.refused_reports,
            },
        });
        self.shared.metrics.nodes_online.set(online);
        self.shared.metrics.nodes_converged.set(converged);
        st
    }

    /// The bytes of the desired document of `node` as published (deterministic: the same
    /// record gives the same bytes, signature included).
    pub(super) fn desired_payload(&self, node: &str) -> Option<(DesiredState, Vec<u8>)> {
        let doc = self.desired_doc(node)?;
        match serde_json::to_vec(&doc) {
            Ok(p) => Some((doc, p)),
            Err(e) => {
                tracing::error!(node = %node, error = %e, "cannot serialise desired document");
                None
            }
        }
    }

    pub(super) fn digest(&self, payload: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.digest_keys.hash_one(payload)
    }

    /// Whether a publish on `topic` of `len` bytes fits the packet limit; counts and logs
    /// when it does not.
    pub(super) fn fits(&self, kind: &str, topic: &str, len: usize) -> bool {
        let size = len + topic.len() + PUBLISH_OVERHEAD;
        if size <= self.cfg.max_packet_size {
            return true;
        }
        tracing::error!(kind, topic = %topic, bytes = size, limit = self.cfg.max_packet_size, "publish exceeds the packet limit; not sent");
        self.shared
            .metrics
            .publish_refused
            .get_or_create(&Metrics::kind(kind))
            .inc();
        false
    }

    pub(super) fn desired_doc(&self, node: &str) -> Option<DesiredState> {
        let nd = self.desired.get(node)?;
        let rec = self.store.data.nodes.get(node)?;
        let mut doc = nd.to_state(&self.site, node, rec.generation, &rec.issued_at);
        if let Some(key) = &self.signing {
            schemas::sign::sign(&mut doc, key, &self.cfg.signing_key_id);
        }
        Some(doc)
    }

    pub(super) async fn publish_desired(&mut self, node: &str) {
        if !self.connected {
            self.unsent.insert(node.to_owned());
            return;
        }
        let Some((doc, payload)) = self.desired_payload(node) else {
            return;
        };
        let topic = self.topics.node(&self.site, node, NodeChannel::Desired);
        if !self.fits("desired", &topic, payload.len()) {
            self.unsent.remove(node);
            return;
        }
        // What we publish now is what the broker will hold: nothing left to re-assert.
        self.suspect.remove(node);
        let digest = self.digest(&payload);
        if let Err(e) = publish(
            &self.client,
            &topic,
            NodeChannel::Desired.publish(),
            payload,
        )
        .await
        {
            tracing::warn!(node = %node, error = %e, "cannot queue desired document");
            self.unsent.insert(node.to_owned());
            return;
        }
        self.unsent.remove(node);
        self.published_digest.insert(node.to_owned(), digest);
        self.shared.metrics.desired_published.inc();
        tracing::debug!(node = %node, generation = doc.generation, "desired published");
        self.audit.log(
            AuditEntry::new(
                "published",
                format!("desired with {} deployments", doc.deployments.len()),
            )
            .node(node)
            .commit(&doc.revision.commit)
            .generation(doc.generation),
        );
    }

    /// A rollout event: logged, audited, counted and published on `lo/events`.
    pub(super) async fn rollout_event(&mut self, deployment: &str, h: &Happened) {
        let Some(r) = self.rollouts.get(deployment) else {
            return;
        };
        let version = |d: &crate::render::Dep| VersionRef {
            commit: d.spec.commit.clone(),
            spec_hash: d.spec_hash.clone(),
        };
        // After `complete` the candidate is the promoted version.
        let Some(candidate) = r.candidate.as_ref().or(r.promoted.as_ref()).map(version) else {
            return;
        };
        let promoted = match h.kind {
            RolloutEventKind::Complete => None,
            _ => r.promoted.as_ref().map(version),
        };
        let halt = match h.kind {
            RolloutEventKind::Halted | RolloutEventKind::RolledBack => r.halt.clone(),
            _ => None,
        };
        let wave = u32::try_from(h.wave + 1).unwrap_or(u32::MAX);
        let kind = h.kind.as_str();
        let message = match &halt {
            Some(why) => format!(
                "rollout {kind} at wave {wave}: node {} {}: {}",
                why.node, why.code, why.message
            ),
            None => format!("rollout {kind} at wave {wave}"),
        };
        match h.kind {
            RolloutEventKind::Halted | RolloutEventKind::RolledBack => {
                tracing::warn!(deployment, commit = %candidate.commit, wave, event = kind, reason = %message, "rollout halted");
            }
            _ => {
                tracing::info!(deployment, commit = %candidate.commit, wave, event = kind, "rollout")
            }
        }
        self.shared
            .metrics
            .rollout_events
            .get_or_create(&Metrics::kind(kind))
            .inc();
        self.audit.log(
            AuditEntry::new("rollout", message)
                .deployment(deployment)
                .commit(&candidate.commit),
        );
        let event = LoEvent {
            schema: LoEventSchema::V1,
            at: schemas::now_rfc3339(),
            deployment: deployment.to_owned(),
            kind: h.kind,
            wave,
            candidate,
            promoted,
            halt_reason: halt,
        };
        if !self.connected {
            return;
        }
        let topic = self.topics.lo(&self.site, LoChannel::Events);
        let payload = serde_json::to_vec(&event).unwrap_or_default();
        if let Err(e) = publish(&self.client, &topic, LoChannel::Events.publish(), payload).await {
            tracing::warn!(error = %e, "cannot publish a rollout event");
        }
    }

    pub(super) async fn publish_status(&mut self) {
        let st = self.site_status();
        self.status_dirty = false;
        self.last_status = Some(Instant::now());
        self.shared.set_status(st.clone());
        if !self.connected {
            return;
        }
        let topic = self.topics.lo(&self.site, LoChannel::Status);
        let limit = MAX_STATUS_BYTES.min(
            self.cfg
                .max_packet_size
                .saturating_sub(topic.len() + PUBLISH_OVERHEAD),
        );
        let Some(payload) = fit_status(&st, self.rollout.as_ref(), limit) else {
            tracing::error!(
                limit,
                "site status does not fit the packet limit even trimmed; not sent"
            );
            self.shared
                .metrics
                .publish_refused
                .get_or_create(&Metrics::kind("status"))
                .inc();
            return;
        };
        if let Err(e) = publish(&self.client, &topic, LoChannel::Status.publish(), payload).await {
            tracing::warn!(error = %e, "cannot publish the site status");
        }
    }
}
