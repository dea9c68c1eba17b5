//! Hostile input: huge, deeply nested, wrongly typed, invalid UTF-8, SQL and header injection,
//! NUL bytes, emoji, overlong routing keys. Each message ends once (one settled disposition),
//! as a refusal (`client.creation_failed`), a dead letter with its reason (`command.rejected`),
//! or, when it is a valid command after all, handled with its text stored verbatim; never a
//! crash, a retry or a requeue.

use std::collections::HashMap;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use onboard::worker::Disposition;
use serde_json::{Value, json};

use crate::support::*;

/// How a hostile message must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// `client.creation_failed` with this code; acked as handled.
    Refused(&'static str),
    /// Dead-lettered with a reason, `command.rejected` announced.
    Rejected,
    /// A valid command after all: handled, `client.created`.
    Created,
}

struct Hostile {
    name: &'static str,
    routing_key: String,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    /// Without a message_id the message is still followed by its correlation id.
    with_message_id: bool,
    end: End,
}

fn hostile(name: &'static str, body: impl Into<Vec<u8>>, end: End) -> Hostile {
    Hostile {
        name,
        routing_key: "client.create".into(),
        body: body.into(),
        content_type: Some("application/json"),
        with_message_id: true,
        end,
    }
}

/// A client.create body with `field` replaced by `value` and a unique email.
fn create_with(n: usize, field: &str, value: Value) -> Vec<u8> {
    let mut body = seed_sg_client();
    body["email"] = json!(format!("hostile-{n}@example.com"));
    body[field] = value;
    serde_json::to_vec(&body).unwrap()
}

