//! The contract's own tests: JSON Schemas are fresh, examples validate against them,
//! every payload round-trips.

use schemas::json_schema;
use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn committed_json_schemas_are_fresh() {
    let dir = crate_dir().join("json");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (name, schema) in json_schema::all() {
        let path = dir.join(name);
        let want = json_schema::render(&schema);
        if update {
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(&path, &want).expect("write schema");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schemas {stale:?}: run `UPDATE_SCHEMAS=1 cargo test -p edgefleet-schemas --test contract` and commit schemas/json/"
    );
}

fn validator(name: &str) -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(&read(&crate_dir().join("json").join(name))).expect("schema json");
    jsonschema::validator_for(&schema).expect("valid schema")
}

fn assert_valid(schema: &str, instance: &serde_json::Value, what: &str) {
    let v = validator(schema);
    let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what} fails {schema}: {errors:#?}");
}

/// YAML example → JSON value, through the same loader the LO uses.
fn yaml_value(file: &str) -> serde_json::Value {
    let src = read(&crate_dir().join("examples").join(file));
    let docs = schemas::site::parse_yaml_values(&src).expect("yaml");
    assert_eq!(docs.len(), 1);
    docs.into_iter().next().expect("one doc")
}

#[test]
fn payload_examples_validate_and_round_trip() {
    fn check<T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug>(
        example: &str,
        schema: &str,
    ) {
        let text = read(&crate_dir().join("examples").join(example));
        let value: serde_json::Value = serde_json::from_str(&text).expect("example json");
        assert_valid(schema, &value, example);
        let typed: T = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{example} does not parse as the Rust type: {e}"));
        let again: T =
            serde_json::from_str(&serde_json::to_string(&typed).expect("ser")).expect("de");
        assert_eq!(typed, again, "{example} round trip");
        // What the Rust type writes is valid against the schema too.
        assert_valid(schema, &serde_json::to_value(&typed).expect("ser"), example);
    }
    check::<schemas::DesiredState>("desired.json", "desired.schema.json");
    check::<schemas::NodeStatus>("status.json", "status.schema.json");
    check::<schemas::Event>("event.json", "event.schema.json");
    check::<schemas::Heartbeat>("heartbeat.json", "heartbeat.schema.json");
    check::<schemas::Presence>("presence.json", "presence.schema.json");
    check::<schemas::SiteStatus>("site-status.json", "site-status.schema.json");
    check::<schemas::LoEvent>("lo-event.json", "lo-event.schema.json");
}

