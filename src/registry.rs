//! The one place a command type meets its code: its JSON Schema, whether it is a command or a
//! query, the event that announces its refusals, and the handler that runs it. A type that is
//! not here does not exist for the worker (it is rejected as unknown).

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::handlers::queries::{self, Read};
use crate::handlers::{
    DecideBatch, DecideOne, client_create, client_import, client_state, client_update, instances,
    kyc, lifecycle, partners, relations,
};
use crate::messages::{CommandType, Schemas};

/// How a type's handler runs.
#[derive(Clone, Copy)]
pub enum Run {
    /// Decides a slice of commands of the type at once, inside the batch's transaction.
    Batch(DecideBatch),
    /// Decides one command at a time, inside the batch's transaction.
    Each(DecideOne),
    /// A query: reads in its own read-only transaction and answers on `reply_to` only; no
    /// inbox, no outbox, no event.
    Query(Read),
}

/// Everything the worker knows about one command type.
pub struct Entry {
    pub command_type: CommandType,
    /// `schemas/<type>.json`, compiled into the binary so a deployment cannot run with
    /// schemas that differ from its code.
    pub schema: &'static str,
    /// Where refusals of the command are announced (`None` for queries, which only reply).
    pub refusal_event: Option<&'static str>,
    pub run: Run,
}

impl Entry {
    pub fn is_query(&self) -> bool {
        matches!(self.run, Run::Query(_))
    }
}

macro_rules! schema {
    ($name:literal) => {
        include_str!(concat!("../schemas/", $name, ".json"))
    };
}

const LIFECYCLE: Option<&str> = Some(lifecycle::REJECTED);

