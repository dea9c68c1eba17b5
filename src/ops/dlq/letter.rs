//! One dead letter as read from the queue: what its headers and the broker's say.

use super::fingerprint::fingerprint;
use super::mask::mask_json;
use super::mask::mask_text;
use crate::broker::headers;
use crate::broker::headers::string;
use crate::broker::headers::table_to_json;
use chrono::DateTime;
use chrono::Utc;
use lapin::BasicProperties;
use lapin::types::AMQPValue;
use lapin::types::FieldTable;
use serde::Serialize;
use serde_json::Map;
use serde_json::Value;
use serde_json::json;

/// Headers of a dead letter's failure that a replayed copy does not carry: the copy starts
/// afresh, and fails (if it does) with its own history.
pub(super) const FAILURE_HEADERS: [&str; 6] = [
    headers::REASON,
    headers::FAILURE,
    headers::DEAD_LETTERED_AT,
    headers::FIRST_FAILED_AT,
    headers::LAST_ERROR,
    headers::ROUTING_KEY,
];
pub(super) const BROKER_HEADERS: [&str; 8] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
];

/// One dead letter, as read from the queue.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    /// The command type: the routing key it was published with.
    #[serde(rename = "type")]
    pub command_type: String,
    /// `rejected` (malformed), `retries_exhausted`, or `broker:<reason>` when the broker
    /// dead-lettered it itself (e.g. `broker:delivery_limit`).
    pub failure: String,
    pub reason: String,
    /// Fingerprint of the normalized reason (see [`normalize`]).
    pub fingerprint: String,
    /// Delayed retries made (or deliveries counted by the broker, whichever is larger).
    pub attempts: u32,
    /// Times an operator replayed it before.
    pub replays: u32,
    pub first_failed_at: Option<DateTime<Utc>>,
    /// When it was dead-lettered.
    pub last_failed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub headers: Map<String, Value>,
    #[serde(skip)]
    pub properties: BasicProperties,
    #[serde(skip)]
    pub body: Vec<u8>,
}

pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(super) fn from_unix(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(v.as_i64()?, 0)
}

impl DeadLetter {
    /// Reads what our headers (`x-onboard-*`) and the broker's (`x-death`) say about it.
    pub fn from_parts(routing_key: &str, properties: BasicProperties, body: Vec<u8>) -> DeadLetter {
        let table = properties.headers().as_ref();
        let headers_json = table.map(table_to_json).unwrap_or_default();
        let deaths: Vec<&Map<String, Value>> = headers_json
            .get("x-death")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_object).collect())
            .unwrap_or_default();
        // x-death lists the most recent death first.
        let latest_death = deaths.first();
        let text = |k: &str| headers::get_str(table, k).filter(|s| !s.is_empty());

        let command_type = text(headers::ROUTING_KEY).unwrap_or_else(|| routing_key.to_string());
        let (failure, reason) = match (text(headers::FAILURE), text(headers::REASON)) {
            (Some(f), Some(r)) => (f, r),
            (f, r) => match latest_death {
                Some(d) => {
                    let why = d.get("reason").and_then(Value::as_str).unwrap_or("unknown");
                    let queue = d.get("queue").and_then(Value::as_str).unwrap_or("?");
                    (
                        f.unwrap_or_else(|| format!("broker:{why}")),
                        r.unwrap_or_else(|| {
                            format!("dead-lettered by the broker from {queue}: {why}")
                        }),
                    )
                }
                None => (
                    f.unwrap_or_else(|| "unknown".into()),
                    r.unwrap_or_else(|| "(no reason recorded)".into()),
                ),
            },
        };
        let delivery_count = headers::get_u32(table, "x-delivery-count").unwrap_or(0);
        let attempts = headers::get_u32(table, headers::ATTEMPT)
            .unwrap_or(0)
            .max(delivery_count);
        let death_times: Vec<DateTime<Utc>> = deaths
            .iter()
            .filter_map(|d| d.get("time").and_then(from_unix))
            .collect();
        DeadLetter {
            message_id: properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_string())
                .filter(|s| !s.trim().is_empty()),
            correlation_id: properties
                .correlation_id()
                .as_ref()
                .map(|s| s.as_str().to_string()),
            command_type,
            fingerprint: fingerprint(&reason),
            failure,
            reason,
            attempts,
            replays: headers::get_u32(table, headers::REPLAYS).unwrap_or(0),
            first_failed_at: text(headers::FIRST_FAILED_AT)
                .and_then(|s| parse_time(&s))
                .or_else(|| death_times.iter().min().copied()),
            last_failed_at: text(headers::DEAD_LETTERED_AT)
                .and_then(|s| parse_time(&s))
                .or_else(|| death_times.iter().max().copied()),
            headers: headers_json,
            properties,
            body,
        }
    }

    /// The properties of its replayed copy: everything the publisher set (message_id,
    /// correlation_id, reply_to, traceparent, its own headers) minus the failure history,
    /// with the attempt counter at 0 and the replay counter one up.
    pub fn replay_properties(&self) -> BasicProperties {
        let mut table = FieldTable::default();
        if let Some(old) = self.properties.headers() {
            for (k, v) in old.inner() {
                let k = k.as_str();
                if !FAILURE_HEADERS.contains(&k) && !BROKER_HEADERS.contains(&k) {
                    table.insert(k.into(), v.clone());
                }
            }
        }
        table.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(0));
        table.insert(
            headers::REPLAYS.into(),
            AMQPValue::LongLongInt(i64::from(self.replays) + 1),
        );
        table.insert(
            headers::REPLAYED_AT.into(),
            string(&Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        headers::durable_copy(&self.properties, table)
    }

    /// Headers with secret-looking values masked, for display.
    pub fn masked_headers(&self) -> Value {
        let mut h = Value::Object(self.headers.clone());
        mask_json(&mut h);
        h
    }

    /// The body for display: pretty JSON with secrets masked, or masked text.
    pub fn masked_body(&self) -> Value {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(mut v) => {
                mask_json(&mut v);
                v
            }
            Err(_) => Value::String(crate::messages::command::truncate(
                &mask_text(&String::from_utf8_lossy(&self.body)),
                4000,
            )),
        }
    }

    /// Failure history, oldest first: the broker's `x-death` entries (retry queues waited
    /// out, delivery limits) and our own headers.
    pub fn history(&self) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(deaths) = self.headers.get("x-death").and_then(Value::as_array) {
            for d in deaths.iter().rev() {
                out.push(json!({
                    "at": d.get("time").and_then(from_unix).map(|t| t.to_rfc3339()),
                    "queue": d.get("queue"),
                    "reason": d.get("reason"),
                    "count": d.get("count"),
                    "routing_keys": d.get("routing-keys"),
                }));
            }
        }
        let ours: Map<String, Value> = self
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-onboard-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !ours.is_empty() {
            out.push(Value::Object(ours));
        }
        out
    }
}
