//! Pure rendering: a validated site at a commit, the node inventory and the rollbacks in force
//! become one desired document per node. No I/O.
//!
//! Deployments are shared between nodes behind an [`Arc`] ([`Dep`]), each hashed once per
//! render, so that 10,000 nodes × 20 deployments cost 20 serialisations, not 200,000. Whole
//! deployment lists are shared too: nodes whose targeting selects the same deployments (and
//! that have no rollback override in force) get the same [`Arc`]'d list, built once per
//! render, so a node costs a few reference counts rather than 15 cloned [`Dep`]s.

use schemas::site::{ResolvedDeployment, SiteDocs};
use schemas::{DesiredDeployment, DesiredSchema, DesiredState, Revision};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Node labels.
pub type Labels = BTreeMap<String, String>;

/// A deployment as sent to nodes, with its hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    /// The deployment.
    pub spec: Arc<DesiredDeployment>,
    /// Hash of the deployment without its `commit`: equal when the spec is the same.
    pub spec_hash: String,
    /// Hash including `commit`: what the node's content hash is made of.
    pub hash: String,
}

impl Dep {
    /// Hashes a deployment.
    pub fn new(spec: DesiredDeployment) -> Self {
        let spec_hash = deployment_spec_hash(&spec);
        let hash = sha256_hex(&format!("{}\n{}", spec.commit, spec_hash));
        Dep {
            spec: Arc::new(spec),
            spec_hash,
            hash,
        }
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// The hash of a deployment's content without the commit it comes from.
pub fn deployment_spec_hash(d: &DesiredDeployment) -> String {
    let mut value = serde_json::to_value(d).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        map.remove("commit");
    }
    sha256_hex(&schemas::component::canonical_json(&value))
}

/// `sha256:<hex>` of a string.
pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// What one node must run, before it gets a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDesired {
    /// Revision served.
    pub revision: Revision,
    /// Deployments, by name order. Shared between nodes that run the same list.
    pub deployments: Arc<[Dep]>,
}

impl NodeDesired {
    /// An empty document (a node removed from the site).
    pub fn empty(revision: Revision) -> Self {
        NodeDesired {
            revision,
            deployments: Arc::from([]),
        }
    }

    /// Hash of what the document asks for (revision and deployments), the same inputs as
    /// [`DesiredState::same_content`].
    pub fn content_hash(&self) -> String {
        let mut text = format!("{}\n{}\n", self.revision.commit, self.revision.path);
        for d in self.deployments.iter() {
            text.push_str(&d.hash);
            text.push('\n');
        }
        sha256_hex(&text)
    }

    /// Hash of what the node runs: deployment names and spec hashes, without commits or
    /// revision. Equal for two documents that differ only by the commit they come from.
    pub fn run_hash(&self) -> String {
        let mut text = String::new();
        for d in self.deployments.iter() {
            text.push_str(d.name());
            text.push(' ');
            text.push_str(&d.spec_hash);
            text.push('\n');
        }
        sha256_hex(&text)
    }

    /// The wire document.
    pub fn to_state(
        &self,
        site: &str,
        node: &str,
        generation: u64,
        issued_at: &str,
    ) -> DesiredState {
        DesiredState {
            schema: DesiredSchema::V1,
            site: site.to_owned(),
            node: node.to_owned(),
            generation,
            revision: self.revision.clone(),
            issued_at: issued_at.to_owned(),
            deployments: self.deployments.iter().map(|d| (*d.spec).clone()).collect(),
            signature: None,
        }
    }

    /// The deployment named `name`.
    pub fn get(&self, name: &str) -> Option<&Dep> {
        self.deployments.iter().find(|d| d.name() == name)
    }
}

/// Enrolled nodes and nodes that announced themselves without being enrolled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Enrolled nodes and their labels.
    pub nodes: BTreeMap<String, Labels>,
    /// Announcing nodes that get no workloads.
    pub unknown: BTreeSet<String>,
}

