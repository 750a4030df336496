//! Hostile input to the site loader: named regression cases for every limit, the site
//! security policy, and property tests over generated YAML-ish input (random text, random
//! nesting, anchors and aliases, huge scalars, many documents) that must never panic, never
//! take long, and always give a bounded answer.

use proptest::prelude::*;
use schemas::site::{load_site, load_site_with, SiteLimits};
use schemas::DocProblem;
use std::time::{Duration, Instant};

const FILE: &str = "sites/s1/app.yaml";
/// What one generated case may take (debug build, loaded 2-core machine).
const CASE_BUDGET: Duration = Duration::from_secs(1);

fn problems_with(yaml: &str, limits: &SiteLimits) -> Vec<DocProblem> {
    load_site_with("s1", [(FILE, yaml)], limits).expect_err("the site must be rejected")
}

fn problems(yaml: &str) -> Vec<DocProblem> {
    problems_with(yaml, &SiteLimits::default())
}

fn one_problem(yaml: &str, needle: &str) -> DocProblem {
    let p = problems(yaml);
    assert_eq!(p.len(), 1, "one problem expected: {p:#?}");
    assert!(p[0].message.contains(needle), "{:?} lacks {needle:?}", p[0]);
    p[0].clone()
}

fn deployment(component_extra: &str) -> String {
    format!(
        "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  components:\n    - name: web\n      image: nginx:1.27\n{component_extra}"
    )
}

fn site_doc(security: &str) -> String {
    format!("apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: s1\nspec:\n  security:\n{security}")
}

