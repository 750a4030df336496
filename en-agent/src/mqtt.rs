//! The MQTT session: presence with a persisted epoch and a Last Will, the `desired`
//! subscription, and the reports (`status` retained and debounced, `events`, `heartbeat`).
//!
//! Two tasks: the poll loop owns rumqttc's event loop and never blocks (it only pushes
//! received documents into the agent's inbox); the publisher owns the client and only
//! uses `try_publish`, so a full request channel drops a message instead of stalling. A
//! status is a full snapshot, so a dropped one is simply sent again. After every CONNACK
//! the publisher republishes presence, resubscribes and publishes the full status
//! (rumqttc neither resubscribes nor keeps unacked QoS 1 messages across sessions).
//!
//! The mechanisms are `edge_io`'s, shared with the LO: the transport (TLS with feature
//! `tls`), the reconnect backoff, the epoch file, the presence payload, and publishing with
//! each channel's QoS and retain flag (`NodeChannel::publish()`, `AGENT_DESIRED_QOS`). What
//! is the agent's here: a new epoch per established session, persisted at CONNACK, and the
//! signing of every report (`ReportEncoder`).

use crate::config::Config;
use crate::counters::Counters;
use crate::inbox::Inbox;
use crate::report;
use crate::VERSION;
use edge_io::mqtt::{last_will, qos, try_publish, ReconnectBackoff, Transport, TransportError};
use edge_io::session::{self, EpochFile};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet};
use schemas::topic::AGENT_DESIRED_QOS;
use schemas::wire::{Event, Heartbeat, HeartbeatSchema, NodeStatus};
use schemas::{BrokerUrl, Delivery, NodeChannel, Topics};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const OFFLINE_EVENTS: usize = 256;

/// Encodes reports, signing each when the node has a key: the signature binds topic,
/// session epoch and a sequence number that increases with every signed message of the
/// process (so also within each epoch, across all channels), which lets the LO refuse a
/// replayed report. Shared by the poll loop (the Last Will, signed when it is set at
/// CONNECT time) and the publisher (everything else).
pub(crate) struct ReportEncoder {
    key: Option<schemas::sign::Ed25519SigningKey>,
    seq: AtomicU64,
}

impl std::fmt::Debug for ReportEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportEncoder")
            .field("signing", &self.key.is_some())
            .field("seq", &self.seq)
            .finish()
    }
}

impl ReportEncoder {
    pub(crate) fn new(key: Option<schemas::sign::Ed25519SigningKey>) -> Self {
        ReportEncoder {
            key,
            seq: AtomicU64::new(0),
        }
    }

    /// The JSON bytes of `report` for `topic`, signed with the next sequence number when
    /// a key is configured.
    fn encode<T: serde::Serialize>(&self, topic: &str, epoch: u64, report: &T) -> Vec<u8> {
        let Some(key) = &self.key else {
            return serde_json::to_vec(report).unwrap_or_default();
        };
        let mut value = match serde_json::to_value(report) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(topic, error = %e, "cannot encode report");
                return Vec::new();
            }
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        schemas::sign::sign_report(&mut value, topic, epoch, seq, key);
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// The presence report of `epoch`.
    fn presence(&self, topic: &str, online: bool, epoch: u64) -> Vec<u8> {
        self.encode(topic, epoch, &session::presence(online, epoch, VERSION))
    }
}

