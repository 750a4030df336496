//! Why an agent could not start or stopped.

use crate::store::StoreError;

/// Why an agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configured public key is unusable.
    #[error("public key: {0}")]
    Key(String),
    /// The MQTT client could not be set up.
    #[error("mqtt: {0}")]
    Mqtt(String),
    /// A task panicked or was cancelled.
    #[error("agent task failed: {0}")]
    Join(String),
}