fn laughs(levels: usize, width: usize) -> String {
    let items = vec!["lol"; width].join(", ");
    let mut s = format!("a0: &a0 [{items}]\n");
    for i in 1..levels {
        let refs = vec![format!("*a{}", i - 1); width].join(", ");
        s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    s
}

#[test]
fn billion_laughs_is_one_problem_naming_the_node_budget() {
    let started = Instant::now();
    let p = one_problem(&laughs(10, 9), "max_yaml_nodes");
    assert_eq!(p.file, FILE);
    assert!(p.line.is_some());
    assert!(started.elapsed() < CASE_BUDGET);
}

#[test]
fn deep_nesting_is_refused_at_the_depth_limit() {
    let p = one_problem(
        &format!("{}{}", "[".repeat(70), "]".repeat(70)),
        "max_yaml_depth",
    );
    assert_eq!(p.line, Some(1));
    // Far deeper than any stack could take if the loader recursed.
    let deep = format!("{}1{}", "{a: ".repeat(200_000), "}".repeat(200_000));
    let p = problems(&deep);
    assert_eq!(p.len(), 1, "{p:?}");
    let limits = SiteLimits {
        max_yaml_depth: 8,
        ..SiteLimits::default()
    };
    let p = problems_with(&format!("{}{}", "[".repeat(9), "]".repeat(9)), &limits);
    assert!(p[0].message.contains("deeper than 8"), "{p:?}");
}

#[test]
fn file_and_site_size_limits_are_problems() {
    let limits = SiteLimits {
        max_file_bytes: 1000,
        max_site_bytes: 1500,
        ..SiteLimits::default()
    };
    let big = format!("# {}\n", "x".repeat(1000));
    let p = problems_with(&big, &limits);
    assert!(p[0].message.contains("max_file_bytes"), "{p:?}");
    let half = format!("# {}\n", "x".repeat(900));
    let p = load_site_with(
        "s1",
        [("a.yaml", half.as_str()), ("b.yaml", half.as_str())],
        &limits,
    )
    .expect_err("site too large");
    assert!(
        p.iter()
            .any(|p| p.message.contains("max_site_bytes") && p.file == "b.yaml"),
        "{p:?}"
    );
}

#[test]
fn document_count_limits_are_problems() {
    let node =
        |i: usize| format!("apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: n{i}\n");
    let per_file: String = (0..=SiteLimits::default().max_docs_per_file)
        .map(|i| format!("---\n{}", node(i)))
        .collect();
    one_problem(&per_file, "max_docs_per_file");
    let limits = SiteLimits {
        max_docs_per_site: 10,
        ..SiteLimits::default()
    };
    let files: Vec<(String, String)> = (0..4)
        .map(|f| {
            let docs: String = (0..3)
                .map(|i| format!("---\n{}", node(f * 10 + i)))
                .collect();
            (format!("f{f}.yaml"), docs)
        })
        .collect();
    let p = load_site_with(
        "s1",
        files.iter().map(|(a, b)| (a.as_str(), b.as_str())),
        &limits,
    )
    .expect_err("too many documents");
    assert!(
        p.iter().any(|p| p.message.contains("max_docs_per_site")),
        "{p:?}"
    );
}

#[test]
fn problem_lists_and_messages_are_bounded() {
    let files: Vec<(String, String)> = (0..4)
        .map(|f| {
            let docs: String = (0..50)
                .map(|i| format!("---\napiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: bad_{f}_{i}!\n"))
                .collect();
            (format!("f{f}.yaml"), docs)
        })
        .collect();
    let p = load_site("s1", files.iter().map(|(a, b)| (a.as_str(), b.as_str())))
        .expect_err("200 bad names");
    assert_eq!(p.len(), 51, "50 kept and a count");
    assert_eq!(p[50].message, "… and 150 more problems");
    let huge_name = format!(
        "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: {}\n",
        "n".repeat(1 << 19)
    );
    let p = problems(&huge_name);
    assert!(
        p.iter().all(|p| p.message.len() < 1024),
        "{}",
        p[0].message.len()
    );
    let huge_image = deployment("").replace("nginx:1.27", &"a".repeat(1 << 19));
    let p = problems(&huge_image);
    assert!(
        p.iter().all(|p| p.message.len() < 1024),
        "{}",
        p[0].message.len()
    );
}

#[test]
fn long_dependency_chains_need_no_deep_stack() {
    // 20,000 components, each depending on the next, and a cycle closing the chain: checked
    // on a thread with a small stack, which a recursive walk would overflow.
    let n = 20_000;
    let mut yaml = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: chain\nspec:\n  components:\n".to_owned();
    for i in 0..n {
        yaml.push_str(&format!(
            "    - {{name: c{i}, image: busybox:1, dependsOn: [c{}]}}\n",
            (i + 1) % n
        ));
    }
    let limits = SiteLimits {
        max_file_bytes: 8 << 20,
        max_yaml_nodes: 1_000_000,
        ..SiteLimits::default()
    };
    let handle = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || problems_with(&yaml, &limits))
        .expect("thread");
    let p = handle.join().expect("no stack overflow");
    assert_eq!(p.len(), 1, "{:?}", p.first());
    assert!(
        p[0].message.starts_with("dependency cycle: c0 -> c1 -> c2"),
        "{}",
        schemas::shorten(&p[0].message, 200)
    );
}

