//! The rollout strategy in Git (`Site.spec.rollout`, `Deployment.spec.rollout`): what
//! resolves to what (defaults, Site + Deployment merged field by field), what is refused
//! with which file, line and field, and hostile input that must never panic and must give
//! a bounded answer quickly.

use proptest::prelude::*;
use schemas::site::{load_site, Amount, OnHalt, RolloutStrategy, Wave};
use schemas::DocProblem;
use std::time::{Duration, Instant};

const SITE: &str = "sites/s1/site.yaml";
const APP: &str = "sites/s1/app.yaml";
/// What one hostile case may take (debug build, loaded 2-core machine).
const CASE_BUDGET: Duration = Duration::from_secs(2);
/// The first line of the rollout's own keys, in both documents below.
const FIRST: usize = 7;

fn indent(rollout: &str) -> String {
    rollout.lines().map(|l| format!("    {l}\n")).collect()
}

/// A Site whose `spec.rollout` holds `rollout` (block YAML, unindented), from line 7.
fn site(rollout: &str) -> String {
    format!(
        "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: s1\nspec:\n  rollout:\n{}",
        indent(rollout)
    )
}

/// The Deployment `app`, with `spec.rollout` (from line 7) when given.
fn deployment(rollout: Option<&str>) -> String {
    let rollout = rollout
        .map(|r| format!("  rollout:\n{}", indent(r)))
        .unwrap_or_default();
    format!(
        "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n{rollout}  components:\n    - name: web\n      image: nginx:1.27\n"
    )
}

fn load(
    site_rollout: Option<&str>,
    app_rollout: Option<&str>,
) -> Result<RolloutStrategy, Vec<DocProblem>> {
    let site_doc = site_rollout.map(site);
    let app = deployment(app_rollout);
    let mut files = vec![(APP, app.as_str())];
    if let Some(s) = &site_doc {
        files.push((SITE, s.as_str()));
    }
    load_site("s1", files).map(|docs| docs.deployments["app"].rollout.clone())
}

fn wave(nodes: Amount, soak_ms: u64, failure_threshold: Option<Amount>) -> Wave {
    Wave {
        nodes,
        soak_ms,
        failure_threshold,
    }
}

#[test]
fn defaults_are_one_wave_of_every_node() {
    let s = load(None, None).expect("loads");
    assert_eq!(s, RolloutStrategy::default());
    assert_eq!(s.waves, vec![wave(Amount::Percent(100), 0, None)]);
    assert_eq!(s.failure_threshold, Amount::Count(0));
    assert_eq!(s.wave_timeout_ms, 600_000);
    assert_eq!(s.on_halt, OnHalt::Rollback);
    assert!(!s.paused);
    assert_eq!(s.max_parallel, None);
    // An empty `rollout` is the defaults too, in either document.
    assert_eq!(load(Some("{}"), Some("{}")).expect("loads"), s);
    assert_eq!(load(None, Some("{}")).expect("loads"), s);
}

const CANARY: &str = "waves:
  - nodes: 1
    soak: 2m
  - nodes: 10%
  - nodes: 100%
failureThreshold: 5%
waveTimeout: 10m
onHalt: rollback";

fn canary_waves() -> Vec<Wave> {
    vec![
        wave(Amount::Count(1), 120_000, None),
        wave(Amount::Percent(10), 0, None),
        wave(Amount::Percent(100), 0, None),
    ]
}

