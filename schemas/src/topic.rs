//! The MQTT topic scheme: builders and a strict parser.
//!
//! | topic | retained | payload |
//! |---|---|---|
//! | `<root>/<site>/nodes/<node>/desired` | yes | [`DesiredState`](crate::DesiredState) |
//! | `<root>/<site>/nodes/<node>/status` | yes | [`NodeStatus`](crate::NodeStatus) |
//! | `<root>/<site>/nodes/<node>/events` | no | [`Event`](crate::Event) |
//! | `<root>/<site>/nodes/<node>/heartbeat` | no | [`Heartbeat`](crate::Heartbeat) |
//! | `<root>/<site>/nodes/<node>/online` | yes | [`Presence`](crate::Presence) |
//! | `<root>/<site>/lo/status` | yes | [`SiteStatus`](crate::SiteStatus) |
//! | `<root>/<site>/lo/online` | yes | [`Presence`](crate::Presence) |

use crate::names::{validate_name, NameError};
use std::fmt;

/// The default topic root.
pub const DEFAULT_ROOT: &str = "fleet";

/// What a per-node topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeChannel {
    /// LO → EN, retained.
    Desired,
    /// EN → LO, retained.
    Status,
    /// EN → LO, not retained.
    Events,
    /// EN → LO, not retained.
    Heartbeat,
    /// EN presence, retained, also its Last Will.
    Online,
}

impl NodeChannel {
    /// Every channel.
    pub const ALL: [NodeChannel; 5] = [
        NodeChannel::Desired,
        NodeChannel::Status,
        NodeChannel::Events,
        NodeChannel::Heartbeat,
        NodeChannel::Online,
    ];

    /// The last topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeChannel::Desired => "desired",
            NodeChannel::Status => "status",
            NodeChannel::Events => "events",
            NodeChannel::Heartbeat => "heartbeat",
            NodeChannel::Online => "online",
        }
    }

    /// Whether messages on this channel are published retained.
    pub const fn retained(self) -> bool {
        matches!(
            self,
            NodeChannel::Desired | NodeChannel::Status | NodeChannel::Online
        )
    }

    /// How the writer publishes on this channel: QoS 1 everywhere, retained where the
    /// channel holds a state rather than an occurrence.
    pub const fn publish(self) -> Delivery {
        Delivery {
            qos: Qos::AtLeastOnce,
            retain: self.retained(),
        }
    }

    /// The QoS the LO subscribes to this channel of every node with. Retained state
    /// channels (and heartbeats, which the next one replaces) are read at QoS 0: the newest
    /// message is what counts and every reconnect reads the retained ones again. Events are
    /// occurrences nobody can read again, so QoS 1. (The agent reads its own desired
    /// document at [`AGENT_DESIRED_QOS`].)
    pub const fn lo_subscribe_qos(self) -> Qos {
        match self {
            NodeChannel::Events => Qos::AtLeastOnce,
            NodeChannel::Status
            | NodeChannel::Online
            | NodeChannel::Heartbeat
            | NodeChannel::Desired => Qos::AtMostOnce,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        NodeChannel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What a site-level (LO) topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoChannel {
    /// The site summary, retained.
    Status,
    /// LO presence, retained, also its Last Will.
    Online,
    /// Rollout events ([`crate::LoEvent`]), QoS 1, not retained.
    Events,
}

impl LoChannel {
    /// The last topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            LoChannel::Status => "status",
            LoChannel::Online => "online",
            LoChannel::Events => "events",
        }
    }

    /// How the LO publishes on this channel: QoS 1; status and presence retained (they
    /// hold a state), events not (each is news once).
    pub const fn publish(self) -> Delivery {
        Delivery {
            qos: Qos::AtLeastOnce,
            retain: !matches!(self, LoChannel::Events),
        }
    }
}

/// The QoS the agent subscribes to its own desired document with (it must not miss one).
pub const AGENT_DESIRED_QOS: Qos = Qos::AtLeastOnce;

/// MQTT quality of service as the protocol uses it (the transport maps it to its client's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    /// QoS 0.
    AtMostOnce,
    /// QoS 1.
    AtLeastOnce,
}

