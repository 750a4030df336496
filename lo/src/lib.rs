//! # edgefleet LO: the local orchestrator of one site
//!
//! The LO reads a site's desired state from Git, validates it, renders one retained desired
//! document per node, ingests what the nodes report, decides rollbacks, and publishes a site
//! summary. It is the smart side; the EN agent does the container work.
//!
//! ## Start reading here
//! [`app::start`] wires the parts and spawns the [`engine`]; the engine receives commits
//! from the source poller and reports over MQTT, and hands each decision to the pure
//! [`reconcile`] (what every node gets, with which generation, paced, with rollbacks
//! applied), then publishes, persists and audits what it returns.
//!
//! ## Layout
//! - Pure core (no tokio, MQTT, Git, clock): [`reconcile`] (commit checks; served
//!   revision + observed fleet + records → documents, generations, rollout, rollback
//!   bookkeeping, what to republish after a reconnect),
//!   [`render`] (site + inventory → per-node documents and generations), [`rollout`]
//!   (pacing by `maxParallel`), [`policy`] (deletion guard, hold / rollback decisions),
//!   [`observe`] (presence with epochs, heartbeat timeout), [`reports`] (signature, size
//!   and admission checks of node reports), [`status`] (the site status), [`preview`] (the
//!   dry-run diff behind `lo plan`).
//! - Boundaries: [`source`] (the `DesiredSource` trait, its git2 implementation, the
//!   poller), [`mqtt`] (the rumqttc session), [`store`] (state directory), [`audit`]
//!   (JSON-lines log).
//! - Wiring: [`app`] (`start` / `run`), [`engine`] (the task owning all state: ingest,
//!   reconcile, publish), [`shared`] (state read by HTTP and tests), [`http`] (`/healthz`,
//!   `/readyz`, `/metrics`, `/status`, `POST /sync`), [`metrics`], [`config`] (layered
//!   configuration), [`cli`] (`lo validate`, `lo plan`, `lo history`), [`healthcheck`]
//!   (`lo healthcheck`).
//!
//! Operations are described in `docs/lo.md`.

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod engine;
pub mod healthcheck;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod observe;
pub mod policy;
pub mod preview;
pub mod reconcile;
pub mod render;
pub mod reports;
pub mod rollout;
pub mod shared;
pub mod source;
pub mod status;
pub mod store;