#[test]
fn valid_strategies_resolve() {
    let d = RolloutStrategy::default;
    let twenty = format!(
        "waves:\n{}",
        (1..=20)
            .map(|i| format!("  - nodes: {i}\n"))
            .collect::<String>()
    );
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Option<&str>, Option<&str>, RolloutStrategy)> = vec![
        (
            "canary on the Site",
            Some(CANARY),
            None,
            RolloutStrategy {
                waves: canary_waves(),
                failure_threshold: Amount::Percent(5),
                ..d()
            },
        ),
        (
            "canary on the Deployment",
            None,
            Some(CANARY),
            RolloutStrategy {
                waves: canary_waves(),
                failure_threshold: Amount::Percent(5),
                ..d()
            },
        ),
        (
            "Deployment fields win one by one, the Site's others stay",
            Some(CANARY),
            Some("onHalt: pause\nwaveTimeout: 30m\nmaxParallel: 2"),
            RolloutStrategy {
                waves: canary_waves(),
                failure_threshold: Amount::Percent(5),
                wave_timeout_ms: 1_800_000,
                on_halt: OnHalt::Pause,
                max_parallel: Some(2),
                ..d()
            },
        ),
        (
            "Deployment waves replace the Site's whole list",
            Some(CANARY),
            Some("waves:\n  - nodes: 2\n  - nodes: 50%\n    soak: 1h\nfailureThreshold: 1"),
            RolloutStrategy {
                waves: vec![
                    wave(Amount::Count(2), 0, None),
                    wave(Amount::Percent(50), 3_600_000, None),
                ],
                failure_threshold: Amount::Count(1),
                ..d()
            },
        ),
        (
            "paused in the Site, unpaused in the Deployment",
            Some("paused: true\nmaxParallel: 5"),
            Some("paused: false"),
            RolloutStrategy {
                max_parallel: Some(5),
                ..d()
            },
        ),
        (
            "paused, onHalt pause, maxParallel 0",
            None,
            Some("paused: true\nonHalt: pause\nmaxParallel: 0"),
            RolloutStrategy {
                paused: true,
                on_halt: OnHalt::Pause,
                max_parallel: Some(0),
                ..d()
            },
        ),
        (
            "text forms: a count as text, spaces trimmed, 0% and 0 thresholds, bounds",
            None,
            Some(
                "waves:\n  - nodes: \"5\"\n    soak: 0s\n    failureThreshold: 0\n  - nodes: \" 10 %\"\n    soak: 24h\n    failureThreshold: \"0%\"\n  - nodes: 1000000\n    failureThreshold: 1000000\n  - nodes: 100%\n    failureThreshold: 100%\nwaveTimeout: 24h\nfailureThreshold: \" 3 \"",
            ),
            RolloutStrategy {
                waves: vec![
                    wave(Amount::Count(5), 0, Some(Amount::Count(0))),
                    wave(Amount::Percent(10), 86_400_000, Some(Amount::Percent(0))),
                    wave(Amount::Count(1_000_000), 0, Some(Amount::Count(1_000_000))),
                    wave(Amount::Percent(100), 0, Some(Amount::Percent(100))),
                ],
                failure_threshold: Amount::Count(3),
                wave_timeout_ms: 86_400_000,
                ..d()
            },
        ),
        (
            "equal waves are not decreasing; counts and percentages are not compared",
            None,
            Some("waves:\n  - nodes: 10%\n  - nodes: 10%\n  - nodes: 3\n  - nodes: 3\n  - nodes: 50%\n  - nodes: 5"),
            RolloutStrategy {
                waves: vec![
                    wave(Amount::Percent(10), 0, None),
                    wave(Amount::Percent(10), 0, None),
                    wave(Amount::Count(3), 0, None),
                    wave(Amount::Count(3), 0, None),
                    wave(Amount::Percent(50), 0, None),
                    wave(Amount::Count(5), 0, None),
                ],
                ..d()
            },
        ),
        (
            "a bare number is seconds; waveTimeout 1ms is above 0",
            None,
            Some("waves:\n  - nodes: 1\n    soak: \"90\"\nwaveTimeout: 1ms"),
            RolloutStrategy {
                waves: vec![wave(Amount::Count(1), 90_000, None)],
                wave_timeout_ms: 1,
                ..d()
            },
        ),
        (
            "20 waves, the most",
            None,
            Some(twenty.as_str()),
            RolloutStrategy {
                waves: (1..=20).map(|i| wave(Amount::Count(i), 0, None)).collect(),
                ..d()
            },
        ),
    ];
    for (what, site_rollout, app_rollout, want) in cases {
        let got = load(site_rollout, app_rollout).unwrap_or_else(|p| panic!("{what}: {p:#?}"));
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn the_resolved_canary_reaches_and_tolerates_what_it_says() {
    let s = load(Some(CANARY), None).expect("loads");
    // 200 nodes: the canary, then 10% in total, then everything.
    assert_eq!(s.reach(0, 200), 1);
    assert_eq!(s.reach(1, 200), 20);
    assert_eq!(s.reach(2, 200), 200);
    // The canary tolerates no failure; later waves 5%, rounded down: more failures than
    // that is a larger share than 5%.
    assert_eq!(s.threshold(0, 1), 0);
    assert_eq!(s.threshold(1, 19), 0);
    assert_eq!(s.threshold(2, 180), 9);
    assert_eq!(s.threshold(2, 20), 1);
    // Without waves, the one wave takes the strategy's threshold.
    let s = load(Some("failureThreshold: 10%"), None).expect("loads");
    assert_eq!(s.threshold(0, 100), 10);
}

/// Which document an invalid `rollout` is written in.
#[derive(Clone, Copy, Debug)]
enum In {
    Site,
    App,
}

fn refused(doc: In, rollout: &str) -> Vec<DocProblem> {
    match doc {
        In::Site => load(Some(rollout), None),
        In::App => load(None, Some(rollout)),
    }
    .expect_err("must be refused")
}

/// Invalid strategies, one a line: document (`Site` or `App`), line offset from the
/// rollout's first key, field under `spec.rollout`, then ` | ` the rollout (`\n` between
/// its lines) ` | ` a fragment of the message.
const INVALID: &str = r#"
App  0 waves                     | waves: [] | at least one wave
App  1 waves[0].nodes            | waves:\n  - nodes: 0 | must be 1 to 1000000 nodes
App  1 waves[0].nodes            | waves:\n  - nodes: 1000001 | must be 1 to 1000000
App  1 waves[0].nodes            | waves:\n  - nodes: -5 | -5: must be 1 to
App  1 waves[0].nodes            | waves:\n  - nodes: 0% | not a percentage from 1% to 100%
App  1 waves[0].nodes            | waves:\n  - nodes: 101% | `101%` is not a percentage
App  1 waves[0].nodes            | waves:\n  - nodes: 256% | `256%` is not a percentage
App  1 waves[0].nodes            | waves:\n  - nodes: -5% | `-5%` is not a percentage
App  1 waves[0].nodes            | waves:\n  - nodes: +5% | `+5%` is not a percentage
App  1 waves[0].nodes            | waves:\n  - nodes: 1.5% | `1.5%` is not a percentage
App  1 waves[0].nodes            | waves:\n  - nodes: 10%% | `10%%` is not a percentage
App  1 waves[0].nodes            | waves:\n  - nodes: "%" | `%` is not a percentage
App  1 waves[0].nodes            | waves:\n  - nodes: abc | `abc` is neither a node count nor a percentage
App  1 waves[0].nodes            | waves:\n  - nodes: .inf | `.inf` is neither a node count
App  1 waves[0].nodes            | waves:\n  - nodes: "" | empty: expected a node count
App  1 waves[0].nodes            | waves:\n  - nodes: "  " | empty: expected a node count
App  1 waves[0].nodes            | waves:\n  - nodes: "99999999999999999999" | must be 1 to 1000000
App  1 waves[0].nodes            | waves:\n  - nodes: 1.5 | `1.5` is not a whole number of nodes
App  1 waves[0].nodes            | waves:\n  - nodes: 2.0 | `2` is not a whole number of nodes
App  1 waves[0].nodes            | waves:\n  - nodes: 1e30 | `1e30` is not a whole number of nodes
App  1 waves[0].nodes            | waves:\n  - nodes: 99999999999999999999 | `1e20` is not a whole number
App  1 waves[0].nodes            | waves:\n  - nodes: true | invalid type: boolean `true`, expected a node count like 3 or a percentage
App  1 waves[0].nodes            | waves:\n  - nodes: ~ | invalid type: null, expected a node count
App  1 waves[0].nodes            | waves:\n  - nodes: [1] | invalid type: sequence, expected a node count
App  1 waves[0].nodes            | waves:\n  - nodes: {a: 1} | invalid type: map, expected a node count
App  1 waves[0]                  | waves:\n  - soak: 1m | missing field `nodes`
App  1 waves[0]                  | waves:\n  - 10% | invalid type: string "10%", expected struct WaveSpec
App  0 waves                     | waves: 10% | invalid type: string "10%", expected a sequence
App  2 waves[1].nodes            | waves:\n  - nodes: 5\n  - nodes: 3 | 3 is fewer than the 5 nodes of an earlier wave
Site 3 waves[2].nodes            | waves:\n  - nodes: 50%\n  - nodes: 2\n  - nodes: 10% | 10% is less than the 50% of an earlier wave
App  2 waves[0].soak             | waves:\n  - nodes: 1\n    soak: -5s | invalid duration `-5s`
App  2 waves[0].soak             | waves:\n  - nodes: 1\n    soak: abc | invalid duration `abc`
App  2 waves[0].soak             | waves:\n  - nodes: 1\n    soak: "" | invalid duration ``
App  2 waves[0].soak             | waves:\n  - nodes: 1\n    soak: 24h1ms | above the maximum of 24h
App  2 waves[0].soak             | waves:\n  - nodes: 1\n    soak: 99999999999999999999h | invalid duration
App  2 waves[0].soak             | waves:\n  - nodes: 1\n    soak: 30 | invalid type: integer `30`, expected a string
App  2 waves[0].soaks            | waves:\n  - nodes: 1\n    soaks: 30s | unknown field `soaks`
App  2 waves[0].failureThreshold | waves:\n  - nodes: 1\n    failureThreshold: -5% | `-5%` is not a percentage from 0% to 100%
Site 0 waveTimeout               | waveTimeout: 0s | must be longer than 0s
App  0 waveTimeout               | waveTimeout: "0" | must be longer than 0s
App  0 waveTimeout               | waveTimeout: 25h | above the maximum of 24h
App  0 waveTimeout               | waveTimeout: soon | invalid duration `soon`
App  0 waveTimeout               | waveTimeout: 600 | invalid type: integer `600`, expected a string
App  0 failureThreshold          | failureThreshold: -1 | -1: must be 0 to 1000000 failures
App  0 failureThreshold          | failureThreshold: 1000001 | must be 0 to 1000000
Site 0 failureThreshold          | failureThreshold: 101% | `101%` is not a percentage from 0% to 100%
App  0 failureThreshold          | failureThreshold: 0.5 | `0.5` is not a whole number
App  0 failureThreshold          | failureThreshold: false | invalid type: boolean `false`
App  0 failureThreshold          | failureThreshold: five | `five` is neither a node count nor a percentage
App  0 onHalt                    | onHalt: stop | unknown variant `stop`, expected `rollback` or `pause`
App  0 onHalt                    | onHalt: Rollback | unknown variant `Rollback`
App  0 paused                    | paused: "yes" | invalid type: string "yes", expected a boolean
App  0 paused                    | paused: 1 | invalid type: integer `1`, expected a boolean
App  0 maxParallel               | maxParallel: -1 | invalid value: integer `-1`, expected u32
App  0 maxParallel               | maxParallel: 1.5 | invalid type: floating point `1.5`, expected u32
App  0 maxParallel               | maxParallel: 1e30 | expected u32
Site 0 wave                      | wave:\n  - nodes: 1 | unknown field `wave`
App  0 canary                    | canary: true | unknown field `canary`
"#;

#[test]
fn invalid_strategies_name_file_line_and_field() {
    let twenty_one = format!(
        "Site 0 waves | waves:{} | 21 waves: at most 20",
        (1..=21)
            .map(|i| format!("\\n  - nodes: {i}"))
            .collect::<String>()
    );
    let mut count = 0;
    for case in INVALID.lines().chain([twenty_one.as_str()]) {
        if case.trim().is_empty() {
            continue;
        }
        count += 1;
        let parts: Vec<&str> = case.split(" | ").collect();
        let [head, rollout, needle] = parts[..] else {
            panic!("bad case {case:?}");
        };
        let mut head = head.split_whitespace();
        let (doc, file) = match head.next() {
            Some("Site") => (In::Site, SITE),
            _ => (In::App, APP),
        };
        let offset: usize = head.next().and_then(|o| o.parse().ok()).expect("offset");
        let field = format!("spec.rollout.{}", head.next().expect("field"));
        let rollout = rollout.replace("\\n", "\n");
        let p = refused(doc, &rollout);
        assert_eq!(p.len(), 1, "{case}: one problem expected, got {p:#?}");
        let p = &p[0];
        assert_eq!(p.file, file, "{case}");
        assert_eq!(p.field.as_deref(), Some(field.as_str()), "{case}: {p:?}");
        assert_eq!(p.line, Some(FIRST + offset), "{case}: {p:?}");
        assert!(p.message.contains(needle), "{case}: {:?}", p.message);
    }
    assert_eq!(count, 59);
}

#[test]
fn a_rollout_that_is_not_a_mapping_is_refused() {
    for doc in [In::Site, In::App] {
        let text = match doc {
            In::Site => "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: s1\nspec:\n  rollout: fast\n".to_owned(),
            In::App => deployment(None).replace("spec:\n", "spec:\n  rollout: 5\n"),
        };
        let file = match doc {
            In::Site => SITE,
            In::App => APP,
        };
        let p = load_site("s1", [(file, text.as_str())]).expect_err("refused");
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].field.as_deref(), Some("spec.rollout"), "{p:?}");
        assert_eq!(p[0].line, Some(6), "{p:?}");
        assert!(p[0].message.contains("invalid type"), "{p:?}");
    }
}