/// The site's nodes: `Node` documents, plus announcing nodes when the `Site` allows
/// auto-enrolment (they get the enrolment labels; a `Node` document's labels win).
pub fn inventory<'a>(docs: &SiteDocs, announced: impl IntoIterator<Item = &'a str>) -> Inventory {
    let spec = docs.spec();
    let enrollment = spec.enrollment.unwrap_or_default();
    let mut inv = Inventory {
        nodes: docs
            .nodes
            .iter()
            .map(|(n, e)| (n.clone(), e.labels.clone()))
            .collect(),
        unknown: BTreeSet::new(),
    };
    for node in announced {
        if inv.nodes.contains_key(node) {
            continue;
        }
        if enrollment.auto {
            inv.nodes.insert(node.to_owned(), enrollment.labels.clone());
        } else {
            inv.unknown.insert(node.to_owned());
        }
    }
    inv
}

/// The deployments of a site at a commit, each hashed once.
pub fn site_deployments<'a>(
    docs: &'a SiteDocs,
    commit: &str,
) -> BTreeMap<String, (Dep, &'a ResolvedDeployment)> {
    docs.deployments
        .iter()
        .map(|(name, d)| {
            let spec = DesiredDeployment {
                name: d.name.clone(),
                commit: commit.to_owned(),
                policy: d.policy,
                components: d.components.clone(),
            };
            (name.clone(), (Dep::new(spec), d))
        })
        .collect()
}

/// A rollback in force on one node for one deployment: while Git still asks for the spec
/// `from_spec_hash`, the node gets `to` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackOverride {
    /// Spec hash of the failed deployment spec.
    pub from_spec_hash: String,
    /// The last installed version.
    pub to: Dep,
}

/// Renders every enrolled node's desired deployments. `rollbacks` maps node → deployment →
/// override; overrides whose `from_spec_hash` no longer matches Git are not applied (a new
/// commit that changes the deployment is applied as written).
pub fn render(
    docs: &SiteDocs,
    revision: &Revision,
    inventory: &Inventory,
    rollbacks: &BTreeMap<String, BTreeMap<String, RollbackOverride>>,
) -> BTreeMap<String, NodeDesired> {
    let deps: Vec<(Dep, &ResolvedDeployment)> = site_deployments(docs, &revision.commit)
        .into_values()
        .collect();
    // Deployment lists already built, by the indices (into `deps`) a node's targeting selects.
    let mut shared: HashMap<Vec<usize>, Arc<[Dep]>> = HashMap::new();
    let mut selected: Vec<usize> = Vec::with_capacity(deps.len());
    let mut out = Vec::with_capacity(inventory.nodes.len());
    for (node, labels) in &inventory.nodes {
        selected.clear();
        selected.extend(
            deps.iter()
                .enumerate()
                .filter(|(_, (_, r))| r.targets.matches(node, labels))
                .map(|(i, _)| i),
        );
        // A rollback override in force makes this node's list its own.
        let overridden = rollbacks.get(node).filter(|o| {
            selected.iter().any(|&i| {
                let dep = &deps[i].0;
                o.get(dep.name())
                    .is_some_and(|o| o.from_spec_hash == dep.spec_hash)
            })
        });
        let deployments = match overridden {
            Some(o) => selected
                .iter()
                .map(|&i| {
                    let dep = &deps[i].0;
                    match o.get(dep.name()) {
                        Some(o) if o.from_spec_hash == dep.spec_hash => o.to.clone(),
                        _ => dep.clone(),
                    }
                })
                .collect(),
            None => match shared.get(selected.as_slice()) {
                Some(list) => Arc::clone(list),
                None => {
                    let list: Arc<[Dep]> = selected.iter().map(|&i| deps[i].0.clone()).collect();
                    shared.insert(selected.clone(), Arc::clone(&list));
                    list
                }
            },
        };
        out.push((
            node.clone(),
            NodeDesired {
                revision: revision.clone(),
                deployments,
            },
        ));
    }
    // Already in name order: built in one pass, without a search per node.
    out.into_iter().collect()
}

/// Bytes kept free in every desired document for its signature (`alg`, key id, base64 of
/// 64 bytes and the JSON around them) and the largest generation and `issuedAt`.
pub const DESIRED_HEADROOM: usize = 256;

