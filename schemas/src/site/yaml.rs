//! YAML to JSON values, remembering the line of every field, within fixed bounds.
//!
//! The Git documents are YAML; their types are plain serde types. To name the line of a
//! problem found after parsing (a bad image reference, a dependency cycle), this module
//! parses YAML into [`serde_json::Value`]s with a map from field path
//! (`spec.components[0].image`, the format of `serde_path_to_error`) to its 1-based line.
//! Scalars resolve by the YAML 1.2 core schema (`no` is a string, not `false`).
//!
//! A commit is hostile input: the builder pulls parser events one at a time and builds
//! values with an explicit stack (no recursion a document can drive), refuses nesting deeper
//! than [`Limits::max_depth`] before building anything at that depth (so serde's recursive
//! deserialisation and `Value`'s drop stay shallow), and counts every produced node and
//! byte of text, aliases and merge keys (`<<`) included, against a per-file budget, so a
//! "billion laughs" file stops after a bounded amount of work and memory.

use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;
use yaml_rust2::Yaml;

/// Mapping keys longer than this are refused: no field of ours comes close, and keys are
/// copied into field paths.
const MAX_KEY_BYTES: usize = 1024;
/// Field paths longer than this get no line of their own (their nearest ancestor's is used).
const MAX_TRACKED_PATH: usize = 1024;
/// Total bytes of field paths remembered per file, for the same reason.
const MAX_LINE_INDEX_BYTES: usize = 4 * 1024 * 1024;

/// Bounds on one YAML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of sequences and mappings (the top-level mapping is depth 1).
    pub max_depth: usize,
    /// Nodes produced for the whole file, each alias counting the nodes it copies.
    pub max_nodes: usize,
    /// Bytes of scalar text produced for the whole file, aliases included.
    pub max_text_bytes: usize,
    /// Documents in the file.
    pub max_docs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_nodes: 100_000,
            max_text_bytes: 4 * 1024 * 1024,
            max_docs: 100,
        }
    }
}

/// One YAML document of a file.
#[derive(Debug)]
pub struct YamlDoc {
    /// The content.
    pub value: Value,
    /// Line of the document start.
    pub line: usize,
    lines: HashMap<String, usize>,
}

impl YamlDoc {
    /// The line of a field path, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return *line;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.line,
            }
        }
    }
}

/// A syntax error, or a limit exceeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses every document of a YAML stream with the default [`Limits`]. Empty documents
/// are skipped.
pub fn parse(src: &str) -> Result<Vec<YamlDoc>, YamlError> {
    parse_with(src, &Limits::default())
}

/// Parses every document of a YAML stream within `limits`. Empty documents are skipped.
pub fn parse_with(src: &str, limits: &Limits) -> Result<Vec<YamlDoc>, YamlError> {
    let mut parser = Parser::new_from_str(src);
    let mut b = Builder::new(*limits);
    let mut docs = Vec::new();
    let mut seen_docs = 0usize;
    let mut doc_line = 1;
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| YamlError {
            line: e.marker().line(),
            message: e.info().to_owned(),
        })?;
        let line = mark.line();
        match ev {
            Event::StreamStart | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart => {
                seen_docs += 1;
                if seen_docs > limits.max_docs {
                    return Err(YamlError {
                        line,
                        message: format!(
                            "more than {} documents in one file (limit max_docs_per_file)",
                            limits.max_docs
                        ),
                    });
                }
                doc_line = line;
                b.start_document();
            }
            Event::DocumentEnd => {
                let (value, lines) = b.end_document();
                if !value.is_null() {
                    docs.push(YamlDoc {
                        value,
                        line: doc_line,
                        lines,
                    });
                }
            }
            other => b.event(other, line)?,
        }
    }
    Ok(docs)
}

/// A key read in a mapping, waiting for its value.
struct PendingKey {
    name: String,
    /// `<<`: the value is merged into the mapping rather than stored under a key.
    merge: bool,
}

enum Collection {
    Seq(Vec<Value>),
    Map {
        map: Map<String, Value>,
        key: Option<PendingKey>,
        /// Mappings named by `<<`, in order: earlier ones win, explicit keys win over all.
        merges: Vec<Map<String, Value>>,
    },
}

struct Frame {
    items: Collection,
    anchor: usize,
    /// Field path of this collection (`None`: too long or over budget to remember).
    path: Option<String>,
    /// Counters when the collection started: what an alias of it costs.
    nodes_at_start: usize,
    text_at_start: usize,
}

/// An anchored value and what a copy of it costs.
struct Anchored {
    value: Value,
    nodes: usize,
    text: usize,
}