#[test]
fn every_bad_field_of_one_strategy_is_reported() {
    let p = refused(
        In::App,
        "waves:\n  - nodes: 0\n    soak: 25h\n    failureThreshold: 200%\n  - nodes: 0%\nwaveTimeout: 0s\nfailureThreshold: -1",
    );
    let fields: Vec<_> = p.iter().filter_map(|p| p.field.as_deref()).collect();
    assert_eq!(
        fields,
        [
            "spec.rollout.waves[0].nodes",
            "spec.rollout.waves[0].soak",
            "spec.rollout.waves[0].failureThreshold",
            "spec.rollout.waves[1].nodes",
            "spec.rollout.waveTimeout",
            "spec.rollout.failureThreshold",
        ],
        "{p:#?}"
    );
    let lines: Vec<_> = p.iter().filter_map(|p| p.line).collect();
    assert_eq!(lines, [8, 9, 10, 11, 12, 13]);
}

#[test]
fn a_problem_inherited_from_the_site_is_reported_once_in_the_sites_file() {
    let bad_site = "waves:\n  - nodes: 10%\n  - nodes: 5%\nwaveTimeout: 0s\nfailureThreshold: abc";
    // Three deployments inherit every field: the Site's three problems, once each.
    let apps: Vec<(String, String)> = (0..3)
        .map(|i| {
            (
                format!("sites/s1/app{i}.yaml"),
                deployment(None).replace("name: app", &format!("name: app{i}")),
            )
        })
        .collect();
    let site_doc = site(bad_site);
    let mut files: Vec<(&str, &str)> = apps.iter().map(|(f, t)| (f.as_str(), t.as_str())).collect();
    files.push((SITE, &site_doc));
    let p = load_site("s1", files).expect_err("refused");
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p.iter().all(|p| p.file == SITE), "{p:#?}");
    // A Deployment that overrides some of them reports only its own, in its own file.
    let p = load(Some(bad_site), Some("waveTimeout: 25h")).expect_err("refused");
    let at: Vec<_> = p
        .iter()
        .map(|p| (p.file.as_str(), p.field.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        at,
        [
            (APP, "spec.rollout.waveTimeout"),
            (SITE, "spec.rollout.waves[1].nodes"),
            (SITE, "spec.rollout.waveTimeout"),
            (SITE, "spec.rollout.failureThreshold"),
        ],
        "{p:#?}"
    );
    // A Deployment overriding every bad field still fails on the Site's problems, which
    // stay in the Site's file only.
    let p = load(
        Some(bad_site),
        Some("waves:\n  - nodes: 1\nwaveTimeout: 1m\nfailureThreshold: 1"),
    )
    .expect_err("refused");
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p.iter().all(|p| p.file == SITE), "{p:#?}");
}

