//! What the worker says: events (to subscribers) and replies (to a command's `reply_to`),
//! both written to the outbox in the transaction that decided them.

use std::borrow::Cow;

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
pub struct EventEnvelope<D = Value> {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: String,
    pub correlation_id: String,
    /// The message_id of the command that caused it (null when the command had none).
    pub causation_id: Option<String>,
    pub data: D,
}

/// A message's body: JSON, either as a tree (most messages: built from `json!`, or changed
/// after they are made) or as the text it goes out as, serialised straight from typed data.
/// The onboarding's own events are the second kind: a client and its admin written as a tree,
/// then as text, then freed, twice per onboarding, was a tenth of the worker's CPU under the
/// saga benchmark (issue 24). Text is made by serde_json, or read back from the outbox's `json`
/// column (which PostgreSQL checked) to be published as it is.
#[derive(Debug, Clone)]
pub struct Payload(Repr);

#[derive(Debug, Clone)]
enum Repr {
    Tree(Value),
    Text(String),
}

impl Payload {
    /// `data` serialised as it goes on the wire, no tree built.
    pub fn serialized<T: Serialize + ?Sized>(data: &T) -> Payload {
        Payload(Repr::Text(
            serde_json::to_string(data).expect("the messages' types serialise"),
        ))
    }

    /// Text PostgreSQL stored in a `json` column (checked as JSON when it was written), to be
    /// published as it is: nothing parses it again.
    pub(crate) fn from_json_column(text: String) -> Payload {
        Payload(Repr::Text(text))
    }

    /// The compact JSON text: borrowed when it is text already.
    pub fn text(&self) -> Cow<'_, str> {
        match &self.0 {
            Repr::Text(t) => Cow::Borrowed(t),
            Repr::Tree(v) => Cow::Owned(serde_json::to_string(v).expect("JSON values serialise")),
        }
    }

    /// Turns a tree into its text, once, so that writing it and publishing it share it.
    pub fn to_text_form(&mut self) {
        if let Repr::Tree(v) = &self.0 {
            let text = serde_json::to_string(v).expect("JSON values serialise");
            self.0 = Repr::Text(text);
        }
    }

    /// The tree, for a change after the message was made (parsed once if it was text).
    pub fn tree_mut(&mut self) -> &mut Value {
        if let Repr::Text(t) = &self.0 {
            let tree = serde_json::from_str(t).expect("a payload's text is JSON");
            self.0 = Repr::Tree(tree);
        }
        match &mut self.0 {
            Repr::Tree(v) => v,
            Repr::Text(_) => unreachable!("made a tree above"),
        }
    }

    /// A copy as a tree (for reading fields; tests and the console).
    pub fn to_tree(&self) -> Value {
        match &self.0 {
            Repr::Tree(v) => v.clone(),
            Repr::Text(t) => serde_json::from_str(t).expect("a payload's text is JSON"),
        }
    }
}

impl From<Value> for Payload {
    fn from(tree: Value) -> Payload {
        Payload(Repr::Tree(tree))
    }
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
    pub payload: Payload,
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

    /// [`OutgoingMessage::event`] with typed data, serialised once as it goes on the wire
    /// (no JSON tree built): for the events every onboarding writes.
    pub fn serialized_event<D: Serialize>(
        meta: &CommandMeta,
        event_type: &str,
        data: &D,
    ) -> OutgoingMessage {
        let event_id = derived_id(&meta.message_id, event_type);
        let payload = Payload::serialized(&EventEnvelope {
            event_id,
            event_type: event_type.to_string(),
            occurred_at: now(),
            correlation_id: meta.correlation_id.clone(),
            causation_id: Some(meta.message_id.clone()),
            data,
        });
        Self::event_message(
            event_id,
            event_type,
            &meta.correlation_id,
            meta.traceparent.as_deref(),
            payload,
        )
    }

    fn event_message(
        event_id: Uuid,
        event_type: &str,
        correlation_id: &str,
        traceparent: Option<&str>,
        payload: Payload,
    ) -> OutgoingMessage {
        OutgoingMessage {
            message_id: event_id,
            kind: OutgoingKind::Event,
            routing_key: event_type.to_string(),
            message_type: event_type.to_string(),
            correlation_id: Some(correlation_id.to_string()),
            headers: trace_headers(traceparent),
            payload,
        }
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
        Self::event_message(
            event_id,
            event_type,
            correlation_id,
            traceparent,
            Value::Object(envelope).into(),
        )
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
        body: impl Into<Payload>,
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
            payload: body.into(),
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
        let payload = a.payload.to_tree();
        assert_eq!(payload["event_id"], json!(a.message_id.to_string()));
        assert_eq!(payload["causation_id"], json!("m-1"));
        assert_eq!(payload["correlation_id"], json!("c-1"));
        assert!(a.headers.contains_key("traceparent"));
    }

    #[test]
    fn the_envelope_has_the_shape_of_event_envelope() {
        let m = OutgoingMessage::event(&meta(None), "client.created", json!({"k": 1}));
        let payload = m.payload.to_tree();
        let typed = EventEnvelope {
            event_id: m.message_id,
            event_type: "client.created".into(),
            occurred_at: payload["occurred_at"].as_str().unwrap().to_string(),
            correlation_id: "c-1".into(),
            causation_id: Some("m-1".into()),
            data: json!({"k": 1}),
        };
        assert_eq!(payload, serde_json::to_value(typed).unwrap());
    }

    #[test]
    fn an_event_serialised_from_typed_data_is_the_event_built_as_a_tree() {
        #[derive(Serialize)]
        struct Data<'a> {
            k: i32,
            name: &'a str,
            none: Option<i32>,
        }
        let data = Data {
            k: 1,
            name: "a \"quoted\" name",
            none: None,
        };
        let typed = OutgoingMessage::serialized_event(&meta(None), "client.created", &data);
        let tree = OutgoingMessage::event(
            &meta(None),
            "client.created",
            serde_json::to_value(&data).unwrap(),
        );
        assert_eq!(typed.message_id, tree.message_id);
        assert_eq!(typed.routing_key, tree.routing_key);
        assert_eq!(typed.headers, tree.headers);
        let (mut typed, mut tree) = (typed.payload.to_tree(), tree.payload.to_tree());
        // Made a moment apart.
        for p in [&mut typed, &mut tree] {
            assert!(p["occurred_at"].as_str().is_some_and(|t| t.ends_with('Z')));
            p["occurred_at"] = Value::Null;
        }
        assert_eq!(typed, tree);
    }

    #[test]
    fn a_payload_is_the_same_json_as_a_tree_and_as_text() {
        let tree = json!({"b": [1, "x"], "a": {"c": null}});
        let mut p = Payload::from(tree.clone());
        assert_eq!(p.text(), serde_json::to_string(&tree).unwrap());
        p.to_text_form();
        assert!(
            matches!(p.text(), Cow::Borrowed(_)),
            "text form is borrowed"
        );
        assert_eq!(p.to_tree(), tree);
        p.tree_mut()["b"] = json!(2);
        assert_eq!(p.to_tree(), json!({"b": 2, "a": {"c": null}}));
        let from_typed = Payload::serialized(&tree);
        assert_eq!(from_typed.to_tree(), tree);
    }

    #[test]
    fn a_reply_exists_only_when_asked_for() {
        assert!(OutgoingMessage::reply(&meta(None), "x", 201, json!({})).is_none());
        let r = OutgoingMessage::reply(&meta(Some("q")), "x", 409, json!({"error": "e"})).unwrap();
        assert_eq!(r.routing_key, "q");
        assert_eq!(r.headers["status"], json!(409));
    }
}
