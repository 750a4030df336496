//! Failures that heal (#11), against the fake runtime on paused tokio time: a transient
//! cause (registry down) keeps being retried past the attempt budget and installs by
//! itself once it heals, without a new generation; a permanent cause (image not found)
//! stays failed, not retrying, with no attempt after the budget.

mod common;

use common::*;
use en_agent::runtime::fake::{FakeRuntime, Op};
use en_agent::runtime::RuntimeError;
use en_agent::{AgentHandle, Config};
use schemas::wire::{error_code, ComponentStatus, NodeStatus};
use schemas::State;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(3_600);

/// The agent's cap between two retries in these tests.
const CAP: Duration = Duration::from_secs(5);

struct Rig {
    fake: FakeRuntime,
    _dir: tempfile::TempDir,
    agent: AgentHandle,
    _stop: CancellationToken,
}

impl Rig {
    fn new() -> Self {
        let fake = FakeRuntime::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Config::new(SITE, NODE);
        c.state_dir = dir.path().to_owned();
        c.retry_max_backoff = CAP;
        let stop = CancellationToken::new();
        let agent = en_agent::spawn(c, Arc::new(fake.clone()), stop.clone()).expect("spawn");
        Rig {
            fake,
            _dir: dir,
            agent,
            _stop: stop,
        }
    }

    async fn until(&self, what: &str, pred: impl FnMut(&NodeStatus) -> bool) -> NodeStatus {
        match self.agent.wait_status(WAIT, pred).await {
            Some(s) => s,
            None => panic!(
                "timed out waiting for {what}; last status: {:#?}\ncalls: {:?}",
                self.agent.status().borrow().clone(),
                self.fake.calls()
            ),
        }
    }
}

fn web(s: &NodeStatus) -> &ComponentStatus {
    s.deployments
        .iter()
        .flat_map(|d| &d.components)
        .find(|c| c.name == "web")
        .unwrap_or_else(|| panic!("no web in {s:#?}"))
}

fn registry_down() -> RuntimeError {
    RuntimeError::PullFailed(
        "Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused"
            .into(),
    )
}