fn quick_problems(what: &str, files: Vec<(&str, &str)>) -> Vec<DocProblem> {
    let started = Instant::now();
    let p = load_site("s1", files).expect_err("refused");
    let took = started.elapsed();
    assert!(took < CASE_BUDGET, "{what} took {took:?}");
    assert!(p.len() <= 51, "{what}: {} problems", p.len());
    for q in &p {
        assert!(
            q.message.len() <= 600,
            "{what}: message of {} bytes",
            q.message.len()
        );
        assert!(
            q.field.as_deref().unwrap_or("").len() <= 300,
            "{what}: {q:?}"
        );
    }
    p
}

#[test]
fn ten_thousand_waves_are_one_problem() {
    let waves: String = (1..=10_000).map(|i| format!("  - nodes: {i}\n")).collect();
    let doc = deployment(Some(&format!("waves:\n{waves}")));
    let p = quick_problems("10,000 waves", vec![(APP, &doc)]);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].field.as_deref(), Some("spec.rollout.waves"));
    assert!(p[0].message.contains("10000 waves: at most 20"), "{p:?}");
    // Aliases: one anchored wave repeated 10,000 times.
    let waves = format!("waves: [&w {{nodes: 1}}{}]", ", *w".repeat(10_000));
    let doc = deployment(Some(&waves));
    let p = quick_problems("10,000 aliased waves", vec![(APP, &doc)]);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].message.contains("10001 waves: at most 20"), "{p:?}");
    // Even when every one of them is wrong too.
    let waves: String = "  - nodes: abc\n    soak: x\n".repeat(10_000);
    let doc = site(&format!("waves:\n{waves}"));
    let p = quick_problems("10,000 bad waves", vec![(SITE, &doc)]);
    assert_eq!(p.len(), 1, "{p:#?}");
}

