//! Hostile desired documents against the fake runtime (paused time): each is refused
//! cheaply, the status says `rejected`, nothing reaches the engine, and the next real
//! document is still applied.

mod common;

use common::*;
use en_agent::runtime::fake::FakeRuntime;
use en_agent::store::{MAX_COMPONENTS, MAX_DOCUMENT_BYTES, MAX_GENERATION};
use en_agent::{AgentHandle, Config, Counters};
use schemas::component::Healthcheck;
use schemas::sign::Ed25519SigningKey;
use schemas::wire::{error_code, NodeStatus};
use schemas::DesiredState;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(600);

struct Rig {
    fake: FakeRuntime,
    _dir: tempfile::TempDir,
    agent: AgentHandle,
    _stop: tokio_util::sync::DropGuard,
}

impl Rig {
    fn new(key: Option<&Ed25519SigningKey>) -> Self {
        let fake = FakeRuntime::new();
        fake.add_registry_image("reg/web:v1");
        fake.add_registry_image("reg/web:v2");
        fake.add_registry_image("reg/evil:1");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Config::new(SITE, NODE);
        c.state_dir = dir.path().to_owned();
        c.public_key = key.map(|k| schemas::sign::verifying_key_to_base64(&k.verifying_key()));
        let stop = CancellationToken::new();
        let agent = en_agent::spawn(c, Arc::new(fake.clone()), stop.clone()).expect("spawn");
        Rig {
            fake,
            _dir: dir,
            agent,
            _stop: stop.drop_guard(),
        }
    }

    async fn until(&self, what: &str, pred: impl FnMut(&NodeStatus) -> bool) -> NodeStatus {
        match self.agent.wait_status(WAIT, pred).await {
            Some(s) => s,
            None => panic!(
                "timed out waiting for {what}; last status: {:#?}",
                self.agent.status().borrow().clone()
            ),
        }
    }

    async fn converged(&self, generation: u64) -> NodeStatus {
        self.until(&format!("convergence at generation {generation}"), |s| {
            s.converged && s.observed_generation == generation
        })
        .await
    }

    fn rejected(&self) -> u64 {
        Counters::get(&self.agent.counters().documents_rejected)
    }

    /// Submits `bytes` and waits for its refusal; returns the status that reports it.
    async fn refused(&self, bytes: Vec<u8>, reason: &str) -> NodeStatus {
        let before = self.rejected();
        self.agent.submit_desired(bytes);
        let counters = self.agent.counters().clone();
        let s = self
            .until(&format!("refusal: {reason}"), |s| {
                Counters::get(&counters.documents_rejected) > before
                    // The count is in the status, for people and the LO.
                    && s.agent.rejected_documents > before
                    && s.rejected
                        .as_ref()
                        .is_some_and(|r| r.message.contains(reason))
            })
            .await;
        let r = s.rejected.as_ref().expect("rejected");
        assert_eq!(r.code, error_code::REJECTED);
        assert!(
            r.message.len() < 1_000,
            "short message: {}",
            r.message.len()
        );
        s
    }

    fn evil_calls(&self) -> Vec<String> {
        self.fake
            .calls()
            .into_iter()
            .filter(|c| c.contains("evil"))
            .collect()
    }
}

fn app(generation: u64, image: &str) -> DesiredState {
    doc(
        generation,
        vec![deployment("app", vec![comp("web", image)])],
    )
}

fn signed(mut d: DesiredState, key: &Ed25519SigningKey) -> Vec<u8> {
    schemas::sign::sign(&mut d, key, "lo");
    bytes(&d)
}

#[tokio::test(start_paused = true)]
async fn generation_above_2_pow_53_is_refused_so_it_cannot_pin_the_agent() {
    let rig = Rig::new(None);
    rig.agent.submit_desired(bytes(&app(3, "reg/web:v1")));
    rig.converged(3).await;
    for g in [u64::MAX, MAX_GENERATION + 1] {
        let s = rig
            .refused(bytes(&app(g, "reg/evil:1")), "highest generation")
            .await;
        assert_eq!(s.observed_generation, 3);
    }
    // The highest valid generation is still accepted …
    rig.agent
        .submit_desired(bytes(&app(MAX_GENERATION, "reg/web:v2")));
    rig.converged(MAX_GENERATION).await;
    assert!(rig.evil_calls().is_empty(), "{:?}", rig.evil_calls());
}