/// One agent's broker session.
pub struct Session {
    client: AsyncClient,
    eventloop: rumqttc::EventLoop,
    topics: Topics,
    site: String,
    node: String,
    state_dir: PathBuf,
    inbox: Arc<Inbox>,
    status_rx: watch::Receiver<Option<NodeStatus>>,
    events_rx: broadcast::Receiver<Event>,
    counters: Arc<Counters>,
    started: Instant,
    heartbeat: Duration,
    debounce: Duration,
    epoch: u64,
    encoder: Arc<ReportEncoder>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("site", &self.site)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Prepares the client (nothing is connected yet).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: &Config,
        broker: BrokerUrl,
        state_dir: PathBuf,
        inbox: Arc<Inbox>,
        status_rx: watch::Receiver<Option<NodeStatus>>,
        events_rx: broadcast::Receiver<Event>,
        counters: Arc<Counters>,
        started: Instant,
        report_key: Option<schemas::sign::Ed25519SigningKey>,
    ) -> Result<Self, TransportError> {
        let topics = Topics::new(&config.topic_root);
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("en-{}-{}", config.site, config.node));
        let mut opts = MqttOptions::new(client_id, broker.host.clone(), broker.port);
        opts.set_keep_alive(config.keep_alive);
        opts.set_clean_session(true);
        opts.set_max_packet_size(config.max_packet_size, config.max_packet_size);
        if let Some(user) = &broker.username {
            opts.set_credentials(user.clone(), broker.password.clone().unwrap_or_default());
        }
        Transport::for_broker(&broker, config.tls_ca_file.as_deref())?.apply(&mut opts);
        // The first session uses the stored epoch + 1; it is persisted at CONNACK.
        let epoch = session::next_epoch(EpochFile::new(state_dir.join(EPOCH_FILE)).load());
        let encoder = Arc::new(ReportEncoder::new(report_key));
        let online_topic = topics.node(&config.site, &config.node, NodeChannel::Online);
        // The Will is signed now, at CONNECT time, with the sequence number it gets now.
        let will = encoder.presence(&online_topic, false, epoch);
        opts.set_last_will(last_will(online_topic, NodeChannel::Online.publish(), will));
        let (client, eventloop) = AsyncClient::new(opts, 256);
        Ok(Session {
            client,
            eventloop,
            topics,
            site: config.site.clone(),
            node: config.node.clone(),
            state_dir,
            inbox,
            status_rx,
            events_rx,
            counters,
            started,
            heartbeat: config.heartbeat,
            debounce: config.status_debounce,
            epoch,
            encoder,
        })
    }

    /// Runs until `shutdown`; then publishes `online: false` and disconnects.
    pub async fn run(self, shutdown: CancellationToken) {
        let Session {
            client,
            eventloop,
            topics,
            site,
            node,
            state_dir,
            inbox,
            status_rx,
            events_rx,
            counters,
            started,
            heartbeat,
            debounce,
            epoch,
            encoder,
        } = self;
        let desired_topic = topics.node(&site, &node, NodeChannel::Desired);
        let online_topic = topics.node(&site, &node, NodeChannel::Online);
        // Session number and epoch; 0 = disconnected.
        let (session_tx, session_rx) = watch::channel((0u64, 0u64));
        let poll_stop = CancellationToken::new();
        // Aborted when this future is dropped (an agent handle dropped without a shutdown):
        // a detached poll loop would keep a zombie session, and its Will, alive forever.
        let mut poll = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(poll_loop(
            eventloop,
            PollCtx {
                desired_topic: desired_topic.clone(),
                online_topic: online_topic.clone(),
                epoch_file: EpochFile::new(state_dir.join(EPOCH_FILE)),
                inbox,
                session_tx,
                epoch,
                counters: counters.clone(),
                stop: poll_stop.clone(),
                encoder: encoder.clone(),
            },
        )));
        let publisher = Publisher {
            client: client.clone(),
            status_topic: topics.node(&site, &node, NodeChannel::Status),
            events_topic: topics.node(&site, &node, NodeChannel::Events),
            heartbeat_topic: topics.node(&site, &node, NodeChannel::Heartbeat),
            desired_topic,
            online_topic,
            counters,
            started,
            encoder,
        };
        publisher
            .run(
                session_rx, status_rx, events_rx, heartbeat, debounce, shutdown,
            )
            .await;
        // Let the poll loop flush the offline presence and the DISCONNECT.
        if tokio::time::timeout(Duration::from_secs(3), &mut poll)
            .await
            .is_err()
        {
            poll_stop.cancel();
        }
        drop(client);
    }
}