#[test]
fn twenty_bad_waves_give_a_bounded_list() {
    let waves: String = "  - nodes: abc\n    soak: x\n    failureThreshold: -1\n".repeat(20);
    let doc = deployment(Some(&format!("waves:\n{waves}")));
    let p = quick_problems("20 bad waves", vec![(APP, &doc)]);
    // 60 problems, bounded to 50 and a closing count.
    assert_eq!(p.len(), 51, "{p:#?}");
    assert!(p[50].message.contains("10 more problems"), "{:?}", p[50]);
}

#[test]
fn deep_nesting_inside_waves_is_refused() {
    for depth in [10, 55, 70, 100_000] {
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let doc = deployment(Some(&format!("waves:\n  - nodes: {nested}\n    soak: 1m")));
        let p = quick_problems(&format!("nodes nested {depth} deep"), vec![(APP, &doc)]);
        assert_eq!(p.len(), 1, "{depth}: {p:#?}");
        let nested = format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth));
        let doc = deployment(Some(&format!(
            "waves:\n  - nodes: 1\n    failureThreshold: {nested}"
        )));
        let p = quick_problems(&format!("threshold nested {depth} deep"), vec![(APP, &doc)]);
        assert_eq!(p.len(), 1, "{depth}: {p:#?}");
    }
}