#[tokio::test(start_paused = true)]
async fn registry_down_past_the_attempt_budget_keeps_retrying_and_installs_once_it_is_back() {
    let rig = Rig::new();
    let mut events = rig.agent.events();
    rig.fake.add_registry_image("reg/web:v1");
    rig.fake
        .fail(Op::Pull, Some("reg/web:v1"), registry_down(), None);
    rig.agent.submit_desired(bytes(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    )));

    // The budget (3 attempts) is spent: failed, but retrying, with the next attempt's time.
    let s = rig
        .until("failed and retrying", |s| {
            s.state == Some(State::Failed) && web(s).retrying
        })
        .await;
    let c = web(&s);
    assert_eq!(c.state, State::Failed);
    assert_eq!(c.attempts, 3);
    assert_eq!(
        c.error.as_ref().map(|e| e.code.as_str()),
        Some(error_code::PULL_FAILED)
    );
    let next = c
        .next_attempt_at
        .clone()
        .expect("nextAttemptAt while retrying");
    assert!(
        next.len() >= 20 && next.ends_with('Z') && next.as_str() > s.reported_at.as_str(),
        "nextAttemptAt {next} must be an RFC 3339 time after reportedAt {}",
        s.reported_at
    );
    assert!(!s.converged);
    // On the wire: `retrying: true` and `nextAttemptAt`.
    let json = serde_json::to_value(c).expect("json");
    assert_eq!(json["retrying"], serde_json::json!(true));
    assert_eq!(json["nextAttemptAt"], serde_json::json!(next));

    // It keeps trying (at most every CAP) and publishes at most one status per retry.
    let pulls = rig.fake.count_calls("pull reg/web:v1");
    assert_eq!(pulls, 3);
    let mut status = rig.agent.status();
    status.mark_unchanged();
    let window = Duration::from_secs(60);
    let counted = tokio::spawn(async move {
        let mut n = 0u32;
        let end = tokio::time::Instant::now() + window;
        while tokio::time::timeout_at(end, status.changed()).await.is_ok() {
            n += 1;
        }
        n
    });
    tokio::time::sleep(window).await;
    let published = counted.await.expect("counter");
    let retries = rig.fake.count_calls("pull reg/web:v1") - pulls;
    // Capped backoff with jitter: every 2.5 to 5 s.
    assert!(
        (60 / 5..=60 * 2 / 5 + 1).contains(&retries),
        "{retries} retries in 60 s with a 5 s cap"
    );
    assert!(
        published as usize <= retries + 1,
        "{published} statuses for {retries} retries"
    );
    let s = rig.agent.status().borrow().clone().expect("status");
    assert!(web(&s).retrying && web(&s).state == State::Failed);
    assert!(web(&s).attempts as usize >= 3 + retries - 1);

    // The registry is back: installed by itself, same generation, no restart.
    rig.fake.clear_failures();
    let s = rig
        .until("installed after healing", |s| {
            s.converged && s.observed_generation == 1
        })
        .await;
    let c = web(&s);
    assert_eq!(c.state, State::Installed);
    assert!(!c.retrying && c.next_attempt_at.is_none() && c.error.is_none());
    assert_eq!(c.attempts, 0);
    assert_eq!(rig.fake.count_calls("create"), 1);

    // Events: one transition into failed, then one out of it to installed (no flapping
    // failed → installing → failed at every retry).
    let mut path = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.component.as_deref() == Some("web") {
            assert_eq!(e.generation, 1);
            path.push((e.from, e.to));
        }
    }
    let from_failed: Vec<_> = path.iter().filter(|p| p.0 == Some(State::Failed)).collect();
    assert_eq!(
        from_failed,
        vec![&(Some(State::Failed), State::Installed)],
        "{path:?}"
    );
    assert_eq!(
        path.iter().filter(|p| p.1 == State::Failed).count(),
        1,
        "{path:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn missing_image_is_failed_for_good_no_retrying_and_no_attempt_after_the_budget() {
    let rig = Rig::new();
    rig.agent.submit_desired(bytes(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/nope:1")])],
    )));
    let s = rig
        .until("failed", |s| s.state == Some(State::Failed))
        .await;
    let c = web(&s);
    assert_eq!(
        c.error.as_ref().map(|e| e.code.as_str()),
        Some(error_code::IMAGE_NOT_FOUND)
    );
    assert!(!c.retrying && c.next_attempt_at.is_none());
    assert_eq!(c.attempts, 3);
    let json = serde_json::to_value(c).expect("json");
    assert!(json.get("retrying").is_none() && json.get("nextAttemptAt").is_none());
    assert_eq!(rig.fake.count_calls("pull reg/nope:1"), 3);
    // An hour later: not one more pull, still failed, not retrying.
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    assert_eq!(rig.fake.count_calls("pull reg/nope:1"), 3);
    let s = rig.agent.status().borrow().clone().expect("status");
    assert_eq!(web(&s).state, State::Failed);
    assert!(!web(&s).retrying);
    // Even when the tag is pushed meanwhile: only Git changing (a new generation) retries.
    rig.fake.add_registry_image("reg/nope:1");
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    assert_eq!(rig.fake.count_calls("pull reg/nope:1"), 3);
    rig.agent.submit_desired(bytes(&doc(
        2,
        vec![deployment("app", vec![comp("web", "reg/nope:1")])],
    )));
    rig.until("installed at generation 2", |s| {
        s.converged && s.observed_generation == 2
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_dependent_of_a_retrying_component_is_retrying_too_and_heals_with_it() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/db:1");
    rig.fake.add_registry_image("reg/web:1");
    rig.fake
        .fail(Op::Pull, Some("reg/db:1"), registry_down(), None);
    rig.agent.submit_desired(bytes(&doc(
        1,
        vec![deployment(
            "app",
            vec![
                comp("db", "reg/db:1"),
                depends(comp("web", "reg/web:1"), &["db"]),
            ],
        )],
    )));
    let s = rig
        .until("both failed, retrying", |s| {
            s.state == Some(State::Failed) && web(s).retrying
        })
        .await;
    let c = web(&s);
    assert_eq!(
        c.error.as_ref().map(|e| e.code.as_str()),
        Some(error_code::DEPENDENCY_FAILED)
    );
    assert!(c.next_attempt_at.is_some());
    rig.fake.clear_failures();
    rig.until("installed after healing", |s| {
        s.converged && s.observed_generation == 1
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_invalid_container_config_is_permanent_a_busy_engine_transient() {
    let rig = Rig::new();
    rig.fake.add_registry_image("reg/web:v1");
    rig.fake.fail(
        Op::Create,
        None,
        RuntimeError::Invalid {
            code: error_code::CREATE_FAILED,
            message: "invalid mount config for type \"bind\": mount path must be absolute".into(),
        },
        None,
    );
    rig.agent.submit_desired(bytes(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    )));
    let s = rig
        .until("failed", |s| s.state == Some(State::Failed))
        .await;
    assert!(!web(&s).retrying);
    assert_eq!(rig.fake.count_calls("create"), 3);
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    assert_eq!(rig.fake.count_calls("create"), 3);

    // A 500 from the engine at create (containerd restarting) is retried past the budget.
    rig.fake.clear_failures();
    rig.fake.fail(
        Op::Create,
        None,
        RuntimeError::Other {
            code: error_code::CREATE_FAILED,
            message: "containerd: connection error: desc = transport is closing".into(),
        },
        Some(5),
    );
    rig.agent.submit_desired(bytes(&doc(
        2,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    )));
    let s = rig
        .until("retrying at generation 2", |s| {
            s.observed_generation == 2 && s.state == Some(State::Failed) && web(s).retrying
        })
        .await;
    assert_eq!(
        web(&s).error.as_ref().map(|e| e.code.as_str()),
        Some(error_code::CREATE_FAILED)
    );
    rig.until("installed once the engine is back", |s| {
        s.converged && s.observed_generation == 2
    })
    .await;
    assert_eq!(rig.fake.count_calls("create"), 3 + 6);
}