/// How messages of a channel are published: declared once here, used by both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// Quality of service.
    pub qos: Qos,
    /// Published retained.
    pub retain: bool,
}

/// A parsed topic of the scheme.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `<root>/<site>/nodes/<node>/<channel>`
    Node {
        /// Site name.
        site: String,
        /// Node name.
        node: String,
        /// Which channel.
        channel: NodeChannel,
    },
    /// `<root>/<site>/lo/<channel>`
    Lo {
        /// Site name.
        site: String,
        /// Which channel.
        channel: LoChannel,
    },
}

/// Why a topic was refused by [`Topics::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic does not start with the configured root.
    #[error("topic {topic:?} is not under root {root:?}")]
    WrongRoot {
        /// The topic.
        topic: String,
        /// The configured root.
        root: String,
    },
    /// The levels after the root do not match the scheme.
    #[error("topic {0:?} does not follow <root>/<site>/nodes/<node>/<channel> or <root>/<site>/lo/<channel>")]
    Shape(String),
    /// A configured topic root is not usable.
    #[error("invalid topic root {root:?}: {reason}")]
    Root {
        /// The refused root (shortened).
        root: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A site or node level is not a valid name.
    #[error("topic {topic:?}: {source}")]
    Name {
        /// The topic.
        topic: String,
        /// The name problem.
        #[source]
        source: NameError,
    },
}

/// Longest accepted topic root, bytes.
pub const MAX_ROOT_LEN: usize = 128;

/// Checks a configured topic root: one or more levels separated by `/`, each a valid name
/// (letters, digits, `-`, `_`, `.`, starting with a letter or digit); no wildcard, no empty
/// level, no leading or trailing `/`, at most [`MAX_ROOT_LEN`] bytes. `fleet` and
/// `acme/fleet` are roots; `#`, `+`, ``, `a//b`, `/fleet` and `$SYS` are not.
pub fn validate_root(root: &str) -> Result<(), TopicError> {
    let err = |reason| {
        Err(TopicError::Root {
            root: crate::names::shorten(root, MAX_ROOT_LEN),
            reason,
        })
    };
    if root.is_empty() {
        return err("must not be empty");
    }
    if root.len() > MAX_ROOT_LEN {
        return err("must be at most 128 bytes");
    }
    if root.starts_with('/') || root.ends_with('/') {
        return err("must not start or end with '/'");
    }
    for level in root.split('/') {
        if level.is_empty() {
            return err("must not have an empty level ('//')");
        }
        if level.contains(['+', '#']) {
            return err("must not hold the wildcards '+' or '#'");
        }
        if validate_name(level).is_err() {
            return err(
                "each level must be 1-63 of [A-Za-z0-9._-], starting with a letter or digit",
            );
        }
    }
    Ok(())
}

/// Builds and parses topics under one root (default `fleet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    root: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics::new(DEFAULT_ROOT)
    }
}

impl Topics {
    /// A scheme under `root`; a root may have several levels (`acme/fleet`), surrounding
    /// slashes are trimmed.
    pub fn new(root: &str) -> Self {
        Topics {
            root: root.trim_matches('/').to_owned(),
        }
    }

    /// The root.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `<root>/<site>/nodes/<node>/<channel>`
    pub fn node(&self, site: &str, node: &str, channel: NodeChannel) -> String {
        format!("{}/{site}/nodes/{node}/{}", self.root, channel.as_str())
    }

    /// `<root>/<site>/lo/<channel>`
    pub fn lo(&self, site: &str, channel: LoChannel) -> String {
        format!("{}/{site}/lo/{}", self.root, channel.as_str())
    }

    /// The filter for one channel of every node of a site: `<root>/<site>/nodes/+/<channel>`.
    pub fn all_nodes(&self, site: &str, channel: NodeChannel) -> String {
        format!("{}/{site}/nodes/+/{}", self.root, channel.as_str())
    }

    /// Builds the topic string of a parsed topic.
    pub fn build(&self, topic: &Topic) -> String {
        match topic {
            Topic::Node {
                site,
                node,
                channel,
            } => self.node(site, node, *channel),
            Topic::Lo { site, channel } => self.lo(site, *channel),
        }
    }