#[test]
fn huge_scalars_give_short_messages() {
    let long_digits = "9".repeat(100_000);
    let long_text = "x".repeat(100_000);
    for (field, value) in [
        ("waves[0].nodes", format!("\"{long_digits}\"")),
        ("waves[0].nodes", format!("\"{long_text}%\"")),
        ("waves[0].nodes", long_digits.clone()),
        ("waves[0].soak", long_text.clone()),
        ("waveTimeout", format!("{long_digits}s")),
        ("failureThreshold", long_text.clone()),
    ] {
        let rollout = match field {
            "waves[0].nodes" => format!("waves:\n  - nodes: {value}"),
            "waves[0].soak" => format!("waves:\n  - nodes: 1\n    soak: {value}"),
            "waveTimeout" => format!("waveTimeout: {value}"),
            _ => format!("failureThreshold: {value}"),
        };
        let doc = deployment(Some(&rollout));
        let p = quick_problems(field, vec![(APP, &doc)]);
        assert_eq!(p.len(), 1, "{field}: {p:#?}");
        assert_eq!(
            p[0].field.as_deref(),
            Some(format!("spec.rollout.{field}").as_str())
        );
        assert!(p[0].message.len() < 300, "{field}: {:?}", p[0].message);
    }
}

/// A value for an amount or a duration: numbers of every shape, near-misses, junk.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        (0u32..300).prop_map(|n| format!("{n}%")),
        (-300i32..300, "[ %+.a-z]{0,3}").prop_map(|(n, s)| format!("\"{n}{s}\"")),
        "[0-9]{1,30}(ms|s|m|h|d|%)?",
        "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
        Just("~".to_owned()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the values, loading answers quickly without panicking: a strategy whose
    /// waves keep to their limits, or problems that all name a field of the rollout.
    #[test]
    fn any_values_resolve_or_are_refused_on_a_rollout_field(
        nodes in proptest::collection::vec(scalar(), 1..4),
        soak in scalar(),
        threshold in scalar(),
        timeout in scalar(),
        in_site in any::<bool>(),
    ) {
        let waves: String = nodes
            .iter()
            .map(|n| format!("  - nodes: {n}\n    soak: {soak}\n"))
            .collect();
        let rollout = format!("waves:\n{waves}failureThreshold: {threshold}\nwaveTimeout: {timeout}");
        let started = Instant::now();
        let result = if in_site { load(Some(&rollout), None) } else { load(None, Some(&rollout)) };
        prop_assert!(started.elapsed() < CASE_BUDGET);
        match result {
            Ok(s) => {
                prop_assert_eq!(s.waves.len(), nodes.len());
                for w in &s.waves {
                    prop_assert!(w.soak_ms <= 86_400_000);
                    match w.nodes {
                        Amount::Count(c) => prop_assert!((1..=1_000_000).contains(&c)),
                        Amount::Percent(p) => prop_assert!((1..=100).contains(&p)),
                    }
                }
                prop_assert!(s.wave_timeout_ms > 0 && s.wave_timeout_ms <= 86_400_000);
                match s.failure_threshold {
                    Amount::Count(c) => prop_assert!(c <= 1_000_000),
                    Amount::Percent(p) => prop_assert!(p <= 100),
                }
            }
            Err(p) => {
                prop_assert!(!p.is_empty());
                for q in &p {
                    let field = q.field.as_deref().unwrap_or("");
                    prop_assert!(field.starts_with("spec.rollout"), "{:?}", q);
                    prop_assert!(q.line.is_some());
                    prop_assert_eq!(&q.file, if in_site { SITE } else { APP });
                }
            }
        }
    }
}
