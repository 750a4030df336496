//! # en-agent: the edgefleet edge-node agent
//!
//! Makes the node's Docker engine match its desired document (from MQTT, persisted in
//! the state directory, so it also converges offline) and reports exactly what runs.
//!
//! ## Layout
//! Start reading at [`agent`] (the loop), then [`plan`] (the decision), then [`runtime`].
//! - [`agent`]: one agent instance ([`agent::spawn`] / [`agent::run`]): take a desired
//!   document from the inbox, observe, plan, execute the first action, publish the status,
//!   wait. No globals: a process can run many agents (the fleet simulator does).
//! - [`plan`]: the pure decision — desired + observed + failure memory → next actions;
//!   `plan/component.rs` decides one component, [`plan::memory`] remembers attempts,
//!   crashes and health restarts.
//! - [`retry`]: the one retry policy ([`retry::after_failure`], on the error's
//!   [`retry::ErrorKind`]) and the backoff every wait uses. Pure.
//! - [`reconcile`]: the effects around [`plan`]: observes the engine, executes one action,
//!   records its outcome in the memory.
//! - [`runtime`]: the container runtime trait; [`runtime::spec`] maps a desired component
//!   to a [`runtime::ContainerSpec`] (names, labels, mounts); [`runtime::docker`] is the
//!   only place Docker types appear; `runtime::fake` (feature `fake`) is for tests and the
//!   fleet simulator.
//! - [`images`]: image garbage collection once the node is settled ([`images::select`]
//!   is the pure choice, [`images::ledger`] the record of what the agent pulled).
//! - [`report`]: pure building of `status` and `events`.
//! - [`store`]: the state directory (atomic `desired.json`, validation guards).
//! - [`mqtt`]: the broker session (presence + epoch + Will, subscribe, reports); it hands
//!   documents to the loop through the inbox.
//! - [`config`]: defaults < file < env < flags.
//! - [`health`]: `en-agent healthcheck` (Docker answers, state dir readable; writes nothing).
//! - [`counters`], [`error`]: the agent's counters and its start/stop error.
//!
//! `docs/agent.md` describes behaviour, configuration and installation.

pub mod agent;
pub mod config;
pub mod counters;
pub mod error;
pub mod health;
pub mod images;
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
