//! Table tests of the planner and the failure memory.

use super::*;
use crate::runtime::spec::Identity;
use schemas::error_code;
use schemas::wire::{DesiredDeployment, DesiredSchema, FailurePolicy, Revision};
use std::time::Duration;

fn comp(name: &str, image: &str, deps: &[&str]) -> Component {
    Component {
        name: name.into(),
        image: image.into(),
        depends_on: deps.iter().map(|s| (*s).to_owned()).collect(),
        ..Component::default()
    }
    .with_hash()
}

fn doc(components: Vec<Component>) -> DesiredState {
    DesiredState {
        schema: DesiredSchema::V1,
        site: "s".into(),
        node: "n".into(),
        generation: 1,
        revision: Revision::default(),
        issued_at: String::new(),
        deployments: vec![DesiredDeployment {
            name: "d".into(),
            commit: "c".into(),
            policy: FailurePolicy::default(),
            components,
        }],
        signature: None,
    }
}

fn container(id: &Identity, c: &Component, status: &str) -> ContainerInfo {
    let spec = id.container_spec("d", c, 1, id.container_name("d", &c.name));
    ContainerInfo {
        id: format!("id-{}-{}", c.name, &c.spec_hash[7..11]),
        name: spec.name,
        image: c.image.clone(),
        image_id: "sha256:img".into(),
        labels: spec.labels,
        status: status.into(),
        ..ContainerInfo::default()
    }
}

fn images(refs: &[&str]) -> BTreeMap<String, ImageInfo> {
    refs.iter()
        .map(|r| ((*r).to_owned(), ImageInfo::default()))
        .collect()
}

fn refreshed(keys: &[(&str, &Component)]) -> Memory {
    let mut m = Memory::default();
    for (d, c) in keys {
        m.entry(&((*d).into(), c.name.clone()), &c.spec_hash)
            .refreshed = true;
    }
    m
}

fn kinds(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::Pull { key, .. } => format!("pull {}", key.1),
            Action::Create { key, .. } => format!("create {}", key.1),
            Action::Start { key, .. } => format!("start {}", key.1),
            Action::RestartUnhealthy { key, .. } => format!("restart {}", key.1),
            Action::Remove { key, .. } => format!("remove {}", key.1),
            Action::RemoveNetwork { name } => format!("rmnet {name}"),
        })
        .collect()
}

