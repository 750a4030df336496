//! From a desired component to what the engine creates: the agent's identity on a
//! (possibly shared) engine, its naming and labels, and [`ContainerSpec`].
//!
//! A [`ContainerSpec`] carries the resolved [`Component`] itself, plus only what the agent
//! derives (name, labels, resolved mounts, network, aliases): a new component field
//! reaches the Docker adapter (`runtime/docker.rs`) without passing through here.

use super::{label, ContainerInfo};
use schemas::component::VolumeKind;
use schemas::Component;
use std::collections::BTreeMap;

/// `(deployment, component)`.
pub type CompKey = (String, String);

/// A resolved mount of [`ContainerSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Volume, bind or tmpfs.
    pub kind: VolumeKind,
    /// Engine volume name or host path; empty for tmpfs.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// Everything needed to create a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// The component as desired: image, command, entrypoint, env, ports, restart policy,
    /// healthcheck, resources … (its `labels` and `volumes` are resolved below).
    pub component: Component,
    /// Labels (the component's user labels plus ours).
    pub labels: BTreeMap<String, String>,
    /// Mounts (volume names already resolved).
    pub mounts: Vec<Mount>,
    /// User network to attach to.
    pub network: String,
    /// DNS aliases on that network.
    pub aliases: Vec<String>,
}

/// Who this agent is on a (possibly shared) engine, and how it names things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Site.
    pub site: String,
    /// Node.
    pub node: String,
    /// Prefix of container and network names (default `ef-<node>`).
    pub prefix: String,
}

/// Whose a container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Created by this agent (same site and node).
    Mine(CompKey),
    /// Created by another edgefleet agent sharing the engine: ignored entirely.
    OtherAgent,
    /// Not created by edgefleet: reported, never touched.
    Unmanaged,
}

impl Identity {
    /// An identity with the default prefix `ef-<node>`.
    pub fn new(site: &str, node: &str) -> Self {
        Identity {
            site: site.to_owned(),
            node: node.to_owned(),
            prefix: format!("ef-{node}"),
        }
    }

    /// `<prefix>-<deployment>-<component>`.
    pub fn container_name(&self, deployment: &str, component: &str) -> String {
        format!("{}-{deployment}-{component}", self.prefix)
    }

    /// `<prefix>-<deployment>`: the deployment's user network.
    pub fn network_name(&self, deployment: &str) -> String {
        format!("{}-{deployment}", self.prefix)
    }

    /// `<prefix>_<deployment>_<source>`: a named volume (`ef-<node>_web_data` by default).
    pub fn volume_name(&self, deployment: &str, source: &str) -> String {
        format!("{}_{deployment}_{source}", self.prefix)
    }

    /// The labels marking something as this agent's.
    pub fn owner_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (label::MANAGED.to_owned(), "true".to_owned()),
            (label::SITE.to_owned(), self.site.clone()),
            (label::NODE.to_owned(), self.node.clone()),
        ])
    }

    /// Classifies a container by its labels.
    pub fn classify(&self, c: &ContainerInfo) -> Ownership {
        if c.label(label::MANAGED) != Some("true") {
            return Ownership::Unmanaged;
        }
        if c.label(label::SITE) != Some(&self.site) || c.label(label::NODE) != Some(&self.node) {
            return Ownership::OtherAgent;
        }
        match (c.label(label::DEPLOYMENT), c.label(label::COMPONENT)) {
            (Some(d), Some(n)) => Ownership::Mine((d.to_owned(), n.to_owned())),
            _ => Ownership::OtherAgent,
        }
    }

    /// The container spec of a component.
    pub fn container_spec(
        &self,
        deployment: &str,
        c: &Component,
        generation: u64,
        name: String,
    ) -> ContainerSpec {
        let mut labels = c.labels.clone();
        labels.retain(|k, _| !k.starts_with("io.edgefleet."));
        labels.extend(self.owner_labels());
        labels.insert(label::DEPLOYMENT.into(), deployment.to_owned());
        labels.insert(label::COMPONENT.into(), c.name.clone());
        labels.insert(label::SPEC_HASH.into(), c.spec_hash.clone());
        labels.insert(label::GENERATION.into(), generation.to_string());
        if !c.depends_on.is_empty() {
            labels.insert(label::DEPENDS_ON.into(), c.depends_on.join(","));
        }
        ContainerSpec {
            name,
            mounts: c
                .volumes
                .iter()
                .map(|v| Mount {
                    kind: v.kind,
                    source: match v.kind {
                        VolumeKind::Volume => self.volume_name(deployment, &v.source),
                        _ => v.source.clone(),
                    },
                    target: v.target.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            labels,
            network: self.network_name(deployment),
            aliases: vec![c.name.clone()],
            component: c.clone(),
        }
    }
}
