//! The edgefleet MQTT broker: [rumqttd] 0.20 embedded as a library, with defaults sized for a
//! fleet of about 10,000 edge nodes talking to one `lo` orchestrator.
//!
//! Layout: everything lives in this file. Start with [`BrokerConfig`] (what an operator can
//! set, loaded from a TOML file such as the workspace's `broker.toml`), then [`start`], which
//! turns it into a rumqttd [`rumqttd::Config`] ([`BrokerConfig::to_rumqttd`]), runs the broker
//! on its own OS thread and returns a [`BrokerHandle`] once the listener answers an MQTT
//! CONNECT. `src/main.rs` is a thin binary around [`start`]; `tests/broker.rs` exercises the
//! behaviour the fleet relies on (retained documents, Last Will, large payloads, logins) with
//! rumqttc against an in-process broker. `docs/broker.md` explains the rumqttd limits found.
//!
//! Only MQTT 3.1.1 over plain TCP is served: rumqttd is built with `default-features = false`
//! (no TLS, no websocket), its MQTT 5 listener is not started. The console and Prometheus
//! endpoints are off unless configured. rumqttd has no stop API: the broker runs until the
//! process exits.
//!
//! One rumqttd behaviour shapes the defaults (see `docs/broker.md` for the source reference):
//! a new subscription receives at most a bounded number of retained messages, the rest are
//! dropped silently. For QoS 1/2 subscriptions the bound is a hard-coded 100 (minus messages
//! already in flight) that no setting changes; for QoS 0 subscriptions it is
//! [`BrokerConfig::max_outgoing_packet_count`]. A client that must rebuild fleet state from a
//! wildcard snapshot therefore subscribes at QoS 0.
//!
//! [rumqttd]: https://docs.rs/rumqttd/0.20.0

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

/// Name of the rumqttd MQTT 3.1.1 listener (also the name of its OS thread).
const LISTENER_NAME: &str = "edgefleet-v4";
/// Client id of the readiness probe [`start`] connects with.
const PROBE_CLIENT_ID: &str = "edgefleet-broker-ready-probe";
/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Smallest segment rumqttd accepts (`CommitLog::new` panics below it).
const MIN_SEGMENT_SIZE: usize = 1024;