#[test]
fn plan_table() {
    let id = Identity::new("s", "n");
    let now = Instant::now();
    let web = comp("web", "r/web:1", &[]);
    let web2 = comp("web", "r/web:2", &[]);
    let db = comp("db", "r/db:1", &[]);
    let api = comp("api", "r/api:1", &["db"]);
    struct Case {
        name: &'static str,
        desired: DesiredState,
        observed: Observed,
        memory: Memory,
        actions: Vec<&'static str>,
        states: Vec<State>,
    }
    let cases = vec![
        Case {
            name: "fresh install pulls first",
            desired: doc(vec![web.clone()]),
            observed: Observed::default(),
            memory: Memory::default(),
            actions: vec!["pull web"],
            states: vec![State::Installing],
        },
        Case {
            name: "image present and refreshed: create",
            desired: doc(vec![web.clone()]),
            observed: Observed {
                images: images(&["r/web:1"]),
                ..Observed::default()
            },
            memory: refreshed(&[("d", &web)]),
            actions: vec!["create web"],
            states: vec![State::Installing],
        },
        Case {
            name: "running with the desired hash: nothing to do",
            desired: doc(vec![web.clone()]),
            observed: Observed {
                containers: vec![container(&id, &web, "running")],
                images: images(&["r/web:1"]),
                ..Observed::default()
            },
            memory: Memory::default(),
            actions: vec![],
            states: vec![State::Installed],
        },
        Case {
            name: "created container is started",
            desired: doc(vec![web.clone()]),
            observed: Observed {
                containers: vec![container(&id, &web, "created")],
                ..Observed::default()
            },
            memory: Memory::default(),
            actions: vec!["start web"],
            states: vec![State::Installing],
        },
        Case {
            name: "spec change stop-first removes the old one once the image is there",
            desired: doc(vec![web2.clone()]),
            observed: Observed {
                containers: vec![container(&id, &web, "running")],
                images: images(&["r/web:2"]),
                ..Observed::default()
            },
            memory: refreshed(&[("d", &web2)]),
            actions: vec!["remove web"],
            states: vec![State::Installing],
        },
        Case {
            name: "dependent waits for its dependency",
            desired: doc(vec![api.clone(), db.clone()]),
            observed: Observed {
                images: images(&["r/api:1", "r/db:1"]),
                ..Observed::default()
            },
            memory: refreshed(&[("d", &api), ("d", &db)]),
            actions: vec!["create db"],
            states: vec![State::Pending, State::Installing],
        },
        Case {
            name: "leftovers go in reverse dependency order, before installs",
            desired: doc(vec![]),
            observed: Observed {
                containers: vec![
                    container(&id, &api, "running"),
                    container(&id, &db, "running"),
                ],
                networks: BTreeSet::from(["ef-n-d".to_owned()]),
                ..Observed::default()
            },
            memory: Memory::default(),
            actions: vec!["remove api"],
            states: vec![State::Removing, State::Removing],
        },
        Case {
            name: "unused network is removed",
            desired: doc(vec![]),
            observed: Observed {
                networks: BTreeSet::from(["ef-n-old".to_owned()]),
                ..Observed::default()
            },
            memory: Memory::default(),
            actions: vec!["rmnet ef-n-old"],
            states: vec![],
        },
        Case {
            name: "another agent's container is ignored",
            desired: doc(vec![]),
            observed: Observed {
                containers: vec![container(&Identity::new("s", "other"), &web, "running")],
                ..Observed::default()
            },
            memory: Memory::default(),
            actions: vec![],
            states: vec![],
        },
    ];
    for c in cases {
        let p = plan(Some(&c.desired), &c.observed, &c.memory, &id, now);
        assert_eq!(kinds(&p), c.actions, "{}", c.name);
        let states: Vec<State> = p.components.iter().map(|v| v.state).collect();
        assert_eq!(states, c.states, "{}", c.name);
    }
}

#[test]
fn failed_and_backing_off_components_get_no_action() {
    let id = Identity::new("s", "n");
    let now = Instant::now();
    let web = comp("web", "r/web:1", &[]);
    let d = doc(vec![web.clone()]);
    let key = ("d".to_owned(), "web".to_owned());
    let mut m = Memory::default();
    m.entry(&key, &web.spec_hash).failed = true;
    let p = plan(Some(&d), &Observed::default(), &m, &id, now);
    assert!(p.actions.is_empty());
    assert_eq!(p.components[0].state, State::Failed);

    let mut m = Memory::default();
    m.entry(&key, &web.spec_hash).next_try = Some(now + Duration::from_secs(4));
    let p = plan(Some(&d), &Observed::default(), &m, &id, now);
    assert!(p.actions.is_empty());
    assert_eq!(p.components[0].state, State::Pending);
    assert_eq!(p.wake_at, Some(now + Duration::from_secs(4)));
    // Once the deadline passed, the attempt is due again.
    let p = plan(
        Some(&d),
        &Observed::default(),
        &m,
        &id,
        now + Duration::from_secs(5),
    );
    assert_eq!(kinds(&p), vec!["pull web"]);
    // A new generation resets failures.
    let mut m2 = m.clone();
    m2.entry(&key, &web.spec_hash).failed = true;
    m2.new_generation(2);
    assert!(!m2.comps[&key].failed && m2.comps[&key].next_try.is_none());
}

