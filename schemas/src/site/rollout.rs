//! The rollout strategy as written (`Site.spec.rollout`, `Deployment.spec.rollout`) and its
//! resolution into a [`RolloutStrategy`]: waves, health-gate soak, failure threshold, wave
//! timeout, what to do on a halt. A Deployment's fields win over the Site's, field by field;
//! unset fields take the defaults (one wave of every node: today's behaviour).
//!
//! The strategy is the LO's business only: it is not part of a deployment's spec hash and
//! never reaches a node.

use super::context::Ctx;
use super::parse::parse_duration;
use crate::wire::DocProblem;
use serde::{Deserialize, Serialize};

/// Most waves in a strategy.
pub const MAX_WAVES: usize = 20;
/// Longest `soak` and `waveTimeout`: one day.
pub const MAX_ROLLOUT_MS: u64 = 86_400_000;
/// Default `waveTimeout`: 10 minutes.
pub const DEFAULT_WAVE_TIMEOUT_MS: u64 = 600_000;
/// Largest node count a wave or a threshold may name.
pub const MAX_ROLLOUT_COUNT: i64 = 1_000_000;

/// A rollout strategy as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// Inside a wave, at most this many nodes apply the new revision at once; the next ones
    /// follow as they pass or fail (default: the whole wave at once; 0 behaves like 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Ordered waves. `nodes` is cumulative: how many of the deployment's nodes have the
    /// new revision once the wave passed (a count, or `"N%"` rounded up); the last wave
    /// covers the rest. Default: one wave of every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<WaveSpec>>,
    /// How many nodes of a wave may fail without halting the rollout (it halts on more): a
    /// count or `"N%"` of the wave's nodes, rounded down (default 0). When there are
    /// several waves, the first (the canary) allows 0 unless the wave itself says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<AmountSpec>,
    /// A node that has not passed the health gate this long after it was handed the new
    /// revision counts as failed (default `10m`, at most `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_timeout: Option<String>,
    /// `rollback` (default): every node that received the new revision gets the promoted
    /// one back; `pause`: nodes stay where they are until a new commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_halt: Option<OnHalt>,
    /// `true`: no further node is handed the new revision (those that have it keep it)
    /// until this is set back to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// One wave as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaveSpec {
    /// Nodes that have the new revision once this wave passed, in total: a count (at least
    /// 1) or `"N%"` (1 to 100) of the deployment's nodes, rounded up.
    pub nodes: AmountSpec,
    /// A node passes when every component of the deployment is installed, healthy where it
    /// has a healthcheck, and has not restarted for this long (default `0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
    /// This wave's failure threshold, instead of the strategy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<AmountSpec>,
}

/// A node count or a percentage, as written: a whole number (`3`) or text (`"10%"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum AmountSpec {
    /// A count.
    Count(i64),
    /// `"N%"`, or a count written as text.
    Text(String),
}

const AMOUNT_EXPECTED: &str = "a node count like 3 or a percentage like \"10%\"";

