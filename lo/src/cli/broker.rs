//! What `lo plan` reads from a running site: the retained status and presence of its nodes.

use super::{CliError, Observed};
use crate::observe::Fleet;
use schemas::{BrokerUrl, NodeChannel, NodeStatus, Presence, Topic, Topics};
use std::time::Duration;

/// Most nodes `lo plan` reads from the broker (the LO's own bound for auto-enrolled nodes).
pub const MAX_OBSERVED_NODES: usize = 20_000;

/// Reads the retained `status` and `online` topics of a site from a broker, waiting until no
/// message arrived for `quiet` (at most `max`), for at most `max_nodes` nodes (anyone on the
/// broker can invent node names; `lo plan` uses [`MAX_OBSERVED_NODES`]). `tls_ca_file` as in
/// the LO's configuration.
pub async fn observe_broker(
    broker: &BrokerUrl,
    tls_ca_file: Option<&std::path::Path>,
    topics: &Topics,
    site: &str,
    quiet: Duration,
    max: Duration,
    max_nodes: usize,
) -> Result<Observed, CliError> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let id = format!("lo-plan-{}-{}", site, fastrand::u32(..));
    let mut opts = MqttOptions::new(id, broker.host.clone(), broker.port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    if let (Some(u), Some(p)) = (&broker.username, &broker.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    crate::mqtt::Transport::for_broker(broker, tls_ca_file)
        .map_err(|e| CliError::Broker(e.to_string()))?
        .apply(&mut opts);
    let (client, mut ev) = AsyncClient::new(opts, 16);
    let mut fleet = Fleet::new(u64::MAX / 2);
    let deadline = tokio::time::Instant::now() + max;
    let mut subscribed = false;
    loop {
        let next = tokio::time::timeout(quiet, ev.poll());
        let polled = tokio::select! {
            r = next => r,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match polled {
            Err(_) if subscribed => break,
            Err(_) => continue,
            Ok(Err(e)) => return Err(CliError::Broker(e.to_string())),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                for c in [NodeChannel::Status, NodeChannel::Online] {
                    client
                        .subscribe(
                            topics.all_nodes(site, c),
                            edge_io::mqtt::qos(c.lo_subscribe_qos()),
                        )
                        .await
                        .map_err(|e| CliError::Broker(e.to_string()))?;
                }
                subscribed = true;
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let Ok(Topic::Node { node, channel, .. }) = topics.parse(&p.topic) else {
                    continue;
                };
                // Anyone on the broker can invent node names: what is kept is bounded.
                if fleet.get(&node).is_none() && fleet.nodes().len() >= max_nodes {
                    continue;
                }
                match channel {
                    NodeChannel::Status => {
                        if let Ok(s) = serde_json::from_slice::<NodeStatus>(&p.payload) {
                            fleet.status(&node, s, 0, false, "");
                        }
                    }
                    NodeChannel::Online => {
                        if let Ok(pr) = serde_json::from_slice::<Presence>(&p.payload) {
                            fleet.presence(&node, &pr, 0, false, "");
                        }
                    }
                    _ => {}
                }
            }
            Ok(Ok(_)) => {}
        }
    }
    let _ = client.disconnect().await;
    Ok(fleet
        .nodes()
        .iter()
        .map(|(n, o)| {
            (
                n.clone(),
                (o.status.clone(), o.presence.unwrap_or(o.status.is_some())),
            )
        })
        .collect())
}
