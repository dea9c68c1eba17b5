//! JSON Schema checks, one schema file per command in `schemas/`, compiled once at start.

use std::collections::HashMap;

use jsonschema::Validator;
use serde_json::Value;

use super::command::{CommandType, truncate};

/// The compiled command schemas. Built once per worker and shared; checking is read-only.
pub struct Schemas {
    validators: HashMap<CommandType, Validator>,
}

/// The schema text of a command type, compiled into the binary so a deployment cannot run
/// with schemas that differ from its code.
fn source(command_type: CommandType) -> &'static str {
    match command_type {
        CommandType::ClientCreate => include_str!("../../schemas/client.create.json"),
        CommandType::OnboardingStep => include_str!("../../schemas/saga.onboarding.step.json"),
        CommandType::InstanceCreate => include_str!("../../schemas/instance.create.json"),
        CommandType::InstanceUpdateAlias => {
            include_str!("../../schemas/instance.update_alias.json")
        }
        CommandType::InstanceDelete => include_str!("../../schemas/instance.delete.json"),
        CommandType::ClientApprove => include_str!("../../schemas/client.approve.json"),
        CommandType::ClientReject => include_str!("../../schemas/client.reject.json"),
        CommandType::ClientBlacklist => include_str!("../../schemas/client.blacklist.json"),
        CommandType::ClientUnblacklist => include_str!("../../schemas/client.unblacklist.json"),
        CommandType::ClientExit => include_str!("../../schemas/client.exit.json"),
        CommandType::ClientRecordFirstTransaction => {
            include_str!("../../schemas/client.record_first_transaction.json")
        }
        CommandType::ClientKycUpdate => include_str!("../../schemas/client.kyc.update.json"),
        CommandType::ClientList => include_str!("../../schemas/client.list.json"),
        CommandType::ClientGet => include_str!("../../schemas/client.get.json"),
        CommandType::InstanceList => include_str!("../../schemas/instance.list.json"),
    }
}

impl Schemas {
    /// Compiles every command schema; a broken schema is a build defect, so this panics.
    pub fn load() -> Schemas {
        let validators = CommandType::ALL
            .into_iter()
            .map(|t| {
                let schema: Value = serde_json::from_str(source(t))
                    .unwrap_or_else(|e| panic!("schemas/{t}.json is not JSON: {e}"));
                let validator = jsonschema::validator_for(&schema)
                    .unwrap_or_else(|e| panic!("schemas/{t}.json is not a valid schema: {e}"));
                (t, validator)
            })
            .collect();
        Schemas { validators }
    }

    /// `Err` lists each violation as `"<json pointer>: <what is wrong>"` (at most 10).
    pub fn check(&self, command_type: CommandType, body: &Value) -> Result<(), Vec<String>> {
        let validator = &self.validators[&command_type];
        let errors: Vec<String> = validator
            .iter_errors(body)
            .take(10)
            .map(|e| {
                let path = e.instance_path().to_string();
                let path = if path.is_empty() { "/".into() } else { path };
                format!("{path}: {}", truncate(&e.to_string(), 200))
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