// Deserialised by hand: anything but an integer or a string (a float, a boolean, a list,
// a mapping, an integer beyond 64 bits, which YAML reads as a float) is refused with a
// message that says what is expected, instead of serde's "data did not match any variant
// of untagged enum". The range is checked when the strategy is resolved.
impl<'de> Deserialize<'de> for AmountSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AmountSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(AMOUNT_EXPECTED)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<AmountSpec, E> {
                Ok(AmountSpec::Count(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<AmountSpec, E> {
                i64::try_from(v).map(AmountSpec::Count).map_err(|_| {
                    E::custom(format!(
                        "{v} is too large: expected {AMOUNT_EXPECTED} (at most {MAX_ROLLOUT_COUNT} nodes)"
                    ))
                })
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<AmountSpec, E> {
                // YAML reads an integer beyond 64 bits (99999999999999999999) as a float.
                let shown = if v.is_finite() && v.abs() < 1e15 {
                    format!("{v}")
                } else {
                    format!("{v:e}")
                };
                Err(E::custom(format!(
                    "`{shown}` is not a whole number of nodes: expected {AMOUNT_EXPECTED}"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AmountSpec, E> {
                Ok(AmountSpec::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<AmountSpec, E> {
                Ok(AmountSpec::Text(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// What a halted rollout does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnHalt {
    /// Every node that received the candidate gets the promoted revision back.
    #[default]
    Rollback,
    /// Nodes stay where they are until a new commit.
    Pause,
}

/// A node count or a percentage, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Amount {
    /// A number of nodes.
    Count(u32),
    /// A percentage, 0 to 100 (0 only for thresholds).
    Percent(u8),
}

impl Amount {
    /// The amount out of `total` nodes, for a wave's `nodes`: a percentage is rounded up
    /// (1% of 50 nodes is 1 node); never more than `total`.
    pub fn of(self, total: usize) -> usize {
        match self {
            Amount::Count(c) => (c as usize).min(total),
            Amount::Percent(p) => total
                .saturating_mul(usize::from(p))
                .div_ceil(100)
                .min(total),
        }
    }

    /// The amount out of `total` nodes, for a failure threshold: a percentage is rounded
    /// down, so that "more failures than the threshold" means exactly "a larger share than
    /// the percentage" (5% of 10 nodes is 0: one failure out of 10 is 10%, above 5%);
    /// never more than `total`.
    pub fn floor_of(self, total: usize) -> usize {
        match self {
            Amount::Count(c) => (c as usize).min(total),
            Amount::Percent(p) => (total.saturating_mul(usize::from(p)) / 100).min(total),
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Count(c) => write!(f, "{c}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// One wave, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Wave {
    /// Cumulative nodes once the wave passed.
    pub nodes: Amount,
    /// Health-gate soak (ms).
    pub soak_ms: u64,
    /// This wave's failure threshold, if it sets one.
    pub failure_threshold: Option<Amount>,
}

/// A resolved rollout strategy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RolloutStrategy {
    /// Nodes applying the candidate at once inside a wave (`None`: the whole wave).
    pub max_parallel: Option<u32>,
    /// Waves, never empty; the last covers every remaining node.
    pub waves: Vec<Wave>,
    /// Failure threshold of the waves that set none (the first wave's default is 0).
    pub failure_threshold: Amount,
    /// Gate timeout per node (ms).
    pub wave_timeout_ms: u64,
    /// What a halt does.
    pub on_halt: OnHalt,
    /// No further node is handed the candidate.
    pub paused: bool,
}

impl Default for RolloutStrategy {
    fn default() -> Self {
        RolloutStrategy {
            max_parallel: None,
            waves: vec![Wave {
                nodes: Amount::Percent(100),
                soak_ms: 0,
                failure_threshold: None,
            }],
            failure_threshold: Amount::Count(0),
            wave_timeout_ms: DEFAULT_WAVE_TIMEOUT_MS,
            on_halt: OnHalt::Rollback,
            paused: false,
        }
    }
}

impl RolloutStrategy {
    /// How many of `total` nodes have the candidate once wave `i` (0-based) passed: the
    /// last wave always covers every node; a wave never covers fewer than the one before.
    pub fn reach(&self, i: usize, total: usize) -> usize {
        if i + 1 >= self.waves.len() {
            return total;
        }
        (0..=i)
            .map(|k| self.waves[k].nodes.of(total))
            .max()
            .unwrap_or(0)
    }

    /// How many of wave `i`'s `wave_nodes` nodes may fail without halting the rollout (it
    /// halts on more failures than this). A percentage rounds down. The first of several
    /// waves (the canary) allows none unless it sets its own threshold; a single wave (no
    /// `waves`, or one) takes the strategy's `failureThreshold`.
    pub fn threshold(&self, i: usize, wave_nodes: usize) -> usize {
        let amount = match self.waves.get(i).and_then(|w| w.failure_threshold) {
            Some(a) => a,
            None if i == 0 && self.waves.len() > 1 => Amount::Count(0),
            None => self.failure_threshold,
        };
        amount.floor_of(wave_nodes)
    }
}

/// Resolves an amount: `at` names the field; `zero_ok` admits `0` / `"0%"` (a
/// threshold), else the amount must be at least 1 node or 1 %. Text is trimmed (`" 10 %"`
/// is `10%`); only ASCII digits make a number (no sign, no fraction, no `_`).
fn resolve_amount(
    ctx: &Ctx<'_>,
    at: &str,
    a: &AmountSpec,
    zero_ok: bool,
    problems: &mut Vec<DocProblem>,
) -> Option<Amount> {
    let min = i64::from(!zero_ok);
    let what = if zero_ok { "failures" } else { "nodes" };
    let count_range = format!(
        "must be {min} to {MAX_ROLLOUT_COUNT} {what}, or a percentage from {min}% to 100% like \"10%\""
    );
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let message = match a {
        AmountSpec::Count(c) if (min..=MAX_ROLLOUT_COUNT).contains(c) => {
            return u32::try_from(*c).ok().map(Amount::Count);
        }
        AmountSpec::Count(c) => format!("{c}: {count_range}"),
        AmountSpec::Text(t) => {
            let s = t.trim();
            let shown = crate::shorten(t, 32);
            if let Some(p) = s.strip_suffix('%') {
                let p = p.trim();
                match p.parse::<u8>() {
                    Ok(n) if digits(p) && (min..=100).contains(&i64::from(n)) => {
                        return Some(Amount::Percent(n));
                    }
                    _ => format!("`{shown}` is not a percentage from {min}% to 100%"),
                }
            } else if digits(s) {
                match s.parse::<i64>() {
                    Ok(c) if (min..=MAX_ROLLOUT_COUNT).contains(&c) => {
                        return u32::try_from(c).ok().map(Amount::Count);
                    }
                    _ => format!("`{shown}`: {count_range}"),
                }
            } else if s.is_empty() {
                format!("empty: expected {AMOUNT_EXPECTED}")
            } else {
                format!("`{shown}` is neither a node count nor a percentage like \"10%\"")
            }
        }
    };
    ctx.problem(problems, at, message);
    None
}

fn resolve_ms(
    ctx: &Ctx<'_>,
    at: &str,
    text: &str,
    zero_ok: bool,
    problems: &mut Vec<DocProblem>,
) -> Option<u64> {
    match parse_duration(text) {
        Ok(d) if d.as_millis() > u128::from(MAX_ROLLOUT_MS) => {
            ctx.problem(
                problems,
                at,
                format!("`{}` is above the maximum of 24h", crate::shorten(text, 32)),
            );
            None
        }
        Ok(d) if d.is_zero() && !zero_ok => {
            ctx.problem(problems, at, "must be longer than 0s".into());
            None
        }
        Ok(d) => Some(d.as_millis() as u64),
        Err(e) => {
            ctx.problem(
                problems,
                at,
                format!(
                    "invalid duration `{}` (e.g. 30s, 2m, 1h30m): {}",
                    crate::shorten(text, 32),
                    e.source
                ),
            );
            None
        }
    }
}

/// Resolves `spec` (at field `at`, e.g. `spec.rollout`) over `fallback` (the Site's, for
/// a Deployment): each field set in `spec` wins, then the fallback's, then the default.
/// Every problem names its field (`spec.rollout.waves[1].nodes`).
pub(super) fn resolve_rollout(
    ctx: &Ctx<'_>,
    at: &str,
    spec: Option<&RolloutSpec>,
    fallback: Option<&RolloutSpec>,
    problems: &mut Vec<DocProblem>,
) -> RolloutStrategy {
    let mut out = RolloutStrategy::default();
    let empty = RolloutSpec::default();
    let own = spec.unwrap_or(&empty);
    let base = fallback.unwrap_or(&empty);
    // A field set here is checked and reported here; one inherited from the Site was
    // checked in the Site's own file and is only resolved again (its problems dropped).
    let mut quiet = Vec::new();
    out.max_parallel = own.max_parallel.or(base.max_parallel);
    out.paused = own.paused.or(base.paused).unwrap_or(false);
    out.on_halt = own.on_halt.or(base.on_halt).unwrap_or_default();
    let (t, mine) = match &own.wave_timeout {
        Some(t) => (Some(t), true),
        None => (base.wave_timeout.as_ref(), false),
    };
    if let Some(t) = t {
        let p = if mine { &mut *problems } else { &mut quiet };
        if let Some(ms) = resolve_ms(ctx, &format!("{at}.waveTimeout"), t, false, p) {
            out.wave_timeout_ms = ms;
        }
    }
    let (a, mine) = match &own.failure_threshold {
        Some(a) => (Some(a), true),
        None => (base.failure_threshold.as_ref(), false),
    };
    if let Some(a) = a {
        let p = if mine { &mut *problems } else { &mut quiet };
        if let Some(a) = resolve_amount(ctx, &format!("{at}.failureThreshold"), a, true, p) {
            out.failure_threshold = a;
        }
    }
    let (waves, mine) = match &own.waves {
        Some(w) => (Some(w), true),
        None => (base.waves.as_ref(), false),
    };
    if let Some(waves) = waves {
        let p = if mine { &mut *problems } else { &mut quiet };
        if waves.is_empty() {
            ctx.problem(
                p,
                &format!("{at}.waves"),
                "needs at least one wave (leave `waves` out for one wave of every node)".into(),
            );
        } else if waves.len() > MAX_WAVES {
            ctx.problem(
                p,
                &format!("{at}.waves"),
                format!("{} waves: at most {MAX_WAVES}", waves.len()),
            );
        } else {
            let mut resolved = Vec::with_capacity(waves.len());
            let (mut last_count, mut last_pct) = (0u32, 0u8);
            for (i, w) in waves.iter().enumerate() {
                let wat = format!("{at}.waves[{i}]");
                let nodes = resolve_amount(ctx, &format!("{wat}.nodes"), &w.nodes, false, p);
                match nodes {
                    Some(Amount::Count(c)) if c < last_count => ctx.problem(
                        p,
                        &format!("{wat}.nodes"),
                        format!("{c} is fewer than the {last_count} nodes of an earlier wave: `nodes` counts every node reached so far"),
                    ),
                    Some(Amount::Percent(c)) if c < last_pct => ctx.problem(
                        p,
                        &format!("{wat}.nodes"),
                        format!("{c}% is less than the {last_pct}% of an earlier wave: `nodes` counts every node reached so far"),
                    ),
                    Some(Amount::Count(c)) => last_count = c,
                    Some(Amount::Percent(c)) => last_pct = c,
                    None => {}
                }
                let soak_ms = match &w.soak {
                    Some(t) => resolve_ms(ctx, &format!("{wat}.soak"), t, true, p).unwrap_or(0),
                    None => 0,
                };
                let failure_threshold = w.failure_threshold.as_ref().and_then(|a| {
                    resolve_amount(ctx, &format!("{wat}.failureThreshold"), a, true, p)
                });
                if let Some(nodes) = nodes {
                    resolved.push(Wave {
                        nodes,
                        soak_ms,
                        failure_threshold,
                    });
                }
            }
            if resolved.len() == waves.len() {
                out.waves = resolved;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_up_and_never_pass_the_total() {
        assert_eq!(Amount::Percent(1).of(1000), 10);
        assert_eq!(Amount::Percent(1).of(50), 1);
        assert_eq!(Amount::Percent(10).of(1000), 100);
        assert_eq!(Amount::Percent(100).of(7), 7);
        assert_eq!(Amount::Percent(0).of(7), 0);
        assert_eq!(Amount::Count(5).of(3), 3);
        assert_eq!(Amount::Count(0).of(3), 0);
        assert_eq!(Amount::Percent(50).of(0), 0);
    }

    #[test]
    fn thresholds_round_down() {
        // Halting on more failures than floor(p% of n) is halting on a share above p%.
        assert_eq!(Amount::Percent(5).floor_of(10), 0);
        assert_eq!(Amount::Percent(5).floor_of(20), 1);
        assert_eq!(Amount::Percent(5).floor_of(39), 1);
        assert_eq!(Amount::Percent(100).floor_of(7), 7);
        assert_eq!(Amount::Count(9).floor_of(7), 7);
    }

    #[test]
    fn a_single_wave_takes_the_strategys_threshold() {
        let s = RolloutStrategy {
            failure_threshold: Amount::Percent(10),
            ..RolloutStrategy::default()
        };
        assert_eq!(s.threshold(0, 100), 10);
        assert_eq!(s.threshold(0, 9), 0);
    }

    #[test]
    fn reach_is_cumulative_and_the_last_wave_covers_the_rest() {
        let w = |nodes| Wave {
            nodes,
            soak_ms: 0,
            failure_threshold: None,
        };
        let s = RolloutStrategy {
            waves: vec![
                w(Amount::Percent(1)),
                w(Amount::Count(5)),
                w(Amount::Count(2)),
                w(Amount::Count(3)),
            ],
            ..RolloutStrategy::default()
        };
        assert_eq!(s.reach(0, 1000), 10);
        // A wave never reaches fewer nodes than an earlier one.
        assert_eq!(s.reach(1, 1000), 10);
        assert_eq!(s.reach(2, 1000), 10);
        assert_eq!(s.reach(3, 1000), 1000);
        assert_eq!(RolloutStrategy::default().reach(0, 42), 42);
        // The first wave's threshold is 0 unless the wave sets one.
        let s = RolloutStrategy {
            failure_threshold: Amount::Percent(50),
            ..s
        };
        assert_eq!(s.threshold(0, 10), 0);
        assert_eq!(s.threshold(1, 10), 5);
    }
}
