//! When to try again: the one retry policy of the agent, and the backoff every wait uses.
//!
//! Pure (no clock, no randomness of its own: callers pass `now` and a `jitter` in
//! `[0, 1)`). [`after_failure`] decides what a failed engine call means for its component
//! from the error's [`ErrorKind`], the attempts already spent and the deployment's
//! [`FailurePolicy`]; the planner's memory (`plan::Memory::record_failure`) records the
//! answer and the planner reads it back (no action before `next_try`, none at all once
//! `failed`). Crash restarts, health restarts and the agent's own reconnects to the engine
//! wait with [`backoff`].

use schemas::wire::FailurePolicy;
use std::time::{Duration, Instant};

/// Backoff before attempt `attempt + 1`: `base · 2^(attempt-1)`, capped at 5 minutes,
/// before jitter. `jitter` in `[0, 1)` takes up to half of it away.
pub fn backoff(base_ms: u64, attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let ms = base_ms.max(1).saturating_mul(1u64 << exp).min(300_000);
    let cut = (ms as f64 * 0.5 * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_millis(ms - cut)
}

/// What a failure says about retrying (see `runtime::RuntimeError::kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The engine cannot be reached: nothing was learned about the component, so the
    /// attempt does not count; the next observation tries again.
    EngineDown,
    /// Trying the same call later may succeed (a taken port, a flaky registry, a full
    /// disk that gets freed).
    Transient,
    /// Trying again without a change is unlikely to succeed (image not found, pull
    /// denied).
    Permanent,
}

/// The policy's answer for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Not counted (the engine is down): try again at the next observation.
    NotCounted,
    /// Counted: try again no earlier than `at`.
    At {
        /// Attempts spent, this one included.
        attempts: u32,
        /// Earliest next attempt.
        at: Instant,
        /// `at - now`, for the log.
        delay: Duration,
    },
    /// Counted, and the attempt limit is reached: the component is failed until a new
    /// generation.
    GiveUp {
        /// Attempts spent, this one included.
        attempts: u32,
    },
}

/// Decides what a failed call means: `attempts` were spent before this failure.
///
/// A permanent error spends the deployment's attempts like a transient one: a missing
/// tag may be pushed meanwhile, and the report shows the same attempt count either way.
pub fn after_failure(
    kind: ErrorKind,
    attempts: u32,
    policy: FailurePolicy,
    now: Instant,
    jitter: f64,
) -> Retry {
    let attempts = match kind {
        ErrorKind::EngineDown => return Retry::NotCounted,
        ErrorKind::Transient | ErrorKind::Permanent => attempts.saturating_add(1),
    };
    if attempts >= policy.attempts {
        return Retry::GiveUp { attempts };
    }
    let delay = backoff(policy.backoff_ms, attempts, jitter);
    Retry::At {
        attempts,
        at: now + delay,
        delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_down() {
        assert_eq!(backoff(1_000, 1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(1_000, 3, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(1_000, 3, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(1_000, 40, 0.0), Duration::from_secs(300));
    }

    #[test]
    fn after_failure_table() {
        let now = Instant::now();
        let policy = FailurePolicy {
            attempts: 3,
            backoff_ms: 1_000,
            ..FailurePolicy::default()
        };
        let at = |attempts: u32, secs: u64| Retry::At {
            attempts,
            at: now + Duration::from_secs(secs),
            delay: Duration::from_secs(secs),
        };
        let cases = [
            (ErrorKind::EngineDown, 0, Retry::NotCounted),
            (ErrorKind::EngineDown, 2, Retry::NotCounted),
            (ErrorKind::Transient, 0, at(1, 1)),
            (ErrorKind::Transient, 1, at(2, 2)),
            (ErrorKind::Transient, 2, Retry::GiveUp { attempts: 3 }),
            (ErrorKind::Permanent, 0, at(1, 1)),
            (ErrorKind::Permanent, 2, Retry::GiveUp { attempts: 3 }),
            (ErrorKind::Permanent, 7, Retry::GiveUp { attempts: 8 }),
        ];
        for (kind, spent, want) in cases {
            assert_eq!(
                after_failure(kind, spent, policy, now, 0.0),
                want,
                "{kind:?} after {spent}"
            );
        }
        // Jitter only shortens the wait, by at most half.
        let Retry::At { delay, .. } = after_failure(ErrorKind::Transient, 1, policy, now, 0.99)
        else {
            panic!("retry expected");
        };
        assert!(delay >= Duration::from_secs(1) && delay < Duration::from_secs(2));
    }
}
