//! # edgefleet schemas: the contract between the LO and the agents, as code
//!
//! Everything that crosses a process boundary is defined here: the Git documents people
//! write ([`site`]), the MQTT payloads ([`wire`]), the topic scheme ([`topic`]), the state
//! vocabulary ([`state`]) and the spec hash both sides agree on ([`component`]). No I/O,
//! no async runtime.
//!
//! ## Layout
//! - [`wire`]: `DesiredState`, `NodeStatus`, `Event`, `Heartbeat`, `Presence`, `SiteStatus`.
//!   Start reading here.
//! - [`component`]: the resolved `Component` of a desired document and [`spec_hash`].
//! - [`host`]: a component's access to the host's devices, kernel and network, and its checks.
//! - [`logging`]: a container's log driver and options, and the bounded default agents apply.
//! - [`state`]: `State` (pending … failed), `Health`, and the most-severe-wins [`rollup`].
//! - [`bounds`]: the limits of a desired document both sides honour (`MAX_GENERATION` …).
//! - [`topic`]: topic builders and the strict parser; [`broker_url`]: `mqtt://` addresses.
//! - [`site`] (feature `site`): the site model people write in Git (`Deployment`, `Node`,
//!   `Site`) and [`site::load_site`], which validates a site's files with errors naming file, line and field.
//! - [`sign`] (feature `signing`): ed25519 signatures of desired documents.
//! - `json_schema` (feature `json-schema`): the JSON Schemas committed under `schemas/json/`.
//!
//! The authoritative description of the protocol is `docs/protocol.md`.

pub mod bounds;
pub mod broker_url;
pub mod component;
pub mod host;
pub mod logging;
pub mod names;
pub mod state;
pub mod topic;
pub mod wire;

#[cfg(feature = "site")]
pub mod site;

#[cfg(feature = "signing")]
pub mod sign;

#[cfg(feature = "json-schema")]
pub mod json_schema;

pub use bounds::MAX_GENERATION;
pub use broker_url::{redact_url, redact_urls_in, BrokerUrl, BrokerUrlError};
pub use component::{spec_hash, Component};
pub use names::{shorten, validate_name, NameError};
pub use state::{rollup, Health, State};
pub use topic::{validate_root, Delivery, LoChannel, NodeChannel, Qos, Topic, TopicError, Topics};
pub use wire::*;
