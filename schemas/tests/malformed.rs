//! A malformed Deployment fails with a message naming file, line and field.

use schemas::site::load_site;
use schemas::DocProblem;

const FILE: &str = "sites/s1/app.yaml";

fn problems(yaml: &str) -> Vec<DocProblem> {
    load_site("s1", [(FILE, yaml)]).expect_err("the document must be rejected")
}

/// Asserts exactly one problem at `line` on `field` whose message contains `needle`.
fn assert_problem(yaml: &str, line: usize, field: &str, needle: &str) {
    let p = problems(yaml);
    assert_eq!(p.len(), 1, "one problem expected, got {p:#?}");
    let p = &p[0];
    assert_eq!(p.file, FILE);
    assert_eq!(p.line, Some(line), "{p:?}");
    assert_eq!(p.field.as_deref(), Some(field), "{p:?}");
    assert!(
        p.message.contains(needle),
        "{:?} lacks {needle:?}",
        p.message
    );
}

fn deployment(components: &str) -> String {
    format!(
        "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  components:\n{components}"
    )
}

#[test]
fn a_valid_deployment_loads() {
    let docs = load_site(
        "s1",
        [(
            FILE,
            deployment("    - name: web\n      image: nginx:1.27\n").as_str(),
        )],
    )
    .expect("valid");
    assert_eq!(docs.deployments["app"].components[0].image, "nginx:1.27");
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let y = deployment("    - name: web\n      imag: nginx:1.27\n");
    assert_problem(&y, 8, "spec.components[0].imag", "unknown field `imag`");
}

#[test]
fn wrong_type_names_the_field() {
    let y = deployment("    - name: web\n      image: nginx\n      dependsOn: db\n");
    assert_problem(&y, 9, "spec.components[0].dependsOn", "invalid type");
}

#[test]
fn duplicate_component_name_is_rejected() {
    let y =
        deployment("    - name: web\n      image: nginx\n    - name: web\n      image: nginx:2\n");
    assert_problem(
        &y,
        9,
        "spec.components[1].name",
        "duplicate component name `web`",
    );
}

#[test]
fn depends_on_cycle_is_rejected() {
    let y = deployment(
        "    - name: a\n      image: x\n      dependsOn: [b]\n    - name: b\n      image: y\n      dependsOn: [a]\n",
    );
    assert_problem(
        &y,
        9,
        "spec.components[0].dependsOn",
        "dependency cycle: a -> b -> a",
    );
}

#[test]
fn depends_on_unknown_or_self_is_rejected() {
    let y = deployment("    - name: a\n      image: x\n      dependsOn: [nope]\n");
    assert_problem(&y, 9, "spec.components[0].dependsOn[0]", "not a component");
    let y = deployment("    - name: a\n      image: x\n      dependsOn: [a]\n");
    assert_problem(
        &y,
        9,
        "spec.components[0].dependsOn[0]",
        "depends on itself",
    );
}

#[test]
fn bad_image_reference_is_rejected() {
    for (image, needle) in [
        ("Nginx:1.0", "invalid repository path component"),
        ("nginx:", "invalid tag"),
        ("nginx@sha256:abc", "invalid digest"),
        ("reg:port/x", "invalid registry port"),
        ("a//b", "invalid repository path component"),
    ] {
        let y = deployment(&format!("    - name: web\n      image: \"{image}\"\n"));
        assert_problem(&y, 8, "spec.components[0].image", needle);
    }
    for ok in [
        "busybox",
        "library/busybox:1.36",
        "localhost:5000/ef/web:1.0",
        "registry.example.com/a/b/c:v1.2.3-rc_1",
        "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert!(
            schemas::site::validate_image_reference(ok).is_ok(),
            "{ok} should be valid"
        );
    }
}

#[test]
fn bad_port_syntax_is_rejected() {
    for (port, needle) in [
        ("\"80:http\"", "invalid container port `http`"),
        ("\"99999:80\"", "invalid host port"),
        ("\"8080:80/sctp\"", "invalid port"),
        ("\"1.2.3:8080:80\"", "invalid host address"),
        ("\"8000-8010:80\"", "invalid host port"),
    ] {
        let y = deployment(&format!(
            "    - name: web\n      image: nginx\n      ports:\n        - {port}\n"
        ));
        assert_problem(&y, 10, "spec.components[0].ports[0]", needle);
    }
}

#[test]
fn bad_volume_syntax_is_rejected() {
    for (vol, needle) in [
        ("data", "anonymous volume"),
        ("data:relative", "must be an absolute path"),
        ("data:/data:rx", "invalid volume mode"),
        ("./here:/data", "relative host path"),
        ("a:b:c:d", "invalid volume"),
    ] {
        let y = deployment(&format!(
            "    - name: web\n      image: nginx\n      volumes:\n        - \"{vol}\"\n"
        ));
        assert_problem(&y, 10, "spec.components[0].volumes[0]", needle);
    }
}