/// Everything that can go wrong loading a configuration or starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The configuration file could not be read.
    #[error("cannot read broker config {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The configuration file is not valid TOML or has unknown/mistyped keys.
    #[error("invalid broker config {path}")]
    ParseConfig {
        /// The file (`<string>` when parsed from memory).
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of the range rumqttd can work with.
    #[error("invalid broker config: {0}")]
    InvalidConfig(String),
    /// The listen address cannot be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address from the configuration.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The broker thread could not be spawned.
    #[error("cannot spawn the broker thread")]
    Spawn(#[source] io::Error),
    /// rumqttd stopped before it answered a CONNECT.
    #[error("broker stopped during startup: {0}")]
    Exited(String),
    /// rumqttd did not answer a CONNECT on the listener in time.
    #[error("broker not ready on {addr} after {timeout:?}")]
    NotReady {
        /// The address that was probed.
        addr: SocketAddr,
        /// How long [`start`] waited.
        timeout: Duration,
        /// The last probe failure.
        #[source]
        source: io::Error,
    },
}

/// Broker settings, read from a TOML file (see `broker.toml` at the workspace root for a
/// commented example). Every key is optional; unknown keys are errors.
///
/// Sizes are bytes, durations milliseconds (as rumqttd names them).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// MQTT 3.1.1 listener. Port 0 picks a free port (tests); [`BrokerHandle::local_addr`]
    /// reports the one chosen. Default `0.0.0.0:1883`.
    pub listen: SocketAddr,
    /// Username → password. Empty (the default): anyone may connect. Non-empty: every client
    /// must send a listed username and its password, or the broker closes the connection
    /// without a CONNACK. There are no per-topic ACLs: any authenticated client may publish
    /// and subscribe anywhere.
    pub users: BTreeMap<String, String>,
    /// Connections the router accepts; above it new clients are dropped with no CONNACK.
    /// Default 12,000: 10,000 nodes plus headroom for the orchestrator, tools and nodes whose
    /// old connection has not timed out yet when they reconnect.
    pub max_connections: usize,
    /// Largest packet a client may send (rumqttd checks the whole packet after the fixed
    /// header, so topic included). Bigger packets get the connection reset. Default 256 KiB:
    /// desired documents are tens of KiB.
    pub max_payload_size: usize,
    /// Size at which a filter's in-memory commit log starts a new segment. Every distinct
    /// subscription filter has its own log; publishes matching no filter are stored nowhere
    /// (except as retained messages). Minimum 1024. Default 1 MiB.
    pub max_segment_size: usize,
    /// Segments kept per commit log (the active one included); the oldest is dropped when a
    /// new one starts, so a log holds at most about `max_segment_count × (max_segment_size +
    /// one message)`. Only subscribers that fall this far behind lose messages. Logs are never
    /// freed, even when their filter loses its last subscriber. Minimum 1. Default 2.
    pub max_segment_count: usize,
    /// Segment limits for subscription filters matching a pattern (rumqttd's
    /// `custom_segment`; the subscription filter is matched as if it were a topic, so the
    /// pattern `+/+/nodes/+/desired` covers both `fleet/s/nodes/n0001/desired` and
    /// `fleet/s/nodes/+/desired`). When several patterns match, which one wins is unspecified.
    /// Setting this table replaces the default entry. Default: `+/+/nodes/+/desired` at
    /// 64 KiB × 2: with 50 KiB documents the 10,000 per-node desired logs hold about 2 GiB
    /// in the end instead of about 20 GiB with the global limits. Desired documents are
    /// retained and last-wins: a lagging node loses nothing it needs.
    pub custom_segments: BTreeMap<String, SegmentLimits>,
    /// Messages the router moves to one QoS 0 subscription per sweep, and the most retained
    /// messages a new QoS 0 subscription receives (the rest are dropped silently). Must exceed
    /// the number of retained topics one wildcard matches. Default 50,000 (3 retained channels
    /// × 10,000 nodes, plus headroom). QoS 1/2 subscriptions are capped at 100 by rumqttd
    /// regardless.
    pub max_outgoing_packet_count: u64,
    /// Incoming packets the broker reads from one connection before handing them to the
    /// router (rumqttd's `max_inflight_count`; it does not limit outgoing or retained
    /// messages). Default 100.
    pub max_inflight_count: usize,
    /// How long a new TCP connection may take to send CONNECT. Default 10,000 (10 s).
    pub connection_timeout_ms: u16,
    /// Pause after each accepted connection; 1 ms spreads a reconnect storm of 10,000 nodes
    /// over about 10 s. Default 1.
    pub next_connection_delay_ms: u64,
    /// rumqttd's HTTP console (config, connections, subscriptions; no authentication). Off by
    /// default; bind it to localhost.
    pub console_listen: Option<SocketAddr>,
    /// Prometheus metrics endpoint (`/metrics`). Off by default. Installs a process-global
    /// recorder: enable it in one broker per process.
    pub prometheus_listen: Option<SocketAddr>,
    /// How long [`start`] waits for the listener to answer. Default 10,000 (10 s).
    pub startup_timeout_ms: u64,
}

/// Commit-log limits for the filters matching one [`BrokerConfig::custom_segments`] pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentLimits {
    /// Like [`BrokerConfig::max_segment_size`]; minimum 1024.
    pub max_segment_size: usize,
    /// Like [`BrokerConfig::max_segment_count`]; minimum 1.
    pub max_segment_count: usize,
}

/// Per-filter commit logs sized for a fleet: small for the many per-node `desired`
/// subscriptions, large for the few site-wide wildcards the LO reads. On a rollout every node
/// reports at once; a wildcard subscriber that falls further behind than its filter's log
/// loses messages silently in rumqttd ("read cursor start jumped"): measured, 1 MiB lost
/// about two thirds of the statuses of 5,000 nodes (BENCHMARKS.md). Logs grow only as used.
fn default_custom_segments() -> BTreeMap<String, SegmentLimits> {
    let mib = 1024 * 1024;
    [
        ("desired", 64 * 1024),
        ("status", 32 * mib),
        ("events", 32 * mib),
        ("heartbeat", 8 * mib),
        ("online", 8 * mib),
    ]
    .into_iter()
    .map(|(channel, size)| {
        (
            format!("+/+/nodes/+/{channel}"),
            SegmentLimits {
                max_segment_size: size,
                max_segment_count: 2,
            },
        )
    })
    .collect()
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1883),
            users: BTreeMap::new(),
            max_connections: 12_000,
            max_payload_size: 256 * 1024,
            max_segment_size: 1024 * 1024,
            max_segment_count: 2,
            custom_segments: default_custom_segments(),
            max_outgoing_packet_count: 50_000,
            max_inflight_count: 100,
            connection_timeout_ms: 10_000,
            next_connection_delay_ms: 1,
            console_listen: None,
            prometheus_listen: None,
            startup_timeout_ms: 10_000,
        }
    }
}