fn corpus() -> Vec<Hostile> {
    use End::*;
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    let deep_array = "[".repeat(100_000) + &"]".repeat(100_000);
    let mut deep_object = json!("bottom");
    for _ in 0..100 {
        deep_object = json!({ "a": deep_object });
    }
    let mut invalid_utf8_in_string = br#"{"email":"bad-"#.to_vec();
    invalid_utf8_in_string.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    invalid_utf8_in_string.extend_from_slice(
        br#"@example.com","client_alias":"A","client_type":"C","country_code":"SG","phone":"1"}"#,
    );
    vec![
        // Size and shape.
        hostile(
            "body over the 256 KiB limit",
            create_with(next(), "client_alias", json!("x".repeat(300 * 1024))),
            Rejected,
        ),
        hostile(
            "a 200 KiB field (schema maxLength)",
            create_with(next(), "client_alias", json!("x".repeat(200 * 1024))),
            Rejected,
        ),
        hostile("100,000 nested arrays", deep_array, Rejected),
        hostile(
            "100 nested objects in a field",
            create_with(next(), "client_type", deep_object),
            Rejected,
        ),
        hostile("an empty body", Vec::new(), Rejected),
        hostile("a JSON array", b"[]".to_vec(), Rejected),
        hostile("a JSON string", br#""client.create""#.to_vec(), Rejected),
        hostile("JSON null", b"null".to_vec(), Rejected),
        hostile(
            "an unknown field",
            create_with(next(), "is_admin", json!(true)),
            Rejected,
        ),
        // Wrong types.
        hostile(
            "email as a number",
            create_with(next(), "email", json!(12345)),
            Rejected,
        ),
        hostile(
            "alias as an array",
            create_with(next(), "client_alias", json!(["a", "b"])),
            Rejected,
        ),
        hostile(
            "country as an object",
            create_with(next(), "country_code", json!({ "code": "SG" })),
            Rejected,
        ),
        hostile(
            "phone as a boolean",
            create_with(next(), "phone", json!(true)),
            Rejected,
        ),
        hostile(
            "a status outside the enum",
            create_with(next(), "client_status", json!("GODMODE")),
            Rejected,
        ),
        hostile(
            "email null (the contract's refusal)",
            create_with(next(), "email", Value::Null),
            Refused("VALIDATION_FAILED"),
        ),
        // Encodings.
        hostile(
            "invalid UTF-8 bytes",
            vec![0xff, 0xfe, 0xfd, b'{', 0x80],
            Rejected,
        ),
        hostile(
            "invalid UTF-8 inside a JSON string",
            invalid_utf8_in_string,
            Rejected,
        ),
        hostile(
            "a NUL byte in the email",
            create_with(next(), "email", json!("nul\u{0}byte@example.com")),
            Rejected,
        ),
        hostile(
            "a NUL byte in the alias",
            create_with(next(), "client_alias", json!("Evil\u{0}Corp")),
            Rejected,
        ),
        hostile(
            "a lone surrogate escape",
            br#"{"email":"\ud800@example.com","client_alias":"A","client_type":"C","country_code":"SG","phone":"1"}"#.to_vec(),
            Rejected,
        ),
        hostile(
            "emoji everywhere",
            create_with(next(), "client_alias", json!("🚀 Rocket 🔥 Ltd 👩‍💻")),
            Created,
        ),
        // Injection.
        hostile(
            "SQL in the alias (stored verbatim)",
            create_with(next(), "client_alias", json!("Robert'); DROP TABLE clients;--")),
            Created,
        ),
        hostile(
            "SQL in the email",
            create_with(next(), "email", json!("x' OR '1'='1'; DROP TABLE users;--@evil.com")),
            Refused("VALIDATION_FAILED"),
        ),
        hostile(
            "SQL in the country (schema maxLength 3)",
            create_with(next(), "country_code", json!("SG' OR 1=1--")),
            Rejected,
        ),
        hostile(
            "a Bcc header smuggled into the email",
            create_with(next(), "email", json!("victim@example.com\r\nBcc: all@evil.com")),
            Refused("VALIDATION_FAILED"),
        ),
        hostile(
            "a header smuggled into the alias (stored verbatim)",
            create_with(
                next(),
                "client_alias",
                json!("Evil\r\nSubject: reset your password\r\nBcc: all@evil.com"),
            ),
            Created,
        ),
        // The envelope.
        Hostile {
            routing_key: format!("client.create.{}", "x".repeat(240)),
            ..hostile("an overlong routing key", create_with(next(), "phone", json!("1")), Rejected)
        },
        Hostile {
            routing_key: "client.create\r\nx-injected: 1".into(),
            ..hostile("CRLF in the routing key", create_with(next(), "phone", json!("1")), Rejected)
        },
        Hostile {
            content_type: Some("text/xml"),
            ..hostile("a foreign content type", create_with(next(), "phone", json!("1")), Rejected)
        },
        Hostile {
            with_message_id: false,
            ..hostile("no message_id", create_with(next(), "phone", json!("1")), Rejected)
        },
        Hostile {
            routing_key: "client.approve".into(),
            ..hostile("a lifecycle command with a string id", br#"{"client_id":"1; DROP TABLE clients"}"#.to_vec(), Rejected)
        },
        Hostile {
            routing_key: "client.approve".into(),
            ..hostile("a lifecycle command with an id past i64", br#"{"client_id":123456789012345678901234567890}"#.to_vec(), Rejected)
        },
    ]
}

#[tokio::test]
async fn hostile_bodies_end_as_refusals_or_dead_letters_never_crashes_or_retry_loops() {
    let mut app = spawn_app().await;
    let corpus = corpus();
    let mut ids = Vec::new();
    for (i, h) in corpus.iter().enumerate() {
        let id = format!("hostile-{i}-{}", uuid::Uuid::new_v4().simple());
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_correlation_id(id.as_str().into());
        if let Some(ct) = h.content_type {
            props = props.with_content_type(ct.into());
        }
        if h.with_message_id {
            props = props.with_message_id(id.as_str().into());
        }
        app.channel
            .basic_publish(
                app.names().commands_exchange.as_str().into(),
                h.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &h.body,
                props,
            )
            .await
            .unwrap_or_else(|e| panic!("{}: not published: {e}", h.name))
            .await
            .unwrap();
        ids.push(id);
    }

    // Each ends with one outcome event, correlated.
    let mut outcomes = HashMap::new();
    for (h, id) in corpus.iter().zip(&ids) {
        let event = app
            .wait_for_any(
                &[
                    "client.created",
                    "client.creation_failed",
                    "command.rejected",
                ],
                id,
            )
            .await;
        let problem = match (h.end, event.routing_key.as_str()) {
            (End::Rejected, "command.rejected") => {
                let reason = event.body["data"]["reason"].as_str().unwrap_or("");
                (reason.is_empty()).then(|| "command.rejected without a reason".to_string())
            }
            (End::Refused(code), "client.creation_failed") => {
                (event.body["data"]["code"] != json!(code)).then(|| {
                    format!(
                        "refused with {} instead of {code}",
                        event.body["data"]["code"]
                    )
                })
            }
            (End::Created, "client.created") => None,
            (want, got) => Some(format!("wanted {want:?}, got {got}: {}", event.body)),
        };
        if let Some(p) = problem {
            outcomes.insert(h.name, p);
        }
    }
    assert!(outcomes.is_empty(), "{outcomes:#?}");

    // Settled once each, at its final end: a message the worker had sent round the retry
    // queues or handed back would have been settled first as RetryScheduled or Requeued,
    // which the checks below refuse; a dead-lettered or acked one cannot come back.
    app.settled
        .wait_until("every hostile message settled", |log| {
            corpus.iter().zip(&ids).all(|(h, id)| {
                !h.with_message_id
                    || log
                        .iter()
                        .any(|s| s.message_id.as_deref() == Some(id.as_str()))
            }) && log.iter().any(|s| s.message_id.is_none())
        })
        .await;
    let log = app.settled.entries.lock().unwrap().clone();
    let looped: Vec<_> = log
        .iter()
        .filter(|s| {
            matches!(
                s.disposition,
                Disposition::RetryScheduled | Disposition::Requeued
            )
        })
        .collect();
    assert!(looped.is_empty(), "retried or requeued: {looped:?}");
    for (h, id) in corpus.iter().zip(&ids) {
        if !h.with_message_id {
            continue;
        }
        let ends = app.settled.for_message(id);
        let want = match h.end {
            End::Rejected => Disposition::DeadLettered,
            End::Refused(_) | End::Created => Disposition::Handled,
        };
        assert_eq!(ends, vec![want], "{}", h.name);
    }

    // Every rejection is in the dead-letter queue with its reason.
    let dead = app.names().dead_queue;
    let rejected = corpus.iter().filter(|h| h.end == End::Rejected).count();
    let mut reasons = HashMap::new();
    for _ in 0..rejected {
        let d = app.take_from(&dead).await;
        reasons.insert(
            d.correlation_id.clone().unwrap_or_default(),
            d.header_str("x-onboard-reason").unwrap_or("").to_string(),
        );
    }
    for (h, id) in corpus.iter().zip(&ids) {
        if h.end == End::Rejected {
            let reason = reasons.get(id).map(String::as_str).unwrap_or("");
            assert!(
                !reason.is_empty(),
                "{}: dead letter without a reason",
                h.name
            );
        }
    }

    // What was accepted is stored as sent, and the tables are all still there.
    let stored: Vec<String> = sqlx::query_scalar("SELECT client_alias FROM clients")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for alias in [
        "Robert'); DROP TABLE clients;--",
        "🚀 Rocket 🔥 Ltd 👩‍💻",
        "Evil\r\nSubject: reset your password\r\nBcc: all@evil.com",
    ] {
        assert!(
            stored.iter().any(|s| s == alias),
            "{alias:?} not stored verbatim: {stored:?}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM users").await, 3);
    app.finish().await;
}
