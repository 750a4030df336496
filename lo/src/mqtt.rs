//! The MQTT session (rumqttc): one task polls the event loop continuously and forwards what
//! arrives to the orchestrator through an unbounded channel, so it never waits on the
//! orchestrator; the orchestrator publishes through the [`rumqttc::AsyncClient`] (a large
//! request channel), so it never blocks the event loop.
//!
//! Every connection attempt carries a Last Will `online: false` on `<root>/<site>/lo/online`
//! (retained) with a fresh session epoch: a counter incremented for every connection attempt
//! and persisted (`<state_dir>/lo-epoch`, written atomically) before the CONNECT that carries
//! it, so it only ever grows, across restarts too, whatever the clock says. Reconnects back
//! off exponentially with jitter.
//! What to do after a CONNACK (subscribe, presence, republish) is the orchestrator's job.
//!
//! The mechanisms are `edge_io`'s, shared with the agent: the [`Transport`] (`mqtts://` uses
//! rustls with the ring provider, cargo feature `mqtt-tls`, on by default, trusting the PEM
//! certificates of `tls_ca_file` or, without it, the system store), the reconnect backoff,
//! the epoch counter and the presence payload. What is the LO's here: when the epoch
//! advances (every attempt) and the session options.

use edge_io::mqtt::{last_will, ReconnectBackoff};
use edge_io::session::{EpochCounter, EpochFile};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet};
use schemas::{BrokerUrl, LoChannel, Topics};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

pub use edge_io::mqtt::{Transport, TransportError};
/// The presence payload (`online`, epoch, version), unsigned.
pub use edge_io::session::presence_payload as presence;

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
    /// The last epoch used, as far as the caller knows (the next is above it and above the
    /// one in `epoch_file`).
    pub last_epoch: u64,
    /// Where the epoch counter is persisted (`None`: in memory only).
    pub epoch_file: Option<PathBuf>,
    /// Software version in presence messages.
    pub version: String,
    /// Plain TCP or TLS, from [`Transport::for_broker`].
    pub transport: Transport,
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
    s.transport.apply(&mut opts);
    let (client, mut eventloop) = AsyncClient::new(opts, 8192);
    let mut epoch = EpochCounter::open(s.epoch_file.clone().map(EpochFile::new), s.last_epoch);
    let will_topic = s.topics.lo(&s.site, LoChannel::Online);
    let handle = tokio::spawn(async move {
        let mut retry = ReconnectBackoff::new(RECONNECT_MIN, RECONNECT_MAX);
        let mut current = epoch.next().await;
        set_will(&mut eventloop, &will_topic, current, &s.version);
        loop {
            let polled = tokio::select! {
                _ = stop.cancelled() => break,
                p = eventloop.poll() => p,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    retry.reset();
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
                    let wait = retry.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "mqtt connection lost");
                    let _ = tx.send(MqttEvent::Disconnected(e.to_string()));
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    current = epoch.next().await;
                    set_will(&mut eventloop, &will_topic, current, &s.version);
                }
            }
        }
    });
    (client, handle)
}

fn set_will(eventloop: &mut EventLoop, topic: &str, epoch: u64, version: &str) {
    eventloop.mqtt_options.set_last_will(last_will(
        topic,
        LoChannel::Online.publish(),
        presence(false, epoch, version),
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

/// Reconnect delays: 100 ms doubling to 10 s, each with random jitter up to its own length
/// ([`ReconnectBackoff`]). Reset after a CONNACK.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// The cap of the reconnect delay's base (before jitter).
const RECONNECT_MAX: Duration = Duration::from_secs(10);
