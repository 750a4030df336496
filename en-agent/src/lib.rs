//! # en-agent: the edgefleet edge-node agent
//!
//! Makes the node's Docker engine match its desired document (from MQTT, persisted in
//! the state directory, so it also converges offline) and reports exactly what runs.
//!
//! ## Layout
//! - [`agent`]: one agent instance ([`agent::spawn`] / [`agent::run`]); start reading here.
//!   No globals: a process can run many agents (the fleet simulator does).
//! - [`plan`]: the pure decision — desired + observed + retry memory → next actions.
//! - [`reconcile`]: observes the engine, executes one action, records failures/backoff.
//! - [`report`]: pure building of `status` and `events`.
//! - [`store`]: the state directory (atomic `desired.json`, validation guards).
//! - [`mqtt`]: the broker session (presence + epoch + Will, subscribe, reports).
//! - [`runtime`]: the container runtime trait, the Docker adapter and the fake.
//! - [`config`]: defaults < file < env < flags.
//! - [`health`]: `en-agent healthcheck` (Docker answers, state dir readable; writes nothing).
//!
//! `docs/agent.md` describes behaviour, configuration and installation.

pub mod agent;
pub mod config;
pub mod counters;
pub mod error;
pub mod health;
mod inbox;
pub mod mqtt;
pub mod plan;
pub mod reconcile;
pub mod report;
pub mod retry;
pub mod runtime;
pub mod store;

pub use agent::{run, spawn, AgentHandle};
pub use counters::Counters;
pub use error::AgentError;

/// The agent's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub use config::{resolve, Config};
