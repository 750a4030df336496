//! The broker behaviour edgefleet relies on, checked with rumqttc against an in-process broker
//! on 127.0.0.1 and a free port. Every wait is bounded: a broken broker fails a test, it never
//! hangs it.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use broker::{BrokerConfig, BrokerHandle};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Packet, Publish, QoS,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const MIB: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(20);

fn start_broker(configure: impl FnOnce(&mut BrokerConfig)) -> BrokerHandle {
    let mut cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..BrokerConfig::default()
    };
    configure(&mut cfg);
    let handle = broker::start(&cfg).expect("broker starts");
    assert_ne!(handle.local_addr().port(), 0, "actual port reported");
    handle
}

fn options(broker: &BrokerHandle, client_id: &str) -> MqttOptions {
    let addr = broker.connect_addr();
    let mut opts = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(MIB, MIB);
    opts
}

/// A connected client whose event loop runs on its own task, forwarding every event.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: JoinHandle<()>,
}

/// Drives the event loop until its first error (which is forwarded): polling again would
/// reconnect.
fn spawn_event_loop(
    mut event_loop: EventLoop,
) -> (
    mpsc::UnboundedReceiver<Result<Event, String>>,
    JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match event_loop.poll().await {
                Ok(event) => {
                    if tx.send(Ok(event)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:?}")));
                    return;
                }
            }
        }
    });
    (rx, task)
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

impl Client {
    async fn connect(opts: MqttOptions) -> Client {
        let (client, event_loop) = AsyncClient::new(opts, 1000);
        let (events, task) = spawn_event_loop(event_loop);
        let mut c = Client {
            client,
            events,
            task,
        };
        c.next_matching("connack", |e| match e {
            Event::Incoming(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                true
            }
            _ => false,
        })
        .await;
        c
    }

    /// Waits (bounded) for the next event `pred` accepts; panics on a connection error.
    async fn next_matching(&mut self, what: &str, mut pred: impl FnMut(&Event) -> bool) {
        bounded(what, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(event)) if pred(&event) => return,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("connection error while waiting for {what}: {e}"),
                    None => panic!("event loop ended while waiting for {what}"),
                }
            }
        })
        .await
    }

    async fn next_publish(&mut self) -> Publish {
        bounded("publish", async {
            loop {
                match self.events.recv().await {
                    Some(Ok(Event::Incoming(Packet::Publish(p)))) => return p,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("connection error while waiting for publish: {e}"),
                    None => panic!("event loop ended while waiting for publish"),
                }
            }
        })
        .await
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("subscribe request queued");
        self.next_matching("suback", |e| {
            matches!(e, Event::Incoming(Packet::SubAck(_)))
        })
        .await;
    }

    /// Publishes retained QoS 1 messages and waits until the broker acknowledged them all.
    async fn publish_retained_acked(&mut self, messages: Vec<(String, Vec<u8>)>) {
        let total = messages.len();
        let client = self.client.clone();
        // Publish from another task: the request channel may fill while we count acks here.
        let sender = tokio::spawn(async move {
            for (topic, payload) in messages {
                client
                    .publish(topic, QoS::AtLeastOnce, true, payload)
                    .await
                    .expect("publish request queued");
            }
        });
        let mut acked = 0;
        while acked < total {
            self.next_matching("puback", |e| {
                matches!(e, Event::Incoming(Packet::PubAck(_)))
            })
            .await;
            acked += 1;
        }
        bounded("publisher task", sender)
            .await
            .expect("publisher task");
    }
}

fn payload(i: usize) -> Vec<u8> {
    // 1–5 KiB, content depends on i.
    let len = 1024 + (i * 37) % 4096;
    (0..len).map(|b| (b + i) as u8).collect()
}

#[tokio::test]
async fn late_subscriber_gets_retained_qos1_message_with_retain_flag() {
    let broker = start_broker(|_| {});
    let mut publisher = Client::connect(options(&broker, "lo")).await;
    let body = br#"{"generation":7}"#.to_vec();
    publisher
        .publish_retained_acked(vec![(
            "fleet/s/nodes/n0001/desired".to_owned(),
            body.clone(),
        )])
        .await;

    let mut late = Client::connect(options(&broker, "n0001")).await;
    late.subscribe("fleet/s/nodes/n0001/desired", QoS::AtLeastOnce)
        .await;
    let p = late.next_publish().await;
    assert_eq!(p.topic, "fleet/s/nodes/n0001/desired");
    assert!(p.retain, "retain flag set on a retained message");
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert_eq!(&p.payload[..], &body[..]);
}

