//! JSON Schemas of every payload and Git document, generated from the Rust types.
//!
//! The files under `schemas/json/` are these, pretty-printed; a test fails when they
//! are stale (`UPDATE_SCHEMAS=1 cargo test -p edgefleet-schemas --all-features` rewrites them).

use schemars::{schema_for, Schema};

/// `(file name, schema)` for everything the project exchanges.
pub fn all() -> Vec<(&'static str, Schema)> {
    let mut v = vec![
        ("desired.schema.json", schema_for!(crate::DesiredState)),
        ("status.schema.json", schema_for!(crate::NodeStatus)),
        ("event.schema.json", schema_for!(crate::Event)),
        ("heartbeat.schema.json", schema_for!(crate::Heartbeat)),
        ("presence.schema.json", schema_for!(crate::Presence)),
        ("site-status.schema.json", schema_for!(crate::SiteStatus)),
        ("lo-event.schema.json", schema_for!(crate::LoEvent)),
    ];
    #[cfg(feature = "site")]
    v.extend([
        (
            "deployment.schema.json",
            schema_for!(crate::site::Deployment),
        ),
        ("node.schema.json", schema_for!(crate::site::Node)),
        ("site.schema.json", schema_for!(crate::site::Site)),
    ]);
    v
}

/// The pretty JSON text of a schema, as committed (with a trailing newline).
pub fn render(schema: &Schema) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}