static ENTRIES: [Entry; 26] = [
    Entry {
        command_type: CommandType::ClientCreate,
        schema: schema!("client.create"),
        refusal_event: Some(client_create::FAILED),
        run: Run::Batch(client_create::decide),
    },
    Entry {
        command_type: CommandType::InstanceCreate,
        schema: schema!("instance.create"),
        refusal_event: Some(instances::FAILED),
        run: Run::Each(instances::create_one),
    },
    Entry {
        command_type: CommandType::InstanceUpdateAlias,
        schema: schema!("instance.update_alias"),
        refusal_event: Some(instances::FAILED),
        run: Run::Each(instances::update_alias_one),
    },
    Entry {
        command_type: CommandType::InstanceDelete,
        schema: schema!("instance.delete"),
        refusal_event: Some(instances::FAILED),
        run: Run::Each(instances::delete_one),
    },
    Entry {
        command_type: CommandType::ClientApprove,
        schema: schema!("client.approve"),
        refusal_event: LIFECYCLE,
        run: Run::Each(lifecycle::decide_one),
    },
    Entry {
        command_type: CommandType::ClientReject,
        schema: schema!("client.reject"),
        refusal_event: LIFECYCLE,
        run: Run::Each(lifecycle::decide_one),
    },
    Entry {
        command_type: CommandType::ClientBlacklist,
        schema: schema!("client.blacklist"),
        refusal_event: LIFECYCLE,
        run: Run::Each(lifecycle::decide_one),
    },
    Entry {
        command_type: CommandType::ClientUnblacklist,
        schema: schema!("client.unblacklist"),
        refusal_event: LIFECYCLE,
        run: Run::Each(lifecycle::decide_one),
    },
    Entry {
        command_type: CommandType::ClientExit,
        schema: schema!("client.exit"),
        refusal_event: LIFECYCLE,
        run: Run::Each(lifecycle::decide_one),
    },
    Entry {
        command_type: CommandType::ClientRecordFirstTransaction,
        schema: schema!("client.record_first_transaction"),
        refusal_event: LIFECYCLE,
        run: Run::Each(lifecycle::decide_one),
    },
    Entry {
        command_type: CommandType::ClientKycUpdate,
        schema: schema!("client.kyc.update"),
        refusal_event: Some(kyc::FAILED),
        run: Run::Each(kyc::decide_one),
    },
    Entry {
        command_type: CommandType::PartnerCreate,
        schema: schema!("partner.create"),
        refusal_event: Some(partners::FAILED),
        run: Run::Each(partners::create_one),
    },
    Entry {
        command_type: CommandType::ClientUpdate,
        schema: schema!("client.update"),
        refusal_event: Some(client_update::FAILED),
        run: Run::Each(client_update::decide_one),
    },
    Entry {
        command_type: CommandType::ClientDeactivate,
        schema: schema!("client.deactivate"),
        refusal_event: Some(client_update::FAILED),
        run: Run::Each(client_state::decide_one),
    },
    Entry {
        command_type: CommandType::ClientReactivate,
        schema: schema!("client.reactivate"),
        refusal_event: Some(client_update::FAILED),
        run: Run::Each(client_state::decide_one),
    },
    Entry {
        command_type: CommandType::ClientDelete,
        schema: schema!("client.delete"),
        refusal_event: Some(client_update::FAILED),
        run: Run::Each(client_state::decide_one),
    },
    Entry {
        command_type: CommandType::ClientList,
        schema: schema!("client.list"),
        refusal_event: None,
        run: Run::Query(queries::client_list_read),
    },
    Entry {
        command_type: CommandType::ClientGet,
        schema: schema!("client.get"),
        refusal_event: None,
        run: Run::Query(queries::client_get_read),
    },
    Entry {
        command_type: CommandType::InstanceList,
        schema: schema!("instance.list"),
        refusal_event: None,
        run: Run::Query(queries::instance_list_read),
    },
    Entry {
        command_type: CommandType::PartnerList,
        schema: schema!("partner.list"),
        refusal_event: None,
        run: Run::Query(queries::partner_list_read),
    },
    Entry {
        command_type: CommandType::ClientRelationAdd,
        schema: schema!("client.relation.add"),
        refusal_event: Some(client_update::FAILED),
        run: Run::Each(relations::add_one),
    },
    Entry {
        command_type: CommandType::ClientRelationUpdate,
        schema: schema!("client.relation.update"),
        refusal_event: Some(client_update::FAILED),
        run: Run::Each(relations::update_one),
    },
    Entry {
        command_type: CommandType::ClientRelationRemove,
        schema: schema!("client.relation.remove"),
        refusal_event: Some(client_update::FAILED),
        run: Run::Each(relations::remove_one),
    },
    Entry {
        command_type: CommandType::ClientImport,
        schema: schema!("client.import"),
        refusal_event: Some(client_create::FAILED),
        run: Run::Batch(client_import::decide),
    },
    Entry {
        command_type: CommandType::ClientRelationList,
        schema: schema!("client.relation.list"),
        refusal_event: None,
        run: Run::Query(relations::list_read),
    },
    Entry {
        command_type: CommandType::ClientRelationGet,
        schema: schema!("client.relation.get"),
        refusal_event: None,
        run: Run::Query(relations::get_read),
    },
];

static BY_TYPE: LazyLock<HashMap<CommandType, &'static Entry>> =
    LazyLock::new(|| ENTRIES.iter().map(|e| (e.command_type, e)).collect());

/// Every registered type.
pub fn entries() -> &'static [Entry] {
    &ENTRIES
}

/// The entry of a type. Every [`CommandType`] has one (a unit test holds it to that).
pub fn entry(command_type: CommandType) -> &'static Entry {
    BY_TYPE[&command_type]
}