/// Nodes report status before the orchestrator subscribes: rumqttd must accept publishes to
/// topics no subscription filter matches (its router has a `NoMatchingFilters` error path that
/// would disconnect the publisher, unreachable in 0.20; this guards an upgrade).
#[tokio::test]
async fn publishing_to_topics_nobody_subscribed_keeps_the_connection() {
    let broker = start_broker(|_| {});
    let mut node = Client::connect(options(&broker, "n0002")).await;
    for i in 0..3 {
        node.client
            .publish(
                format!("fleet/s/nodes/n0002/status/{i}"),
                QoS::AtLeastOnce,
                false,
                "up",
            )
            .await
            .expect("publish request queued");
        node.next_matching("puback", |e| {
            matches!(e, Event::Incoming(Packet::PubAck(_)))
        })
        .await;
    }
    node.client
        .publish("fleet/s/nodes/n0002/status/x", QoS::AtMostOnce, false, "up")
        .await
        .expect("publish request queued");
    // rumqttd acks a QoS 1 publish before routing it, so only a later round trip proves the
    // connection survived.
    node.subscribe("fleet/s/nodes/n0002/desired", QoS::AtLeastOnce)
        .await;
}

#[tokio::test]
async fn unclean_disconnect_publishes_retained_will() {
    let broker = start_broker(|_| {});
    let will_topic = "fleet/s/nodes/a/online";

    let mut watcher = Client::connect(options(&broker, "b")).await;
    watcher
        .subscribe("fleet/s/nodes/+/online", QoS::AtLeastOnce)
        .await;

    let mut a_opts = options(&broker, "a");
    a_opts.set_last_will(LastWill::new(will_topic, "false", QoS::AtLeastOnce, true));
    let a = Client::connect(a_opts).await;
    // Drop A's event loop (and with it the TCP stream) without sending DISCONNECT.
    a.task.abort();
    let _ = bounded("aborted event loop task", a.task).await;
    drop(a.client);

    let will = watcher.next_publish().await;
    assert_eq!(will.topic, will_topic);
    assert_eq!(&will.payload[..], b"false");

    let mut late = Client::connect(options(&broker, "c")).await;
    late.subscribe(will_topic, QoS::AtLeastOnce).await;
    let retained = late.next_publish().await;
    assert_eq!(retained.topic, will_topic);
    assert!(retained.retain, "the will is kept as a retained message");
    assert_eq!(&retained.payload[..], b"false");
}

async fn publish_node_documents(broker: &BrokerHandle, count: usize) {
    let mut lo = Client::connect(options(broker, "lo-seed")).await;
    let docs = (0..count)
        .map(|i| (format!("fleet/s/nodes/n{i:04}/desired"), payload(i)))
        .collect();
    lo.publish_retained_acked(docs).await;
}

/// Collects publishes until `expected` distinct topics arrived or the bounded wait ends.
async fn collect_distinct_topics(client: &mut Client, expected: usize) -> (HashSet<String>, bool) {
    let mut topics = HashSet::new();
    let mut all_retained = true;
    let collect = async {
        while topics.len() < expected {
            match client.events.recv().await {
                Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    all_retained &= p.retain;
                    let i: usize = p
                        .topic
                        .strip_prefix("fleet/s/nodes/n")
                        .and_then(|rest| rest.get(..4))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("unexpected topic {}", p.topic));
                    assert_eq!(&p.payload[..], &payload(i)[..], "payload of {}", p.topic);
                    topics.insert(p.topic);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection error after {} topics: {e}", topics.len()),
                None => panic!("event loop ended after {} topics", topics.len()),
            }
        }
    };
    let _ = timeout(WAIT, collect).await;
    (topics, all_retained)
}

/// Regression guard for the silent truncation described in docs/broker.md: a QoS 0 wildcard
/// subscription gets every retained message up to `max_outgoing_packet_count`.
#[tokio::test]
async fn wildcard_subscriber_gets_all_2000_retained_node_documents() {
    const NODES: usize = 2000;
    let broker = start_broker(|_| {});
    publish_node_documents(&broker, NODES).await;

    let mut lo = Client::connect(options(&broker, "lo")).await;
    lo.subscribe("fleet/s/nodes/+/desired", QoS::AtMostOnce)
        .await;
    let (topics, all_retained) = collect_distinct_topics(&mut lo, NODES).await;
    assert_eq!(
        topics.len(),
        NODES,
        "late wildcard subscriber received {} of {NODES} retained topics",
        topics.len()
    );
    assert!(
        all_retained,
        "every snapshot message carries the retain flag"
    );
}