/// Passwords are redacted.
impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        f.debug_struct("BrokerConfig")
            .field("listen", &self.listen)
            .field("users", &users)
            .field("max_connections", &self.max_connections)
            .field("max_payload_size", &self.max_payload_size)
            .field("max_segment_size", &self.max_segment_size)
            .field("max_segment_count", &self.max_segment_count)
            .field("custom_segments", &self.custom_segments)
            .field("max_outgoing_packet_count", &self.max_outgoing_packet_count)
            .field("max_inflight_count", &self.max_inflight_count)
            .field("connection_timeout_ms", &self.connection_timeout_ms)
            .field("next_connection_delay_ms", &self.next_connection_delay_ms)
            .field("console_listen", &self.console_listen)
            .field("prometheus_listen", &self.prometheus_listen)
            .field("startup_timeout_ms", &self.startup_timeout_ms)
            .finish()
    }
}

impl BrokerConfig {
    /// Reads and validates a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, BrokerError> {
        let text = std::fs::read_to_string(path).map_err(|source| BrokerError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates a TOML configuration held in memory.
    pub fn from_toml_str(text: &str) -> Result<Self, BrokerError> {
        Self::parse(text, Path::new("<string>"))
    }

    fn parse(text: &str, path: &Path) -> Result<Self, BrokerError> {
        let config: BrokerConfig =
            toml::from_str(text).map_err(|source| BrokerError::ParseConfig {
                path: path.to_owned(),
                source,
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects values rumqttd would panic on or that make the broker useless.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let invalid = |msg: String| Err(BrokerError::InvalidConfig(msg));
        let global = SegmentLimits {
            max_segment_size: self.max_segment_size,
            max_segment_count: self.max_segment_count,
        };
        for (name, limits) in std::iter::once(("", &global)).chain(
            self.custom_segments
                .iter()
                .map(|(pattern, limits)| (pattern.as_str(), limits)),
        ) {
            let at = if name.is_empty() {
                String::new()
            } else {
                format!(" (custom_segments {name:?})")
            };
            if limits.max_segment_size < MIN_SEGMENT_SIZE {
                return invalid(format!(
                    "max_segment_size must be at least {MIN_SEGMENT_SIZE}, got {}{at}",
                    limits.max_segment_size
                ));
            }
            if limits.max_segment_count == 0 {
                return invalid(format!("max_segment_count must be greater than 0{at}"));
            }
        }
        if self.custom_segments.keys().any(String::is_empty) {
            return invalid("custom_segments: empty pattern".to_owned());
        }
        for (name, value) in [
            ("max_connections", self.max_connections as u64),
            ("max_payload_size", self.max_payload_size as u64),
            ("max_outgoing_packet_count", self.max_outgoing_packet_count),
            ("max_inflight_count", self.max_inflight_count as u64),
            (
                "connection_timeout_ms",
                u64::from(self.connection_timeout_ms),
            ),
            ("startup_timeout_ms", self.startup_timeout_ms),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be greater than 0"));
            }
        }
        for (user, password) in &self.users {
            if user.is_empty() {
                return invalid("users: empty username".to_owned());
            }
            // The readiness probe and MQTT itself carry strings with a u16 length prefix.
            if user.len() > usize::from(u16::MAX) || password.len() > usize::from(u16::MAX) {
                return invalid(format!("users: username or password of {user:?} too long"));
            }
        }
        Ok(())
    }

    /// The rumqttd configuration for this broker, listening on `listen` (which overrides
    /// [`BrokerConfig::listen`], so that [`start`] can substitute a free port for port 0).
    pub fn to_rumqttd(&self, listen: SocketAddr) -> Result<rumqttd::Config, BrokerError> {
        let connections = rumqttd::ConnectionSettings {
            connection_timeout_ms: self.connection_timeout_ms,
            max_payload_size: self.max_payload_size,
            max_inflight_count: self.max_inflight_count,
            auth: (!self.users.is_empty()).then(|| {
                self.users
                    .iter()
                    .map(|(u, p)| (u.clone(), p.clone()))
                    .collect::<HashMap<_, _>>()
            }),
            external_auth: None,
            // true would create a commit log per published topic (memory) and buys nothing:
            // publishes to topics without subscribers are accepted either way.
            dynamic_filters: false,
        };
        let server = rumqttd::ServerSettings {
            name: LISTENER_NAME.to_owned(),
            listen,
            tls: None,
            next_connection_delay_ms: self.next_connection_delay_ms,
            connections,
        };
        let router = rumqttd::RouterConfig {
            max_connections: self.max_connections,
            max_outgoing_packet_count: self.max_outgoing_packet_count,
            max_segment_size: self.max_segment_size,
            max_segment_count: self.max_segment_count,
            custom_segment: (!self.custom_segments.is_empty()).then(|| {
                self.custom_segments
                    .iter()
                    .map(|(pattern, limits)| {
                        let segment = rumqttd::SegmentConfig {
                            max_segment_size: limits.max_segment_size,
                            max_segment_count: limits.max_segment_count,
                        };
                        (pattern.clone(), segment)
                    })
                    .collect()
            }),
            initialized_filters: None,
            ..Default::default()
        };
        // Both settings types have private fields: build them through serde.
        let console = self
            .console_listen
            .map(|addr| from_toml_table([("listen", toml::Value::String(addr.to_string()))]))
            .transpose()?;
        let prometheus = self
            .prometheus_listen
            .map(|addr| {
                from_toml_table([
                    ("listen", toml::Value::String(addr.to_string())),
                    ("interval", toml::Value::Integer(1)),
                ])
            })
            .transpose()?;
        Ok(rumqttd::Config {
            id: 0,
            router,
            v4: Some(HashMap::from([(LISTENER_NAME.to_owned(), server)])),
            v5: None,
            ws: None,
            cluster: None,
            console,
            bridge: None,
            prometheus,
            metrics: None,
        })
    }
}

fn from_toml_table<T: serde::de::DeserializeOwned>(
    entries: impl IntoIterator<Item = (&'static str, toml::Value)>,
) -> Result<T, BrokerError> {
    let table: toml::Table = entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    toml::Value::Table(table)
        .try_into()
        .map_err(|e| BrokerError::InvalidConfig(format!("rumqttd settings: {e}")))
}

/// A running broker. Dropping the handle does not stop it: rumqttd has no stop API, the
/// broker lives until the process exits.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    thread: JoinHandle<Result<(), String>>,
}

impl BrokerHandle {
    /// The address the listener is bound to (the chosen port when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where a client on this machine connects: [`Self::local_addr`] with an unspecified IP
    /// (`0.0.0.0`, `::`) replaced by the loopback address.
    pub fn connect_addr(&self) -> SocketAddr {
        connect_addr(self.local_addr)
    }

    /// False once the broker thread has stopped (rumqttd's listener failed).
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }
}

/// Starts the broker on its own OS thread and returns once it answers an MQTT CONNECT on
/// the listener, or fails after [`BrokerConfig::startup_timeout_ms`].
pub fn start(cfg: &BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    cfg.validate()?;
    let listen = resolve_listen(cfg.listen)?;
    let rumqttd_config = cfg.to_rumqttd(listen)?;
    debug!(config = ?cfg, "starting broker");

    let thread = thread::Builder::new()
        .name("edgefleet-broker".to_owned())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(rumqttd_config);
            // Blocks for as long as the listener runs.
            match broker.start() {
                Ok(()) => Err("listener stopped".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        })
        .map_err(BrokerError::Spawn)?;

    let probe_addr = connect_addr(listen);
    let login = cfg.users.iter().next();
    let timeout = Duration::from_millis(cfg.startup_timeout_ms);
    let deadline = Instant::now() + timeout;
    loop {
        if thread.is_finished() {
            let reason = match thread.join() {
                Ok(Ok(())) => "broker thread returned".to_owned(),
                Ok(Err(e)) => e,
                Err(_) => "broker thread panicked".to_owned(),
            };
            return Err(BrokerError::Exited(reason));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match probe(probe_addr, login, remaining.max(PROBE_INTERVAL)) {
            Ok(()) => break,
            Err(source) if remaining.is_zero() => {
                return Err(BrokerError::NotReady {
                    addr: probe_addr,
                    timeout,
                    source,
                });
            }
            Err(e) => debug!(error = %e, "broker not ready yet"),
        }
        thread::sleep(PROBE_INTERVAL);
    }

    info!(listen = %listen, auth = !cfg.users.is_empty(), "broker ready");
    Ok(BrokerHandle {
        local_addr: listen,
        thread,
    })
}

/// Port 0 becomes a free port; any other address is checked to be bindable now, so that an
/// address in use fails here instead of inside rumqttd (which only logs it) and so that the
/// readiness probe cannot succeed against another process.
fn resolve_listen(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let bind_err = |source| BrokerError::Bind {
        addr: listen,
        source,
    };
    let probe = TcpListener::bind(listen).map_err(bind_err)?;
    let bound = probe.local_addr().map_err(bind_err)?;
    // Released here; rumqttd binds it again a moment later.
    drop(probe);
    Ok(bound)
}

impl BrokerConfig {
    /// Where a client on this machine reaches `listen` (an unspecified IP becomes
    /// loopback); the default address of `broker healthcheck`.
    pub fn connect_addr(&self) -> SocketAddr {
        connect_addr(self.listen)
    }
}

fn connect_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// One MQTT 3.1.1 CONNECT / CONNACK exchange: proves the listener and the
/// router both answer (a bare TCP connect would only prove the former, and rumqttd logs an
/// error for every connection that closes before CONNECT).
fn probe(addr: SocketAddr, login: Option<(&String, &String)>, timeout: Duration) -> io::Result<()> {
    probe_as(addr, login, PROBE_CLIENT_ID, timeout)
}

fn probe_as(
    addr: SocketAddr,
    login: Option<(&String, &String)>,
    client_id: &str,
    timeout: Duration,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    // The whole exchange, not each read, is bounded by `timeout`.
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))?;
    stream.write_all(&connect_packet(client_id, login)?)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack[0] != 0x20 || connack[1] != 0x02 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected connack, got {connack:02x?}"),
        ));
    }
    if connack[3] != 0 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("connack return code {}", connack[3]),
        ));
    }
    // Close without DISCONNECT: the session is clean and has no Will, so nothing is left
    // behind, and rumqttd logs a closed socket at info level but a DISCONNECT at error level
    // ("router-drop").
    Ok(())
}