struct Builder {
    limits: Limits,
    stack: Vec<Frame>,
    root: Option<Value>,
    anchors: HashMap<usize, Anchored>,
    lines: HashMap<String, usize>,
    line_bytes: usize,
    nodes: usize,
    text: usize,
}

impl Builder {
    fn new(limits: Limits) -> Self {
        Builder {
            limits,
            stack: Vec::new(),
            root: None,
            anchors: HashMap::new(),
            lines: HashMap::new(),
            line_bytes: 0,
            nodes: 0,
            text: 0,
        }
    }

    fn start_document(&mut self) {
        self.stack.clear();
        self.root = None;
        self.lines.clear();
        self.line_bytes = 0;
    }

    fn end_document(&mut self) -> (Value, HashMap<String, usize>) {
        self.stack.clear();
        (
            self.root.take().unwrap_or(Value::Null),
            std::mem::take(&mut self.lines),
        )
    }

    /// Counts `nodes` nodes and `text` bytes of produced text against the file's budget.
    fn spend(&mut self, nodes: usize, text: usize, line: usize) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.text = self.text.saturating_add(text);
        if self.nodes > self.limits.max_nodes {
            return Err(YamlError {
                line,
                message: format!(
                    "the file expands to more than {} YAML nodes, aliases included (limit max_yaml_nodes)",
                    self.limits.max_nodes
                ),
            });
        }
        if self.text > self.limits.max_text_bytes {
            return Err(YamlError {
                line,
                message: format!(
                    "the file expands to more than {} bytes of text, aliases included (limit max_yaml_text_bytes)",
                    self.limits.max_text_bytes
                ),
            });
        }
        Ok(())
    }

    fn remember_line(&mut self, path: &str, line: usize) {
        if self.line_bytes + path.len() > MAX_LINE_INDEX_BYTES {
            return;
        }
        if !self.lines.contains_key(path) {
            self.line_bytes += path.len();
            self.lines.insert(path.to_owned(), line);
        }
    }

    /// The path of the node about to be added to the innermost collection (or the root).
    fn child_path(&self) -> Option<String> {
        let Some(top) = self.stack.last() else {
            return Some(String::new());
        };
        let parent = top.path.as_deref()?;
        let (len, key) = match &top.items {
            Collection::Seq(_) => (parent.len() + 8, None),
            Collection::Map { key: Some(k), .. } => (parent.len() + 1 + k.name.len(), Some(k)),
            Collection::Map { key: None, .. } => return None,
        };
        if len > MAX_TRACKED_PATH || self.line_bytes >= MAX_LINE_INDEX_BYTES {
            return None;
        }
        Some(match (&top.items, key) {
            (Collection::Seq(items), _) => format!("{parent}[{}]", items.len()),
            (_, Some(k)) if parent.is_empty() => k.name.clone(),
            (_, Some(k)) => format!("{parent}.{}", k.name),
            _ => return None,
        })
    }

    /// Remembers the line of a sequence item or document root about to start (a mapping
    /// value's line is remembered with its key).
    fn note_item_line(&mut self, line: usize) {
        let item = matches!(
            self.stack.last().map(|f| &f.items),
            None | Some(Collection::Seq(_))
        );
        if item {
            if let Some(path) = self.child_path() {
                self.remember_line(&path, line);
            }
        }
    }

    /// Whether the innermost collection is a mapping waiting for a key.
    fn expects_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                items: Collection::Map { key: None, .. },
                ..
            })
        )
    }

    fn event(&mut self, ev: Event, line: usize) -> Result<(), YamlError> {
        let err = |message: String| YamlError { line, message };
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                self.spend(1, text.len(), line)?;
                let value = scalar(&text, style);
                let merge = style == TScalarStyle::Plain && text == "<<";
                if anchor != 0 {
                    self.anchor(anchor, value.clone(), 1, text.len(), line)?;
                }
                if self.expects_key() {
                    return self.key(value, merge, line);
                }
                self.note_item_line(line);
                self.complete(value, line)
            }
            Event::Alias(id) => {
                let Some(a) = self.anchors.get(&id) else {
                    return Err(err("unknown alias".into()));
                };
                let (nodes, text) = (a.nodes, a.text);
                // Spend before copying: the budget bounds what a copy may cost.
                self.spend(nodes, text, line)?;
                let value = self
                    .anchors
                    .get(&id)
                    .map(|a| a.value.clone())
                    .unwrap_or(Value::Null);
                if self.expects_key() {
                    return self.key(value, false, line);
                }
                self.complete(value, line)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.expects_key() {
                    return Err(err(
                        "a sequence or mapping as a mapping key is not supported".into(),
                    ));
                }
                if self.stack.len() >= self.limits.max_depth {
                    return Err(err(format!(
                        "nesting deeper than {} levels (limit max_yaml_depth)",
                        self.limits.max_depth
                    )));
                }
                self.note_item_line(line);
                let path = self.child_path();
                let (nodes_at_start, text_at_start) = (self.nodes, self.text);
                self.spend(1, 0, line)?;
                let items = if matches!(ev, Event::SequenceStart(..)) {
                    Collection::Seq(Vec::new())
                } else {
                    Collection::Map {
                        map: Map::new(),
                        key: None,
                        merges: Vec::new(),
                    }
                };
                self.stack.push(Frame {
                    items,
                    anchor,
                    path,
                    nodes_at_start,
                    text_at_start,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Err(err("unbalanced end of collection".into()));
                };
                let value = match frame.items {
                    Collection::Seq(items) => Value::Array(items),
                    Collection::Map {
                        mut map, merges, ..
                    } => {
                        for merged in merges {
                            for (k, v) in merged {
                                map.entry(k).or_insert(v);
                            }
                        }
                        Value::Object(map)
                    }
                };
                if frame.anchor != 0 {
                    let nodes = self.nodes - frame.nodes_at_start;
                    let text = self.text - frame.text_at_start;
                    self.anchor(frame.anchor, value.clone(), nodes, text, line)?;
                }
                self.complete(value, line)
            }
            other => Err(err(format!("unexpected YAML event {other:?}"))),
        }
    }

    /// Remembers an anchored value; the copy kept is paid for like an alias.
    fn anchor(
        &mut self,
        id: usize,
        value: Value,
        nodes: usize,
        text: usize,
        line: usize,
    ) -> Result<(), YamlError> {
        self.spend(nodes, text, line)?;
        self.anchors.insert(id, Anchored { value, nodes, text });
        Ok(())
    }

    /// A scalar or alias read where a mapping expects its key.
    fn key(&mut self, value: Value, merge: bool, line: usize) -> Result<(), YamlError> {
        let name = match value {
            Value::String(s) => s,
            Value::Null => "null".to_owned(),
            Value::Array(_) | Value::Object(_) => {
                return Err(YamlError {
                    line,
                    message: "a sequence or mapping as a mapping key is not supported".into(),
                })
            }
            other => other.to_string(),
        };
        if name.len() > MAX_KEY_BYTES {
            return Err(YamlError {
                line,
                message: format!(
                    "a mapping key of {} bytes (at most {MAX_KEY_BYTES})",
                    name.len()
                ),
            });
        }
        // A mapping value's line is its key's line.
        let child = match self.stack.last().and_then(|f| f.path.as_deref()) {
            Some(parent) if !merge && parent.len() + 1 + name.len() <= MAX_TRACKED_PATH => {
                Some(if parent.is_empty() {
                    name.clone()
                } else {
                    format!("{parent}.{name}")
                })
            }
            _ => None,
        };
        let Some(Frame {
            items: Collection::Map { map, key, .. },
            ..
        }) = self.stack.last_mut()
        else {
            return Ok(());
        };
        if !merge && map.contains_key(&name) {
            return Err(YamlError {
                line,
                message: format!("duplicate key `{}`", crate::names::shorten(&name, 64)),
            });
        }
        *key = Some(PendingKey { name, merge });
        if let Some(child) = child {
            self.remember_line(&child, line);
        }
        Ok(())
    }

    /// Adds a finished value to the innermost collection, or makes it the document root.
    fn complete(&mut self, value: Value, line: usize) -> Result<(), YamlError> {
        let Some(top) = self.stack.last_mut() else {
            self.root = Some(value);
            return Ok(());
        };
        match &mut top.items {
            Collection::Seq(items) => items.push(value),
            Collection::Map { map, key, merges } => {
                let Some(k) = key.take() else {
                    return Err(YamlError {
                        line,
                        message: "mapping value without a key".into(),
                    });
                };
                if k.merge {
                    match value {
                        Value::Object(m) => merges.push(m),
                        Value::Array(list) if list.iter().all(Value::is_object) => {
                            for item in list {
                                if let Value::Object(m) = item {
                                    merges.push(m);
                                }
                            }
                        }
                        _ => {
                            return Err(YamlError {
                                line,
                                message: "`<<` merges a mapping or a list of mappings".into(),
                            })
                        }
                    }
                } else {
                    map.insert(k.name, value);
                }
            }
        }
        Ok(())
    }
}

