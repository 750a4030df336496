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
            name: shorten(name, MAX_NAME_LEN + 1),
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

/// At most `max` characters of untrusted text, for error messages: a longer text is cut and
/// says how long it was, so an error can never carry a megabyte of someone's input.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
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
        // A huge name is refused with a short error.
        let huge = "x".repeat(1 << 20);
        let err = validate_name(&huge).expect_err("too long").to_string();
        assert!(err.len() < 200, "{}", err.len());
        assert!(err.contains("(1048576 bytes)"), "{err}");
    }
}
