//! What the worker says: events (to subscribers) and replies (to a command's `reply_to`),
//! both written to the outbox in the transaction that decided them.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::command::CommandMeta;

/// Namespace of our deterministic message ids (a random but fixed UUID).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f6e_626f_6172_6400_8000_0000_0000_0001);

/// Where an outbox row goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingKind {
    /// To the events exchange, routing key = event type.
    Event,
    /// To the default exchange, routing key = the command's `reply_to` queue.
    Reply,
    /// To the commands exchange (a saga step the worker sends itself).
    Command,
}

impl OutgoingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutgoingKind::Event => "event",
            OutgoingKind::Reply => "reply",
            OutgoingKind::Command => "command",
        }
    }

    pub fn parse(s: &str) -> Option<OutgoingKind> {
        match s {
            "event" => Some(OutgoingKind::Event),
            "reply" => Some(OutgoingKind::Reply),
            "command" => Some(OutgoingKind::Command),
            _ => None,
        }
    }
}

/// The body of every event: `{event_id, type, occurred_at, correlation_id, causation_id, data}`.
#[derive(Debug, Clone, Serialize)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: String,
    pub correlation_id: String,
    /// The message_id of the command that caused it (null when the command had none).
    pub causation_id: Option<String>,
    pub data: Value,
}

/// One message on its way out, as the outbox stores it.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// AMQP message_id; deterministic for a given cause, so a re-run of the same command
    /// writes the same id and the outbox's unique index keeps one.
    pub message_id: Uuid,
    pub kind: OutgoingKind,
    pub routing_key: String,
    /// AMQP `type`: the event type (for a reply, the type of the outcome it reports).
    pub message_type: String,
    pub correlation_id: Option<String>,
    /// AMQP headers, e.g. `status` on replies, `traceparent`.
    pub headers: Map<String, Value>,
    pub payload: Value,
}

/// A message id derived from its cause: the same cause always yields the same id.
pub fn derived_id(cause: &str, what: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, format!("{cause}\u{1f}{what}").as_bytes())
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn trace_headers(traceparent: Option<&str>) -> Map<String, Value> {
    let mut headers = Map::new();
    if let Some(tp) = traceparent {
        headers.insert("traceparent".into(), json!(tp));
    }
    headers
}

impl OutgoingMessage {
    /// The event `event_type` caused by `meta`'s command, with a deterministic id.
    pub fn event(meta: &CommandMeta, event_type: &str, data: Value) -> OutgoingMessage {
        let id = derived_id(&meta.message_id, event_type);
        Self::event_with_id(
            id,
            event_type,
            &meta.correlation_id,
            Some(&meta.message_id),
            meta.traceparent.as_deref(),
            data,
        )
    }

    /// An event whose id and causation the caller chose (e.g. a rejected message without a
    /// message_id, or a saga step).
    pub fn event_with_id(
        event_id: Uuid,
        event_type: &str,
        correlation_id: &str,
        causation_id: Option<&str>,
        traceparent: Option<&str>,
        data: Value,
    ) -> OutgoingMessage {
        // The envelope of [`EventEnvelope`], built as a map so `data` is moved in rather than
        // copied through serde (a unit test holds the two to the same shape).
        let mut envelope = Map::with_capacity(6);
        envelope.insert("event_id".into(), Value::String(event_id.to_string()));
        envelope.insert("type".into(), Value::String(event_type.to_string()));
        envelope.insert("occurred_at".into(), Value::String(now()));
        envelope.insert(
            "correlation_id".into(),
            Value::String(correlation_id.to_string()),
        );
        envelope.insert(
            "causation_id".into(),
            causation_id.map_or(Value::Null, |c| Value::String(c.to_string())),
        );
        envelope.insert("data".into(), data);
        OutgoingMessage {
            message_id: event_id,
            kind: OutgoingKind::Event,
            routing_key: event_type.to_string(),
            message_type: event_type.to_string(),
            correlation_id: Some(correlation_id.to_string()),
            headers: trace_headers(traceparent),
            payload: Value::Object(envelope),
        }
    }

    /// The answer to `meta`'s `reply_to`, if it asked for one: the seed's REST body, with the
    /// HTTP-like status in the `status` header.
    /// An outcome as most commands say it: the event, and the reply to the command when it
    /// asked for one (`reply_to`), under the same type.
    pub fn event_and_reply(
        meta: &CommandMeta,
        event_type: &str,
        data: Value,
        status: u16,
        reply: Value,
    ) -> Vec<OutgoingMessage> {
        let mut messages = vec![OutgoingMessage::event(meta, event_type, data)];
        messages.extend(OutgoingMessage::reply(meta, event_type, status, reply));
        messages
    }

    pub fn reply(
        meta: &CommandMeta,
        outcome_type: &str,
        status: u16,
        body: Value,
    ) -> Option<OutgoingMessage> {
        let reply_to = meta.reply_to.as_ref()?;
        let mut headers = trace_headers(meta.traceparent.as_deref());
        headers.insert("status".into(), json!(status));
        Some(OutgoingMessage {
            message_id: derived_id(&meta.message_id, "reply"),
            kind: OutgoingKind::Reply,
            routing_key: reply_to.clone(),
            message_type: outcome_type.to_string(),
            correlation_id: Some(meta.correlation_id.clone()),
            headers,
            payload: body,
        })
    }
}

/// Event timestamps and row timestamps in one format.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// [`timestamp`] for serde's `serialize_with`.
pub fn serialize_timestamp<S: serde::Serializer>(
    t: &DateTime<Utc>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&timestamp(*t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::CommandType;

    fn meta(reply_to: Option<&str>) -> CommandMeta {
        CommandMeta {
            command_type: CommandType::new("client.create"),
            message_id: "m-1".into(),
            correlation_id: "c-1".into(),
            reply_to: reply_to.map(String::from),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            attempt: 0,
        }
    }

    #[test]
    fn the_same_cause_gives_the_same_event_id_and_different_types_differ() {
        let a = OutgoingMessage::event(&meta(None), "client.created", json!({}));
        let b = OutgoingMessage::event(&meta(None), "client.created", json!({}));
        let c = OutgoingMessage::event(&meta(None), "client.creation_failed", json!({}));
        assert_eq!(a.message_id, b.message_id);
        assert_ne!(a.message_id, c.message_id);
        assert_eq!(a.payload["event_id"], json!(a.message_id.to_string()));
        assert_eq!(a.payload["causation_id"], json!("m-1"));
        assert_eq!(a.payload["correlation_id"], json!("c-1"));
        assert!(a.headers.contains_key("traceparent"));
    }

    #[test]
    fn the_envelope_has_the_shape_of_event_envelope() {
        let m = OutgoingMessage::event(&meta(None), "client.created", json!({"k": 1}));
        let typed = EventEnvelope {
            event_id: m.message_id,
            event_type: "client.created".into(),
            occurred_at: m.payload["occurred_at"].as_str().unwrap().to_string(),
            correlation_id: "c-1".into(),
            causation_id: Some("m-1".into()),
            data: json!({"k": 1}),
        };
        assert_eq!(m.payload, serde_json::to_value(typed).unwrap());
    }

    #[test]
    fn a_reply_exists_only_when_asked_for() {
        assert!(OutgoingMessage::reply(&meta(None), "x", 201, json!({})).is_none());
        let r = OutgoingMessage::reply(&meta(Some("q")), "x", 409, json!({"error": "e"})).unwrap();
        assert_eq!(r.routing_key, "q");
        assert_eq!(r.headers["status"], json!(409));
    }
}