/// The desired documents of `rendered` that would be larger than `max_bytes` once signed,
/// or hold more deployments or components than an agent accepts (`schemas::bounds`): one
/// problem per node, naming the node, the size, the limit and the largest deployment (with
/// the file it comes from). Nodes that share a deployment list are serialised once.
pub fn oversized_documents(
    docs: &SiteDocs,
    site: &str,
    rendered: &BTreeMap<String, NodeDesired>,
    max_bytes: usize,
) -> Vec<schemas::DocProblem> {
    let mut problems = Vec::new();
    // Size of each distinct deployment list (by its shared allocation), without the node
    // name, which is added per node.
    let mut sizes: HashMap<*const Dep, usize> = HashMap::new();
    for (node, nd) in rendered {
        let components: usize = nd.deployments.iter().map(|d| d.spec.components.len()).sum();
        if nd.deployments.len() > schemas::bounds::MAX_DEPLOYMENTS
            || components > schemas::bounds::MAX_COMPONENTS
        {
            problems.push(schemas::DocProblem {
                file: String::new(),
                line: None,
                field: None,
                message: format!(
                    "node {node} would run {} deployments with {components} components, above the {} deployments or {} components an agent accepts",
                    nd.deployments.len(),
                    schemas::bounds::MAX_DEPLOYMENTS,
                    schemas::bounds::MAX_COMPONENTS
                ),
            });
            continue;
        }
        let key = nd.deployments.as_ptr();
        let base = match sizes.get(&key) {
            Some(s) => *s,
            None => {
                let doc = nd.to_state(site, "", u64::MAX, "0000-00-00T00:00:00.000000000Z");
                let s = serde_json::to_vec(&doc).map_or(usize::MAX, |v| v.len());
                sizes.insert(key, s);
                s
            }
        };
        let size = base
            .saturating_add(node.len())
            .saturating_add(DESIRED_HEADROOM);
        if size <= max_bytes {
            continue;
        }
        let largest = nd
            .deployments
            .iter()
            .map(|d| (serde_json::to_vec(&*d.spec).map_or(0, |v| v.len()), d))
            .max_by_key(|(n, _)| *n);
        let (file, what) = match largest {
            Some((n, d)) => (
                docs.deployments
                    .get(d.name())
                    .map(|r| r.file.clone())
                    .unwrap_or_default(),
                format!("; its largest deployment `{}` is {} KB", d.name(), n / 1000),
            ),
            None => (String::new(), String::new()),
        };
        problems.push(schemas::DocProblem {
            file,
            line: None,
            field: Some("metadata.name".into()),
            message: format!(
                "desired document for node {node} would be {} KB, above the {} KiB limit (max_desired_bytes){what}",
                size / 1000,
                max_bytes / 1024
            ),
        });
    }
    problems
}

/// What was last published to a node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedRecord {
    /// Generation.
    pub generation: u64,
    /// [`NodeDesired::content_hash`].
    pub content_hash: String,
    /// `issuedAt` of that document (kept so a republish is byte-identical).
    pub issued_at: String,
    /// When it was first published, ms since the Unix epoch.
    pub published_ms: u64,
}

