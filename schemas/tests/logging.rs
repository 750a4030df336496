//! The `logging` field of a component and the Site's `spec.logging`: what is accepted,
//! what is refused (naming file, line and field), how the Site's default and a component's
//! own `logging` resolve, and that a component without logging keeps its spec hash.

use schemas::component::{LogDriver, Logging};
use schemas::site::load_site;
use schemas::Component;
use std::collections::BTreeMap;

const FILE: &str = "sites/s1/app.yaml";
const SITE: &str = "sites/s1/site.yaml";

/// A deployment with one component `web` whose extra lines are `logging` (indented 6).
fn deployment(logging: &str) -> String {
    format!(
        "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  components:\n    - name: web\n      image: nginx:1.27\n{logging}"
    )
}

fn site(logging: &str) -> String {
    format!("apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: s1\nspec:\n{logging}")
}

fn logging(driver: LogDriver, options: &[(&str, &str)]) -> Logging {
    Logging {
        driver,
        options: options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// The resolved components of deployment `app`, by name.
fn components(files: &[(&str, &str)]) -> BTreeMap<String, Component> {
    let docs = load_site("s1", files.iter().copied())
        .unwrap_or_else(|p| panic!("the site must load: {p:#?}"));
    docs.deployments["app"]
        .components
        .iter()
        .map(|c| (c.name.clone(), c.clone()))
        .collect()
}

#[test]
fn valid_logging_resolves_as_written() {
    use LogDriver::*;
    let table: [(&str, Logging); 7] = [
        (
            "      logging:\n        driver: local\n        options:\n          max-size: 1m\n",
            logging(Local, &[("max-size", "1m")]),
        ),
        (
            // No driver: json-file; numbers and booleans become Docker's text.
            "      logging:\n        options:\n          max-size: 50M\n          max-file: 5\n          compress: true\n",
            logging(JsonFile, &[("max-size", "50M"), ("max-file", "5"), ("compress", "true")]),
        ),
        (
            "      logging:\n        driver: json-file\n",
            logging(JsonFile, &[]),
        ),
        (
            "      logging:\n        driver: journald\n        options:\n          tag: \"{{.Name}}\"\n",
            logging(Journald, &[("tag", "{{.Name}}")]),
        ),
        (
            "      logging:\n        driver: syslog\n        options:\n          syslog-address: udp://10.0.0.1:514\n",
            logging(Syslog, &[("syslog-address", "udp://10.0.0.1:514")]),
        ),
        ("      logging: {driver: none}\n", logging(None, &[])),
        (
            "      logging:\n        driver: local\n        options: {max-size: 1g, max-file: 100}\n",
            logging(Local, &[("max-size", "1g"), ("max-file", "100")]),
        ),
    ];
    for (yaml, want) in table {
        let doc = deployment(yaml);
        let c = components(&[(FILE, &doc)]);
        assert_eq!(c["web"].logging.as_ref(), Some(&want), "{yaml}");
        assert!(c["web"].hash_is_valid());
    }
}

#[test]
fn invalid_logging_names_file_line_and_field() {
    let long = "x".repeat(1025);
    let many: String = (0..33).map(|i| format!("          k{i}: v\n")).collect();
    let at = "spec.components[0].logging";
    // (logging lines, line of the problem, field, part of the message)
    let table: Vec<(String, usize, String, &str)> = vec![
        (
            "      logging:\n        driver: loki\n".into(),
            10,
            format!("{at}.driver"),
            "unsupported log driver `loki` (one of json-file, local, journald, syslog, none)",
        ),
        (
            "      logging:\n        driver: json-file\n        options:\n          max-size: \"-1\"\n".into(),
            12,
            format!("{at}.options.max-size"),
            "is not a log size",
        ),
        (
            "      logging:\n        options:\n          max-size: 10q\n".into(),
            11,
            format!("{at}.options.max-size"),
            "is not a log size",
        ),
        (
            "      logging:\n        options:\n          max-size: 2g\n".into(),
            11,
            format!("{at}.options.max-size"),
            "from 1 byte to 1g",
        ),
        (
            "      logging:\n        driver: local\n        options:\n          max-file: 0\n".into(),
            12,
            format!("{at}.options.max-file"),
            "not a file count from 1 to 100",
        ),
        (
            "      logging:\n        options:\n          max-file: 101\n".into(),
            11,
            format!("{at}.options.max-file"),
            "not a file count from 1 to 100",
        ),
        (
            "      logging:\n        driver: journald\n        options:\n          max-size: 10m\n".into(),
            12,
            format!("{at}.options.max-size"),
            "not to journald",
        ),
        (
            "      logging:\n        driver: none\n        options:\n          tag: web\n".into(),
            11,
            format!("{at}.options"),
            "driver `none` takes no options",
        ),
        (
            "      logging:\n        options:\n          Max_Size: 10m\n".into(),
            11,
            format!("{at}.options.Max_Size"),
            "invalid option name",
        ),
        (
            format!("      logging:\n        options:\n          tag: {long}\n"),
            11,
            format!("{at}.options.tag"),
            "at most 1024",
        ),
        (
            format!("      logging:\n        options:\n{many}"),
            10,
            format!("{at}.options"),
            "33 options, at most 32",
        ),
        (
            "      logging:\n        driver: local\n        level: debug\n".into(),
            11,
            format!("{at}.level"),
            "unknown field `level`",
        ),
        (
            "      logging:\n        options:\n          max-size: 1.5\n".into(),
            11,
            format!("{at}.options.max-size"),
            "",
        ),
    ];
    for (yaml, line, field, needle) in table {
        let doc = deployment(&yaml);
        let problems = load_site("s1", [(FILE, doc.as_str())]).expect_err(&yaml);
        assert_eq!(problems.len(), 1, "{yaml}: {problems:#?}");
        let p = &problems[0];
        assert_eq!(p.file, FILE, "{yaml}");
        assert_eq!(p.field.as_deref(), Some(field.as_str()), "{yaml}: {p:?}");
        assert_eq!(p.line, Some(line), "{yaml}: {p:?}");
        assert!(
            p.message.contains(needle),
            "{yaml}: {:?} lacks {needle:?}",
            p.message
        );
    }
}

#[test]
fn an_invalid_site_default_names_the_site_file() {
    let s = site("  logging:\n    driver: local\n    options:\n      max-size: \"-1\"\n");
    let d = deployment("");
    let problems = load_site("s1", [(SITE, s.as_str()), (FILE, d.as_str())]).expect_err("-1");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].file, SITE);
    assert_eq!(problems[0].line, Some(9));
    assert_eq!(
        problems[0].field.as_deref(),
        Some("spec.logging.options.max-size")
    );
    let s = site("  logging:\n    driver: fluentd\n");
    let problems = load_site("s1", [(SITE, s.as_str()), (FILE, d.as_str())]).expect_err("fluentd");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].line, Some(7));
    assert_eq!(problems[0].field.as_deref(), Some("spec.logging.driver"));
}

