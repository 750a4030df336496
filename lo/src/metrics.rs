//! Prometheus metrics (prometheus-client, explicit registry).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label set with one `action` / `reason` / `kind` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The label value.
    pub kind: String,
}

/// Every metric of the LO.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Time to render, persist and publish after a change.
    pub reconcile_seconds: Histogram,
    /// Time to compute the site plan.
    pub plan_seconds: Histogram,
    /// Enrolled nodes.
    pub nodes_enrolled: Gauge,
    /// Online nodes.
    pub nodes_online: Gauge,
    /// Converged nodes.
    pub nodes_converged: Gauge,
    /// Deployment steps of the current plan, by action.
    pub plan_actions: Family<KindLabel, Gauge>,
    /// Decisions taken (rollback, hold, rollback_failed).
    pub decisions: Family<KindLabel, Counter>,
    /// Commits rejected by validation.
    pub rejected_commits: Counter,
    /// Commits held by the deletion guard.
    pub held_commits: Counter,
    /// Commits served.
    pub served_commits: Counter,
    /// Source (fetch) errors.
    pub source_errors: Counter,
    /// Desired documents published.
    pub desired_published: Counter,
    /// MQTT connections established after the first.
    pub mqtt_reconnects: Counter,
    /// Messages refused (malformed, wrong topic), by reason.
    pub messages_rejected: Family<KindLabel, Counter>,
    /// Messages ingested, by channel.
    pub messages: Family<KindLabel, Counter>,
    /// Publishes not sent because they would exceed the packet limit, by kind
    /// (`status`, `desired`).
    pub publish_refused: Family<KindLabel, Counter>,
    /// Desired documents published again because the broker held something else.
    pub desired_reasserted: Counter,
    /// Generations read back from the broker and not followed (too far ahead, unsigned).
    pub generations_ignored: Counter,
    /// Messages from unknown nodes beyond the number tracked.
    pub unknown_nodes_untracked: Counter,
    /// Rollout events by kind (`started`, `wavePassed`, `halted`, `rolledBack`, `complete`).
    pub rollout_events: Family<KindLabel, Counter>,
    /// Deployments by rollout phase.
    pub rollouts: Family<KindLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lo");
        let reconcile_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let plan_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let m = Metrics {
            reconcile_seconds,
            plan_seconds,
            nodes_enrolled: Gauge::default(),
            nodes_online: Gauge::default(),
            nodes_converged: Gauge::default(),
            plan_actions: Family::default(),
            decisions: Family::default(),
            rejected_commits: Counter::default(),
            held_commits: Counter::default(),
            served_commits: Counter::default(),
            source_errors: Counter::default(),
            desired_published: Counter::default(),
            mqtt_reconnects: Counter::default(),
            messages_rejected: Family::default(),
            messages: Family::default(),
            publish_refused: Family::default(),
            desired_reasserted: Counter::default(),
            generations_ignored: Counter::default(),
            unknown_nodes_untracked: Counter::default(),
            rollout_events: Family::default(),
            rollouts: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reconcile_duration_seconds",
            "Time to render, persist and publish after a change",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "plan_duration_seconds",
            "Time to compute the site plan",
            m.plan_seconds.clone(),
        );
        registry.register("nodes_enrolled", "Enrolled nodes", m.nodes_enrolled.clone());
        registry.register("nodes_online", "Online nodes", m.nodes_online.clone());
        registry.register(
            "nodes_converged",
            "Nodes converged at their desired generation",
            m.nodes_converged.clone(),
        );
        registry.register(
            "plan_actions",
            "Deployment steps of the current plan by action",
            m.plan_actions.clone(),
        );
        registry.register(
            "decisions",
            "Failure-policy decisions by kind",
            m.decisions.clone(),
        );
        registry.register(
            "rejected_commits",
            "Commits rejected by validation",
            m.rejected_commits.clone(),
        );
        registry.register(
            "held_commits",
            "Commits held by the deletion guard",
            m.held_commits.clone(),
        );
        registry.register("served_commits", "Commits served", m.served_commits.clone());
        registry.register(
            "rollout_events",
            "Rollout events by kind",
            m.rollout_events.clone(),
        );
        registry.register(
            "rollouts",
            "Deployments by rollout phase",
            m.rollouts.clone(),
        );
        registry.register(
            "source_errors",
            "Git fetch or read errors",
            m.source_errors.clone(),
        );
        registry.register(
            "desired_published",
            "Desired documents published",
            m.desired_published.clone(),
        );
        registry.register(
            "mqtt_reconnects",
            "MQTT connections after the first",
            m.mqtt_reconnects.clone(),
        );
        registry.register(
            "messages_rejected",
            "MQTT messages refused by reason",
            m.messages_rejected.clone(),
        );
        registry.register(
            "messages",
            "MQTT messages ingested by channel",
            m.messages.clone(),
        );
        registry.register(
            "publish_refused",
            "Publishes not sent because they would exceed the packet limit, by kind",
            m.publish_refused.clone(),
        );
        registry.register(
            "desired_reasserted",
            "Desired documents published again because the broker held something else",
            m.desired_reasserted.clone(),
        );
        registry.register(
            "generations_ignored",
            "Desired generations read back from the broker and not followed",
            m.generations_ignored.clone(),
        );
        registry.register(
            "unknown_nodes_untracked",
            "Messages from unknown nodes beyond the number tracked",
            m.unknown_nodes_untracked.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Shortcut for a label.
    pub fn kind(kind: &str) -> KindLabel {
        KindLabel {
            kind: kind.to_owned(),
        }
    }
}
