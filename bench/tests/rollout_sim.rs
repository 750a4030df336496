//! The rollout scenario of `fleet-sim` at 20 nodes (waves 1, 50 %, 100 %), with the real LO,
//! the embedded broker and 20 agents on the fake runtime: the checks of issue #11 at a size
//! that runs in seconds. The 1,000-node figures are in BENCHMARKS.md (timing belongs there).

use bench::rollout::{run, Scenario};
use bench::sim::BrokerKind;
use std::time::Duration;

fn scenario(bad: bool, offline_percent: f64) -> Scenario {
    Scenario {
        nodes: 20,
        components: 2,
        broker: BrokerKind::Rumqttd,
        broker_bin: None,
        rumqttd_wildcard_segment_mib: 32,
        lo_bin: None,
        waves: vec!["1".into(), "50%".into(), "100%".into()],
        soak: "1s".into(),
        wave_timeout: "20s".into(),
        bad,
        offline_percent,
        timeout: Duration::from_secs(60),
        spawn_batch: 100,
        spawn_pause: Duration::from_millis(10),
        heartbeat: Duration::from_secs(1),
        lo_heartbeat_timeout: Some(Duration::from_secs(3)),
        state_root: std::env::temp_dir(),
        rollback_bound: Duration::from_secs(60),
        return_bound: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_release_reaches_only_the_canary_and_is_rolled_back() {
    let r = run(scenario(true, 10.0)).await.expect("scenario runs");
    assert!(r.pass, "{:#?}", r.checks);
    assert_eq!(r.received_candidate, 1, "the canary only");
    assert_eq!(r.offline_nodes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_release_passes_every_wave_and_offline_nodes_catch_up() {
    let r = run(scenario(false, 10.0)).await.expect("scenario runs");
    assert!(r.pass, "{:#?}", r.checks);
    assert_eq!(r.waves.len(), 3, "{:?}", r.waves);
    assert_eq!(
        r.received_candidate, 20,
        "every node, offline ones once it is promoted"
    );
}