fn scalar(text: &str, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text.to_owned());
    }
    match Yaml::from_str(text) {
        Yaml::Integer(i) => Value::Number(Number::from(i)),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(text.to_owned()), Value::Number),
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Null => Value::Null,
        _ => Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_lines() {
        let src = "a: 1\nb:\n  c: [x, 'y']\n  d:\n    - e: no\n      f: true\n---\n---\ng: ~\n";
        let docs = parse(src).expect("parse");
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0].value,
            serde_json::json!({"a": 1, "b": {"c": ["x", "y"], "d": [{"e": "no", "f": true}]}})
        );
        assert_eq!(docs[0].line_of("a"), 1);
        assert_eq!(docs[0].line_of("b.c[1]"), 3);
        assert_eq!(docs[0].line_of("b.d[0].f"), 6);
        assert_eq!(docs[0].line_of("b.d[0].f.missing"), 6);
        assert_eq!(docs[1].line_of("g"), 9);
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_name_the_line() {
        let err = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(err.line, 3);
        assert!(err.message.contains("duplicate key `a`"));
        let err = parse("a: [1, 2\nb: 3\n").expect_err("syntax");
        assert!(err.line >= 2, "{err:?}");
    }

    #[test]
    fn anchors_and_aliases_resolve() {
        let docs = parse("x: &e {A: 1}\ny: *e\n").expect("parse");
        assert_eq!(docs[0].value["y"], serde_json::json!({"A": 1}));
    }

    fn laughs(levels: usize) -> String {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..levels {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        s
    }

    #[test]
    fn billion_laughs_stops_at_the_node_budget() {
        let started = std::time::Instant::now();
        let err = parse(&laughs(10)).expect_err("budget");
        assert!(err.message.contains("max_yaml_nodes"), "{err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // A few levels stay within the budget and resolve.
        let docs = parse(&laughs(3)).expect("small");
        assert_eq!(docs[0].value["a2"][8][8][8], "x");
    }

    #[test]
    fn huge_scalar_aliased_many_times_stops_at_the_text_budget() {
        let big = "y".repeat(512 * 1024);
        let src = format!("a: &a {big}\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n");
        let err = parse(&src).expect_err("text budget");
        assert!(err.message.contains("max_yaml_text_bytes"), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused_before_building() {
        let flow = format!("{}{}", "[".repeat(70), "]".repeat(70));
        let err = parse(&flow).expect_err("deep flow");
        assert!(err.message.contains("max_yaml_depth"), "{err:?}");
        assert_eq!(err.line, 1);
        // Far deeper: the parser's own recursion limit or ours, an error either way.
        let flow = format!("{}{}", "[{a: ".repeat(100_000), "}]".repeat(100_000));
        assert_eq!(parse(&flow).expect_err("very deep").line, 1);
        let mut block = String::new();
        for i in 0..200 {
            block.push_str(&" ".repeat(i));
            block.push_str("k:\n");
        }
        let err = parse(&block).expect_err("deep block");
        assert_eq!(err.line, 65, "{err:?}");
        // 64 levels are fine.
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        parse(&ok).expect("64 levels");
    }

    #[test]
    fn too_many_documents_in_a_file_are_refused() {
        let src = "a: 1\n---\n".repeat(101);
        let err = parse(&src).expect_err("docs");
        assert!(err.message.contains("max_docs_per_file"), "{err:?}");
        let hundred = format!("{}a: 1\n", "a: 1\n---\n".repeat(99));
        assert_eq!(parse(&hundred).expect("100").len(), 100);
    }

    #[test]
    fn merge_keys_merge_with_explicit_keys_winning() {
        let src = "base: &b {image: x, restart: always, env: {A: 1}}\nother: &o {restart: no, ports: [80]}\nc:\n  <<: [*b, *o]\n  restart: on-failure\nd:\n  name: n\n  <<: *b\n";
        let docs = parse(src).expect("merge");
        let c = &docs[0].value["c"];
        assert_eq!(c["image"], "x");
        assert_eq!(c["restart"], "on-failure");
        assert_eq!(c["ports"], serde_json::json!([80]));
        assert_eq!(c["env"]["A"], 1);
        assert!(c.get("<<").is_none());
        assert_eq!(docs[0].value["d"]["restart"], "always");
        assert_eq!(docs[0].line_of("c.restart"), 5);
        let err = parse("a:\n  <<: 3\n").expect_err("merge of a scalar");
        assert!(err.message.contains("`<<`"), "{err:?}");
        // A quoted `<<` is an ordinary key.
        let docs = parse("a: {'<<': 1}\n").expect("quoted");
        assert_eq!(docs[0].value["a"]["<<"], 1);
    }

    #[test]
    fn long_keys_and_complex_keys_are_refused() {
        let src = format!("? {}\n: 1\n", "k".repeat(2000));
        let err = parse(&src).expect_err("long key");
        assert!(err.message.contains("mapping key"), "{err:?}");
        assert!(parse("? [a]\n: 1\n").is_err());
    }
}