/// The generation to publish `content_hash` under: `None` when the node already has it
/// (same content, and no higher generation seen elsewhere), else the next one, above
/// both the last persisted and the highest seen on the broker (`floor`). Never above
/// [`schemas::MAX_GENERATION`] (`None` then: the node keeps its document, rather than a
/// wrapped or refused generation; unreachable in practice, as the floor only follows
/// bounded steps).
pub fn next_generation(
    prev: Option<&PublishedRecord>,
    content_hash: &str,
    floor: u64,
) -> Option<u64> {
    let next = match prev {
        Some(p) if p.content_hash == content_hash && p.generation >= floor => return None,
        Some(p) => p.generation.max(floor).checked_add(1),
        None => floor.checked_add(1),
    };
    next.filter(|g| *g <= schemas::MAX_GENERATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_never_wrap_nor_pass_the_maximum() {
        let rec = |generation| PublishedRecord {
            generation,
            content_hash: "h".into(),
            issued_at: String::new(),
            published_ms: 0,
        };
        assert_eq!(next_generation(None, "h", 0), Some(1));
        assert_eq!(next_generation(Some(&rec(4)), "h", 0), None);
        assert_eq!(next_generation(Some(&rec(4)), "x", 0), Some(5));
        assert_eq!(next_generation(Some(&rec(4)), "h", 9), Some(10));
        let max = schemas::MAX_GENERATION;
        assert_eq!(next_generation(Some(&rec(max - 1)), "x", 0), Some(max));
        assert_eq!(next_generation(Some(&rec(max)), "x", 0), None);
        assert_eq!(next_generation(Some(&rec(u64::MAX)), "x", 0), None);
        assert_eq!(next_generation(None, "x", u64::MAX), None);
    }

    fn site(files: &[(&str, &str)]) -> SiteDocs {
        schemas::site::load_site("s1", files.iter().map(|(a, b)| (*a, *b))).expect("valid site")
    }

    const NODES: &str = "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: n1\n  labels:\n    role: gw\n---\napiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: n2\n";
    const WEB: &str = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  nodeSelector:\n    role: gw\n  components:\n    - name: web\n      image: reg/web:1\n";
    const ALL: &str = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: agent\nspec:\n  components:\n    - name: a\n      image: reg/a:1\n";

    fn rev(c: &str) -> Revision {
        Revision {
            commit: c.into(),
            path: "sites/s1".into(),
        }
    }

    #[test]
    fn selector_and_default_targets() {
        let docs = site(&[("n.yaml", NODES), ("web.yaml", WEB), ("all.yaml", ALL)]);
        let inv = inventory(&docs, ["n3"]);
        assert_eq!(inv.unknown.iter().collect::<Vec<_>>(), vec!["n3"]);
        let out = render(&docs, &rev("c1"), &inv, &BTreeMap::new());
        let names = |n: &str| -> Vec<String> {
            out[n]
                .deployments
                .iter()
                .map(|d| d.name().to_owned())
                .collect()
        };
        assert_eq!(names("n1"), vec!["agent", "web"]);
        assert_eq!(names("n2"), vec!["agent"]);
        assert!(!out.contains_key("n3"));
        let doc = out["n1"].to_state("s1", "n1", 7, "t");
        assert_eq!(doc.deployments[1].components[0].image, "reg/web:1");
        assert!(doc.deployments[1].components[0].hash_is_valid());
        assert_eq!(doc.deployments[1].commit, "c1");
    }

    #[test]
    fn auto_enrolment_gives_labels() {
        let site_doc = "apiVersion: edgefleet.io/v1\nkind: Site\nmetadata:\n  name: s1\nspec:\n  enrollment:\n    auto: true\n    labels:\n      role: gw\n";
        let docs = site(&[("site.yaml", site_doc), ("web.yaml", WEB)]);
        let inv = inventory(&docs, ["n9"]);
        assert!(inv.unknown.is_empty());
        let out = render(&docs, &rev("c1"), &inv, &BTreeMap::new());
        assert_eq!(out["n9"].deployments.len(), 1);
    }

    #[test]
    fn generation_bumps_only_on_content_change() {
        let docs = site(&[("n.yaml", NODES), ("all.yaml", ALL)]);
        let inv = inventory(&docs, []);
        let a = render(&docs, &rev("c1"), &inv, &BTreeMap::new());
        let b = render(&docs, &rev("c1"), &inv, &BTreeMap::new());
        let c = render(&docs, &rev("c2"), &inv, &BTreeMap::new());
        let ha = a["n1"].content_hash();
        assert_eq!(ha, b["n1"].content_hash());
        assert_ne!(ha, c["n1"].content_hash());
        assert_eq!(next_generation(None, &ha, 0), Some(1));
        let rec = PublishedRecord {
            generation: 4,
            content_hash: ha.clone(),
            issued_at: String::new(),
            published_ms: 0,
        };
        assert_eq!(next_generation(Some(&rec), &ha, 0), None);
        assert_eq!(next_generation(Some(&rec), &ha, 4), None);
        assert_eq!(next_generation(Some(&rec), &ha, 9), Some(10));
        assert_eq!(
            next_generation(Some(&rec), &c["n1"].content_hash(), 0),
            Some(5)
        );
        // Same deployment spec across commits: same spec hash, different hash.
        assert_eq!(
            a["n1"].deployments[0].spec_hash,
            c["n1"].deployments[0].spec_hash
        );
        assert_ne!(a["n1"].deployments[0].hash, c["n1"].deployments[0].hash);
    }

    #[test]
    fn rollback_override_applies_only_to_the_failed_spec() {
        let docs = site(&[("n.yaml", NODES), ("all.yaml", ALL)]);
        let inv = inventory(&docs, []);
        let cur = render(&docs, &rev("c2"), &inv, &BTreeMap::new());
        let failed = cur["n1"].deployments[0].clone();
        let mut old = (*failed.spec).clone();
        old.commit = "c1".into();
        old.components[0].image = "reg/a:0".into();
        old.components[0] = old.components[0].clone().with_hash();
        let mut rb = BTreeMap::new();
        rb.insert(
            "n1".to_owned(),
            BTreeMap::from([(
                "agent".to_owned(),
                RollbackOverride {
                    from_spec_hash: failed.spec_hash.clone(),
                    to: Dep::new(old),
                },
            )]),
        );
        let out = render(&docs, &rev("c2"), &inv, &rb);
        assert_eq!(out["n1"].deployments[0].spec.commit, "c1");
        assert_eq!(out["n2"].deployments[0].spec.commit, "c2");
        // Git changes the deployment: the override no longer applies.
        let changed = ALL.replace("reg/a:1", "reg/a:2");
        let docs2 = site(&[("n.yaml", NODES), ("all.yaml", &changed)]);
        let out2 = render(&docs2, &rev("c3"), &inv, &rb);
        assert_eq!(
            out2["n1"].deployments[0].spec.components[0].image,
            "reg/a:2"
        );
    }

    /// The render it replaced: every node's list built on its own, `Dep`s cloned.
    fn reference_render(
        docs: &SiteDocs,
        revision: &Revision,
        inventory: &Inventory,
        rollbacks: &BTreeMap<String, BTreeMap<String, RollbackOverride>>,
    ) -> BTreeMap<String, (Revision, Vec<Dep>)> {
        let deps = site_deployments(docs, &revision.commit);
        let mut out = BTreeMap::new();
        for (node, labels) in &inventory.nodes {
            let overrides = rollbacks.get(node);
            let deployments = deps
                .values()
                .filter(|(_, r)| r.targets.matches(node, labels))
                .map(|(dep, _)| match overrides.and_then(|o| o.get(dep.name())) {
                    Some(o) if o.from_spec_hash == dep.spec_hash => o.to.clone(),
                    _ => dep.clone(),
                })
                .collect();
            out.insert(node.clone(), (revision.clone(), deployments));
        }
        out
    }

    #[test]
    fn shared_lists_render_as_before() {
        let nodes: String = (0..12)
            .map(|i| {
                let role = ["gw", "sensor", "edge"][i % 3];
                format!(
                    "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: n{i:02}\n  labels:\n    role: {role}\n    zone: z{}\n---\n",
                    i % 2
                )
            })
            .collect();
        let only = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: only\nspec:\n  nodes: [n03, n07]\n  components:\n    - name: o\n      image: reg/o:1\n";
        let zone = "apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: zoned\nspec:\n  nodeSelector:\n    role: gw\n    zone: z0\n  components:\n    - name: z\n      image: reg/z:1\n";
        let docs = site(&[
            ("n.yaml", nodes.trim_end_matches("---\n")),
            ("web.yaml", WEB),
            ("all.yaml", ALL),
            ("only.yaml", only),
            ("zone.yaml", zone),
        ]);
        let inv = inventory(&docs, []);
        let cur = render(&docs, &rev("c2"), &inv, &BTreeMap::new());
        let web = cur["n00"].get("web").expect("web on a gateway").clone();
        let agent = cur["n00"].get("agent").expect("agent everywhere").clone();
        let mut old = (*agent.spec).clone();
        old.commit = "c1".into();
        old.components[0].image = "reg/a:0".into();
        old.components[0] = old.components[0].clone().with_hash();
        let over = |from: &Dep| RollbackOverride {
            from_spec_hash: from.spec_hash.clone(),
            to: Dep::new(old.clone()),
        };
        let stale = RollbackOverride {
            from_spec_hash: "sha256:stale".into(),
            to: Dep::new(old.clone()),
        };
        let rb = BTreeMap::from([
            (
                "n00".to_owned(),
                BTreeMap::from([("agent".to_owned(), over(&agent))]),
            ),
            (
                "n01".to_owned(),
                BTreeMap::from([("agent".to_owned(), stale.clone())]),
            ),
            (
                "n03".to_owned(),
                BTreeMap::from([("web".to_owned(), over(&web))]),
            ),
            (
                "n06".to_owned(),
                BTreeMap::from([("web".to_owned(), over(&web))]),
            ),
            (
                "zz".to_owned(),
                BTreeMap::from([("agent".to_owned(), over(&agent))]),
            ),
        ]);
        for rollbacks in [BTreeMap::new(), rb] {
            let new = render(&docs, &rev("c2"), &inv, &rollbacks);
            let reference = reference_render(&docs, &rev("c2"), &inv, &rollbacks);
            assert_eq!(new.len(), reference.len());
            for ((n, nd), (rn, (revision, deps))) in new.iter().zip(&reference) {
                assert_eq!(n, rn);
                assert_eq!(&nd.revision, revision);
                assert_eq!(&*nd.deployments, deps.as_slice(), "{n}");
                let doc = NodeDesired {
                    revision: revision.clone(),
                    deployments: deps.clone().into(),
                };
                assert_eq!(nd.content_hash(), doc.content_hash());
                assert_eq!(
                    serde_json::to_vec(&nd.to_state("s1", n, 3, "t")).expect("json"),
                    serde_json::to_vec(&doc.to_state("s1", n, 3, "t")).expect("json"),
                );
            }
        }
        // Nodes that get the same deployments share one list.
        assert!(Arc::ptr_eq(
            &cur["n00"].deployments,
            &cur["n06"].deployments
        ));
        assert!(Arc::ptr_eq(
            &cur["n01"].deployments,
            &cur["n04"].deployments
        ));
        assert!(!Arc::ptr_eq(
            &cur["n03"].deployments,
            &cur["n09"].deployments
        ));
    }

    #[test]
    fn a_node_with_more_deployments_than_an_agent_accepts_is_a_problem() {
        let mut files = vec![(
            "n.yaml".to_owned(),
            "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: n1\n".to_owned(),
        )];
        for i in 0..=schemas::bounds::MAX_DEPLOYMENTS {
            files.push((
                format!("d{i}.yaml"),
                format!("apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: d{i}\nspec:\n  components:\n    - name: c\n      image: busybox:1\n"),
            ));
        }
        let docs =
            schemas::site::load_site("s1", files.iter().map(|(a, b)| (a.as_str(), b.as_str())))
                .expect("valid site");
        let revision = Revision {
            commit: "c".repeat(40),
            path: "sites/s1".into(),
        };
        let rendered = render(&docs, &revision, &inventory(&docs, []), &BTreeMap::new());
        let p = oversized_documents(&docs, "s1", &rendered, 1 << 30);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].message.contains("node n1 would run 257 deployments"),
            "{p:?}"
        );
    }

    #[test]
    fn oversized_documents_name_node_size_limit_and_largest_deployment() {
        let env: String = (0..40)
            .map(|i| format!("        V{i}: {}\n", "v".repeat(100)))
            .collect();
        let docs = site(&[
            (
                "n.yaml",
                "apiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: n1\n---\napiVersion: edgefleet.io/v1\nkind: Node\nmetadata:\n  name: n2\n",
            ),
            (
                "big.yaml",
                &format!("apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: big\nspec:\n  nodes: [n1]\n  components:\n    - name: c\n      image: busybox:1\n      env:\n{env}"),
            ),
        ]);
        let revision = Revision {
            commit: "c".repeat(40),
            path: "sites/s1".into(),
        };
        let rendered = render(&docs, &revision, &inventory(&docs, []), &BTreeMap::new());
        // The exact size of n1's signed document decides; n2 runs nothing.
        let signed = {
            let mut doc = rendered["n1"].to_state("s1", "n1", u64::MAX, &schemas::now_rfc3339());
            let key = schemas::sign::signing_key_from_base64(
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            )
            .expect("key");
            schemas::sign::sign(&mut doc, &key, "lo-key-id-of-some-length");
            serde_json::to_vec(&doc).expect("json").len()
        };
        // Never below the real size: a limit one byte under it is reported ...
        let p = oversized_documents(&docs, "s1", &rendered, signed - 1);
        assert_eq!(p.len(), 1, "{p:?}");
        // ... and not far above it: the headroom is all the slack there is.
        assert!(oversized_documents(&docs, "s1", &rendered, signed + DESIRED_HEADROOM).is_empty());
        assert_eq!(p[0].file, "big.yaml");
        assert!(
            p[0].message
                .starts_with("desired document for node n1 would be")
                && p[0].message.contains("max_desired_bytes")
                && p[0].message.contains("`big`"),
            "{}",
            p[0].message
        );
    }
}