#[test]
fn crashes_are_counted_from_docker_with_a_baseline_and_reset_by_a_new_generation() {
    let id = Identity::new("s", "n");
    let t0 = Instant::now();
    let web = comp("web", "r/web:1", &[]);
    let d = doc(vec![web.clone()]);
    let key = ("d".to_owned(), "web".to_owned());
    let seen = |restarts: u32, status: &str, exit: Option<i64>| {
        let mut c = container(&id, &web, status);
        c.restart_count = restarts;
        c.exit_code = exit;
        Observed {
            containers: vec![c],
            images: images(&["r/web:1"]),
            ..Observed::default()
        }
    };
    let state = |m: &Memory, o: &Observed, now: Instant| {
        plan(Some(&d), o, m, &id, now).components[0].clone()
    };
    let mut m = Memory::default();
    m.new_generation(1);
    // Adopted with 7 restarts behind it: the baseline, nothing counted.
    let o = seen(7, "running", Some(0));
    assert!(m.observe_crashes(&d, &o, &id, t0, 0.0).is_empty());
    assert_eq!(state(&m, &o, t0).state, State::Installed);
    // Docker restarted it twice since: two crashes, installing with the exit code.
    let o = seen(9, "restarting", Some(1));
    let crashes = m.observe_crashes(&d, &o, &id, t0, 0.0);
    assert_eq!(crashes.len(), 1);
    assert_eq!(crashes[0].crashes, 2);
    let v = state(&m, &o, t0);
    assert_eq!(v.state, State::Installing);
    assert!(v
        .error
        .as_ref()
        .is_some_and(|e| e.code == error_code::START_FAILED && e.message.contains("exit code 1")));
    // Up again, but not for long enough: still installing, with a wake-up.
    let o = seen(9, "running", Some(0));
    assert!(m.observe_crashes(&d, &o, &id, t0, 0.0).is_empty());
    let p = plan(Some(&d), &o, &m, &id, t0 + Duration::from_secs(1));
    assert_eq!(p.components[0].state, State::Installing);
    assert_eq!(p.wake_at, Some(t0 + STABLE_AFTER));
    // A third crash reaches the limit (3): failed, and no action from the agent.
    let o = seen(10, "restarting", Some(1));
    m.observe_crashes(&d, &o, &id, t0, 0.0);
    let p = plan(Some(&d), &o, &m, &id, t0);
    assert_eq!(p.components[0].state, State::Failed);
    assert!(p.actions.is_empty());
    assert_eq!(m.comps[&key].crashes, 3);
    // A new generation resets the count but keeps the baseline.
    m.new_generation(2);
    assert!(m.observe_crashes(&d, &o, &id, t0, 0.0).is_empty());
    assert_eq!(state(&m, &o, t0).state, State::Installing);
    // Running for 10 s after the last crash: installed, counts settle to zero.
    let o = seen(10, "running", Some(0));
    m.observe_crashes(&d, &o, &id, t0, 0.0);
    let p = plan(Some(&d), &o, &m, &id, t0 + STABLE_AFTER);
    assert_eq!(p.components[0].state, State::Installed);
    m.settle(&p);
    assert_eq!(m.comps[&key].crashes, 0);
    // Stopped while its policy should keep it running: one crash, restarted by the
    // agent only after the backoff.
    let o = seen(10, "exited", Some(137));
    m.observe_crashes(&d, &o, &id, t0, 0.0);
    assert!(
        m.observe_crashes(&d, &o, &id, t0, 0.0).is_empty(),
        "counted once"
    );
    let p = plan(Some(&d), &o, &m, &id, t0);
    assert!(p.actions.is_empty());
    assert_eq!(p.components[0].state, State::Installing);
    let after = m.comps[&key].crash_restart_at.expect("restart deadline");
    assert!(after > t0);
    let p = plan(Some(&d), &o, &m, &id, after);
    assert_eq!(kinds(&p), vec!["start web"]);
}

#[test]
fn start_order_puts_dependencies_first_and_cycles_last() {
    let cs = vec![
        comp("web", "i", &["api"]),
        comp("api", "i", &["db"]),
        comp("db", "i", &[]),
    ];
    assert_eq!(start_order(&cs), vec![2, 1, 0]);
    let cyc = vec![
        comp("a", "i", &["b"]),
        comp("b", "i", &["a"]),
        comp("c", "i", &[]),
    ];
    assert_eq!(start_order(&cyc), vec![2, 0, 1]);
}