#[test]
fn merge_keys_work_in_deployments() {
    let yaml = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  components:\n    - &base\n      name: web\n      image: nginx:1.27\n      env: {A: \"1\"}\n      restart: always\n    - <<: *base\n      name: worker\n      restart: on-failure\n";
    let docs = load_site("s1", [(FILE, yaml)]).expect("merge keys load");
    let c = &docs.deployments["app"].components;
    assert_eq!(c[1].name, "worker");
    assert_eq!(c[1].image, "nginx:1.27");
    assert_eq!(c[1].env["A"], "1");
    assert_eq!(format!("{:?}", c[1].restart), "OnFailure");
    // A typo inside a merged mapping is still refused by name.
    let typo = yaml.replace("restart: always", "restrat: always");
    assert!(problems(&typo)
        .iter()
        .any(|p| p.message.contains("restrat")));
}

#[test]
fn protected_bind_mounts_are_refused_with_the_field() {
    for source in [
        "/",
        "/etc",
        "/etc/../etc",
        "//etc",
        "/etc/",
        "/etc/ssl/certs",
        "/proc/1",
        "/sys",
        "/dev/sda",
        "/boot",
        "/root/.ssh",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run",
        "/var/run",
        "/data/../etc",
    ] {
        let yaml = deployment(&format!("      volumes: [\"{source}:/x\"]\n"));
        let p = one_problem(&yaml, "refused");
        assert_eq!(
            p.field.as_deref(),
            Some("spec.components[0].volumes[0]"),
            "{source}"
        );
        assert_eq!(p.line, Some(9), "{source}");
        let long = deployment(&format!(
            "      volumes:\n        - {{type: bind, source: \"{source}\", target: /x}}\n"
        ));
        let p = one_problem(&long, "refused");
        assert_eq!(
            p.field.as_deref(),
            Some("spec.components[0].volumes[0]"),
            "{source}"
        );
    }
    for ok in [
        "/data",
        "/srv/app",
        "/var/lib/app",
        "/etcetera",
        "/run-data",
        "/devices",
    ] {
        let yaml = deployment(&format!("      volumes: [\"{ok}:/x\"]\n"));
        load_site("s1", [(FILE, yaml.as_str())]).unwrap_or_else(|p| panic!("{ok}: {p:?}"));
    }
}

#[test]
fn allowed_host_paths_is_an_allow_list_by_whole_components() {
    let site = site_doc("    allowedHostPaths: [/data, /var/run/docker.sock]\n");
    let check = |source: &str| {
        let d = deployment(&format!("      volumes: [\"{source}:/x\"]\n"));
        load_site("s1", [("site.yaml", site.as_str()), (FILE, d.as_str())])
    };
    check("/data").expect("listed");
    check("/data/x/../y").expect("below a listed prefix");
    check("/var/run/docker.sock").expect("a protected path, listed");
    let p = check("/database").expect_err("not a whole component");
    assert!(p[0].message.contains("allowedHostPaths"), "{p:?}");
    check("/srv").expect_err("not listed");
    check("/data/../etc").expect_err("normalised out of the prefix");
    // Named volumes are not host paths.
    check("cache").expect("named volume");
    let bad = site_doc("    allowedHostPaths: [data]\n");
    let p = load_site("s1", [("site.yaml", bad.as_str())]).expect_err("relative prefix");
    assert_eq!(
        p[0].field.as_deref(),
        Some("spec.security.allowedHostPaths[0]")
    );
    assert_eq!(p[0].line, Some(7));
}

#[test]
fn privileged_host_ports_need_the_site_to_allow_them() {
    for port in [
        "\"80:8080\"",
        "\"127.0.0.1:443:443\"",
        "{target: 80, published: 22}",
    ] {
        let d = deployment(&format!("      ports: [{port}]\n"));
        let p = one_problem(&d, "privileged");
        assert_eq!(
            p.field.as_deref(),
            Some("spec.components[0].ports[0]"),
            "{port}"
        );
        let site = site_doc("    allowPrivilegedPorts: true\n");
        load_site("s1", [("site.yaml", site.as_str()), (FILE, d.as_str())])
            .unwrap_or_else(|p| panic!("{port}: {p:?}"));
    }
    for port in [
        "\"8080:80\"",
        "80",
        "{target: 80}",
        "{target: 80, published: 1024}",
    ] {
        let d = deployment(&format!("      ports: [{port}]\n"));
        load_site("s1", [(FILE, d.as_str())]).unwrap_or_else(|p| panic!("{port}: {p:?}"));
    }
}

/// Loads `src` as a site file; asserts the answer is quick and bounded.
fn load_bounded(src: &str) -> Result<(), TestCaseError> {
    let limits = SiteLimits::default();
    let started = Instant::now();
    let result = load_site_with("s1", [(FILE, src)], &limits);
    let took = started.elapsed();
    prop_assert!(took < CASE_BUDGET, "took {took:?}");
    if let Err(p) = result {
        prop_assert!(!p.is_empty());
        prop_assert!(p.len() <= limits.max_problems + 1);
        for p in &p {
            prop_assert!(p.message.len() <= 1024, "{} bytes", p.message.len());
            prop_assert!(p.file.len() <= 1024);
            prop_assert!(p.field.as_ref().is_none_or(|f| f.len() <= 1024));
        }
    }
    Ok(())
}

/// YAML-ish text: the characters that make YAML structure, and words.
fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just(": ".to_owned()),
            Just("\n".to_owned()),
            Just("\n  ".to_owned()),
            Just("- ".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just(", ".to_owned()),
            Just("&a ".to_owned()),
            Just("*a".to_owned()),
            Just("&b ".to_owned()),
            Just("*b".to_owned()),
            Just("<<: ".to_owned()),
            Just("---\n".to_owned()),
            Just("? ".to_owned()),
            Just("|\n".to_owned()),
            Just("'".to_owned()),
            Just("\"".to_owned()),
            Just("!tag ".to_owned()),
            Just("kind: Deployment\n".to_owned()),
            Just("apiVersion: edgefleet.io/v1\n".to_owned()),
            "[a-z0-9~.]{1,8}",
        ],
        0..120,
    )
    .prop_map(|parts| parts.concat())
}