#[test]
fn bad_durations_and_limits_are_rejected() {
    let y = deployment(
        "    - name: web\n      image: nginx\n      healthcheck:\n        test: [CMD, /ok]\n        interval: soon\n",
    );
    assert_problem(
        &y,
        11,
        "spec.components[0].healthcheck.interval",
        "invalid duration",
    );
    let y =
        deployment("    - name: web\n      image: nginx\n      resources:\n        memory: lots\n");
    assert_problem(
        &y,
        10,
        "spec.components[0].resources.memory",
        "invalid memory",
    );
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let p = problems("apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata: [\n");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].file, FILE);
    assert!(p[0].line.is_some());
    assert!(
        p[0].message.starts_with("invalid YAML"),
        "{:?}",
        p[0].message
    );
}

#[test]
fn unknown_kind_and_wrong_api_version_are_rejected() {
    let p =
        problems("apiVersion: edgefleet.io/v1\nkind: Deploymnet\nmetadata: {name: a}\nspec: {}\n");
    assert_eq!(p[0].line, Some(2));
    assert!(p[0].message.contains("unknown kind `Deploymnet`"));
    let y = deployment("    - name: web\n      image: nginx\n")
        .replace("edgefleet.io/v1", "edgefleet.io/v2");
    assert_problem(&y, 1, "apiVersion", "unknown variant");
}

#[test]
fn every_problem_of_a_file_is_reported() {
    let y = deployment(
        "    - name: web\n      image: \"Bad\"\n      ports: [\"x\"]\n    - name: web\n      image: nginx\n",
    );
    let p = problems(&y);
    let fields: Vec<_> = p.iter().filter_map(|p| p.field.as_deref()).collect();
    assert!(fields.contains(&"spec.components[0].image"), "{fields:?}");
    assert!(
        fields.contains(&"spec.components[0].ports[0]"),
        "{fields:?}"
    );
    assert!(fields.contains(&"spec.components[1].name"), "{fields:?}");
}

#[test]
fn duplicate_deployments_across_files_are_rejected() {
    let y = deployment("    - name: web\n      image: nginx\n");
    let err = load_site(
        "s1",
        [
            ("sites/s1/a.yaml", y.as_str()),
            ("sites/s1/b.yaml", y.as_str()),
        ],
    )
    .expect_err("duplicate");
    assert_eq!(err.len(), 1);
    assert!(err[0]
        .message
        .contains("already declared in sites/s1/a.yaml"));
}

#[test]
fn node_list_must_name_declared_nodes_unless_auto_enrollment() {
    let dep = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  nodes: [n1, n2]\n  components:\n    - {name: web, image: nginx}\n";
    let node = "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata: {name: n1}\n";
    let err = load_site("s1", [("sites/s1/d.yaml", dep), ("sites/s1/n.yaml", node)])
        .expect_err("n2 undeclared");
    assert_eq!(err[0].field.as_deref(), Some("spec.nodes[1]"));
    let site = "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata: {name: s1}\nspec:\n  enrollment: {auto: true}\n";
    load_site(
        "s1",
        [
            ("sites/s1/d.yaml", dep),
            ("sites/s1/n.yaml", node),
            ("sites/s1/site.yaml", site),
        ],
    )
    .expect("auto-enrollment allows undeclared nodes");
}

#[test]
fn spec_hash_is_stable_across_spelling_of_defaults() {
    let a = deployment("    - name: web\n      image: nginx\n");
    let b = deployment(
        "    - image: nginx\n      restart: unless-stopped\n      name: web\n      ports: []\n      updateOrder: stop-first\n",
    );
    let ha = &load_site("s1", [(FILE, a.as_str())])
        .expect("a")
        .deployments["app"]
        .components[0]
        .spec_hash;
    let hb = &load_site("s1", [(FILE, b.as_str())])
        .expect("b")
        .deployments["app"]
        .components[0]
        .spec_hash;
    assert_eq!(ha, hb);
}

/// The LO refuses what an agent would refuse (`schemas::bounds`): a valid commit is never
/// rejected on the devices.
#[test]
fn values_above_the_agents_bounds_are_refused_at_the_commit() {
    let y = format!(
        "{}  policy:\n    backoff: 2h\n",
        deployment("    - name: web\n      image: nginx\n")
    );
    assert_problem(&y, 10, "spec.policy.backoff", "above the maximum of 1h");
    let y = deployment(
        "    - name: web\n      image: nginx\n      healthcheck:\n        test: [CMD, \"true\"]\n        interval: 25h\n",
    );
    assert_problem(
        &y,
        11,
        "spec.components[0].healthcheck.interval",
        "above the maximum of 24h",
    );
    for memory in ["1e30", "100000000000G"] {
        let y = deployment(&format!(
            "    - name: web\n      image: nginx\n      resources:\n        memory: {memory}\n"
        ));
        assert_problem(
            &y,
            10,
            "spec.components[0].resources.memory",
            "above the maximum",
        );
    }
}
