//! The one place a command type meets its code: the list of [`Command`] and [`Query`]
//! implementations. Everything else the worker knows about a type (its routing key, schema,
//! refusal event, how its body is read, the client it changes, how it is run) is read from its
//! implementation here, once. A type that is not listed does not exist for the worker (it is
//! rejected as unknown).

use std::sync::LazyLock;

use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::PgConnection;

use crate::handlers::{
    Answer, Body, Cmd, Command, Cx, DecideMany, DecideOne, Decision, HandlerError, Query, Target,
    client_create, client_import, client_state, client_update, instances, kyc, lifecycle, partners,
    queries, relations,
};
pub use crate::handlers::{RunMany, RunOne, RunQuery};
use crate::messages::{CommandMeta, CommandType, Schemas};

/// Every command and query, by implementation.
fn registered() -> Vec<Entry> {
    vec![
        Entry::many::<client_create::ClientCreate>(),
        Entry::many::<client_import::ClientImport>(),
        Entry::one::<instances::InstanceCreate>(),
        Entry::one::<instances::InstanceUpdateAlias>(),
        Entry::one::<instances::InstanceDelete>(),
        Entry::one::<instances::InstanceDeactivate>(),
        Entry::one::<instances::InstanceActivate>(),
        Entry::one::<lifecycle::ClientApprove>(),
        Entry::one::<lifecycle::ClientReject>(),
        Entry::one::<lifecycle::ClientBlacklist>(),
        Entry::one::<lifecycle::ClientUnblacklist>(),
        Entry::one::<lifecycle::ClientExit>(),
        Entry::one::<lifecycle::ClientRecordFirstTransaction>(),
        Entry::one::<kyc::ClientKycUpdate>(),
        Entry::one::<partners::PartnerCreate>(),
        Entry::one::<client_update::ClientUpdate>(),
        Entry::one::<client_state::ClientDeactivate>(),
        Entry::one::<client_state::ClientReactivate>(),
        Entry::one::<client_state::ClientDelete>(),
        Entry::one::<relations::ClientRelationAdd>(),
        Entry::one::<relations::ClientRelationUpdate>(),
        Entry::one::<relations::ClientRelationRemove>(),
        Entry::query::<queries::ClientList>(),
        Entry::query::<queries::ClientGet>(),
        Entry::query::<queries::InstanceList>(),
        Entry::query::<queries::PartnerList>(),
        Entry::query::<relations::ClientRelationList>(),
        Entry::query::<relations::ClientRelationGet>(),
    ]
}

/// How a type is run.
#[derive(Clone, Copy)]
pub enum Run {
    One(RunOne),
    Many(RunMany),
    Query(RunQuery),
}

/// Everything the worker knows about one type, read from its implementation.
pub struct Entry {
    pub command_type: CommandType,
    /// `schemas/<type>.json`.
    pub schema: &'static str,
    /// Where refusals of the command are announced (`None` for queries, which only reply).
    pub refusal_event: Option<&'static str>,
    /// Reads a body that passed the schema into the type's own body; `Err` names where it
    /// could not (the schema and the code disagree: a defect, refused like a malformed body).
    pub read: fn(Value) -> Result<Body, String>,
    /// The client the command changes.
    pub target: fn(&Body) -> Target,
    pub run: Run,
}

impl Entry {
    fn one<T: DecideOne>() -> Entry {
        Self::command::<T>(Run::One(run_one::<T>))
    }

    fn many<T: DecideMany>() -> Entry {
        Self::command::<T>(Run::Many(run_many::<T>))
    }

    fn command<T: Command>(run: Run) -> Entry {
        Entry {
            command_type: T::TYPE,
            schema: T::SCHEMA,
            refusal_event: Some(T::REFUSAL_EVENT),
            read: read::<T>,
            target: target::<T>,
            run,
        }
    }

    fn query<T: Query>() -> Entry {
        Entry {
            command_type: T::TYPE,
            schema: T::SCHEMA,
            refusal_event: None,
            read: read::<T>,
            target: |_| Target::None,
            run: Run::Query(run_query::<T>),
        }
    }

    pub fn is_query(&self) -> bool {
        matches!(self.run, Run::Query(_))
    }
}

fn read<T: serde::de::DeserializeOwned + Send + Sync + 'static>(
    body: Value,
) -> Result<Body, String> {
    serde_path_to_error::deserialize::<_, T>(body)
        .map(|t| Box::new(t) as Body)
        // The path, never the error's text: serde quotes the offending value.
        .map_err(|e| e.path().to_string())
}

/// The body of a command of type `T` (the registry read it: a mismatch is a defect).
fn typed<T: 'static>(body: &Body) -> &T {
    body.downcast_ref::<T>()
        .expect("a body is read by its own type's entry")
}

