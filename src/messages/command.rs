//! From raw delivery to a checked [`Command`], or a [`Rejection`] that says why not.

use std::fmt;

use serde_json::Value;

pub use super::names::{CommandType, truncate};
use super::schema::Schemas;

/// Bodies larger than this are refused unread: no command of the contract comes near it.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A delivery as the broker layer hands it over: plain data, no AMQP types.
#[derive(Debug, Clone, Default)]
pub struct IncomingMessage {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub content_type: Option<String>,
    /// Delayed retries already made (our `x-onboard-attempt` header).
    pub attempt: u32,
    /// W3C trace context, carried from the command to what it causes.
    pub traceparent: Option<String>,
    pub body: Vec<u8>,
}

/// What every handler may rely on about the command it runs.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    pub command_type: CommandType,
    /// The idempotency key: one effect per message_id, however often it arrives.
    pub message_id: String,
    /// Echoed on every event and reply; the message_id stands in when absent.
    pub correlation_id: String,
    pub reply_to: Option<String>,
    pub traceparent: Option<String>,
    pub attempt: u32,
}

/// A command that passed every check of the contract: known type, JSON, schema. Its body is
/// still JSON: the registry reads it into the type's own body once, right after.
#[derive(Debug, Clone)]
pub struct Checked {
    pub meta: CommandMeta,
    pub body: Value,
}

/// Why a message was refused before any handler saw it. It goes to the dead-letter queue and
/// produces a `command.rejected` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// One line, for the dead-letter header and the event.
    pub reason: String,
    /// The schema's complaints, when that is the cause.
    pub details: Vec<String>,
}

impl Rejection {
    pub fn new(reason: impl Into<String>) -> Rejection {
        Rejection {
            reason: reason.into(),
            details: Vec::new(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details.join("; "))?;
        }
        Ok(())
    }
}

/// Checks a delivery in the order a reader would: who is it (message_id), what is it (routing
/// key), is it JSON, does it match its schema.
pub fn parse(msg: &IncomingMessage, schemas: &Schemas) -> Result<Checked, Rejection> {
    let message_id = match msg.message_id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => return Err(Rejection::new("missing message_id property")),
    };
    let command_type = schemas.type_of(&msg.routing_key).ok_or_else(|| {
        Rejection::new(format!(
            "unknown command type {:?}",
            truncate(&msg.routing_key, 64)
        ))
    })?;
    if let Some(ct) = msg.content_type.as_deref()
        && !ct.is_empty()
        && !ct.starts_with("application/json")
    {
        return Err(Rejection::new(format!(
            "unsupported content_type {:?}, expected application/json",
            truncate(ct, 64)
        )));
    }
    if msg.body.len() > MAX_BODY_BYTES {
        return Err(Rejection::new(format!(
            "body of {} bytes exceeds the limit of {MAX_BODY_BYTES}",
            msg.body.len()
        )));
    }
    let body: Value = serde_json::from_slice(&msg.body)
        .map_err(|e| Rejection::new(format!("body is not valid JSON: {e}")))?;
    if let Some(path) = nul_at(&body, &mut String::new()) {
        return Err(Rejection::new(format!(
            "body holds a NUL character (\\u0000) at {path}, which no field may contain"
        )));
    }
    if let Err(details) = schemas.check(command_type, &body) {
        return Err(Rejection {
            reason: format!("body does not match schemas/{command_type}.json"),
            details,
        });
    }
    let reply_to = msg.reply_to.clone().filter(|r| !r.is_empty());
    let correlation_id = msg
        .correlation_id
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or(&message_id)
        .to_string();
    Ok(Checked {
        meta: CommandMeta {
            command_type,
            message_id,
            correlation_id,
            reply_to,
            traceparent: msg.traceparent.clone(),
            attempt: msg.attempt,
        },
        body,
    })
}

