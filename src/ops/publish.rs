//! `onboard publish <file|->`: sends one command, as an upstream service would, and
//! optionally waits for what it causes (events with its correlation id, and the reply).
//!
//! The file holds either a bare body (the type comes from `--type`) or an envelope
//! `{"type": "...", "message_id": "...", "correlation_id": "...", "body": {...}}`. A file that
//! is not JSON at all is sent as-is, which is how the malformed examples are made.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use serde_json::{Value, json};

use crate::broker::headers::table_to_json;
use crate::broker::publisher::Outgoing;
use crate::broker::{self, Delivered, Names, Publisher};
use crate::configuration::Settings;

/// What to publish.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Routing key; overrides the envelope's `type`. Default `client.create`.
    pub command_type: Option<String>,
    /// Fresh UUID unless given here or in the envelope. `Some("")` publishes without one.
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// Seconds to wait for events and the reply; `None` publishes and returns.
    pub wait: Option<u64>,
}

/// What was published, and what came back while waiting.
#[derive(Debug, Clone)]
pub struct Published {
    pub command_type: String,
    pub message_id: Option<String>,
    pub correlation_id: String,
    /// `(kind, type, status header, body)` in arrival order; kind is `event` or `reply`.
    pub received: Vec<(String, String, Option<Value>, Value)>,
}

struct Parsed {
    command_type: Option<String>,
    message_id: Option<String>,
    correlation_id: Option<String>,
    body: Vec<u8>,
}

fn parse_file(raw: &[u8]) -> Parsed {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(raw)
        && map.contains_key("type")
        && map.contains_key("body")
        && map.keys().all(|k| {
            matches!(
                k.as_str(),
                "type" | "body" | "message_id" | "correlation_id"
            )
        })
    {
        let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
        let body = match &map["body"] {
            // A string body is sent verbatim (e.g. deliberately broken JSON).
            Value::String(s) => s.clone().into_bytes(),
            other => serde_json::to_vec(other).expect("JSON serialises"),
        };
        return Parsed {
            command_type: text("type"),
            message_id: text("message_id"),
            correlation_id: text("correlation_id"),
            body,
        };
    }
    Parsed {
        command_type: None,
        message_id: None,
        correlation_id: None,
        body: raw.to_vec(),
    }
}

pub async fn publish(settings: &Settings, raw: &[u8], req: Request) -> anyhow::Result<Published> {
    let parsed = parse_file(raw);
    let command_type = req
        .command_type
        .or(parsed.command_type)
        .unwrap_or_else(|| "client.create".into());
    let message_id = match req.message_id.or(parsed.message_id) {
        Some(id) if id.is_empty() => None,
        Some(id) => Some(id),
        None => Some(uuid::Uuid::new_v4().to_string()),
    };
    let correlation_id = req
        .correlation_id
        .or(parsed.correlation_id)
        .or(message_id.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());

    let names = Names::new(&settings.broker.prefix);
    let connection = broker::connect(&settings.broker, "onboard publish").await?;
    let channel = connection.create_channel().await?;

    // Listen before publishing, so nothing it causes is missed: one private queue gets the
    // events (all of them; we keep ours) and serves as the reply_to queue.
    let listen = match req.wait {
        Some(_) => Some(broker::topology::private_event_queue(&channel, &names, &["#"]).await?),
        None => None,
    };

    let publisher = Publisher::open(&connection, Duration::from_secs(10)).await?;
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_correlation_id(correlation_id.as_str().into())
        .with_app_id("onboard publish".into());
    if let Some(id) = &message_id {
        props = props.with_message_id(id.as_str().into());
    }
    if let Some(q) = &listen {
        props = props.with_reply_to(q.as_str().into());
    }
    let delivered = publisher
        .publish(Outgoing {
            exchange: &names.commands_exchange,
            routing_key: &command_type,
            body: &parsed.body,
            properties: props,
        })
        .await?;
    if let Delivered::Returned { reply_text } = delivered {
        anyhow::bail!(
            "the broker could not route {command_type} ({reply_text}): is a worker with prefix {:?} set up?",
            settings.broker.prefix
        );
    }

    let mut received = Vec::new();
    if let (Some(q), Some(secs)) = (listen, req.wait) {
        received = collect(&connection, &q, &correlation_id, Duration::from_secs(secs)).await?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(Published {
        command_type,
        message_id,
        correlation_id,
        received,
    })
}

/// Gathers our events and the reply until the reply came (plus a short grace for events
/// still in flight) or `wait` ran out.
async fn collect(
    connection: &Connection,
    queue: &str,
    correlation_id: &str,
    wait: Duration,
) -> anyhow::Result<Vec<(String, String, Option<Value>, Value)>> {
    let channel = connection.create_channel().await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "onboard-publish".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut out = Vec::new();
    let mut deadline = Instant::now() + wait;
    let mut replied = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(Ok(delivery))) = tokio::time::timeout(left, consumer.next()).await else {
            break;
        };
        let _ = delivery.ack(BasicAckOptions::default()).await;
        let props = &delivery.properties;
        if props.correlation_id().as_ref().map(|c| c.as_str()) != Some(correlation_id) {
            continue;
        }
        let is_reply = delivery.exchange.as_str().is_empty();
        let headers = props
            .headers()
            .as_ref()
            .map(table_to_json)
            .unwrap_or_default();
        let body = serde_json::from_slice(&delivery.data)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&delivery.data)));
        let kind = props
            .kind()
            .as_ref()
            .map(|k| k.as_str().to_string())
            .unwrap_or_default();
        out.push((
            if is_reply { "reply" } else { "event" }.to_string(),
            kind,
            headers.get("status").cloned(),
            body,
        ));
        if is_reply && !replied {
            replied = true;
            deadline = deadline.min(Instant::now() + Duration::from_millis(500));
        }
    }
    Ok(out)
}