fn target<T: Command>(body: &Body) -> Target {
    typed::<T>(body).target()
}

fn run_one<'a, 'b, T: DecideOne>(
    cx: &'a mut Cx<'b>,
    meta: &'a CommandMeta,
    body: &'a Body,
) -> BoxFuture<'a, Result<Decision, HandlerError>> {
    Box::pin(T::decide(
        cx,
        Cmd {
            meta,
            body: typed::<T>(body),
        },
    ))
}

fn run_many<'a, 'b, T: DecideMany>(
    cx: &'a mut Cx<'b>,
    cmds: &'a [(&'a CommandMeta, &'a Body)],
) -> BoxFuture<'a, Result<Vec<Decision>, HandlerError>> {
    Box::pin(async move {
        let typed: Vec<Cmd<'a, T>> = cmds
            .iter()
            .map(|(meta, body)| Cmd {
                meta,
                body: typed::<T>(body),
            })
            .collect();
        T::decide(cx, &typed).await
    })
}

fn run_query<'a, T: Query>(
    conn: &'a mut PgConnection,
    body: &'a Body,
) -> BoxFuture<'a, Result<Answer, HandlerError>> {
    Box::pin(T::read(conn, typed::<T>(body)))
}

static ENTRIES: LazyLock<Vec<Entry>> = LazyLock::new(registered);

/// The entries by routing key, built once: every delivery looks its type up here.
static BY_NAME: LazyLock<std::collections::HashMap<&'static str, &'static Entry>> =
    LazyLock::new(|| {
        ENTRIES
            .iter()
            .map(|e| (e.command_type.as_str(), e))
            .collect()
    });

/// Every registered type.
pub fn entries() -> &'static [Entry] {
    &ENTRIES
}

/// The routing keys the worker accepts.
pub fn command_types() -> Vec<CommandType> {
    ENTRIES.iter().map(|e| e.command_type).collect()
}

/// The type a routing key names, if it is registered.
pub fn type_of(routing_key: &str) -> Option<CommandType> {
    BY_NAME.get(routing_key).map(|e| e.command_type)
}

/// The entry of a registered type.
pub fn entry(command_type: CommandType) -> &'static Entry {
    BY_NAME
        .get(command_type.as_str())
        .unwrap_or_else(|| panic!("{command_type} is not registered"))
}

/// The compiled schemas of every registered type. A broken schema is a build defect, so this
/// panics on one (and a unit test compiles them all).
pub fn schemas() -> Schemas {
    Schemas::compile(ENTRIES.iter().map(|e| (e.command_type, e.schema)))
}

/// `include_str!` of `schemas/<name>.json`, for an implementation's `SCHEMA`.
#[macro_export]
macro_rules! schema {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/",
            $name,
            ".json"
        ))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_type_has_exactly_one_entry_and_its_schema_compiles() {
        for t in command_types() {
            assert_eq!(
                ENTRIES.iter().filter(|e| e.command_type == t).count(),
                1,
                "{t}"
            );
            assert_eq!(entry(t).command_type, t);
            // Its schema file is its own name's.
            let schema: serde_json::Value = serde_json::from_str(entry(t).schema).unwrap();
            assert!(
                schema["$id"]
                    .as_str()
                    .is_none_or(|id| id.contains(t.as_str())),
                "{t}: {}",
                schema["$id"]
            );
        }
        assert_eq!(command_types().len(), 28);
        let schemas = schemas();
        assert!(
            schemas
                .check(
                    queries::ClientGet::TYPE,
                    &serde_json::json!({"client_id": 1})
                )
                .is_ok()
        );
    }

    #[test]
    fn every_schema_example_reads_into_its_type() {
        for e in entries() {
            let schema: serde_json::Value = serde_json::from_str(e.schema).unwrap();
            for example in schema["examples"].as_array().into_iter().flatten() {
                assert!(
                    (e.read)(example.clone()).is_ok(),
                    "{}: {example}",
                    e.command_type
                );
            }
        }
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
        let import = client_import::ClientImport::TYPE;
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
        let add = relations::ClientRelationAdd::TYPE;
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
        let create = client_create::ClientCreate::TYPE;
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
                schemas
                    .check(client_update::ClientUpdate::TYPE, &body)
                    .is_err(),
                "{read_only}"
            );
        }
        let get = queries::ClientGet::TYPE;
        assert!(schemas.check(get, &json!({})).is_err());
        assert!(
            schemas
                .check(get, &json!({"client_id": 1, "external_id": "e"}))
                .is_err()
        );
        let list = queries::ClientList::TYPE;
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
            "phone": "S3CRET-S3CRET-S3CRET-S3CRET-S3CRET-S3CRET",
            "surprise": "S3CRET",
        });
        let errors = schemas
            .check(client_create::ClientCreate::TYPE, &body)
            .unwrap_err();
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
