//! The pure choice of the images to remove.

use super::ledger::Entry;
use crate::runtime::{ContainerInfo, LocalImage};
use std::collections::{BTreeMap, BTreeSet};

/// What the choice looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Every image on the engine.
    pub images: &'a [LocalImage],
    /// Every container on the engine (this agent's, other agents', unmanaged; any state).
    pub containers: &'a [ContainerInfo],
    /// Image references of the desired components.
    pub desired_refs: &'a BTreeSet<String>,
    /// Image ids those references resolve to now.
    pub desired_ids: &'a BTreeSet<String>,
    /// The images the agent pulled, oldest use first.
    pub ledger: &'a [Entry],
    /// Images kept per component besides the ones in use or desired.
    pub keep_previous: usize,
}

/// One image to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Image id.
    pub id: String,
    /// Its tags (all pulled by the agent); removed one by one when there are several.
    pub tags: Vec<String>,
    /// Bytes it frees: its size, less what other images share when the engine tells.
    pub bytes: u64,
}

/// What [`select`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// To remove.
    pub remove: Vec<Removal>,
    /// Ids kept as previous versions of a component.
    pub kept_previous: BTreeSet<String>,
}

/// The images to remove: images the agent pulled (in the ledger) and still on the engine
/// that no container uses (whoever made it, whatever its state), no desired component
/// references (by reference, tag, digest or id), that are not among the `keep_previous`
/// latest other images of a component that had them, and that carry no tag the agent did
/// not pull (someone tagged it: not ours alone). Deterministic, in ledger order.
pub fn select(i: &Inputs<'_>) -> Selection {
    let by_id: BTreeMap<&str, &LocalImage> = i.images.iter().map(|m| (m.id.as_str(), m)).collect();
    let used_ids: BTreeSet<&str> = i.containers.iter().map(|c| c.image_id.as_str()).collect();
    let used_refs: BTreeSet<&str> = i.containers.iter().map(|c| c.image.as_str()).collect();
    let protected = |m: &LocalImage| {
        used_ids.contains(m.id.as_str())
            || used_refs.contains(m.id.as_str())
            || i.desired_ids.contains(&m.id)
            || i.desired_refs.contains(&m.id)
            || m.repo_tags
                .iter()
                .chain(&m.repo_digests)
                .any(|n| used_refs.contains(n.as_str()) || i.desired_refs.contains(n))
    };
    // Per component, latest first: the first `keep_previous` unprotected images stay.
    let mut out = Selection::default();
    let mut seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for e in i.ledger.iter().rev() {
        let Some(m) = by_id.get(e.id.as_str()) else {
            continue;
        };
        if protected(m) {
            continue;
        }
        let n = seen.entry((&e.deployment, &e.component)).or_default();
        if *n < i.keep_previous {
            *n += 1;
            out.kept_previous.insert(e.id.clone());
        }
    }
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for e in i.ledger {
        let id = e.id.as_str();
        let Some(m) = by_id.get(id) else { continue };
        if !done.insert(id) || protected(m) || out.kept_previous.contains(id) {
            continue;
        }
        let ours: BTreeSet<&str> = i
            .ledger
            .iter()
            .filter(|x| x.id == id)
            .flat_map(|x| x.refs.iter().map(String::as_str))
            .collect();
        if m.repo_tags.iter().any(|t| !ours.contains(t.as_str())) {
            continue;
        }
        out.remove.push(Removal {
            id: m.id.clone(),
            tags: m.repo_tags.clone(),
            bytes: m.size.saturating_sub(m.shared_size.unwrap_or(0)),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(id: &str, tags: &[&str], size: u64) -> LocalImage {
        LocalImage {
            id: id.into(),
            repo_tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            size,
            ..LocalImage::default()
        }
    }

    fn entry(comp: &str, id: &str, refs: &[&str]) -> Entry {
        Entry {
            deployment: "app".into(),
            component: comp.into(),
            id: id.into(),
            refs: refs.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    fn container(image: &str, image_id: &str) -> ContainerInfo {
        ContainerInfo {
            image: image.into(),
            image_id: image_id.into(),
            status: "exited".into(),
            ..ContainerInfo::default()
        }
    }

    struct Case {
        name: &'static str,
        images: Vec<LocalImage>,
        containers: Vec<ContainerInfo>,
        desired: Vec<&'static str>,
        desired_ids: Vec<&'static str>,
        ledger: Vec<Entry>,
        keep: usize,
        want: Vec<&'static str>,
    }

    fn run(c: &Case) -> Selection {
        let refs: BTreeSet<String> = c.desired.iter().map(|s| (*s).to_owned()).collect();
        let ids: BTreeSet<String> = c.desired_ids.iter().map(|s| (*s).to_owned()).collect();
        select(&Inputs {
            images: &c.images,
            containers: &c.containers,
            desired_refs: &refs,
            desired_ids: &ids,
            ledger: &c.ledger,
            keep_previous: c.keep,
        })
    }

    #[test]
    fn selection_table() {
        let three = || {
            vec![
                img("sha256:1", &["r/web:v1"], 100),
                img("sha256:2", &["r/web:v2"], 200),
                img("sha256:3", &["r/web:v3"], 300),
            ]
        };
        let ledger3 = || {
            vec![
                entry("web", "sha256:1", &["r/web:v1"]),
                entry("web", "sha256:2", &["r/web:v2"]),
                entry("web", "sha256:3", &["r/web:v3"]),
            ]
        };
        let cases = vec![
            Case {
                name: "v1 v2 v3, keep 1: v1 goes, v2 stays, v3 runs",
                images: three(),
                containers: vec![container("r/web:v3", "sha256:3")],
                desired: vec!["r/web:v3"],
                desired_ids: vec!["sha256:3"],
                ledger: ledger3(),
                keep: 1,
                want: vec!["sha256:1"],
            },
            Case {
                name: "keep 0: every previous version goes",
                images: three(),
                containers: vec![container("r/web:v3", "sha256:3")],
                desired: vec!["r/web:v3"],
                desired_ids: vec!["sha256:3"],
                ledger: ledger3(),
                keep: 0,
                want: vec!["sha256:1", "sha256:2"],
            },
            Case {
                name: "keep 2: nothing goes",
                images: three(),
                containers: vec![container("r/web:v3", "sha256:3")],
                desired: vec!["r/web:v3"],
                desired_ids: vec!["sha256:3"],
                ledger: ledger3(),
                keep: 2,
                want: vec![],
            },
            Case {
                name: "an image any container uses stays (stopped, unmanaged)",
                images: three(),
                containers: vec![
                    container("r/web:v3", "sha256:3"),
                    container("whatever", "sha256:1"),
                ],
                desired: vec!["r/web:v3"],
                desired_ids: vec!["sha256:3"],
                ledger: ledger3(),
                keep: 0,
                want: vec!["sha256:2"],
            },
            Case {
                name: "a container naming the image by tag protects it (no id known)",
                images: three(),
                containers: vec![container("r/web:v1", "")],
                desired: vec!["r/web:v3"],
                desired_ids: vec![],
                ledger: ledger3(),
                keep: 0,
                want: vec!["sha256:2"],
            },
            Case {
                name: "desired but not yet running: kept (by reference and by id)",
                images: three(),
                containers: vec![],
                desired: vec!["r/web:v2"],
                desired_ids: vec!["sha256:1"],
                ledger: ledger3(),
                keep: 0,
                want: vec!["sha256:3"],
            },
            Case {
                name: "an image the agent never pulled is never removed",
                images: vec![
                    img("sha256:1", &["r/web:v1"], 1),
                    img("sha256:8", &["mine:1"], 1),
                ],
                containers: vec![],
                desired: vec![],
                desired_ids: vec![],
                ledger: vec![entry("web", "sha256:1", &["r/web:v1"])],
                keep: 0,
                want: vec!["sha256:1"],
            },
            Case {
                name: "an image someone else tagged too is not ours alone",
                images: vec![img("sha256:1", &["r/web:v1", "backup:keep"], 1)],
                containers: vec![],
                desired: vec![],
                desired_ids: vec![],
                ledger: vec![entry("web", "sha256:1", &["r/web:v1"])],
                keep: 0,
                want: vec![],
            },
            Case {
                name: "a dangling image (its tag moved on) the agent pulled goes",
                images: vec![
                    img("sha256:1", &[], 1),
                    img("sha256:2", &["r/web:latest"], 1),
                ],
                containers: vec![container("r/web:latest", "sha256:2")],
                desired: vec!["r/web:latest"],
                desired_ids: vec!["sha256:2"],
                ledger: vec![
                    entry("web", "sha256:1", &["r/web:latest"]),
                    entry("web", "sha256:2", &["r/web:latest"]),
                ],
                keep: 0,
                want: vec!["sha256:1"],
            },
            Case {
                name: "previous versions are counted per component; shared images once",
                images: vec![
                    img("sha256:1", &["r/a:v1"], 1),
                    img("sha256:2", &["r/a:v2"], 1),
                    img("sha256:5", &["r/b:v1"], 1),
                ],
                containers: vec![container("r/a:v2", "sha256:2")],
                desired: vec!["r/a:v2"],
                desired_ids: vec!["sha256:2"],
                ledger: vec![
                    entry("a", "sha256:1", &["r/a:v1"]),
                    entry("b", "sha256:1", &["r/a:v1"]),
                    entry("b", "sha256:5", &["r/b:v1"]),
                    entry("a", "sha256:2", &["r/a:v2"]),
                ],
                keep: 1,
                // a keeps v1 as its previous; b (removed) keeps its latest, b:v1.
                want: vec![],
            },
            Case {
                name: "gone from the engine: nothing to do",
                images: vec![],
                containers: vec![],
                desired: vec![],
                desired_ids: vec![],
                ledger: ledger3(),
                keep: 0,
                want: vec![],
            },
        ];
        for c in &cases {
            let got: Vec<String> = run(c).remove.into_iter().map(|r| r.id).collect();
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn bytes_are_the_size_less_what_is_shared() {
        let mut m = img("sha256:1", &["r/web:v1", "r/web:old"], 1000);
        m.shared_size = Some(300);
        let s = select(&Inputs {
            images: &[m],
            containers: &[],
            desired_refs: &BTreeSet::new(),
            desired_ids: &BTreeSet::new(),
            ledger: &[entry("web", "sha256:1", &["r/web:v1", "r/web:old"])],
            keep_previous: 0,
        });
        assert_eq!(
            s.remove,
            vec![Removal {
                id: "sha256:1".into(),
                tags: vec!["r/web:v1".into(), "r/web:old".into()],
                bytes: 700
            }]
        );
    }
}