    /// Parses a topic of this scheme; anything else is an error.
    pub fn parse(&self, topic: &str) -> Result<Topic, TopicError> {
        let rest = topic
            .strip_prefix(self.root.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| TopicError::WrongRoot {
                topic: topic.to_owned(),
                root: self.root.clone(),
            })?;
        let levels: Vec<&str> = rest.split('/').collect();
        let shape = || TopicError::Shape(topic.to_owned());
        let name = |n: &str| {
            validate_name(n).map_err(|source| TopicError::Name {
                topic: topic.to_owned(),
                source,
            })
        };
        match levels.as_slice() {
            [site, "nodes", node, channel] => {
                let channel = NodeChannel::parse(channel).ok_or_else(shape)?;
                name(site)?;
                name(node)?;
                Ok(Topic::Node {
                    site: (*site).to_owned(),
                    node: (*node).to_owned(),
                    channel,
                })
            }
            [site, "lo", channel] => {
                let channel = match *channel {
                    "status" => LoChannel::Status,
                    "online" => LoChannel::Online,
                    "events" => LoChannel::Events,
                    _ => return Err(shape()),
                };
                name(site)?;
                Ok(Topic::Lo {
                    site: (*site).to_owned(),
                    channel,
                })
            }
            _ => Err(shape()),
        }
    }
}

impl fmt::Display for NodeChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_roots_are_checked() {
        for ok in ["fleet", "acme/fleet", "a.b/c-d_e/0"] {
            assert!(validate_root(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "#",
            "+",
            "a//b",
            "/fleet",
            "fleet/",
            "a/+/b",
            "a/#",
            "$SYS",
            "a b",
            &"x/".repeat(100),
        ] {
            assert!(validate_root(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_and_lo_topics_round_trip() {
        for root in ["fleet", "acme/fleet", "/x/"] {
            let t = Topics::new(root);
            for channel in NodeChannel::ALL {
                let s = t.node("site-a", "node-1", channel);
                let parsed = t.parse(&s).expect("parse");
                assert_eq!(
                    parsed,
                    Topic::Node {
                        site: "site-a".into(),
                        node: "node-1".into(),
                        channel
                    }
                );
                assert_eq!(t.build(&parsed), s);
            }
            for channel in [LoChannel::Status, LoChannel::Online, LoChannel::Events] {
                let s = t.lo("site-a", channel);
                let parsed = t.parse(&s).expect("parse");
                assert_eq!(t.build(&parsed), s);
            }
        }
        assert_eq!(
            Topics::default().node("s", "n", NodeChannel::Desired),
            "fleet/s/nodes/n/desired"
        );
        assert_eq!(
            Topics::default().all_nodes("s", NodeChannel::Status),
            "fleet/s/nodes/+/status"
        );
    }

    #[test]
    fn topics_outside_the_scheme_are_rejected() {
        let t = Topics::default();
        for bad in [
            "fleet",
            "fleet/",
            "other/s/nodes/n/status",
            "fleetx/s/nodes/n/status",
            "fleet/s/nodes/n",
            "fleet/s/nodes/n/status/extra",
            "fleet/s/nodes/n/unknown",
            "fleet/s/node/n/status",
            "fleet/s/lo/desired",
            "fleet/s/lo",
            "fleet//nodes/n/status",
            "fleet/s/nodes//status",
            "fleet/s/nodes/+/status",
            "fleet/s/nodes/#",
            "fleet/s p/nodes/n/status",
        ] {
            assert!(t.parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(matches!(
            t.parse("x/s/lo/status"),
            Err(TopicError::WrongRoot { .. })
        ));
        assert!(matches!(
            t.parse("fleet/s/nodes/+/status"),
            Err(TopicError::Name { .. })
        ));
    }

    #[test]
    fn retained_channels_match_the_table() {
        let retained: Vec<_> = NodeChannel::ALL
            .into_iter()
            .filter(|c| c.retained())
            .collect();
        assert_eq!(
            retained,
            vec![
                NodeChannel::Desired,
                NodeChannel::Status,
                NodeChannel::Online
            ]
        );
    }
}
