//! Edge I/O shared by both edge binaries, the LO (`lo`) and the agent (`en-agent`): the
//! mechanisms that talk to the operating system and the broker, written once. The decisions
//! stay in the binaries; the wire types stay in `schemas`, which has no I/O.
//!
//! # Layout
//! - [`mqtt`] (feature `mqtt`, default): the rumqttc [`mqtt::Transport`] for a
//!   `schemas::BrokerUrl` (plain TCP, or rustls TLS with feature `tls`), the QoS map
//!   [`mqtt::qos`], publish helpers that take a channel's `schemas::Delivery`, and the
//!   reconnect [`mqtt::ReconnectBackoff`].
//! - [`session`] (feature `mqtt`): the session epoch persisted in a file of its own
//!   ([`session::EpochFile`], [`session::EpochCounter`]) and the presence payload that also
//!   serves as the Last Will.
//! - [`fs`]: [`fs::write_atomic`], the one durable file write.
//! - [`trace`]: [`trace::init`], the tracing subscriber of every binary.
//! - [`shutdown`]: [`shutdown::signal`], SIGINT or SIGTERM as a future.
//!
//! Start reading at [`mqtt`]: each binary's `mqtt.rs` builds its session from it.

pub mod fs;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "mqtt")]
pub mod session;
pub mod shutdown;
pub mod trace;
