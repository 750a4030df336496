//! The document being checked: a file and one of its YAML documents. Every problem is
//! reported through it, with the file, the line of the field and the field.

use super::yaml;
use crate::names::validate_name;
use crate::wire::DocProblem;
use serde::de::DeserializeOwned;

pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) doc: &'a yaml::YamlDoc,
}

impl Ctx<'_> {
    pub(super) fn problem(&self, problems: &mut Vec<DocProblem>, field: &str, message: String) {
        problems.push(DocProblem {
            file: self.file.to_owned(),
            line: Some(self.doc.line_of(field)),
            field: Some(field.to_owned()),
            message,
        });
    }

    pub(super) fn parse<T: DeserializeOwned>(&self, problems: &mut Vec<DocProblem>) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(self.doc.value.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut field = e.path().to_string();
                let message = e.inner().to_string();
                // Name an unknown field itself, whether or not the path already ends with it.
                if let Some(unknown) = message
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                {
                    if field == "." {
                        field = unknown.to_owned();
                    } else if !field.ends_with(unknown) {
                        field = format!("{field}.{unknown}");
                    }
                }
                let message = if message.starts_with("data did not match any variant") {
                    format!("unsupported value shape: {message}")
                } else {
                    message
                };
                self.problem(problems, &field, message);
                None
            }
        }
    }

    pub(super) fn name_ok(&self, name: &str, problems: &mut Vec<DocProblem>) -> bool {
        match validate_name(name) {
            Ok(()) => true,
            Err(e) => {
                self.problem(problems, "metadata.name", e.to_string());
                false
            }
        }
    }
}