/// Documents rumqttd 0.20's hard-coded limit (`MAX_INFLIGHT = 100` in router/iobufs.rs): a
/// QoS 1 wildcard subscription gets 100 retained messages and the rest are dropped, whatever
/// the configuration says. If this fails after a rumqttd upgrade, revisit docs/broker.md.
#[tokio::test]
async fn qos1_wildcard_subscription_gets_only_100_retained_messages() {
    const NODES: usize = 250;
    let broker = start_broker(|cfg| cfg.max_inflight_count = 10_000);
    publish_node_documents(&broker, NODES).await;

    let mut lo = Client::connect(options(&broker, "lo")).await;
    lo.subscribe("fleet/s/nodes/+/desired", QoS::AtLeastOnce)
        .await;
    let mut topics = HashSet::new();
    // Bounded wait for the first 100, then a quiet period proves no more are coming.
    while topics.len() < 100 {
        topics.insert(lo.next_publish().await.topic);
    }
    let quiet = async {
        loop {
            if let Some(Ok(Event::Incoming(Packet::Publish(p)))) = lo.events.recv().await {
                return p.topic;
            }
        }
    };
    if let Ok(topic) = timeout(Duration::from_secs(2), quiet).await {
        topics.insert(topic);
    }
    assert_eq!(topics.len(), 100, "rumqttd's QoS 1 retained cap changed");
}

#[tokio::test]
async fn payload_of_100_kib_passes_through() {
    let broker = start_broker(|_| {});
    let mut sub = Client::connect(options(&broker, "n0003")).await;
    sub.subscribe("fleet/s/nodes/n0003/desired", QoS::AtLeastOnce)
        .await;

    let big: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let publisher = Client::connect(options(&broker, "lo")).await;
    publisher
        .client
        .publish(
            "fleet/s/nodes/n0003/desired",
            QoS::AtLeastOnce,
            false,
            big.clone(),
        )
        .await
        .expect("publish request queued");

    let p = sub.next_publish().await;
    assert_eq!(p.payload.len(), big.len());
    assert_eq!(&p.payload[..], &big[..]);
}

#[tokio::test]
async fn payload_above_max_payload_size_closes_the_connection() {
    let broker = start_broker(|cfg| cfg.max_payload_size = 64 * 1024);
    let mut publisher = Client::connect(options(&broker, "lo")).await;
    publisher
        .client
        .publish(
            "fleet/s/too-big",
            QoS::AtLeastOnce,
            false,
            vec![0u8; 80 * 1024],
        )
        .await
        .expect("publish request queued");
    let outcome = bounded("connection error", async {
        loop {
            match publisher.events.recv().await {
                Some(Ok(Event::Incoming(Packet::PubAck(_)))) => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err("event loop ended".to_owned()),
            }
        }
    })
    .await;
    assert!(outcome.is_err(), "oversized publish was acknowledged");
}

/// First outcome of a connection attempt: the CONNACK code, or the connection error.
async fn connect_outcome(opts: MqttOptions) -> Result<ConnectReturnCode, String> {
    let (_client, mut event_loop) = AsyncClient::new(opts, 10);
    bounded("connection outcome", async {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack.code),
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => return Ok(code),
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    })
    .await
}

#[tokio::test]
async fn configured_logins_are_enforced() {
    let broker = start_broker(|cfg| {
        cfg.users.insert("lo".to_owned(), "s3cret".to_owned());
        cfg.users.insert("n0004".to_owned(), "other".to_owned());
    });

    let mut wrong = options(&broker, "lo");
    wrong.set_credentials("lo", "wrong");
    let outcome = connect_outcome(wrong).await;
    assert!(
        !matches!(outcome, Ok(ConnectReturnCode::Success)),
        "wrong password accepted: {outcome:?}"
    );

    // Another user's password does not work either.
    let mut swapped = options(&broker, "lo");
    swapped.set_credentials("lo", "other");
    let outcome = connect_outcome(swapped).await;
    assert!(
        !matches!(outcome, Ok(ConnectReturnCode::Success)),
        "{outcome:?}"
    );

    let anonymous = options(&broker, "anon");
    let outcome = connect_outcome(anonymous).await;
    assert!(
        !matches!(outcome, Ok(ConnectReturnCode::Success)),
        "{outcome:?}"
    );

    let mut right = options(&broker, "lo");
    right.set_credentials("lo", "s3cret");
    let mut lo = Client::connect(right).await;
    lo.subscribe("fleet/s/nodes/+/desired", QoS::AtLeastOnce)
        .await;
}
