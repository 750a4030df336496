//! The MQTT session (rumqttc): one task polls the event loop continuously and forwards what
//! arrives to the orchestrator through an unbounded channel, so it never waits on the
//! orchestrator; the orchestrator publishes through the [`rumqttc::AsyncClient`] (a large
//! request channel), so it never blocks the event loop.
//!
//! Every connection attempt carries a Last Will `online: false` on `<root>/<site>/lo/online`
//! (retained) with a fresh session epoch; reconnects back off exponentially with jitter.
//! What to do after a CONNACK (subscribe, presence, republish) is the orchestrator's job.

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use schemas::{BrokerUrl, LoChannel, Presence, PresenceSchema, Topics};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

/// What the session reports.
#[derive(Debug)]
pub enum MqttEvent {
    /// CONNACK received.
    Connected {
        /// The broker kept our session (subscriptions, and nothing was lost).
        session_present: bool,
        /// The epoch of this session (the one in the Will).
        epoch: u64,
    },
    /// A message on a subscribed topic.
    Message {
        /// Topic.
        topic: String,
        /// Payload.
        payload: bytes_like::Bytes,
        /// Delivered from the broker's retained store.
        retain: bool,
    },
    /// The connection dropped.
    Disconnected(String),
}

/// Re-export of the payload type without naming the `bytes` crate.
pub mod bytes_like {
    /// The payload bytes.
    pub type Bytes = Vec<u8>;
}

/// MQTT settings.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Broker.
    pub broker: BrokerUrl,
    /// Client id.
    pub client_id: String,
    /// Largest packet in and out.
    pub max_packet_size: usize,
    /// Site.
    pub site: String,
    /// Topics.
    pub topics: Topics,
    /// The last epoch used (persisted); the next is above it and above the clock in ms.
    pub last_epoch: u64,
    /// Software version in presence messages.
    pub version: String,
}

/// Presence payload.
pub fn presence(online: bool, epoch: u64, version: &str) -> Vec<u8> {
    serde_json::to_vec(&Presence {
        schema: PresenceSchema::V1,
        online,
        epoch,
        version: Some(version.to_owned()),
    })
    .unwrap_or_default()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Starts the session task. Returns the client for publishing and subscribing. The task
/// ends after the client sent DISCONNECT, or when `stop` is cancelled.
pub fn start(
    s: MqttSettings,
    tx: UnboundedSender<MqttEvent>,
    stop: CancellationToken,
) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let mut opts = MqttOptions::new(s.client_id.clone(), s.broker.host.clone(), s.broker.port);
    opts.set_keep_alive(Duration::from_secs(15));
    // The broker keeps our session across our reconnects; a CONNACK without it means the
    // broker lost its state (restart) and everything must be republished.
    opts.set_clean_session(false);
    opts.set_max_packet_size(s.max_packet_size, s.max_packet_size);
    opts.set_inflight(200);
    if let (Some(u), Some(p)) = (&s.broker.username, &s.broker.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 8192);
    let epoch = Arc::new(AtomicU64::new(s.last_epoch));
    let will_topic = s.topics.lo(&s.site, LoChannel::Online);
    let handle = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut current = next_epoch(&epoch);
        set_will(&mut eventloop, &will_topic, current, &s.version);
        loop {
            let polled = tokio::select! {
                _ = stop.cancelled() => break,
                p = eventloop.poll() => p,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    let _ = tx.send(MqttEvent::Connected {
                        session_present: ack.session_present,
                        epoch: current,
                    });
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(MqttEvent::Message {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    });
                }
                // Our clean DISCONNECT went out: the session is over.
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "mqtt connection lost");
                    let _ = tx.send(MqttEvent::Disconnected(e.to_string()));
                    let jitter = fastrand::u64(0..=backoff.as_millis() as u64 / 2);
                    let wait = backoff + Duration::from_millis(jitter);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    current = next_epoch(&epoch);
                    set_will(&mut eventloop, &will_topic, current, &s.version);
                }
            }
        }
    });
    (client, handle)
}

fn next_epoch(epoch: &AtomicU64) -> u64 {
    let prev = epoch.load(Ordering::SeqCst);
    let next = (prev + 1).max(now_ms());
    epoch.store(next, Ordering::SeqCst);
    next
}

fn set_will(eventloop: &mut EventLoop, topic: &str, epoch: u64, version: &str) {
    eventloop.mqtt_options.set_last_will(LastWill::new(
        topic,
        presence(false, epoch, version),
        QoS::AtLeastOnce,
        true,
    ));
}

/// Waits for the session task to send DISCONNECT (bounded by `timeout`), then stops it.
pub async fn drain(
    handle: tokio::task::JoinHandle<()>,
    stop: &CancellationToken,
    timeout: Duration,
) {
    let abort = handle.abort_handle();
    if tokio::time::timeout(timeout, handle).await.is_err() {
        stop.cancel();
        abort.abort();
    }
}
