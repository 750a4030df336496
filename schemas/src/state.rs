//! The state vocabulary shared by the LO and the agent, and the roll-up rule.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Lifecycle state of a component or a deployment on a node (the Margo vocabulary).
///
/// A deployment's state is the most severe state of its components; the order of
/// severity, least first, is
/// `installed < removed < pending < removing < installing < failed`
/// (see [`State::severity`]). `installed` is the only state that means "converged and running".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Desired, nothing done yet (waiting for a dependency, for a retry, or for its turn).
    Pending,
    /// Being pulled, created or started.
    Installing,
    /// Running the desired spec (and healthy when it has a healthcheck).
    Installed,
    /// Being stopped and removed.
    Removing,
    /// No longer desired and gone.
    Removed,
    /// Gave up after the attempt limit; carries an error.
    Failed,
}

impl State {
    /// Every state, least severe first.
    pub const ALL: [State; 6] = [
        State::Installed,
        State::Removed,
        State::Pending,
        State::Removing,
        State::Installing,
        State::Failed,
    ];

    /// Severity rank used by [`rollup`]: higher wins.
    pub fn severity(self) -> u8 {
        match self {
            State::Installed => 0,
            State::Removed => 1,
            State::Pending => 2,
            State::Removing => 3,
            State::Installing => 4,
            State::Failed => 5,
        }
    }

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Installing => "installing",
            State::Installed => "installed",
            State::Removing => "removing",
            State::Removed => "removed",
            State::Failed => "failed",
        }
    }

    /// True for the states nothing more will happen in without a new desired document.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Installed | State::Removed | State::Failed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rolls component states up into one: the most severe wins; `None` for no states.
pub fn rollup<I: IntoIterator<Item = State>>(states: I) -> Option<State> {
    states.into_iter().max_by_key(|s| s.severity())
}

/// Container health as Docker measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The healthcheck passes.
    Healthy,
    /// The healthcheck fails.
    Unhealthy,
    /// Within the start period, or no result yet.
    Starting,
    /// No healthcheck configured, or no container.
    #[default]
    None,
}

impl Health {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Starting => "starting",
            Health::None => "none",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_severe_state_wins() {
        use State::*;
        let cases: &[(&[State], Option<State>)] = &[
            (&[], None),
            (&[Installed], Some(Installed)),
            (&[Installed, Installed], Some(Installed)),
            (&[Installed, Pending], Some(Pending)),
            (&[Installed, Installing, Pending], Some(Installing)),
            (&[Removed, Removing], Some(Removing)),
            (&[Removed, Installed], Some(Removed)),
            (&[Installed, Failed, Installing], Some(Failed)),
            (&[Removing, Installing], Some(Installing)),
        ];
        for (input, want) in cases {
            assert_eq!(rollup(input.iter().copied()), *want, "rollup of {input:?}");
        }
    }

    #[test]
    fn severity_order_is_total_and_matches_all() {
        for pair in State::ALL.windows(2) {
            assert!(pair[0].severity() < pair[1].severity());
        }
    }

    #[test]
    fn wire_names_are_lowercase() {
        for s in State::ALL {
            let json = serde_json::to_string(&s).expect("serialize");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            let back: State = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, s);
        }
        assert_eq!(
            serde_json::to_string(&Health::None).expect("ser"),
            "\"none\""
        );
    }
}
