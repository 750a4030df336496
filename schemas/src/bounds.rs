//! Bounds of a desired document that the LO and the agents both honour.
//!
//! The LO refuses a commit that would need more (with `file:line: field` problems, or naming
//! the node), and an agent refuses a document above them as hostile (it was not written by
//! an LO of this contract). Keeping both sides on the same constants means a valid commit is
//! never refused on the devices.

/// Largest generation anyone issues or accepts: 2^53 - 1, the largest integer every JSON
/// reader keeps exactly. The LO never issues above it and follows nothing above it; agents
/// refuse documents above it, so one forged message cannot pin a node above every future
/// generation.
pub const MAX_GENERATION: u64 = (1 << 53) - 1;

/// Largest presence epoch anyone sends or accepts (the same 2^53 - 1): a client increments
/// its epoch once per connection and never gets near it, so a larger one is forged.
pub const MAX_EPOCH: u64 = MAX_GENERATION;

/// Most deployments in one node's document.
pub const MAX_DEPLOYMENTS: usize = 256;

/// Most components in one node's document (all deployments together).
pub const MAX_COMPONENTS: usize = 1024;

/// Most attempts per operation a failure policy may ask for.
pub const MAX_ATTEMPTS: u32 = 1_000;

/// Longest first retry delay a failure policy may ask for (1 h).
pub const MAX_BACKOFF_MS: u64 = 3_600_000;

/// Longest healthcheck interval, timeout or start period (1 day).
pub const MAX_HEALTHCHECK_MS: u64 = 86_400_000;

/// Largest memory limit or CPU quota (Docker keeps both as signed 64-bit integers).
pub const MAX_RESOURCE: u64 = i64::MAX as u64;