/// One health probe of a running MQTT 3.1.1 broker (this one or any other), for
/// `broker healthcheck`: TCP connect, CONNECT with a clean session as `client_id` (and
/// `login`), CONNACK with return code 0, all within `timeout`. The socket is then closed
/// without DISCONNECT, like [`start`]'s readiness probe: the session is clean and has no
/// Will, so nothing is left behind, and rumqttd logs a DISCONNECT at error level
/// (`router-drop`) but a closed socket at info level. The error says what failed.
pub fn check_health(
    addr: SocketAddr,
    login: Option<(&str, &str)>,
    client_id: &str,
    timeout: Duration,
) -> io::Result<()> {
    let login = login.map(|(u, p)| (u.to_owned(), p.to_owned()));
    let started = Instant::now();
    probe_as(
        addr,
        login.as_ref().map(|(u, p)| (u, p)),
        client_id,
        timeout,
    )
    .map_err(|e| {
        let what = match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                "connection closed before CONNACK (wrong login, or not an MQTT broker)".to_owned()
            }
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
                "no CONNACK within {} ms ({e})",
                started.elapsed().as_millis()
            ),
            _ => e.to_string(),
        };
        io::Error::new(e.kind(), format!("{addr}: {what}"))
    })
}

/// Encodes an MQTT 3.1.1 CONNECT with clean session and a 10 s keep-alive.
fn connect_packet(client_id: &str, login: Option<(&String, &String)>) -> io::Result<Vec<u8>> {
    fn put_str(buf: &mut Vec<u8>, s: &str) -> io::Result<()> {
        let len = u16::try_from(s.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string too long"))?;
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(s.as_bytes());
        Ok(())
    }
    let mut flags = 0x02; // clean session
    if login.is_some() {
        flags |= 0x80 | 0x40; // username, password
    }
    let mut body = Vec::new();
    put_str(&mut body, "MQTT")?;
    body.extend_from_slice(&[0x04, flags, 0x00, 0x0A]); // level 4, flags, keep-alive 10 s
    put_str(&mut body, client_id)?;
    if let Some((user, password)) = login {
        put_str(&mut body, user)?;
        put_str(&mut body, password)?;
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_file_matches_defaults() {
        let example = include_str!("../../broker.toml");
        let parsed = BrokerConfig::from_toml_str(example).expect("broker.toml parses");
        assert_eq!(parsed, BrokerConfig::default());
    }

    #[test]
    fn empty_file_gives_defaults() {
        let parsed = BrokerConfig::from_toml_str("").expect("empty config parses");
        assert_eq!(parsed, BrokerConfig::default());
        assert_eq!(parsed.listen.to_string(), "0.0.0.0:1883");
        assert_eq!(parsed.max_payload_size, 262_144);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = BrokerConfig::from_toml_str("max_payload = 1").expect_err("typo rejected");
        assert!(matches!(err, BrokerError::ParseConfig { .. }), "{err:?}");
    }

    #[test]
    fn values_rumqttd_panics_on_are_rejected() {
        for text in [
            "max_segment_size = 1023",
            "max_segment_count = 0",
            "[custom_segments.\"a/+\"]\nmax_segment_size = 10\nmax_segment_count = 1",
            "max_outgoing_packet_count = 0",
            "[users]\n\"\" = \"x\"",
        ] {
            let err = BrokerConfig::from_toml_str(text).expect_err(text);
            assert!(
                matches!(err, BrokerError::InvalidConfig(_)),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn rumqttd_config_carries_settings() {
        let cfg = BrokerConfig::from_toml_str(
            "listen = \"127.0.0.1:1999\"\nconsole_listen = \"127.0.0.1:3030\"\n\
             prometheus_listen = \"127.0.0.1:9042\"\n[users]\nlo = \"secret\"\n",
        )
        .expect("config parses");
        let addr: SocketAddr = "127.0.0.1:2000".parse().expect("addr");
        let r = cfg.to_rumqttd(addr).expect("rumqttd config");
        let v4 = r.v4.expect("v4 listener");
        let server = v4.get(LISTENER_NAME).expect("named listener");
        assert_eq!(server.listen, addr);
        assert_eq!(server.connections.max_payload_size, 256 * 1024);
        let auth = server.connections.auth.as_ref().expect("auth map");
        assert_eq!(auth.get("lo").map(String::as_str), Some("secret"));
        assert_eq!(r.router.max_outgoing_packet_count, 50_000);
        let custom = r.router.custom_segment.expect("custom segments");
        assert_eq!(custom["+/+/nodes/+/desired"].max_segment_size, 65_536);
        assert!(r.router.initialized_filters.is_none());
        assert!(r.v5.is_none() && r.ws.is_none());
        assert!(r.console.is_some() && r.prometheus.is_some());
    }

    #[test]
    fn debug_output_hides_passwords() {
        let cfg = BrokerConfig::from_toml_str("[users]\nlo = \"hunter2\"\n").expect("parses");
        let shown = format!("{cfg:?}");
        assert!(
            shown.contains("lo") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn connect_packet_encodes_remaining_length() {
        let user = "u".repeat(200);
        let pass = "p".to_owned();
        let packet = connect_packet("id", Some((&user, &pass))).expect("encodes");
        // body = 6 (protocol name) + 4 + 4 (client id) + 202 (user) + 3 (password) = 219
        assert_eq!(&packet[..3], &[0x10, 219 - 128 + 0x80, 0x01]);
        assert_eq!(packet.len(), 3 + 219);
    }
}