/// A nested value written in flow style.
fn nested() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("x".to_owned()),
        Just("1".to_owned()),
        Just("*a".to_owned()),
        Just("null".to_owned()),
    ];
    leaf.prop_recursive(80, 400, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| {
                let kv: Vec<String> = v
                    .iter()
                    .enumerate()
                    .map(|(i, x)| format!("k{i}: {x}"))
                    .collect();
                format!("{{{}}}", kv.join(", "))
            }),
            inner.prop_map(|x| format!("&a {x}")),
            (1usize..200).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(src in any::<String>()) {
        load_bounded(&src)?;
    }

    #[test]
    fn yamlish_text_never_panics(src in yamlish()) {
        load_bounded(&src)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn random_nesting_is_bounded(value in nested(), block in 0usize..300) {
        load_bounded(&format!("a: &a x\nb: {value}\n"))?;
        let deep: String = (0..block).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        load_bounded(&deep)?;
    }

    #[test]
    fn alias_expansion_is_bounded(levels in 1usize..30, width in 1usize..40) {
        load_bounded(&laughs(levels, width))?;
    }

    #[test]
    fn merge_chains_are_bounded(levels in 1usize..30, width in 1usize..20) {
        let mut s = "m0: &m0 {a: 1, b: 2}\n".to_owned();
        for i in 1..levels {
            let refs = (0..width).map(|_| format!("*m{}", i - 1)).collect::<Vec<_>>().join(", ");
            s.push_str(&format!("m{i}: &m{i} {{<<: [{refs}], c{i}: {i}, d: [*m{}, *m{}]}}\n", i - 1, i - 1));
        }
        load_bounded(&s)?;
    }

    #[test]
    fn huge_scalars_and_many_documents_are_bounded(
        len in 0usize..(3 << 20),
        docs in 0usize..300,
        key in 0usize..3000,
    ) {
        load_bounded(&format!("a: {}\n", "x".repeat(len)))?;
        load_bounded(&"kind: Node\n---\n".repeat(docs))?;
        load_bounded(&format!("? {}\n: 1\n", "k".repeat(key)))?;
    }
}

/// The bounds refuse hostile files, not real fleets: a site of 10,000 nodes written in one
/// `nodes.yaml` (with labels, as a generated inventory looks) and 20 deployments loads with
/// the default limits.
#[test]
fn a_site_of_ten_thousand_nodes_in_one_file_loads_with_the_default_limits() {
    let nodes: String = (0..10_000)
        .map(|i| {
            format!(
                "---\napiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: edge-node-{i:05}\n  labels:\n    role: {}\n    zone: z{}\n",
                if i % 2 == 0 { "gateway" } else { "sensor" },
                i % 10
            )
        })
        .collect();
    let apps: Vec<(String, String)> = (0..20)
        .map(|d| {
            (
                format!("sites/s1/app{d:02}.yaml"),
                format!(
                    "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app{d:02}\nspec:\n  components:\n    - name: web\n      image: registry.local:5000/app{d:02}:1\n"
                ),
            )
        })
        .collect();
    let mut files = vec![("sites/s1/nodes.yaml".to_owned(), nodes)];
    files.extend(apps);
    let docs = load_site("s1", files.iter().map(|(p, t)| (p.as_str(), t.as_str())))
        .unwrap_or_else(|p| panic!("a 10,000-node site is refused: {:?}", p.first()));
    assert_eq!(docs.nodes.len(), 10_000);
    assert_eq!(docs.deployments.len(), 20);
}
