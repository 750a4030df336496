//! Report signing against the in-process broker: with a node key, every report the agent
//! publishes (presence, status, events, heartbeat, and the Last Will the broker sends for
//! it) verifies with the node's public key, bound to its topic, the session epoch and a
//! sequence number that increases across channels.

mod common;

use common::*;
use en_agent::runtime::fake::FakeRuntime;
use en_agent::Config;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use schemas::sign::{Ed25519SigningKey, SignatureError};
use std::collections::BTreeSet;
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

type Messages = mpsc::UnboundedReceiver<(String, serde_json::Value)>;

/// A client recording every message under the node's topics, as raw JSON.
async fn observer(addr: std::net::SocketAddr) -> (AsyncClient, Messages) {
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
                    if let Ok(v) = serde_json::from_slice(&p.payload) {
                        let _ = tx.send((p.topic.clone(), v));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (client, rx)
}

/// Waits (bounded) for a message on `channel` matching `pred`; returns every message
/// received until then, that one last.
async fn until_on(
    rx: &mut Messages,
    channel: &str,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let mut seen = Vec::new();
    let fut = async {
        while let Some((topic, v)) = rx.recv().await {
            let hit = topic.ends_with(&format!("/{channel}")) && pred(&v);
            seen.push((topic, v));
            if hit {
                return;
            }
        }
        panic!("observer closed");
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("no matching message on {channel}; got {seen:#?}"));
    seen
}

fn signed_agent_config(
    addr: std::net::SocketAddr,
    dir: &std::path::Path,
    key: &Ed25519SigningKey,
) -> Config {
    let key_file = dir.join("node.key");
    std::fs::write(&key_file, schemas::sign::signing_key_to_base64(key)).expect("key file");
    let mut c = Config::new(SITE, NODE);
    c.state_dir = dir.join("state");
    c.broker = Some(format!("mqtt://{addr}").parse().expect("url"));
    c.heartbeat = Duration::from_millis(300);
    c.status_debounce = Duration::from_millis(50);
    c.report_signing_key_file = Some(key_file);
    c
}

#[tokio::test]
async fn every_report_and_the_last_will_verify_with_the_node_key_and_seqs_increase() {
    let addr = start_broker();
    let (client, mut rx) = observer(addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Ed25519SigningKey::from_bytes(&[11u8; 32]);
    let public = key.verifying_key();
    let fake = FakeRuntime::new();
    fake.add_registry_image("reg/web:v1");
    let stop = CancellationToken::new();
    let agent = en_agent::spawn(
        signed_agent_config(addr, dir.path(), &key),
        Arc::new(fake.clone()),
        stop.clone(),
    )
    .expect("spawn");
    client
        .publish(
            format!("fleet/{SITE}/nodes/{NODE}/desired"),
            QoS::AtLeastOnce,
            true,
            bytes(&doc(
                1,
                vec![deployment("app", vec![comp("web", "reg/web:v1")])],
            )),
        )
        .await
        .expect("publish");
    let mut seen = until_on(&mut rx, "status", |v| v["converged"] == true).await;
    seen.extend(until_on(&mut rx, "heartbeat", |v| v["converged"] == true).await);

    // Drop the agent without a DISCONNECT: the broker publishes the Will.
    drop(agent);
    seen.extend(until_on(&mut rx, "online", |v| v["online"] == false).await);

    let mut channels = BTreeSet::new();
    let mut last_seq = 0;
    let mut will = None;
    for (topic, v) in &seen {
        if topic.ends_with("/desired") {
            continue;
        }
        let (epoch, seq) = schemas::sign::verify_report(v, topic, &public)
            .unwrap_or_else(|e| panic!("{topic}: {e}: {v}"));
        assert_eq!(epoch, 1, "{topic}: the session epoch");
        let channel = topic.rsplit('/').next().expect("channel").to_owned();
        if channel == "online" && v["online"] == false {
            will = Some(seq);
            continue;
        }
        assert!(seq > last_seq, "{topic}: seq {seq} after {last_seq}");
        last_seq = seq;
        // The same report on another topic or node does not verify.
        assert_eq!(
            schemas::sign::verify_report(v, &topic.replace(NODE, "n2"), &public),
            Err(SignatureError::Invalid)
        );
        channels.insert(channel);
    }
    assert_eq!(
        channels,
        ["events", "heartbeat", "online", "status"]
            .map(str::to_owned)
            .into(),
    );
    // The Will was signed at CONNECT time, before every message of its session.
    let will = will.expect("the Will arrived");
    assert!(will < last_seq, "will seq {will} < {last_seq}");
    stop.cancel();
}

#[tokio::test]
async fn without_a_key_reports_carry_no_signature() {
    let addr = start_broker();
    let (_client, mut rx) = observer(addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Config::new(SITE, NODE);
    c.state_dir = dir.path().to_owned();
    c.broker = Some(format!("mqtt://{addr}").parse().expect("url"));
    c.heartbeat = Duration::from_millis(300);
    let stop = CancellationToken::new();
    let _agent = en_agent::spawn(c, Arc::new(FakeRuntime::new()), stop.clone()).expect("spawn");
    let seen = until_on(&mut rx, "heartbeat", |_| true).await;
    for (topic, v) in &seen {
        assert!(v.get("signature").is_none(), "{topic}: {v}");
    }
    stop.cancel();
}
