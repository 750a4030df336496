//! A Deployment's resolution: its targets, its failure policy (with the Site's as
//! fallback), its components and their `dependsOn` graph.

use super::component::{resolve_component, ComponentSpec};
use super::context::Ctx;
use super::parse::parse_duration;
use super::rollout::{resolve_rollout, RolloutSpec};
use super::security::SecuritySpec;
use super::{Deployment, PolicySpec, ResolvedDeployment, Targets};
use crate::component::Component;
use crate::logging::Logging;
use crate::names::validate_name;
use crate::wire::{DocProblem, FailurePolicy};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn resolve_policy(
    ctx: &Ctx<'_>,
    at: &str,
    spec: &PolicySpec,
    fallback: &[&PolicySpec],
    problems: &mut Vec<DocProblem>,
) -> FailurePolicy {
    let default = FailurePolicy::default();
    let attempts = spec
        .attempts
        .or_else(|| fallback.iter().find_map(|p| p.attempts))
        .unwrap_or(default.attempts);
    if !(1..=100).contains(&attempts) {
        ctx.problem(
            problems,
            &format!("{at}.attempts"),
            format!("attempts must be 1 to 100, not {attempts}"),
        );
    }
    let backoff_ms = match spec
        .backoff
        .as_ref()
        .or_else(|| fallback.iter().find_map(|p| p.backoff.as_ref()))
    {
        Some(text) => match parse_duration(text) {
            Ok(d) if d.as_millis() <= u128::from(crate::bounds::MAX_BACKOFF_MS) => {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            }
            Ok(_) => {
                ctx.problem(
                    problems,
                    &format!("{at}.backoff"),
                    format!(
                        "backoff `{}` is above the maximum of 1h",
                        crate::shorten(text, 32)
                    ),
                );
                default.backoff_ms
            }
            Err(e) => {
                ctx.problem(problems, &format!("{at}.backoff"), e.to_string());
                default.backoff_ms
            }
        },
        None => default.backoff_ms,
    };
    FailurePolicy {
        attempts,
        backoff_ms,
        on_failure: spec
            .on_failure
            .or_else(|| fallback.iter().find_map(|p| p.on_failure))
            .unwrap_or(default.on_failure),
    }
}

pub(super) fn resolve_deployment(
    ctx: &Ctx<'_>,
    d: &Deployment,
    site_policy: &PolicySpec,
    site_rollout: Option<&RolloutSpec>,
    security: &SecuritySpec,
    site_logging: Option<&Logging>,
    problems: &mut Vec<DocProblem>,
) -> Option<ResolvedDeployment> {
    let before = problems.len();
    ctx.name_ok(&d.metadata.name, problems);
    let spec = &d.spec;
    let targets = match (&spec.nodes, &spec.node_selector) {
        (Some(_), Some(_)) => {
            ctx.problem(
                problems,
                "spec.nodeSelector",
                "use either `nodes` or `nodeSelector`, not both".into(),
            );
            Targets::All
        }
        (Some(nodes), None) => {
            let mut set = BTreeSet::new();
            for (i, n) in nodes.iter().enumerate() {
                if let Err(e) = validate_name(n) {
                    ctx.problem(problems, &format!("spec.nodes[{i}]"), e.to_string());
                }
                if !set.insert(n.clone()) {
                    ctx.problem(
                        problems,
                        &format!("spec.nodes[{i}]"),
                        format!("node `{n}` is listed twice"),
                    );
                }
            }
            Targets::Nodes(set)
        }
        (None, Some(sel)) => Targets::Selector(sel.clone()),
        (None, None) => Targets::All,
    };
    let policy = resolve_policy(
        ctx,
        "spec.policy",
        spec.policy.as_ref().unwrap_or(&PolicySpec::default()),
        &[site_policy],
        problems,
    );
    let rollout = resolve_rollout(
        ctx,
        "spec.rollout",
        spec.rollout.as_ref(),
        site_rollout,
        problems,
    );
    if spec.components.is_empty() {
        ctx.problem(
            problems,
            "spec.components",
            "a deployment needs at least one component".into(),
        );
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut components = Vec::new();
    for (i, c) in spec.components.iter().enumerate() {
        let at = format!("spec.components[{i}]");
        if let Err(e) = validate_name(&c.name) {
            ctx.problem(problems, &format!("{at}.name"), e.to_string());
        }
        if let Some(first) = names.insert(&c.name, i) {
            ctx.problem(
                problems,
                &format!("{at}.name"),
                format!(
                    "duplicate component name `{}` (also spec.components[{first}])",
                    c.name
                ),
            );
        }
        components.push(resolve_component(
            ctx,
            &at,
            c,
            security,
            site_logging,
            problems,
        ));
    }
    // dependsOn: known names, no self-reference, no cycle.
    for (i, c) in spec.components.iter().enumerate() {
        for (j, dep) in c.depends_on.iter().enumerate() {
            let field = format!("spec.components[{i}].dependsOn[{j}]");
            if dep == &c.name {
                ctx.problem(problems, &field, format!("`{dep}` depends on itself"));
            } else if !names.contains_key(dep.as_str()) {
                ctx.problem(
                    problems,
                    &field,
                    format!("`{dep}` is not a component of this deployment"),
                );
            }
        }
    }
    if let Some(cycle) = find_cycle(&spec.components) {
        let i = names.get(cycle[0].as_str()).copied().unwrap_or(0);
        ctx.problem(
            problems,
            &format!("spec.components[{i}].dependsOn"),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
    }
    (problems.len() == before).then(|| ResolvedDeployment {
        name: d.metadata.name.clone(),
        file: ctx.file.to_owned(),
        targets,
        policy,
        rollout,
        components: components.into_iter().map(Component::with_hash).collect(),
    })
}

/// A cycle in `dependsOn`, as the list of names around it (first repeated at the end).
fn find_cycle(components: &[ComponentSpec]) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, &[String]> = components
        .iter()
        .map(|c| (c.name.as_str(), c.depends_on.as_slice()))
        .collect();
    // 1 = on the path, 2 = done. Depth-first with an explicit path: a commit can chain
    // thousands of components, which must not become thousands of stack frames.
    let mut mark: BTreeMap<&str, u8> = BTreeMap::new();
    for c in components {
        if mark.contains_key(c.name.as_str()) {
            continue;
        }
        mark.insert(&c.name, 1);
        // (component, index of the next dependency to look at)
        let mut path: Vec<(&str, usize)> = vec![(&c.name, 0)];
        while let Some(&(n, i)) = path.last() {
            let ds = deps.get(n).copied().unwrap_or(&[]);
            let Some(d) = ds.get(i).map(String::as_str) else {
                mark.insert(n, 2);
                path.pop();
                continue;
            };
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            if d == n || !deps.contains_key(d) {
                continue;
            }
            match mark.get(d) {
                Some(2) => {}
                Some(_) => {
                    let start = path.iter().position(|(s, _)| *s == d).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|(s, _)| (*s).to_owned()).collect();
                    cycle.push(d.to_owned());
                    return Some(cycle);
                }
                None => {
                    mark.insert(d, 1);
                    path.push((d, 0));
                }
            }
        }
    }
    None
}