/// Where a string (or a key) holds U+0000, as a JSON pointer. PostgreSQL cannot store it in
/// text, so such a body would fail every attempt at the database: refuse it here instead.
fn nul_at(value: &Value, path: &mut String) -> Option<String> {
    match value {
        Value::String(s) if s.contains('\0') => Some(if path.is_empty() {
            "/".into()
        } else {
            truncate(path, 100)
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            let len = path.len();
            path.push_str(&format!("/{i}"));
            let found = nul_at(v, path);
            path.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let len = path.len();
            path.push('/');
            path.push_str(&k.replace('\0', "\\u0000"));
            let found = if k.contains('\0') {
                Some(truncate(path, 100))
            } else {
                nul_at(v, path)
            };
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::schemas;

    fn message(body: &str) -> IncomingMessage {
        IncomingMessage {
            routing_key: "client.create".into(),
            message_id: Some("m-1".into()),
            content_type: Some("application/json".into()),
            body: body.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    const VALID: &str = r#"{"email":"a@b.co","client_alias":"A","client_type":"CORPORATE","country_code":"SG","phone":"+6591234567"}"#;

    #[test]
    fn a_valid_command_parses_and_the_message_id_stands_in_for_correlation() {
        let cmd = parse(&message(VALID), &schemas()).expect("valid");
        assert_eq!(cmd.meta.command_type.as_str(), "client.create");
        assert_eq!(cmd.meta.correlation_id, "m-1");
    }

    #[test]
    fn a_missing_or_blank_message_id_is_rejected() {
        for id in [None, Some(""), Some("  ")] {
            let mut m = message(VALID);
            m.message_id = id.map(String::from);
            let err = parse(&m, &schemas()).unwrap_err();
            assert_eq!(err.reason, "missing message_id property");
        }
    }

    #[test]
    fn not_json_is_rejected_with_the_parser_error() {
        let err = parse(&message("{not json"), &schemas()).unwrap_err();
        assert!(err.reason.starts_with("body is not valid JSON"), "{err}");
    }

    #[test]
    fn a_wrong_type_fails_the_schema_with_details() {
        let err = parse(
            &message(r#"{"email":12,"client_alias":"A","client_type":"C","country_code":"SG","phone":"1"}"#),
            &schemas(),
        )
        .unwrap_err();
        assert_eq!(err.reason, "body does not match schemas/client.create.json");
        assert!(err.details.iter().any(|d| d.contains("/email")), "{err:?}");
    }

    #[test]
    fn a_client_cannot_be_created_past_pending() {
        let ok = r#"{"email":"a@b.co","client_alias":"A","client_type":"C","country_code":"SG","phone":"1","client_status":"PENDING"}"#;
        assert!(parse(&message(ok), &schemas()).is_ok());
        let active = ok.replace("PENDING", "ACTIVE");
        let err = parse(&message(&active), &schemas()).unwrap_err();
        assert!(
            err.details.iter().any(|d| d.contains("/client_status")),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_types_and_foreign_content_types_are_rejected() {
        let mut m = message(VALID);
        m.routing_key = "client.delete_everything".into();
        assert!(
            parse(&m, &schemas())
                .unwrap_err()
                .reason
                .contains("unknown command type")
        );
        let mut m = message(VALID);
        m.content_type = Some("text/xml".into());
        assert!(
            parse(&m, &schemas())
                .unwrap_err()
                .reason
                .contains("content_type")
        );
    }

    #[test]
    fn huge_and_deeply_nested_bodies_are_rejected_without_panicking() {
        let huge = format!(r#"{{"email":"{}"}}"#, "a".repeat(MAX_BODY_BYTES));
        assert!(
            parse(&message(&huge), &schemas())
                .unwrap_err()
                .reason
                .contains("exceeds")
        );
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(parse(&message(&deep), &schemas()).is_err());
    }

    #[test]
    fn every_type_round_trips_through_its_routing_key() {
        let schemas = schemas();
        for t in crate::registry::command_types() {
            assert_eq!(schemas.type_of(t.as_str()), Some(t));
        }
        // Saga steps are the worker's own business now, never a message anyone can send.
        assert_eq!(schemas.type_of("saga.onboarding.step"), None);
    }

    #[test]
    fn a_nul_character_anywhere_in_the_body_is_rejected_with_where() {
        let with_nul = VALID.replace(r#""A""#, r#""Evil\u0000Corp""#);
        let err = parse(&message(&with_nul), &schemas()).unwrap_err();
        assert!(err.reason.contains("/client_alias"), "{err}");
        let err = parse(&message(r#"{"a\u0000":1}"#), &schemas()).unwrap_err();
        assert!(err.reason.contains("NUL"), "{err}");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