struct PollCtx {
    desired_topic: String,
    online_topic: String,
    epoch_file: EpochFile,
    inbox: Arc<Inbox>,
    session_tx: watch::Sender<(u64, u64)>,
    epoch: u64,
    counters: Arc<Counters>,
    stop: CancellationToken,
    encoder: Arc<ReportEncoder>,
}

async fn poll_loop(mut eventloop: rumqttc::EventLoop, ctx: PollCtx) {
    let mut epoch = ctx.epoch;
    let mut connected_once_with_epoch = false;
    let mut failures = 0u32;
    let mut retry = ReconnectBackoff::new(RECONNECT_MIN, RECONNECT_MAX);
    let mut sessions = 0u64;
    loop {
        let ev = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                if let Err(e) = ctx.epoch_file.save(epoch) {
                    tracing::warn!(error = %e, "cannot persist the session epoch");
                }
                connected_once_with_epoch = true;
                failures = 0;
                retry.reset();
                sessions += 1;
                ctx.counters.mqtt_sessions.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    epoch,
                    session_present = ack.session_present,
                    "connected to broker"
                );
                ctx.session_tx.send_replace((sessions, epoch));
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                if p.topic == ctx.desired_topic {
                    ctx.inbox.push(p.payload.to_vec());
                } else {
                    tracing::debug!(topic = %p.topic, "ignoring message on unexpected topic");
                }
            }
            Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                // Our own graceful DISCONNECT went out: stop polling (polling reconnects).
                let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if ctx.session_tx.borrow().1 != 0 {
                    tracing::warn!(error = %e, "broker connection lost");
                } else if failures == 0 {
                    tracing::warn!(error = %e, "cannot connect to broker, will keep trying");
                } else {
                    tracing::debug!(error = %e, "cannot connect to broker");
                }
                ctx.session_tx.send_replace((sessions, 0));
                if connected_once_with_epoch {
                    // A new session gets a new epoch, so a late Will of the old one is stale.
                    epoch = session::next_epoch(epoch);
                    connected_once_with_epoch = false;
                    eventloop.mqtt_options.set_last_will(last_will(
                        ctx.online_topic.clone(),
                        NodeChannel::Online.publish(),
                        ctx.encoder.presence(&ctx.online_topic, false, epoch),
                    ));
                }
                failures += 1;
                let delay = retry.next_delay();
                tokio::select! {
                    _ = ctx.stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

struct Publisher {
    client: AsyncClient,
    status_topic: String,
    events_topic: String,
    heartbeat_topic: String,
    desired_topic: String,
    online_topic: String,
    counters: Arc<Counters>,
    started: Instant,
    encoder: Arc<ReportEncoder>,
}

impl Publisher {
    /// Publishes without waiting as `delivery` (the channel's) says; `false` when dropped.
    fn send(&self, topic: &str, delivery: Delivery, payload: Vec<u8>) -> bool {
        match try_publish(&self.client, topic, delivery, payload) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(topic, error = %e, "publish dropped");
                false
            }
        }
    }

    async fn run(
        self,
        mut session_rx: watch::Receiver<(u64, u64)>,
        mut status_rx: watch::Receiver<Option<NodeStatus>>,
        mut events_rx: broadcast::Receiver<Event>,
        heartbeat: Duration,
        debounce: Duration,
        shutdown: CancellationToken,
    ) {
        let mut connected_epoch = 0u64;
        let mut last_published: Option<NodeStatus> = None;
        let mut status_due: Option<Instant> = None;
        let mut offline: VecDeque<Event> = VecDeque::new();
        let mut hb_seq = 0u64;
        let mut hb = tokio::time::interval(heartbeat.max(Duration::from_millis(100)));
        hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = status_due;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = session_rx.changed() => {
                    if r.is_err() { break }
                    let (_, epoch) = *session_rx.borrow_and_update();
                    connected_epoch = epoch;
                    if epoch != 0 {
                        self.send(&self.online_topic, NodeChannel::Online.publish(), self.encoder.presence(&self.online_topic, true, epoch));
                        if let Err(e) = self.client.try_subscribe(self.desired_topic.clone(), qos(AGENT_DESIRED_QOS)) {
                            tracing::warn!(error = %e, "cannot subscribe to desired");
                        }
                        // Full status after every CONNACK, then what was missed.
                        last_published = None;
                        status_due = Some(Instant::now());
                        while let Some(e) = offline.pop_front() {
                            let bytes = self.encoder.encode(&self.events_topic, epoch, &e);
                            if !self.send(&self.events_topic, NodeChannel::Events.publish(), bytes) {
                                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                r = status_rx.changed() => {
                    if r.is_err() { break }
                    if status_due.is_none() {
                        status_due = Some(Instant::now() + debounce);
                    }
                }
                _ = async { if let Some(d) = due { tokio::time::sleep_until(d).await } else { std::future::pending::<()>().await } } => {
                    status_due = None;
                    if connected_epoch == 0 { continue }
                    let current = status_rx.borrow().clone();
                    if let Some(mut s) = current {
                        let fresh = last_published.as_ref().map(report::comparable) != Some(report::comparable(&s));
                        if fresh {
                            s.agent.uptime_s = self.started.elapsed().as_secs();
                            s.reported_at = schemas::now_rfc3339();
                            let bytes = self.encoder.encode(&self.status_topic, connected_epoch, &s);
                            if self.send(&self.status_topic, NodeChannel::Status.publish(), bytes) {
                                self.counters.status_published.fetch_add(1, Ordering::Relaxed);
                                last_published = Some(s);
                            } else {
                                status_due = Some(Instant::now() + Duration::from_secs(1));
                            }
                        }
                    }
                }
                e = events_rx.recv() => match e {
                    Ok(e) => {
                        if connected_epoch != 0 {
                            let bytes = self.encoder.encode(&self.events_topic, connected_epoch, &e);
                            if !self.send(&self.events_topic, NodeChannel::Events.publish(), bytes) {
                                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            if offline.len() >= OFFLINE_EVENTS {
                                offline.pop_front();
                                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            offline.push_back(e);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.counters.events_dropped.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                _ = hb.tick() => {
                    if connected_epoch != 0 {
                        hb_seq += 1;
                        let (generation, converged) = status_rx
                            .borrow()
                            .as_ref()
                            .map_or((0, false), |s| (s.observed_generation, s.converged));
                        let h = Heartbeat {
                            signature: None,
                            schema: HeartbeatSchema::V1,
                            seq: hb_seq,
                            uptime_s: self.started.elapsed().as_secs(),
                            observed_generation: generation,
                            converged,
                        };
                        let bytes = self.encoder.encode(&self.heartbeat_topic, connected_epoch, &h);
                        self.send(&self.heartbeat_topic, NodeChannel::Heartbeat.publish(), bytes);
                    }
                }
            }
        }
        if connected_epoch != 0 {
            let bytes = self
                .encoder
                .presence(&self.online_topic, false, connected_epoch);
            self.send(&self.online_topic, NodeChannel::Online.publish(), bytes);
        }
        let _ = self.client.try_disconnect();
    }
}

/// The session epoch's file in the state directory (see `edge_io::session`).
const EPOCH_FILE: &str = "epoch";

/// Reconnect delays: 0.5 s doubling to 30 s, each with random jitter up to its own length,
/// so a fleet that lost its broker does not reconnect in lockstep ([`ReconnectBackoff`]).
/// Reset after a CONNACK.
const RECONNECT_MIN: Duration = Duration::from_millis(500);
/// The cap of the reconnect delay's base (before jitter).
const RECONNECT_MAX: Duration = Duration::from_secs(30);