#[test]
fn the_site_default_applies_to_components_that_set_none() {
    let s = site("  logging:\n    driver: local\n    options:\n      max-size: 5m\n");
    let d = format!(
        "{}    - name: own\n      image: nginx:1.27\n      logging:\n        driver: journald\n",
        deployment("")
    );
    let c = components(&[(SITE, &s), (FILE, &d)]);
    assert_eq!(
        c["web"].logging,
        Some(logging(LogDriver::Local, &[("max-size", "5m")]))
    );
    // A component's own logging replaces the Site's as a whole (no option merging).
    assert_eq!(c["own"].logging, Some(logging(LogDriver::Journald, &[])));
    // The Site's default is part of the spec: changing it changes the hash.
    let without = components(&[(FILE, &d)]);
    assert_eq!(without["web"].logging, None);
    assert_ne!(without["web"].spec_hash, c["web"].spec_hash);
    assert_eq!(without["own"].spec_hash, c["own"].spec_hash);
}

#[test]
fn a_component_without_logging_keeps_its_spec_hash() {
    // Pinned before `logging` existed (schemas::component tests): same component, same hash.
    let doc = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  components:\n    - name: web\n      image: registry.local:5000/web:1.0\n";
    let c = components(&[(FILE, doc)]);
    assert_eq!(c["web"].logging, None);
    assert_eq!(
        c["web"].spec_hash,
        "sha256:eee82451786ba205689484accb8179878e357a16863a906979e04d245b5a3969"
    );
    let json = serde_json::to_value(&c["web"]).expect("json");
    assert!(json.get("logging").is_none(), "{json}");
    // A Site without `logging` changes nothing either.
    let s = site("  allowEmpty: false\n");
    let with_site = components(&[(SITE, &s), (FILE, doc)]);
    assert_eq!(with_site["web"].spec_hash, c["web"].spec_hash);
    // Written logging is in the hash.
    let logged = deployment("      logging: {driver: local}\n");
    let l = components(&[(FILE, &logged)]);
    assert_ne!(l["web"].spec_hash, c["web"].spec_hash);
}
