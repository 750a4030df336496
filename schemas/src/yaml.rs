//! YAML to JSON values, remembering the line of every field.
//!
//! The Git documents are YAML; their types are plain serde types. To name the line of a
//! problem found after parsing (a bad image reference, a dependency cycle), this module
//! parses YAML into [`serde_json::Value`]s with a map from field path
//! (`spec.components[0].image`, the format of `serde_path_to_error`) to its 1-based line.
//! Scalars resolve by the YAML 1.2 core schema (`no` is a string, not `false`).

use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

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

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Default)]
struct Collector {
    events: Vec<(Event, Marker)>,
}

impl MarkedEventReceiver for Collector {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.events.push((ev, mark));
    }
}

/// Parses every document of a YAML stream. Empty documents are skipped.
pub fn parse(src: &str) -> Result<Vec<YamlDoc>, YamlError> {
    let mut collector = Collector::default();
    Parser::new_from_str(src)
        .load(&mut collector, true)
        .map_err(|e| YamlError {
            line: e.marker().line(),
            message: e.info().to_owned(),
        })?;
    let mut builder = Builder {
        events: collector.events,
        pos: 0,
        anchors: HashMap::new(),
        lines: HashMap::new(),
    };
    let mut docs = Vec::new();
    while let Some((ev, mark)) = builder.next() {
        if ev == Event::DocumentStart {
            builder.lines.clear();
            let line = mark.line();
            let value = match builder.peek() {
                Some(Event::DocumentEnd) | None => Value::Null,
                _ => builder.value(String::new())?,
            };
            if !value.is_null() {
                docs.push(YamlDoc {
                    value,
                    line,
                    lines: std::mem::take(&mut builder.lines),
                });
            }
        }
    }
    Ok(docs)
}

struct Builder {
    events: Vec<(Event, Marker)>,
    pos: usize,
    anchors: HashMap<usize, Value>,
    lines: HashMap<String, usize>,
}

impl Builder {
    fn next(&mut self) -> Option<(Event, Marker)> {
        let item = self.events.get(self.pos).cloned();
        self.pos += 1;
        item
    }

    fn peek(&self) -> Option<&Event> {
        self.events.get(self.pos).map(|(e, _)| e)
    }

    fn value(&mut self, path: String) -> Result<Value, YamlError> {
        let Some((ev, mark)) = self.next() else {
            return Err(YamlError {
                line: 0,
                message: "unexpected end of document".into(),
            });
        };
        self.lines.entry(path.clone()).or_insert(mark.line());
        let (value, anchor) = match ev {
            Event::Scalar(text, style, anchor, _tag) => (scalar(&text, style), anchor),
            Event::Alias(id) => {
                let v = self.anchors.get(&id).cloned().ok_or(YamlError {
                    line: mark.line(),
                    message: "unknown alias".into(),
                })?;
                (v, 0)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                while self.peek() != Some(&Event::SequenceEnd) {
                    let child = format!("{path}[{}]", items.len());
                    items.push(self.value(child)?);
                }
                self.pos += 1;
                (Value::Array(items), anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut map = Map::new();
                while self.peek() != Some(&Event::MappingEnd) {
                    let key_line = self.events.get(self.pos).map_or(0, |(_, m)| m.line());
                    let key = match self.value(format!("{path}.\u{0}"))? {
                        Value::String(s) => s,
                        Value::Null => "null".to_owned(),
                        other => other.to_string(),
                    };
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if map.contains_key(&key) {
                        return Err(YamlError {
                            line: key_line,
                            message: format!("duplicate key `{key}`"),
                        });
                    }
                    self.lines.insert(child.clone(), key_line);
                    let v = self.value(child)?;
                    map.insert(key, v);
                }
                self.pos += 1;
                (Value::Object(map), anchor)
            }
            other => {
                return Err(YamlError {
                    line: mark.line(),
                    message: format!("unexpected YAML event {other:?}"),
                })
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        Ok(value)
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
}