/// Every example file is checked by a test above: a new one cannot be forgotten, and every
/// JSON Schema has an example.
#[test]
fn every_example_and_every_schema_is_covered() {
    let src = read(&crate_dir().join("tests").join("contract.rs"));
    let mut examples: Vec<String> = std::fs::read_dir(crate_dir().join("examples"))
        .expect("examples dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    examples.sort();
    for e in &examples {
        assert!(
            src.contains(&format!("\"{e}\"")),
            "examples/{e} is not checked by tests/contract.rs"
        );
    }
    for (schema, _) in schemas::json_schema::all() {
        let stem = schema.trim_end_matches(".schema.json");
        assert!(
            examples
                .iter()
                .any(|e| e == &format!("{stem}.json") || e == &format!("{stem}.yaml")),
            "json/{schema} has no example in examples/"
        );
    }
}

#[test]
fn rollout_examples_show_every_field() {
    let text = read(&crate_dir().join("examples").join("site-status.json"));
    let status: schemas::SiteStatus = serde_json::from_str(&text).expect("site status");
    let rollouts: Vec<_> = status
        .deployments
        .iter()
        .filter_map(|d| d.rollout.as_ref())
        .collect();
    assert!(rollouts.iter().any(|r| r.halt_reason.is_some()));
    assert!(rollouts
        .iter()
        .all(|r| r.wave >= 1 && r.wave as usize <= r.waves.len()));
    let text = read(&crate_dir().join("examples").join("status.json"));
    let status: schemas::NodeStatus = serde_json::from_str(&text).expect("node status");
    assert!(status
        .deployments
        .iter()
        .flat_map(|d| &d.components)
        .any(|c| c.retrying && c.next_attempt_at.is_some()));
}

#[test]
fn git_examples_validate_against_schemas_and_load() {
    for (file, schema) in [
        ("deployment.yaml", "deployment.schema.json"),
        ("node.yaml", "node.schema.json"),
        ("site.yaml", "site.schema.json"),
    ] {
        assert_valid(schema, &yaml_value(file), file);
    }
    let files: Vec<(String, String)> = ["deployment.yaml", "node.yaml", "site.yaml"]
        .iter()
        .map(|f| {
            (
                format!("sites/plant-1/{f}"),
                read(&crate_dir().join("examples").join(f)),
            )
        })
        .collect();
    let docs = schemas::site::load_site(
        "plant-1",
        files.iter().map(|(p, s)| (p.as_str(), s.as_str())),
    )
    .expect("examples load");
    let web = &docs.deployments["web"];
    assert_eq!(web.components.len(), 2);
    assert!(web.components.iter().all(|c| c.hash_is_valid()));
    assert_eq!(web.components[1].env["WORKERS"], "2");
    assert_eq!(web.components[0].resources.memory_bytes, Some(32 << 20));
    // The Site's rollout, with the Deployment's own fields winning.
    use schemas::site::{Amount, OnHalt};
    let r = &web.rollout;
    let nodes: Vec<Amount> = r.waves.iter().map(|w| w.nodes).collect();
    assert_eq!(
        nodes,
        [Amount::Count(1), Amount::Percent(10), Amount::Percent(100)]
    );
    assert_eq!(r.waves[0].soak_ms, 120_000);
    assert_eq!(r.failure_threshold, Amount::Percent(5));
    assert_eq!(r.wave_timeout_ms, 600_000);
    assert_eq!(r.on_halt, OnHalt::Pause);
    assert_eq!(r.max_parallel, Some(2));
    assert!(!r.paused);
    assert_eq!(
        docs.nodes["gw-1"].labels["edgefleet.io/canary"], "true",
        "the example node is the canary"
    );
    assert_eq!(
        web.components[0]
            .healthcheck
            .as_ref()
            .map(|h| h.interval_ms),
        Some(5_000)
    );
}

#[test]
fn a_schema_rejects_a_wrong_payload() {
    let v = validator("heartbeat.schema.json");
    let bad = serde_json::json!({"schema": "fleet.heartbeat/v1", "seq": "one"});
    assert!(!v.is_valid(&bad));
    let v = validator("deployment.schema.json");
    let bad = serde_json::json!({"apiVersion": "edgefleet.io/v1", "kind": "Deployment",
        "metadata": {"name": "x"}, "spec": {"components": [{"name": "a", "imag": "x"}]}});
    assert!(!v.is_valid(&bad));
    // The rollout strategy: whole numbers or text only, known keys only.
    let v = validator("site.schema.json");
    let site = |rollout: serde_json::Value| {
        serde_json::json!({"apiVersion": "edgefleet.io/v1", "kind": "Site",
            "metadata": {"name": "s1"}, "spec": {"rollout": rollout}})
    };
    assert!(v.is_valid(&site(
        serde_json::json!({"waves": [{"nodes": 1}, {"nodes": "10%"}], "onHalt": "pause"})
    )));
    for bad in [
        serde_json::json!({"waves": [{"nodes": 1.5}]}),
        serde_json::json!({"waves": [{"nodes": true}]}),
        serde_json::json!({"waves": [{"soak": "1m"}]}),
        serde_json::json!({"wave": []}),
        serde_json::json!({"onHalt": "stop"}),
    ] {
        assert!(!v.is_valid(&site(bad.clone())), "{bad}");
    }
    let v = validator("lo-event.schema.json");
    let mut event: serde_json::Value =
        serde_json::from_str(&read(&crate_dir().join("examples").join("lo-event.json")))
            .expect("json");
    event["kind"] = "exploded".into();
    assert!(!v.is_valid(&event));
}