#[test]
fn component_cases_table() {
    use schemas::component::{Healthcheck, PortMapping, RestartPolicy, UpdateOrder};
    let id = Identity::new("s", "n");
    let now = Instant::now();
    let job = |restart: RestartPolicy| {
        Component {
            restart,
            ..comp("job", "r/job:1", &[])
        }
        .with_hash()
    };
    let exited = |c: &Component, code: i64| {
        let mut k = container(&id, c, "exited");
        k.exit_code = Some(code);
        k
    };
    let hc = Component {
        healthcheck: Some(Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval_ms: 1_000,
            timeout_ms: 1_000,
            retries: 1,
            start_period_ms: 0,
        }),
        ..comp("web", "r/web:1", &[])
    }
    .with_hash();
    let mut unhealthy = container(&id, &hc, "running");
    unhealthy.health = schemas::Health::Unhealthy;
    let web1 = comp("web", "r/web:1", &[]);
    let start_first = |ports: Vec<PortMapping>| {
        Component {
            update_order: UpdateOrder::StartFirst,
            ports,
            ..comp("web", "r/web:2", &[])
        }
        .with_hash()
    };
    let sf = start_first(vec![]);
    let fixed = start_first(vec![PortMapping {
        container: 80,
        host: Some(8080),
        host_ip: None,
        protocol: Default::default(),
    }]);
    let db = comp("db", "r/db:1", &[]);
    let api = comp("api", "r/api:1", &["db"]);
    let mut db_failed = refreshed(&[("d", &db), ("d", &api)]);
    db_failed
        .entry(&("d".into(), "db".into()), &db.spec_hash)
        .failed = true;
    // (name, components, containers, images, memory, actions, states, reasons)
    type Case<'a> = (
        &'a str,
        Vec<Component>,
        Vec<ContainerInfo>,
        Vec<&'a str>,
        Memory,
        Vec<&'a str>,
        Vec<State>,
        Vec<&'a str>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "restart no, exit 0: the job completed",
            vec![job(RestartPolicy::No)],
            vec![exited(&job(RestartPolicy::No), 0)],
            vec![],
            Memory::default(),
            vec![],
            vec![State::Installed],
            vec!["completed"],
        ),
        (
            "restart no, exit 1: failed for good",
            vec![job(RestartPolicy::No)],
            vec![exited(&job(RestartPolicy::No), 1)],
            vec![],
            Memory::default(),
            vec![],
            vec![State::Failed],
            vec!["exited"],
        ),
        (
            "on-failure, exit 0: completed",
            vec![job(RestartPolicy::OnFailure)],
            vec![exited(&job(RestartPolicy::OnFailure), 0)],
            vec![],
            Memory::default(),
            vec![],
            vec![State::Installed],
            vec!["completed"],
        ),
        (
            "always, stopped without a counted crash: started again",
            vec![job(RestartPolicy::Always)],
            vec![exited(&job(RestartPolicy::Always), 1)],
            vec![],
            Memory::default(),
            vec!["start job"],
            vec![State::Installing],
            vec!["container stopped"],
        ),
        (
            "unhealthy: restarted by the agent",
            vec![hc.clone()],
            vec![unhealthy],
            vec!["r/web:1"],
            Memory::default(),
            vec!["restart web"],
            vec![State::Installing],
            vec!["unhealthy"],
        ),
        (
            "start-first: the new one is created beside the old one",
            vec![sf.clone()],
            vec![container(&id, &web1, "running")],
            vec!["r/web:2"],
            refreshed(&[("d", &sf)]),
            vec!["create web"],
            vec![State::Installing],
            vec!["creating container"],
        ),
        (
            "start-first with a fixed host port: stop-first",
            vec![fixed.clone()],
            vec![container(&id, &web1, "running")],
            vec!["r/web:2"],
            refreshed(&[("d", &fixed)]),
            vec!["remove web"],
            vec![State::Installing],
            vec!["spec changed"],
        ),
        (
            "a failed dependency fails its dependents without acting",
            vec![api.clone(), db.clone()],
            vec![],
            vec!["r/api:1", "r/db:1"],
            db_failed,
            vec![],
            vec![State::Failed, State::Failed],
            vec!["dependency failed", "attempt limit reached"],
        ),
    ];
    for (name, components, containers, imgs, memory, actions, states, reasons) in cases {
        let observed = Observed {
            containers,
            images: images(&imgs),
            ..Observed::default()
        };
        let p = plan(Some(&doc(components)), &observed, &memory, &id, now);
        assert_eq!(kinds(&p), actions, "{name}");
        let got: Vec<(State, &str)> = p
            .components
            .iter()
            .map(|v| (v.state, v.reason.as_str()))
            .collect();
        let want: Vec<(State, &str)> = states.into_iter().zip(reasons).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn transient_failures_past_the_budget_stay_failed_and_retrying_until_they_heal() {
    use crate::retry::{Limits, Retry};
    use crate::runtime::RuntimeError;
    use std::time::{SystemTime, UNIX_EPOCH};
    let id = Identity::new("s", "n");
    let t0 = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let db = comp("db", "r/db:1", &[]);
    let api = comp("api", "r/api:1", &["db"]);
    let d = doc(vec![db.clone(), api.clone()]);
    let key = ("d".to_owned(), "db".to_owned());
    let limits = Limits {
        policy: FailurePolicy {
            attempts: 2,
            backoff_ms: 1_000,
            ..FailurePolicy::default()
        },
        max_backoff: Duration::from_secs(3),
    };
    let down =
        RuntimeError::PullFailed("dial tcp 127.0.0.1:5000: connect: connection refused".into());
    let mut m = Memory::default();
    let mut now = t0;
    let fail = |m: &mut Memory, now: Instant, e: &RuntimeError, wall: SystemTime| {
        m.record_failure(&key, &db.spec_hash, e, limits, now, wall, 0.0)
    };

    // Within the budget: pending, not retrying, no wall-clock time in the report.
    assert!(matches!(
        fail(&mut m, now, &down, wall),
        Retry::At { attempts: 1, .. }
    ));
    let p = plan(Some(&d), &Observed::default(), &m, &id, now);
    assert_eq!(p.components[0].state, State::Pending);
    assert!(!p.components[0].retrying && p.components[0].next_attempt_at.is_none());

    // The budget is spent: failed, retrying, next attempt at the (capped) backoff.
    now += Duration::from_secs(1);
    let r = fail(&mut m, now, &down, wall);
    assert_eq!(
        r,
        Retry::Retrying {
            attempts: 2,
            at: now + Duration::from_secs(2),
            delay: Duration::from_secs(2)
        }
    );
    let p = plan(Some(&d), &Observed::default(), &m, &id, now);
    let (db_v, api_v) = (&p.components[0], &p.components[1]);
    assert_eq!(db_v.state, State::Failed);
    assert!(db_v.retrying);
    assert_eq!(
        db_v.next_attempt_at.as_deref(),
        Some(schemas::rfc3339(wall + Duration::from_secs(2)).as_str())
    );
    assert_eq!(db_v.attempts, 2);
    assert_eq!(
        db_v.error.as_ref().map(|e| e.code.as_str()),
        Some(error_code::PULL_FAILED)
    );
    // Its dependent is failed with it, and heals with it.
    assert_eq!(api_v.state, State::Failed);
    assert!(api_v.retrying);
    assert_eq!(api_v.next_attempt_at, db_v.next_attempt_at);
    // No action before the deadline, a wake-up at it.
    assert!(p.actions.is_empty(), "{:?}", kinds(&p));
    assert_eq!(p.wake_at, Some(now + Duration::from_secs(2)));

    // At the deadline: tried again, still reported failed (no flapping to installing).
    now += Duration::from_secs(2);
    let p = plan(Some(&d), &Observed::default(), &m, &id, now);
    assert_eq!(kinds(&p), vec!["pull db"]);
    assert_eq!(p.components[0].state, State::Failed);
    assert!(p.components[0].retrying);
    // Fails again: the wait doubles up to the cap (3 s), attempts keep counting.
    let r = fail(&mut m, now, &down, wall);
    assert!(
        matches!(r, Retry::Retrying { attempts: 3, delay, .. } if delay == Duration::from_secs(3)),
        "{r:?}"
    );

    // A permanent error while retrying ends the retries: failed until a new generation.
    now += Duration::from_secs(3);
    let missing = RuntimeError::ImageNotFound("manifest unknown".into());
    assert_eq!(
        fail(&mut m, now, &missing, wall),
        Retry::GiveUp { attempts: 4 }
    );
    let p = plan(
        Some(&d),
        &Observed::default(),
        &m,
        &id,
        now + Duration::from_secs(3_600),
    );
    assert!(p.actions.is_empty());
    assert_eq!(p.components[0].state, State::Failed);
    assert!(!p.components[0].retrying && p.components[0].next_attempt_at.is_none());
    assert!(
        !p.components[1].retrying,
        "a dependent of a permanent failure is not retrying"
    );
    assert_eq!(p.wake_at, None);

    // A new generation starts afresh.
    m.new_generation(2);
    let c = &m.comps[&key];
    assert!(!c.failed && !c.retrying && c.next_attempt_at.is_none() && c.attempts == 0);
}

#[test]
fn a_retrying_component_that_heals_is_installed_and_forgets_its_failure() {
    use crate::retry::Limits;
    use crate::runtime::RuntimeError;
    let id = Identity::new("s", "n");
    let now = Instant::now();
    let web = comp("web", "r/web:1", &[]);
    let d = doc(vec![web.clone()]);
    let key = ("d".to_owned(), "web".to_owned());
    let limits = Limits::new(FailurePolicy {
        attempts: 1,
        ..FailurePolicy::default()
    });
    let mut m = refreshed(&[("d", &web)]);
    let e = RuntimeError::Other {
        code: error_code::START_FAILED,
        message: "containerd: connection error".into(),
    };
    m.record_failure(
        &key,
        &web.spec_hash,
        &e,
        limits,
        now,
        std::time::SystemTime::now(),
        0.0,
    );
    assert!(m.comps[&key].retrying);
    // The container runs now (the retry succeeded): installed, and the memory is settled.
    let observed = Observed {
        containers: vec![container(&id, &web, "running")],
        images: images(&["r/web:1"]),
        ..Observed::default()
    };
    let p = plan(Some(&d), &observed, &m, &id, now);
    assert_eq!(p.components[0].state, State::Installed);
    assert!(!p.components[0].retrying && p.components[0].next_attempt_at.is_none());
    m.settle(&p);
    let c = &m.comps[&key];
    assert!(!c.failed && !c.retrying && c.attempts == 0 && c.last_error.is_none());
}

#[test]
fn a_permanent_failure_found_while_retrying_is_not_reported_retrying() {
    let id = Identity::new("s", "n");
    let now = Instant::now();
    let web = comp("web", "r/web:1", &[]);
    let d = doc(vec![web.clone()]);
    let key = ("d".to_owned(), "web".to_owned());
    let mut m = refreshed(&[("d", &web)]);
    let e = m.entry(&key, &web.spec_hash);
    e.failed = true;
    e.retrying = true;
    e.next_attempt_at = Some("2026-11-30T00:00:00.000Z".into());
    // The retry created a container that now crash-loops past the budget.
    e.crashes = 1_000;
    e.last_crash = Some(now);
    let observed = Observed {
        containers: vec![container(&id, &web, "restarting")],
        images: images(&["r/web:1"]),
        ..Observed::default()
    };
    let p = plan(Some(&d), &observed, &m, &id, now);
    let v = &p.components[0];
    assert_eq!((v.state, v.reason.as_str()), (State::Failed, "crash loop"));
    assert!(!v.retrying && v.next_attempt_at.is_none(), "{v:?}");
}
