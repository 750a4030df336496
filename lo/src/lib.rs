//! # edgefleet LO: the local orchestrator of one site
//!
//! The LO reads a site's desired state from Git, validates it, renders one retained desired
//! document per node, ingests what the nodes report, decides rollbacks, and publishes a site
//! summary. It is the smart side; the EN agent does the container work.
//!
//! ## Layout
//! - Pure core (no tokio, MQTT, Git): [`render`] (site + inventory → per-node documents and
//!   generations), [`plan`] (desired vs observed → actions; start reading here),
//!   [`observe`] (presence with epochs, heartbeat timeout), [`policy`] (deletion guard,
//!   hold / rollback decisions), [`rollout`] (pacing by `maxParallel`).
//! - Boundaries: [`source`] (the `DesiredSource` trait and its git2 implementation),
//!   [`mqtt`] (the rumqttc session), [`store`] (state directory), [`audit`] (JSON-lines log).
//! - Wiring: [`app`] (the engine task owning all state), [`http`] (`/healthz`, `/readyz`,
//!   `/metrics`, `POST /sync`), [`config`] (layered configuration), [`cli`] (`lo validate`,
//!   `lo plan`, `lo history`), [`healthcheck`] (`lo healthcheck`).
//!
//! Operations are described in `docs/lo.md`.

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod healthcheck;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod observe;
pub mod policy;
pub mod preview;
pub mod render;
pub mod rollout;
pub mod source;
pub mod store;
