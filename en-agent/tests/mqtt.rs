//! The MQTT session against the in-process broker: presence and epochs, the desired
//! subscription, status after CONNACK, events and heartbeats.

mod common;

use common::*;
use en_agent::runtime::fake::FakeRuntime;
use en_agent::Config;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use schemas::wire::{Heartbeat, NodeStatus, Presence};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn start_broker() -> std::net::SocketAddr {
    let cfg = broker::BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Default::default()
    };
    let handle = broker::start(&cfg).expect("broker starts");
    let addr = handle.connect_addr();
    // The broker has no stop API: it lives as long as the test process.
    std::mem::forget(handle);
    addr
}

/// A test client that records every message under the node's topics.
async fn observer(
    addr: std::net::SocketAddr,
) -> (AsyncClient, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let mut opts = MqttOptions::new(
        format!("obs-{}", fastrand::u32(..)),
        addr.ip().to_string(),
        addr.port(),
    );
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(opts, 64);
    client
        .subscribe(format!("fleet/{SITE}/nodes/{NODE}/#"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (client, rx)
}

async fn next_on<T: serde::de::DeserializeOwned>(
    rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    channel: &str,
    mut pred: impl FnMut(&T) -> bool,
) -> (T, usize) {
    let fut = async {
        while let Some((topic, payload)) = rx.recv().await {
            if topic.ends_with(&format!("/{channel}")) {
                if let Ok(v) = serde_json::from_slice::<T>(&payload) {
                    if pred(&v) {
                        return (v, payload.len());
                    }
                }
            }
        }
        panic!("observer closed");
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("no matching message on {channel}"))
}

fn agent_config(addr: std::net::SocketAddr, dir: &std::path::Path) -> Config {
    let mut c = Config::new(SITE, NODE);
    c.state_dir = dir.to_owned();
    c.broker = Some(format!("mqtt://{addr}").parse().expect("url"));
    c.heartbeat = Duration::from_millis(500);
    c.status_debounce = Duration::from_millis(50);
    c
}

#[tokio::test]
async fn agent_session_publishes_presence_status_events_and_heartbeats() {
    let addr = start_broker();
    let (client, mut rx) = observer(addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::new();
    fake.add_registry_image("reg/web:v1");
    let stop = CancellationToken::new();
    let agent = en_agent::spawn(
        agent_config(addr, dir.path()),
        Arc::new(fake.clone()),
        stop.clone(),
    )
    .expect("spawn");

    let (p, _) = next_on::<Presence>(&mut rx, "online", |p| p.online).await;
    assert_eq!(p.epoch, 1);
    // A document larger than rumqttc's 10 KiB default packet limit.
    let mut web = comp("web", "reg/web:v1");
    web.env.insert("PADDING".into(), "x".repeat(20_000));
    let d = doc(1, vec![deployment("app", vec![web.with_hash()])]);
    client
        .publish(
            format!("fleet/{SITE}/nodes/{NODE}/desired"),
            QoS::AtLeastOnce,
            true,
            bytes(&d),
        )
        .await
        .expect("publish");
    // The transition event comes before the debounced status.
    let (e, _) = next_on::<schemas::Event>(&mut rx, "events", |e| {
        e.component.as_deref() == Some("web") && e.to == schemas::State::Installed
    })
    .await;
    assert_eq!(e.generation, 1);
    let (s, _) = next_on::<NodeStatus>(&mut rx, "status", |s| {
        s.converged && s.observed_generation == 1
    })
    .await;
    assert_eq!(s.agent.version, env!("CARGO_PKG_VERSION"));
    let (h, size) =
        next_on::<Heartbeat>(&mut rx, "heartbeat", |h| h.observed_generation == 1).await;
    assert!(h.converged);
    assert!(size < 300, "heartbeat of {size} bytes");

    // Graceful stop: online false with the same epoch; containers keep running.
    stop.cancel();
    agent.wait().await.expect("stops");
    let (p, _) = next_on::<Presence>(&mut rx, "online", |p| !p.online).await;
    assert_eq!(p.epoch, 1);
    assert!(fake.containers().iter().all(|c| c.info.is_running()));

    // A restart gets a higher epoch and publishes the full status again.
    let stop = CancellationToken::new();
    let agent = en_agent::spawn(
        agent_config(addr, dir.path()),
        Arc::new(fake.clone()),
        stop.clone(),
    )
    .expect("spawn");
    let (p, _) = next_on::<Presence>(&mut rx, "online", |p| p.online).await;
    assert_eq!(p.epoch, 2);
    next_on::<NodeStatus>(&mut rx, "status", |s| {
        s.converged && s.observed_generation == 1
    })
    .await;
    assert_eq!(fake.count_calls("create"), 1);
    stop.cancel();
    agent.wait().await.expect("stops");
}

#[tokio::test]
async fn agent_without_a_reachable_broker_still_converges_and_connects_later() {
    // Reserve a port, keep it closed for now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::new();
    fake.add_registry_image("reg/web:v1");
    let stop = CancellationToken::new();
    let agent = en_agent::spawn(
        agent_config(addr, dir.path()),
        Arc::new(fake.clone()),
        stop.clone(),
    )
    .expect("spawn");
    agent.submit_desired(bytes(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    )));
    agent
        .wait_status(Duration::from_secs(10), |s| s.converged)
        .await
        .expect("converges offline");
    // Now the broker comes up on that port; the agent connects and reports.
    let cfg = broker::BrokerConfig {
        listen: addr,
        ..Default::default()
    };
    std::mem::forget(broker::start(&cfg).expect("broker"));
    let (_client, mut rx) = observer(addr).await;
    next_on::<NodeStatus>(&mut rx, "status", |s| {
        s.converged && s.observed_generation == 1
    })
    .await;
    stop.cancel();
    agent.wait().await.expect("stops");
}

#[tokio::test]
async fn stop_during_a_long_pull_is_prompt_and_publishes_offline() {
    let addr = start_broker();
    let (_client, mut rx) = observer(addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::new();
    fake.add_registry_image("reg/web:v1");
    // A pull on a slow link: a minute.
    fake.set_op_latency(en_agent::runtime::fake::Op::Pull, Duration::from_secs(60));
    let stop = CancellationToken::new();
    let agent = en_agent::spawn(
        agent_config(addr, dir.path()),
        Arc::new(fake.clone()),
        stop.clone(),
    )
    .expect("spawn");
    next_on::<Presence>(&mut rx, "online", |p| p.online).await;
    agent.submit_desired(bytes(&doc(
        1,
        vec![deployment("app", vec![comp("web", "reg/web:v1")])],
    )));
    // The status of generation 1 is published right before the pull starts.
    agent
        .wait_status(Duration::from_secs(10), |s| {
            s.observed_generation == 1 && s.state == Some(schemas::State::Installing)
        })
        .await
        .expect("installing");
    let t0 = std::time::Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), agent.wait())
        .await
        .expect("the agent stops without waiting for the pull")
        .expect("stops cleanly");
    let (p, _) = next_on::<Presence>(&mut rx, "online", |p| !p.online).await;
    assert_eq!(p.epoch, 1);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // The pull was abandoned, not completed.
    assert!(fake.images().is_empty(), "{:?}", fake.images());
}