/// The compiled schemas of every registered type. A broken schema is a build defect, so this
/// panics on one (and a unit test compiles them all).
pub fn schemas() -> Schemas {
    Schemas::compile(ENTRIES.iter().map(|e| (e.command_type, e.schema)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_type_has_exactly_one_entry_and_its_schema_compiles() {
        for t in CommandType::ALL {
            assert_eq!(
                ENTRIES.iter().filter(|e| e.command_type == t).count(),
                1,
                "{t}"
            );
            assert_eq!(entry(t).command_type, t);
        }
        let schemas = schemas();
        assert!(
            schemas
                .check(CommandType::ClientGet, &serde_json::json!({"client_id": 1}))
                .is_ok()
        );
    }

    #[test]
    fn queries_and_commands_are_told_apart_and_commands_announce_refusals() {
        let queries: Vec<&str> = ENTRIES
            .iter()
            .filter(|e| e.is_query())
            .map(|e| e.command_type.as_str())
            .collect();
        assert_eq!(
            queries,
            [
                "client.list",
                "client.get",
                "instance.list",
                "partner.list",
                "client.relation.list",
                "client.relation.get"
            ]
        );
        for e in ENTRIES.iter().filter(|e| !e.is_query()) {
            assert!(e.refusal_event.is_some(), "{}", e.command_type);
        }
    }

    #[test]
    fn every_schema_accepts_its_own_examples() {
        let schemas = schemas();
        for e in entries() {
            let schema: serde_json::Value = serde_json::from_str(e.schema).unwrap();
            let examples = schema["examples"].as_array();
            for example in examples.into_iter().flatten() {
                assert_eq!(
                    schemas.check(e.command_type, example),
                    Ok(()),
                    "{}: {example}",
                    e.command_type
                );
            }
        }
    }

    #[test]
    fn an_import_names_a_source_and_a_record_id_that_is_one_path_segment() {
        use serde_json::json;
        let schemas = schemas();
        let import = CommandType::ClientImport;
        assert!(
            schemas
                .check(
                    import,
                    &json!({"source": "legacy", "source_id": "acme-001"})
                )
                .is_ok()
        );
        for bad in ["..", ".", "a/b", "a?b", "a b", "", &"x".repeat(81)] {
            let body = json!({"source": "legacy", "source_id": bad});
            assert!(schemas.check(import, &body).is_err(), "{bad:?}");
        }
        for bad in ["", "le gacy", "../x"] {
            let body = json!({"source": bad, "source_id": "1"});
            assert!(schemas.check(import, &body).is_err(), "{bad:?}");
        }
        // The relation commands: one of relation or relations (both is the handler's refusal).
        let add = CommandType::ClientRelationAdd;
        assert!(schemas.check(add, &json!({"client_id": 1})).is_err());
        let person =
            json!({"relation": "director", "identity": {"given_name": "A", "family_name": "B"}});
        assert!(
            schemas
                .check(
                    add,
                    &json!({"client_id": 1, "relation": person, "relations": [person]})
                )
                .is_ok()
        );
        let corporate = json!({"relation": "director", "identity": {"type": "corporate"}});
        assert!(
            schemas
                .check(add, &json!({"client_id": 1, "relation": corporate}))
                .is_err()
        );
    }

    #[test]
    fn profile_shapes_the_handlers_cannot_answer_are_refused_by_the_schemas() {
        use serde_json::json;
        let schemas = schemas();
        let create = CommandType::ClientCreate;
        for bad in [
            json!({"identity": {"type": "corporate", "incorporation_date": "2024-02-30"}}),
            json!({"identity": {"type": "robot"}}),
            json!({"metadata": {"": 1}}),
            json!({"metadata": {"k": {"nested": true}}}),
            json!({"metadata": {"k": "x".repeat(501)}}),
            json!({"external_id": "x".repeat(129)}),
            json!({"direct_partner": {}}),
            json!({"address": {"country": "USA"}}),
        ] {
            assert!(schemas.check(create, &bad).is_err(), "{bad}");
        }
        for read_only in [
            "client_code",
            "client_status",
            "ekyc_status",
            "country_code",
        ] {
            let body = json!({"client_id": 1, read_only: "X"});
            assert!(
                schemas.check(CommandType::ClientUpdate, &body).is_err(),
                "{read_only}"
            );
        }
        let get = CommandType::ClientGet;
        assert!(schemas.check(get, &json!({})).is_err());
        assert!(
            schemas
                .check(get, &json!({"client_id": 1, "external_id": "e"}))
                .is_err()
        );
        let list = CommandType::ClientList;
        assert!(
            schemas
                .check(list, &json!({"take": 10, "page": 2}))
                .is_err()
        );
        assert!(schemas.check(list, &json!({"take": 101})).is_err());
    }

    #[test]
    fn schema_errors_name_the_field_and_the_rule_never_the_value() {
        let schemas = schemas();
        let body = serde_json::json!({
            "email": 42,
            "phone": "S3CRET-S3CRET-S3CRET-S3CRET",
            "surprise": "S3CRET",
        });
        let errors = schemas.check(CommandType::ClientCreate, &body).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("/phone: fails maxLength")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("/email: fails type")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("additionalProperties")),
            "{errors:?}"
        );
        for e in &errors {
            assert!(!e.contains("S3CRET") && !e.contains("42"), "{e}");
        }
    }
}
