//! When to try again: the one retry policy of the agent, and the backoff every wait uses.
//!
//! Pure (no clock, no randomness of its own: callers pass `now` and a `jitter` in
//! `[0, 1)`). [`after_failure`] decides what a failed engine call means for its component
//! from the error's [`ErrorKind`], the attempts already spent, the deployment's
//! [`FailurePolicy`] and the agent's `retry_max_backoff` ([`Limits`]): within the attempt
//! budget every counted failure is retried; past it a transient cause is still retried for
//! ever (reported `failed` + `retrying`, backoff capped at `retry_max_backoff`) and a
//! permanent one gives up until a new generation. The planner's memory
//! (`plan::Memory::record_failure`) records the answer and the planner reads it back (no
//! action before `next_try`, none at all once failed for good). Crash restarts, health
//! restarts and the agent's own reconnects to the engine wait with [`backoff`].

use schemas::wire::FailurePolicy;
use std::time::{Duration, Instant};

/// The cap of [`backoff`]: the longest wait before the attempt budget is spent.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Default of the agent's `retry_max_backoff`: the longest wait between two retries of a
/// transient failure once the attempt budget is spent.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Backoff before attempt `attempt + 1`: `base · 2^(attempt-1)`, capped at 5 minutes,
/// before jitter. `jitter` in `[0, 1)` takes up to half of it away.
pub fn backoff(base_ms: u64, attempt: u32, jitter: f64) -> Duration {
    backoff_capped(base_ms, attempt, BACKOFF_CAP, jitter)
}

/// [`backoff`] with its own cap: `base · 2^(attempt-1)`, at most `cap`, then `jitter` in
/// `[0, 1)` takes up to half of it away (the wait is in `[cap/2, cap]` once capped).
pub fn backoff_capped(base_ms: u64, attempt: u32, cap: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
    let ms = base_ms.max(1).saturating_mul(1u64 << exp).min(cap_ms);
    let cut = (ms as f64 * 0.5 * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_millis(ms - cut.min(ms / 2))
}

/// What a failure says about retrying (see `runtime::RuntimeError::kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The engine cannot be reached (or did not answer in time): nothing was learned about
    /// the component, so the attempt does not count; the next observation tries again.
    EngineDown,
    /// Trying the same call later may succeed (a registry down or unreachable, a network
    /// error, a 5xx, a taken port, a full disk that gets freed): retried for ever, with a
    /// capped backoff, and reported `failed` + `retrying` once the attempt budget is spent.
    Transient,
    /// Trying again without a change to the desired state will not succeed (image or tag
    /// not found, pull denied, a spec the engine refuses as invalid): `failed` until a new
    /// generation once the attempt budget is spent.
    Permanent,
}

/// The limits one failure is judged by: the deployment's policy and the agent's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The deployment's `attempts` and `backoff`.
    pub policy: FailurePolicy,
    /// The agent's `retry_max_backoff`: the longest wait between two retries.
    pub max_backoff: Duration,
}

