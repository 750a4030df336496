#![allow(dead_code)]
//! Builders shared by the agent's integration tests.

/// Docker, static busybox and `docker-registry`: mandatory when `CI=true`, else the test
/// returns after one line saying why.
#[allow(unused_macros)]
macro_rules! require_docker {
    () => {
        if !harness::require_docker_registry() {
            return;
        }
    };
}

/// What every test image runs: a loop that exits 0 on SIGTERM.
pub const SLEEP_LOOP: [&str; 4] = [
    "/busybox",
    "sh",
    "-c",
    "trap 'exit 0' TERM; while true; do /busybox sleep 1; done",
];

use schemas::component::Healthcheck;
use schemas::wire::{DesiredDeployment, DesiredSchema, DesiredState, FailurePolicy, Revision};
use schemas::Component;

pub const SITE: &str = "s1";
pub const NODE: &str = "n1";

pub fn comp(name: &str, image: &str) -> Component {
    Component {
        name: name.into(),
        image: image.into(),
        ..Component::default()
    }
    .with_hash()
}

pub fn with_hc(mut c: Component, test: &[&str]) -> Component {
    c.healthcheck = Some(Healthcheck {
        test: test.iter().map(|s| (*s).to_owned()).collect(),
        interval_ms: 1_000,
        timeout_ms: 1_000,
        retries: 2,
        start_period_ms: 0,
    });
    c.with_hash()
}

pub fn depends(mut c: Component, on: &[&str]) -> Component {
    c.depends_on = on.iter().map(|s| (*s).to_owned()).collect();
    c.with_hash()
}

pub fn deployment(name: &str, components: Vec<Component>) -> DesiredDeployment {
    DesiredDeployment {
        name: name.into(),
        commit: "c0ffee".into(),
        policy: FailurePolicy {
            attempts: 3,
            backoff_ms: 1_000,
            ..FailurePolicy::default()
        },
        components,
    }
}

pub fn doc(generation: u64, deployments: Vec<DesiredDeployment>) -> DesiredState {
    DesiredState {
        schema: DesiredSchema::V1,
        site: SITE.into(),
        node: NODE.into(),
        generation,
        revision: Revision {
            commit: format!("commit-{generation}"),
            path: format!("sites/{SITE}"),
        },
        issued_at: "2026-11-25T00:00:00.000Z".into(),
        deployments,
        signature: None,
    }
}

pub fn bytes(d: &DesiredState) -> Vec<u8> {
    serde_json::to_vec(d).expect("serialize")
}