#[tokio::test(start_paused = true)]
async fn the_next_real_document_applies_after_a_refused_huge_generation() {
    let rig = Rig::new(None);
    rig.agent.submit_desired(bytes(&app(3, "reg/web:v1")));
    rig.converged(3).await;
    rig.refused(bytes(&app(u64::MAX, "reg/evil:1")), "highest generation")
        .await;
    rig.agent.submit_desired(bytes(&app(4, "reg/web:v2")));
    let s = rig.converged(4).await;
    assert!(
        s.rejected.is_none(),
        "an applied document clears the refusal"
    );
    assert!(rig.evil_calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn unsigned_u64_max_generation_is_refused_when_signing_is_configured() {
    let key = Ed25519SigningKey::from_bytes(&[5u8; 32]);
    let rig = Rig::new(Some(&key));
    rig.agent.submit_desired(signed(app(1, "reg/web:v1"), &key));
    rig.converged(1).await;
    rig.refused(bytes(&app(u64::MAX, "reg/evil:1")), "not signed")
        .await;
    // Signed by another key: refused too.
    let other = Ed25519SigningKey::from_bytes(&[6u8; 32]);
    rig.refused(
        signed(app(u64::MAX, "reg/evil:1"), &other),
        "does not verify",
    )
    .await;
    rig.agent.submit_desired(signed(app(2, "reg/web:v2"), &key));
    rig.converged(2).await;
    assert!(rig.evil_calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn oversized_deep_and_huge_documents_are_refused_cheaply() {
    let rig = Rig::new(None);
    let started = std::time::Instant::now();
    rig.refused(vec![b' '; MAX_DOCUMENT_BYTES + 1], "exceeds the limit")
        .await;
    // 100,000 nested arrays where a field's value is skipped (an unknown field) or typed:
    // serde_json's recursion limit or the type stops it, never a stack overflow.
    for prefix in [
        r#"{"future":"#,
        r#"{"schema":"fleet.desired/v1","deployments":"#,
    ] {
        let mut deep = String::from(prefix);
        deep.push_str(&"[".repeat(100_000));
        rig.refused(deep.into_bytes(), "malformed document").await;
    }
    // 100,000 components that fit the size limit: refused by count before any per-component
    // work (spec hashes, dependency order).
    let n = 100_000;
    let mut huge = String::from(
        r#"{"schema":"fleet.desired/v1","site":"s1","node":"n1","generation":1,"revision":{"commit":"c","path":"p"},"issuedAt":"2026-11-25T00:00:00.000Z","deployments":[{"name":"app","commit":"c","components":["#,
    );
    for i in 0..n {
        if i > 0 {
            huge.push(',');
        }
        huge.push_str(r#"{"name":"c","image":"i"}"#);
    }
    huge.push_str("]}]}");
    assert!(huge.len() <= MAX_DOCUMENT_BYTES);
    rig.refused(
        huge.into_bytes(),
        &format!("{n} components exceed the limit of {MAX_COMPONENTS}"),
    )
    .await;
    // Generous for a debug build on a shared machine; the point is "not quadratic".
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(rig.fake.calls().is_empty(), "{:?}", rig.fake.calls());
    assert_eq!(rig.rejected(), 4);
}

#[tokio::test(start_paused = true)]
async fn out_of_range_numbers_are_refused_before_any_engine_call() {
    let rig = Rig::new(None);
    let mut memory = comp("web", "reg/evil:1");
    memory.resources.memory_bytes = Some(u64::MAX);
    let mut cpus = comp("web", "reg/evil:1");
    cpus.resources.nano_cpus = Some(1 << 63);
    let mut health = comp("web", "reg/evil:1");
    health.healthcheck = Some(Healthcheck {
        test: vec!["CMD".into(), "true".into()],
        interval_ms: u64::MAX,
        timeout_ms: 1_000,
        retries: 1,
        start_period_ms: 0,
    });
    let cases = [
        (memory.with_hash(), None, "memoryBytes"),
        (cpus.with_hash(), None, "nanoCpus"),
        (health.with_hash(), None, "healthcheck.intervalMs"),
        (
            comp("web", "reg/evil:1"),
            Some((u32::MAX, 1_000)),
            "policy.attempts",
        ),
        (
            comp("web", "reg/evil:1"),
            Some((3, u64::MAX)),
            "policy.backoffMs",
        ),
    ];
    for (c, policy, reason) in cases {
        let mut d = doc(1, vec![deployment("app", vec![c])]);
        if let Some((attempts, backoff_ms)) = policy {
            d.deployments[0].policy.attempts = attempts;
            d.deployments[0].policy.backoff_ms = backoff_ms;
        }
        rig.refused(bytes(&d), reason).await;
    }
    assert!(rig.fake.calls().is_empty(), "{:?}", rig.fake.calls());
    // And the agent still converges on a real document.
    rig.agent.submit_desired(bytes(&app(1, "reg/web:v1")));
    rig.converged(1).await;
}

#[tokio::test(start_paused = true)]
async fn foreign_megabyte_names_are_shortened_in_the_status() {
    let rig = Rig::new(None);
    let mut d = app(1, "reg/evil:1");
    d.node = "n".repeat(1 << 20);
    let s = rig.refused(bytes(&d), "addressed to").await;
    assert!(s.rejected.as_ref().is_some_and(|r| r.message.len() < 400));
}
