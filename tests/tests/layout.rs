//! The shape of the code, checked: no import cycle between the modules of a crate, and no
//! hand-written source file so long that a newcomer cannot hold it.
//!
//! A module `a` depends on `b` when a file of `a` names `crate::b…` (in a `use` or a path)
//! or reaches it through `super::`. Dependencies are compared at each level of the tree:
//! the top-level modules of a crate, then the children of each folder module. A module and
//! its own ancestors do not count (a parent declares and re-exports its children; a child
//! uses its parent's items). Comments and the trailing `#[cfg(test)] mod tests` block do
//! not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Most lines in one hand-written source file.
const MAX_LINES: usize = 800;

/// Crates of the workspace whose `src/` is checked for cycles.
const CRATES: &[&str] = &[
    "schemas", "lo", "en-agent", "broker", "tests", "bench", "edge-io",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/` of a library (`None`: a crate root or a binary).
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" if parts.is_empty() => Some(Vec::new()),
        "main.rs" if parts.is_empty() => None,
        "mod.rs" => Some(parts),
        other => {
            parts.push(other.trim_end_matches(".rs").to_owned());
            Some(parts)
        }
    }
}

/// The code of a file without comments and without its trailing unit-test block.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            if let Some((_, next)) = lines.peek() {
                if next.trim_start().starts_with("mod tests") {
                    break;
                }
            }
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            // A `//` inside a string (a URL) is rare in paths we look for; keep it simple.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        out.push((i + 1, code.to_owned()));
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts at `prefix` (`crate::` or `super::`) in `code`, as segment lists;
/// `use crate::{a::b, c}` gives `[a, b]` and `[c]`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before_ok = rest[..at].chars().next_back().is_none_or(|c| !is_ident(c));
        let tail = &rest[at + prefix.len()..];
        rest = tail;
        if !before_ok {
            continue;
        }
        if prefix == "super::" {
            // `super::super::x` is rare; count it as the parent's parent.
            let mut ups = 1;
            let mut t = tail;
            while let Some(s) = t.strip_prefix("super::") {
                ups += 1;
                t = s;
            }
            for p in group_paths(t) {
                let mut v = vec!["super".to_owned(); ups];
                v.extend(p);
                out.push(v);
            }
        } else {
            out.extend(group_paths(tail));
        }
    }
    out
}