impl Limits {
    /// `policy` with the default cap.
    pub fn new(policy: FailurePolicy) -> Self {
        Limits {
            policy,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

/// The policy's answer for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Not counted (the engine is down): try again at the next observation.
    NotCounted,
    /// Counted, within the attempt budget: try again no earlier than `at`.
    At {
        /// Attempts spent, this one included.
        attempts: u32,
        /// Earliest next attempt.
        at: Instant,
        /// `at - now`, for the log and the report's wall clock.
        delay: Duration,
    },
    /// Counted, the attempt budget is spent, but the cause is transient: the component is
    /// reported `failed` with `retrying`, and tried again at `at` (backoff capped at
    /// `max_backoff`), for ever, until it succeeds or a new generation comes.
    Retrying {
        /// Attempts spent, this one included.
        attempts: u32,
        /// Next attempt.
        at: Instant,
        /// `at - now`.
        delay: Duration,
    },
    /// Counted, the attempt budget is spent and the cause is permanent: the component is
    /// failed until a new generation.
    GiveUp {
        /// Attempts spent, this one included.
        attempts: u32,
    },
}

/// Decides what a failed call means: `attempts` were spent before this failure.
///
/// Within the budget a permanent error spends the deployment's attempts like a transient
/// one (a missing tag may be pushed meanwhile, and the report shows the same attempt count
/// either way). Once the budget is spent a permanent error gives up; a transient one keeps
/// being retried with the backoff capped at `limits.max_backoff`.
pub fn after_failure(
    kind: ErrorKind,
    attempts: u32,
    limits: Limits,
    now: Instant,
    jitter: f64,
) -> Retry {
    let policy = limits.policy;
    let attempts = match kind {
        ErrorKind::EngineDown => return Retry::NotCounted,
        ErrorKind::Transient | ErrorKind::Permanent => attempts.saturating_add(1),
    };
    if attempts < policy.attempts {
        let cap = BACKOFF_CAP.min(limits.max_backoff);
        let delay = backoff_capped(policy.backoff_ms, attempts, cap, jitter);
        return Retry::At {
            attempts,
            at: now + delay,
            delay,
        };
    }
    if kind == ErrorKind::Permanent {
        return Retry::GiveUp { attempts };
    }
    let delay = backoff_capped(policy.backoff_ms, attempts, limits.max_backoff, jitter);
    Retry::Retrying {
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
        let cap = Duration::from_secs(2);
        assert_eq!(backoff_capped(1_000, 1, cap, 0.0), Duration::from_secs(1));
        assert_eq!(backoff_capped(1_000, 9, cap, 0.0), cap);
        assert_eq!(backoff_capped(1_000, 9, cap, 1.0), Duration::from_secs(1));
        assert_eq!(
            backoff_capped(u64::MAX, u32::MAX, Duration::from_secs(86_400), 0.0),
            Duration::from_secs(86_400)
        );
    }

    fn limits(attempts: u32, backoff_ms: u64, max_backoff: Duration) -> Limits {
        Limits {
            policy: FailurePolicy {
                attempts,
                backoff_ms,
                ..FailurePolicy::default()
            },
            max_backoff,
        }
    }

    #[test]
    fn after_failure_table() {
        let now = Instant::now();
        let secs = Duration::from_secs;
        let at = |attempts: u32, s: u64| Retry::At {
            attempts,
            at: now + secs(s),
            delay: secs(s),
        };
        let retrying = |attempts: u32, s: u64| Retry::Retrying {
            attempts,
            at: now + secs(s),
            delay: secs(s),
        };
        use ErrorKind::{EngineDown, Permanent, Transient};
        let default = limits(3, 1_000, DEFAULT_MAX_BACKOFF);
        let small_cap = limits(3, 1_000, secs(2));
        let one = limits(1, 1_000, secs(600));
        // (kind, attempts spent before, limits, answer)
        let cases = [
            // The engine is down: never counted, whatever was spent.
            (EngineDown, 0, default, Retry::NotCounted),
            (EngineDown, 2, default, Retry::NotCounted),
            (EngineDown, 50, default, Retry::NotCounted),
            // Within the budget: transient and permanent alike, doubling backoff.
            (Transient, 0, default, at(1, 1)),
            (Transient, 1, default, at(2, 2)),
            (Permanent, 0, default, at(1, 1)),
            (Permanent, 1, default, at(2, 2)),
            // The budget is spent: a permanent cause gives up ...
            (Permanent, 2, default, Retry::GiveUp { attempts: 3 }),
            (Permanent, 7, default, Retry::GiveUp { attempts: 8 }),
            (Permanent, 0, one, Retry::GiveUp { attempts: 1 }),
            // ... a transient one keeps retrying, doubling up to the cap.
            (Transient, 2, default, retrying(3, 4)),
            (Transient, 3, default, retrying(4, 8)),
            (Transient, 9, default, retrying(10, 512)),
            (Transient, 10, default, retrying(11, 600)),
            (Transient, 1_000, default, retrying(1_001, 600)),
            (Transient, u32::MAX, default, retrying(u32::MAX, 600)),
            (Transient, 0, one, retrying(1, 1)),
            // A small cap bounds every wait, within the budget too.
            (Transient, 1, small_cap, at(2, 2)),
            (Transient, 2, small_cap, retrying(3, 2)),
            (Transient, 40, small_cap, retrying(41, 2)),
        ];
        for (kind, spent, limits, want) in cases {
            assert_eq!(
                after_failure(kind, spent, limits, now, 0.0),
                want,
                "{kind:?} after {spent} with {limits:?}"
            );
        }
        // Within the budget the wait never exceeds the 5-minute cap of old, even with a
        // larger `retry_max_backoff`.
        let big = limits(30, 1_000, secs(3_600));
        assert_eq!(
            after_failure(Transient, 20, big, now, 0.0),
            at(21, 300),
            "within the budget"
        );
        assert_eq!(
            after_failure(Transient, 40, big, now, 0.0),
            retrying(41, 3_600),
            "past the budget"
        );
    }

    #[test]
    fn jitter_only_shortens_a_wait_by_at_most_half() {
        let now = Instant::now();
        let cap = Duration::from_secs(600);
        for jitter in [0.0, 0.25, 0.5, 0.99, 1.0, 7.0, -3.0] {
            for (spent, full) in [(1, 2), (2, 4), (30, 600)] {
                let r = after_failure(
                    ErrorKind::Transient,
                    spent,
                    limits(3, 1_000, cap),
                    now,
                    jitter,
                );
                let (Retry::At { delay, at, .. } | Retry::Retrying { delay, at, .. }) = r else {
                    panic!("retry expected, got {r:?}");
                };
                let full = Duration::from_secs(full);
                assert!(
                    delay <= full && delay >= full / 2,
                    "jitter {jitter} after {spent}: {delay:?} not in [{:?}, {full:?}]",
                    full / 2
                );
                assert_eq!(at, now + delay);
            }
        }
    }
}
