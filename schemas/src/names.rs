//! Names of sites, nodes, deployments and components.
//!
//! A name is 1 to 63 characters of ASCII letters, digits, `-`, `_` and `.`, starting
//! with a letter or digit. Names appear in MQTT topics and Docker container names, so
//! they can never hold `/`, `+`, `#` or white space.

/// Longest accepted name.
pub const MAX_NAME_LEN: usize = 63;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct NameError {
    /// The refused name.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks a site, node, deployment or component name.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let err = |reason| {
        Err(NameError {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(first) = name.chars().next() else {
        return err("must not be empty");
    };
    if name.len() > MAX_NAME_LEN {
        return err("must be at most 63 characters");
    }
    if !first.is_ascii_alphanumeric() {
        return err("must start with a letter or a digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return err("may only hold ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects_names() {
        for ok in ["a", "node-1", "edge_07.rack2", "0abc"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a/b", "a+b", "a#", "a b", "é", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
