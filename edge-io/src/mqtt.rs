//! The rumqttc side of a session, shared by the LO and the agent: how to reach the broker
//! ([`Transport`], plain TCP or TLS), the QoS map from the protocol's [`schemas::Qos`], publish
//! helpers that take a channel's [`Delivery`] (declared once in `schemas::topic`), the Last
//! Will, and the reconnect [`ReconnectBackoff`].
//!
//! `mqtts://` uses rustls with the ring provider (cargo feature `tls`), trusting the PEM
//! certificates of a CA file or, without one, the system store.

use rumqttc::{AsyncClient, ClientError, LastWill, MqttOptions};
use schemas::{BrokerUrl, Delivery, Qos};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The rumqttc QoS of a protocol QoS.
pub fn qos(q: Qos) -> rumqttc::QoS {
    match q {
        Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
    }
}

/// Publishes `payload` on `topic` as `delivery` says, without waiting: a full request
/// channel is an error (the message is dropped), never a stall.
pub fn try_publish(
    client: &AsyncClient,
    topic: &str,
    delivery: Delivery,
    payload: Vec<u8>,
) -> Result<(), ClientError> {
    client.try_publish(topic, qos(delivery.qos), delivery.retain, payload)
}

/// Publishes `payload` on `topic` as `delivery` says, waiting for room in the request
/// channel.
pub async fn publish(
    client: &AsyncClient,
    topic: &str,
    delivery: Delivery,
    payload: Vec<u8>,
) -> Result<(), ClientError> {
    client
        .publish(topic, qos(delivery.qos), delivery.retain, payload)
        .await
}

/// The Last Will that publishes `payload` on `topic` as `delivery` says.
pub fn last_will(topic: impl Into<String>, delivery: Delivery, payload: Vec<u8>) -> LastWill {
    LastWill::new(topic, payload, qos(delivery.qos), delivery.retain)
}

/// Why no transport could be built for a broker.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The CA file could not be read or holds something that is not a PEM certificate.
    #[error("tls ca file (tls_ca_file) {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What was wrong, as rustls' PEM reader or certificate store said it.
        reason: String,
    },
    /// The CA file holds no certificate at all.
    #[error("tls ca file (tls_ca_file) {path}: no certificate in it")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// No CA file was given and the system store is empty.
    #[error("no system CA certificates found; set tls_ca_file")]
    NoSystemRoots,
    /// rustls refused the configuration.
    #[error("tls setup: {0}")]
    Setup(String),
    /// `mqtts://` in a build without TLS.
    #[error("this build has no TLS support (cargo feature `mqtt-tls` of lo, `tls` of en-agent)")]
    NoTlsSupport,
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
    pub fn for_broker(
        broker: &BrokerUrl,
        tls_ca_file: Option<&Path>,
    ) -> Result<Self, TransportError> {
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

#[cfg(feature = "tls")]
fn tls_transport(ca_file: Option<&Path>) -> Result<rumqttc::Transport, TransportError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let err = |e: &dyn std::fmt::Display| TransportError::CaFile {
                path: path.to_owned(),
                reason: e.to_string(),
            };
            for c in CertificateDer::pem_file_iter(path).map_err(|e| err(&e))? {
                roots.add(c.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
            }
            if roots.is_empty() {
                return Err(TransportError::NoCertificate {
                    path: path.to_owned(),
                });
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(TransportError::NoSystemRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(cfg)),
    ))
}

#[cfg(not(feature = "tls"))]
fn tls_transport(_ca_file: Option<&Path>) -> Result<rumqttc::Transport, TransportError> {
    Err(TransportError::NoTlsSupport)
}

/// Delays between connection attempts: from `min`, doubling up to `max`, each with random
/// jitter up to its own length (so a fleet that lost its broker does not reconnect in
/// lockstep): every delay lies in `[d, 2d)` for its base `d ≤ max`. Never runs out;
/// [`reset`](Self::reset) after a CONNACK.
#[derive(Debug)]
pub struct ReconnectBackoff {
    min: Duration,
    max: Duration,
    delays: backon::ExponentialBackoff,
}

impl ReconnectBackoff {
    /// Delays from `min` doubling to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        ReconnectBackoff {
            min,
            max,
            delays: Self::delays(min, max),
        }
    }

    fn delays(min: Duration, max: Duration) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder as _;
        backon::ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts again from `min` (after a successful connection).
    pub fn reset(&mut self) {
        self.delays = Self::delays(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_map_is_one_to_one() {
        assert_eq!(qos(Qos::AtMostOnce), rumqttc::QoS::AtMostOnce);
        assert_eq!(qos(Qos::AtLeastOnce), rumqttc::QoS::AtLeastOnce);
    }

    #[test]
    fn last_will_follows_the_channel_delivery() {
        let d = schemas::LoChannel::Online.publish();
        let w = last_will("fleet/s/lo/online", d, b"{}".to_vec());
        assert_eq!(w.topic, "fleet/s/lo/online");
        assert_eq!(w.qos, qos(d.qos));
        assert_eq!(w.retain, d.retain);
        assert_eq!(&w.message[..], b"{}");
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(10));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let mut b = ReconnectBackoff::new(min, max);
            let mut base = min;
            for _ in 0..40 {
                let d = b.next_delay();
                assert!(d >= base && d < base * 2, "{d:?} for base {base:?}");
                seen.insert(d);
                base = (base * 2).min(max);
            }
            // Long after the cap: never above twice the cap.
            assert!(b.next_delay() < max * 2);
        }
        // Jitter: twenty runs do not repeat the same delays.
        assert!(seen.len() > 40, "{} distinct delays", seen.len());
    }

    #[test]
    fn backoff_reset_starts_from_min() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(30));
        let mut b = ReconnectBackoff::new(min, max);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        let d = b.next_delay();
        assert!(d >= min && d < min * 2, "{d:?}");
    }

    #[test]
    fn plain_broker_needs_no_tls() {
        let b: BrokerUrl = "mqtt://127.0.0.1:1883".parse().expect("url");
        let t = Transport::for_broker(&b, Some(Path::new("/no/such/ca.pem"))).expect("plain");
        assert_eq!(format!("{t:?}"), "Transport(tcp)");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn missing_or_empty_ca_file_is_refused_naming_it() {
        let b: BrokerUrl = "mqtts://127.0.0.1:8883".parse().expect("url");
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let missing = dir.path().join("missing.pem");
        let e = Transport::for_broker(&b, Some(&missing)).expect_err("missing");
        assert!(matches!(e, TransportError::CaFile { .. }), "{e}");
        let e = Transport::for_broker(&b, Some(&empty)).expect_err("empty");
        assert!(matches!(e, TransportError::NoCertificate { .. }), "{e}");
        // Both binaries' wording: the setting's name and the plain words.
        let text = e.to_string();
        assert!(
            text.contains("tls_ca_file") && text.contains("tls ca file"),
            "{text}"
        );
    }
}
