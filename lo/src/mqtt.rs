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
//! `mqtts://` uses rustls with the ring provider (cargo feature `mqtt-tls`, on by default),
//! trusting the PEM certificates of `tls_ca_file` or, without it, the system store.

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use schemas::{BrokerUrl, LoChannel, Presence, PresenceSchema, Topics};
use std::path::{Path, PathBuf};
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

/// How to reach the broker: plain TCP (`mqtt://`) or TLS (`mqtts://`).
#[derive(Clone, Default)]
pub struct Transport(rumqttc::Transport);

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            rumqttc::Transport::Tcp => f.write_str("Transport(tcp)"),
            _ => f.write_str("Transport(tls)"),
        }
    }
}

impl Transport {
    /// The transport for `broker`. For `mqtts://` this builds the TLS client now (reading
    /// `tls_ca_file`, or the system store without it), so a bad CA file fails at startup
    /// rather than at every connection attempt. `tls_ca_file` is ignored for `mqtt://`.
    pub fn for_broker(broker: &BrokerUrl, tls_ca_file: Option<&Path>) -> Result<Self, String> {
        if broker.tls {
            tls_transport(tls_ca_file).map(Transport)
        } else {
            Ok(Transport::default())
        }
    }

    /// Sets this transport on `opts`.
    pub fn apply(&self, opts: &mut MqttOptions) {
        opts.set_transport(self.0.clone());
    }
}

// The same as the agent's `tls_transport` (en-agent/src/mqtt.rs): kept as a small duplicate
// because `schemas`, the only crate both share, has no I/O and no TLS.
#[cfg(feature = "mqtt-tls")]
fn tls_transport(ca_file: Option<&Path>) -> Result<rumqttc::Transport, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let err = |e: &dyn std::fmt::Display| format!("tls_ca_file {}: {e}", path.display());
            for c in CertificateDer::pem_file_iter(path).map_err(|e| err(&e))? {
                roots.add(c.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
            }
            if roots.is_empty() {
                return Err(err(&"no certificate in the file"));
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err("no system CA certificates found; set tls_ca_file".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(cfg)),
    ))
}

#[cfg(not(feature = "mqtt-tls"))]
fn tls_transport(_ca_file: Option<&Path>) -> Result<rumqttc::Transport, String> {
    Err("this build has no TLS support (cargo feature `mqtt-tls`)".into())
}

/// Presence payload.
pub fn presence(online: bool, epoch: u64, version: &str) -> Vec<u8> {
    serde_json::to_vec(&Presence {
        signature: None,
        schema: PresenceSchema::V1,
        online,
        epoch,
        version: Some(version.to_owned()),
    })
    .unwrap_or_default()
}

/// The presence epoch: a counter persisted in a file of its own.
#[derive(Debug, Clone)]
pub struct EpochCounter {
    last: u64,
    file: Option<PathBuf>,
}

impl EpochCounter {
    /// Opens the counter at the highest of `floor` and what `file` holds (a missing or
    /// unreadable file counts as 0).
    pub fn open(file: Option<PathBuf>, floor: u64) -> Self {
        let stored = file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        EpochCounter {
            last: floor.max(stored),
            file,
        }
    }

    /// The last epoch handed out (or found at open).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Increments the counter and persists it (fsynced) before returning it. A failed write
    /// is returned with the new epoch: the caller may still use it.
    pub fn advance(&mut self) -> (u64, std::io::Result<()>) {
        self.last += 1;
        let written = match &self.file {
            Some(f) => persist_epoch(f, self.last),
            None => Ok(()),
        };
        (self.last, written)
    }
}

fn persist_epoch(file: &Path, epoch: u64) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("lo-epoch");
    crate::store::write_atomic(dir, name, format!("{epoch}\n").as_bytes()).map_err(|e| match e {
        crate::store::StoreError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })
}

/// Takes the next epoch and persists it, off the async threads; logs a failed write.
async fn next_epoch(counter: &mut EpochCounter) -> u64 {
    let mut c = counter.clone();
    let (epoch, written) = match tokio::task::spawn_blocking(move || {
        let r = c.advance();
        (c, r)
    })
    .await
    {
        Ok((c, r)) => {
            *counter = c;
            r
        }
        Err(e) => {
            counter.last += 1;
            (counter.last, Err(std::io::Error::other(e.to_string())))
        }
    };
    if let Err(e) = written {
        tracing::error!(error = %e, epoch, "cannot persist the presence epoch");
    }
    epoch
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
    let mut epoch = EpochCounter::open(s.epoch_file.clone(), s.last_epoch);
    let will_topic = s.topics.lo(&s.site, LoChannel::Online);
    let handle = tokio::spawn(async move {
        let mut retry = reconnect_backoff();
        let mut current = next_epoch(&mut epoch).await;
        set_will(&mut eventloop, &will_topic, current, &s.version);
        loop {
            let polled = tokio::select! {
                _ = stop.cancelled() => break,
                p = eventloop.poll() => p,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    retry = reconnect_backoff();
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
                    let wait = retry.next().unwrap_or(RECONNECT_MAX);
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "mqtt connection lost");
                    let _ = tx.send(MqttEvent::Disconnected(e.to_string()));
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    current = next_epoch(&mut epoch).await;
                    set_will(&mut eventloop, &will_topic, current, &s.version);
                }
            }
        }
    });
    (client, handle)
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

/// Longest wait between two connection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Reconnect delays: 100 ms doubling to 10 s, each with random jitter up to its own length.
/// Reset after a CONNACK.
fn reconnect_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(RECONNECT_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_counter_is_persisted_and_only_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("lo-epoch");
        let mut c = EpochCounter::open(Some(file.clone()), 0);
        assert_eq!(c.last(), 0);
        assert_eq!(c.advance().0, 1);
        let (e, written) = c.advance();
        assert_eq!(e, 2);
        assert!(written.is_ok());
        // A restart continues from the file, not from a clock.
        let mut again = EpochCounter::open(Some(file.clone()), 0);
        assert_eq!(again.last(), 2);
        assert_eq!(again.advance().0, 3);
        // A higher floor (the state file of an older LO) wins.
        let mut older = EpochCounter::open(Some(file), 1_700_000_000_000);
        assert_eq!(older.advance().0, 1_700_000_000_001);
    }
}
