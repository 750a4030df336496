//! The rollout scenario's watcher: `lo/events`, every node's `desired` (one exact filter per
//! node), `status` and `online`, with the time each crossed the broker.

use super::DEPLOYMENT;
use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the watcher saw.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// (kind, wave, when, the whole event).
    pub(super) events: Vec<(String, u64, Instant, serde_json::Value)>,
    /// The candidate's image tag (`:2.0`).
    pub(super) candidate_tag: Option<String>,
    /// Node → when its desired document first named the candidate.
    pub(super) received: HashMap<String, Instant>,
    /// Node → every status: (when, version installed if converged and all installed).
    pub(super) statuses: HashMap<String, Vec<(Instant, Option<String>)>>,
    /// Node → (when, epoch) of its `online` presences.
    pub(super) online: HashMap<String, Vec<(Instant, u64, bool)>>,
}

#[derive(Clone)]
pub(super) struct Watcher {
    pub(super) seen: Arc<Mutex<Seen>>,
    pub(super) notify: Arc<tokio::sync::Notify>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The version (image tag) every component of [`DEPLOYMENT`] is installed at, when the node
/// says converged and they agree.
fn installed_version(v: &serde_json::Value) -> Option<String> {
    if v["converged"].as_bool() != Some(true) {
        return None;
    }
    let dep = v["deployments"]
        .as_array()?
        .iter()
        .find(|d| d["name"].as_str() == Some(DEPLOYMENT))?;
    let mut version: Option<&str> = None;
    for c in dep["components"].as_array()? {
        if c["state"].as_str() != Some("installed") {
            return None;
        }
        let tag = c["image"].as_str()?.rsplit(':').next()?;
        if version.is_some_and(|v| v != tag) {
            return None;
        }
        version = Some(tag);
    }
    version.map(str::to_owned)
}

impl Watcher {
    pub(super) async fn start(
        port: u16,
        root: &str,
        site: &str,
        nodes: &[String],
    ) -> anyhow::Result<Self> {
        let mut opts = MqttOptions::new(
            format!("fleet-sim-rollout-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        opts.set_max_packet_size(4 << 20, 4 << 20);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        let (client, mut el) = AsyncClient::new(opts, 4096);
        let w = Watcher {
            seen: Arc::default(),
            notify: Arc::default(),
        };
        let mut filters: Vec<String> = vec![
            format!("{root}/{site}/nodes/+/status"),
            format!("{root}/{site}/nodes/+/online"),
            format!("{root}/{site}/lo/events"),
        ];
        // One exact filter per node: each has its own small commit log in rumqttd, so a
        // burst of desired documents is never dropped from a shared wildcard log.
        filters.extend(
            nodes
                .iter()
                .map(|n| format!("{root}/{site}/nodes/{n}/desired")),
        );
        let batches: Vec<Vec<SubscribeFilter>> = filters
            .chunks(100)
            .map(|c| {
                c.iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
                    .collect()
            })
            .collect();
        let want_acks = batches.len();
        let prefix = format!("{root}/{site}/");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let (seen, notify) = (w.seen.clone(), w.notify.clone());
        tokio::spawn(async move {
            let mut acks = 0;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        acks = 0;
                        let (client, batches) = (client.clone(), batches.clone());
                        tokio::spawn(async move {
                            for b in batches {
                                let _ = client.subscribe_many(b).await;
                            }
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks += 1;
                        if acks >= want_acks {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let now = Instant::now();
                        if let Some(rest) = p.topic.strip_prefix(&prefix) {
                            on_publish(&seen, rest, &p.payload, now);
                            notify.notify_waiters();
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "rollout watcher connection");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .context("rollout watcher subscribe timed out")?
            .context("rollout watcher stopped")?;
        Ok(w)
    }

    /// Waits until `pred` holds, or `timeout`.
    pub(super) async fn until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Seen) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if pred(&lock(&self.seen)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }
}

fn on_publish(seen: &Mutex<Seen>, rest: &str, payload: &[u8], now: Instant) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return;
    };
    let mut s = lock(seen);
    if rest == "lo/events" {
        if v["deployment"].as_str() == Some(DEPLOYMENT) {
            let kind = v["kind"].as_str().unwrap_or("").to_owned();
            let wave = v["wave"].as_u64().unwrap_or(0);
            s.events.push((kind, wave, now, v));
        }
        return;
    }
    let mut parts = rest.split('/');
    let (Some("nodes"), Some(node), Some(channel)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    match channel {
        "desired" => {
            let Some(tag) = s.candidate_tag.clone() else {
                return;
            };
            let names_candidate = v["deployments"].as_array().is_some_and(|ds| {
                ds.iter().any(|d| {
                    d["components"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["image"].as_str().is_some_and(|i| i.ends_with(&tag)))
                    })
                })
            });
            if names_candidate {
                s.received.entry(node.to_owned()).or_insert(now);
            }
        }
        "status" => {
            let version = installed_version(&v);
            s.statuses
                .entry(node.to_owned())
                .or_default()
                .push((now, version));
        }
        "online" => {
            let online = v["online"].as_bool().unwrap_or(false);
            let epoch = v["epoch"].as_u64().unwrap_or(0);
            s.online
                .entry(node.to_owned())
                .or_default()
                .push((now, epoch, online));
        }
        _ => {}
    }
}

impl Seen {
    /// The version a node last reported installed (None: not converged).
    pub(super) fn current(&self, node: &str) -> Option<&str> {
        self.statuses
            .get(node)
            .and_then(|l| l.last())
            .and_then(|(_, v)| v.as_deref())
    }

    /// From when on (not before `from`) the node has reported `version` installed without
    /// reporting anything else since; `after_only`: only statuses received after `from`
    /// count (a node that comes back must report again).
    pub(super) fn installed_since(
        &self,
        node: &str,
        version: &str,
        from: Instant,
        after_only: bool,
    ) -> Option<Instant> {
        let mut since = None;
        for (t, v) in self.statuses.get(node)? {
            if after_only && *t < from {
                continue;
            }
            if v.as_deref() == Some(version) {
                since.get_or_insert((*t).max(from));
            } else {
                since = None;
            }
        }
        since
    }

    pub(super) fn event(
        &self,
        kinds: &[&str],
    ) -> Option<&(String, u64, Instant, serde_json::Value)> {
        self.events.iter().find(|e| kinds.contains(&e.0.as_str()))
    }

    /// The latest `online: true` presence of a node after `after`.
    pub(super) fn online_after(&self, node: &str, after: Instant) -> Option<Instant> {
        self.online
            .get(node)?
            .iter()
            .filter(|(t, _, on)| *on && *t >= after)
            .map(|(t, _, _)| *t)
            .next()
    }

    pub(super) fn offline_seen(&self, node: &str, after: Instant) -> bool {
        self.online
            .get(node)
            .and_then(|l| l.last())
            .is_some_and(|(t, _, on)| !on && *t >= after)
    }
}