/// The paths at the start of `t`: one plain path, or every item of a `{…}` group.
fn group_paths(t: &str) -> Vec<Vec<String>> {
    if let Some(inner) = t.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut cur = String::new();
        for c in inner.chars() {
            match c {
                '{' => {
                    depth += 1;
                    cur.push(c);
                }
                '}' if depth == 0 => break,
                '}' => {
                    depth -= 1;
                    cur.push(c);
                }
                ',' if depth == 0 => items.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        items.push(cur);
        return items
            .iter()
            .map(|i| segments(i.trim()))
            .filter(|s| !s.is_empty())
            .collect();
    }
    vec![segments(t)]
}

fn segments(t: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut rest = t;
    loop {
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segs.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    segs
}

#[derive(Debug, Default)]
struct Graph {
    modules: BTreeSet<Vec<String>>,
    /// (from module, to module) → where (file:line).
    edges: BTreeMap<(Vec<String>, Vec<String>), String>,
}

fn crate_graph(root: &Path) -> Graph {
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g = Graph::default();
    let mut texts = Vec::new();
    for f in files {
        if let Some(m) = module_of(&src, &f) {
            g.modules.insert(m.clone());
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            texts.push((f, m, text));
        }
    }
    for (file, m, text) in &texts {
        for (line, code) in code_lines(text) {
            let mut targets = paths_after(&code, "crate::");
            for p in paths_after(&code, "super::") {
                let ups = p.iter().take_while(|s| *s == "super").count();
                if ups > m.len() {
                    continue;
                }
                let mut abs = m[..m.len() - ups].to_vec();
                abs.extend(p[ups..].iter().cloned());
                targets.push(abs);
            }
            for t in targets {
                // The deepest module the path names.
                let mut target = t.clone();
                while !target.is_empty() && !g.modules.contains(&target) {
                    target.pop();
                }
                let related = target.starts_with(m) || m.starts_with(&target);
                if !related {
                    g.edges
                        .entry((m.clone(), target))
                        .or_insert_with(|| format!("{}:{line}", file.display()));
                }
            }
        }
    }
    g
}

/// The strongly connected groups of more than one node (Tarjan).
fn cycles(nodes: &BTreeSet<String>, edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    struct St<'a> {
        edges: &'a BTreeSet<(String, String)>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit(s: &mut St<'_>, v: &str) {
        s.index.insert(v.to_owned(), s.next);
        s.low.insert(v.to_owned(), s.next);
        s.next += 1;
        s.stack.push(v.to_owned());
        s.on.insert(v.to_owned());
        let succ: Vec<String> = s
            .edges
            .iter()
            .filter(|(a, _)| a == v)
            .map(|(_, b)| b.clone())
            .collect();
        for w in succ {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let lw = s.low[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(&w);
                let done = w == v;
                group.push(w);
                if done {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.out.push(group);
            }
        }
    }
    let mut s = St {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for n in nodes {
        if !s.index.contains_key(n) {
            visit(&mut s, n);
        }
    }
    s.out
}

/// Cycles among the children of every module of `g`, as readable lines.
fn module_cycles(name: &str, g: &Graph) -> Vec<String> {
    let mut found = Vec::new();
    for parent in &g.modules {
        let depth = parent.len() + 1;
        let child_of = |m: &Vec<String>| -> Option<String> {
            (m.len() >= depth && m.starts_with(parent)).then(|| m[depth - 1].clone())
        };
        let nodes: BTreeSet<String> = g.modules.iter().filter_map(child_of).collect();
        let mut edges = BTreeSet::new();
        let mut at = BTreeMap::new();
        for ((from, to), place) in &g.edges {
            if let (Some(a), Some(b)) = (child_of(from), child_of(to)) {
                if a != b {
                    at.entry((a.clone(), b.clone())).or_insert(place.clone());
                    edges.insert((a, b));
                }
            }
        }
        for group in cycles(&nodes, &edges) {
            let via: Vec<String> = at
                .iter()
                .filter(|((a, b), _)| group.contains(a) && group.contains(b))
                .map(|((a, b), p)| format!("{a} → {b} ({p})"))
                .collect();
            found.push(format!(
                "{name}: cycle between modules {{{}}} under `{}`: {}",
                group.join(", "),
                if parent.is_empty() {
                    "crate".to_owned()
                } else {
                    parent.join("::")
                },
                via.join("; ")
            ));
        }
    }
    found
}

#[test]
fn no_import_cycle_between_the_modules_of_a_crate() {
    let ws = workspace();
    let mut found = Vec::new();
    let mut checked = 0;
    for name in CRATES {
        let root = ws.join(name);
        if !root.join("src").is_dir() {
            continue;
        }
        let g = crate_graph(&root);
        checked += g.modules.len();
        found.extend(module_cycles(name, &g));
    }
    assert!(
        checked > 20,
        "only {checked} modules found: is the layout walk broken?"
    );
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    // Guards the check itself: a two-module cycle, a grouped `use`, and `super::` paths.
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("c")).expect("mkdir");
    let write = |p: &str, t: &str| std::fs::write(src.join(p), t).expect("write");
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");
    write("a.rs", "use crate::{b::Thing, c};\n");
    write(
        "b.rs",
        "// crate::a in a comment does not count\npub struct Thing;\n",
    );
    write("c/mod.rs", "pub mod x;\npub mod y;\npub use x::X;\n");
    write("c/x.rs", "use super::y::Y;\npub struct X;\n");
    write(
        "c/y.rs",
        "pub struct Y;\n#[cfg(test)]\nmod tests {\n use crate::c::x::X;\n}\n",
    );
    let g = crate_graph(dir.path());
    assert!(module_cycles("t", &g).is_empty(), "{:?}", g.edges);
    write("b.rs", "pub struct Thing;\nfn f() { crate::a::g() }\n");
    write("c/y.rs", "pub struct Y;\nuse super::x::X;\n");
    let g = crate_graph(dir.path());
    let found = module_cycles("t", &g);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|f| f.contains("{a, b} under `crate`")));
    assert!(found.iter().any(|f| f.contains("{x, y} under `c`")));
}

#[test]
fn no_source_file_is_too_long_to_read() {
    let ws = workspace();
    let mut files = Vec::new();
    for name in CRATES {
        rust_files(&ws.join(name), &mut files);
    }
    assert!(files.len() > 50, "only {} files found", files.len());
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "split these by concern (at most {MAX_LINES} lines a file):\n{}",
        long.join("\n")
    );
}
