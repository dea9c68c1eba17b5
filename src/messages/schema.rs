//! JSON Schema checks, one schema file per command in `schemas/` (the registry knows which),
//! compiled once at start.

use std::collections::HashMap;

use jsonschema::Validator;
use serde_json::Value;

use super::names::{CommandType, truncate};

/// The compiled command schemas, by routing key. Built once per worker and shared; checking
/// is read-only.
pub struct Schemas {
    validators: HashMap<&'static str, (CommandType, Validator)>,
}

impl Schemas {
    /// Compiles the schema of each type (the registry holds the sources). A broken schema is
    /// a build defect, so this panics.
    pub fn compile<'a>(sources: impl IntoIterator<Item = (CommandType, &'a str)>) -> Schemas {
        let validators = sources
            .into_iter()
            .map(|(t, source)| {
                let schema: Value = serde_json::from_str(source)
                    .unwrap_or_else(|e| panic!("schemas/{t}.json is not JSON: {e}"));
                // `format` is asserted (dates of the profile are `"format": "date"`).
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&schema)
                    .unwrap_or_else(|e| panic!("schemas/{t}.json is not a valid schema: {e}"));
                (t.as_str(), (t, validator))
            })
            .collect();
        Schemas { validators }
    }

    /// The type a routing key names, if it is one of ours.
    pub fn type_of(&self, routing_key: &str) -> Option<CommandType> {
        self.validators.get(routing_key).map(|(t, _)| *t)
    }

    /// `Err` lists each violation as `"<json pointer>: fails <keyword> (<schema pointer>)"`
    /// (at most 10): where and which rule, never the offending value, since these lines go
    /// to logs, dead-letter headers and `command.rejected`, and a value may be an email, a
    /// phone number or a secret sent by mistake.
    pub fn check(&self, command_type: CommandType, body: &Value) -> Result<(), Vec<String>> {
        let Some((_, validator)) = self.validators.get(command_type.as_str()) else {
            return Err(vec![format!("/: no schema for {command_type}")]);
        };
        let errors: Vec<String> = validator
            .iter_errors(body)
            .take(10)
            .map(|e| {
                let path = e.instance_path().to_string();
                let path = if path.is_empty() { "/".into() } else { path };
                let rule = e.schema_path().to_string();
                let keyword = rule.rsplit('/').next().unwrap_or_default();
                truncate(&format!("{path}: fails {keyword} ({rule})"), 300)
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
