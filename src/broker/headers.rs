//! AMQP headers to and from JSON, and the headers this service adds.

use hmac::Mac;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Map, Value};

use crate::key::DeploymentKey;

/// Delayed retries already made.
pub const ATTEMPT: &str = "x-onboard-attempt";
/// The worker's signature of [`ATTEMPT`] (see [`AttemptSigner`]).
pub const ATTEMPT_SIG: &str = "x-onboard-attempt-sig";
/// Why the last attempt failed.
pub const LAST_ERROR: &str = "x-onboard-last-error";
/// When the message first failed (kept across retries).
pub const FIRST_FAILED_AT: &str = "x-onboard-first-failed-at";
/// Why a message was dead-lettered.
pub const REASON: &str = "x-onboard-reason";
/// `rejected` (malformed) or `retries_exhausted`.
pub const FAILURE: &str = "x-onboard-failure";
/// When it was dead-lettered.
pub const DEAD_LETTERED_AT: &str = "x-onboard-dead-lettered-at";
/// The routing key (command type) it was published with.
pub const ROUTING_KEY: &str = "x-onboard-routing-key";
/// How often operators replayed it.
pub const REPLAYS: &str = "x-onboard-replays";
/// When an operator last replayed it.
pub const REPLAYED_AT: &str = "x-onboard-replayed-at";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The properties of a copy the worker republishes (a retry, a dead letter, a replay):
/// the publisher's ids, content and application headers with `headers`, but always
/// persistent and never expiring, whatever the publisher asked of the original (a transient
/// command must not vanish from a classic retry queue at a broker restart, and a dead letter
/// must stay until an operator acts on it). `user_id` is left out: the broker checks it
/// against the publishing connection's user, which is the worker's, not the upstream's.
pub fn durable_copy(
    props: &lapin::BasicProperties,
    headers: lapin::types::FieldTable,
) -> lapin::BasicProperties {
    let mut copy = lapin::BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(v) = props.content_type() {
        copy = copy.with_content_type(v.clone());
    }
    if let Some(v) = props.content_encoding() {
        copy = copy.with_content_encoding(v.clone());
    }
    if let Some(v) = props.priority() {
        copy = copy.with_priority(*v);
    }
    if let Some(v) = props.correlation_id() {
        copy = copy.with_correlation_id(v.clone());
    }
    if let Some(v) = props.reply_to() {
        copy = copy.with_reply_to(v.clone());
    }
    if let Some(v) = props.message_id() {
        copy = copy.with_message_id(v.clone());
    }
    if let Some(v) = props.timestamp() {
        copy = copy.with_timestamp(*v);
    }
    if let Some(v) = props.kind() {
        copy = copy.with_type(v.clone());
    }
    if let Some(v) = props.app_id() {
        copy = copy.with_app_id(v.clone());
    }
    copy
}

/// The signature of `attempt` for `message_id`, sent with the worker's retry copies. A
/// command from outside that sets `x-onboard-attempt` itself (99 to skip every retry) has no
/// valid signature, so its attempt reads as 0: the count is the worker's own.
pub fn sign_attempt(key: &DeploymentKey, message_id: &str, attempt: u32) -> String {
    hex::encode(
        attempt_mac(key, message_id, attempt)
            .finalize()
            .into_bytes(),
    )
}

/// The attempt a delivery carries, if the worker signed it; 0 otherwise.
pub fn signed_attempt(
    key: &DeploymentKey,
    message_id: Option<&str>,
    table: Option<&FieldTable>,
) -> u32 {
    let (Some(id), Some(attempt), Some(sig)) = (
        message_id,
        get_u32(table, ATTEMPT),
        get_str(table, ATTEMPT_SIG),
    ) else {
        return 0;
    };
    let Ok(sig) = hex::decode(sig) else { return 0 };
    match attempt_mac(key, id, attempt).verify_slice(&sig) {
        Ok(()) => attempt,
        Err(_) => 0,
    }
}

fn attempt_mac(key: &DeploymentKey, message_id: &str, attempt: u32) -> hmac::Hmac<sha2::Sha256> {
    key.mac(&[b"attempt", message_id.as_bytes(), &attempt.to_be_bytes()])
}

pub fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

/// JSON scalars to AMQP values (objects and arrays as JSON text).
pub fn from_json(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in map {
        let value = match v {
            Value::String(s) => string(s),
            Value::Bool(b) => AMQPValue::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => AMQPValue::LongLongInt(i),
                None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
            },
            Value::Null => AMQPValue::Void,
            other => string(&other.to_string()),
        };
        table.insert(k.as_str().into(), value);
    }
    table
}

/// An AMQP value as JSON, for inspection and tests.
pub fn to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => (*i).into(),
        AMQPValue::ShortShortUInt(i) => (*i).into(),
        AMQPValue::ShortInt(i) => (*i).into(),
        AMQPValue::ShortUInt(i) => (*i).into(),
        AMQPValue::LongInt(i) => (*i).into(),
        AMQPValue::LongUInt(i) => (*i).into(),
        AMQPValue::LongLongInt(i) => (*i).into(),
        AMQPValue::Timestamp(t) => (*t).into(),
        AMQPValue::Float(f) => (*f as f64).into(),
        AMQPValue::Double(f) => (*f).into(),
        AMQPValue::ShortString(s) => s.as_str().into(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into(),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(to_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(table_to_json(t)),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into(),
        AMQPValue::DecimalValue(d) => format!("{d:?}").into(),
        AMQPValue::Void => Value::Null,
    }
}

pub fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), to_json(v)))
        .collect()
}

/// A header as text, whatever AMQP type the publisher chose.
pub fn get_str(table: Option<&FieldTable>, key: &str) -> Option<String> {
    match to_json(table?.inner().get(key)?) {
        Value::String(s) => Some(s),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A header as a non-negative number, whatever integer type (or text) the publisher chose.
pub fn get_u32(table: Option<&FieldTable>, key: &str) -> Option<u32> {
    match to_json(table?.inner().get(key)?) {
        Value::Number(n) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_an_attempt_the_worker_signed_counts() {
        let key = DeploymentKey::new(vec![7; 32]);
        let mut table = FieldTable::default();
        table.insert(ATTEMPT.into(), AMQPValue::LongLongInt(3));
        assert_eq!(signed_attempt(&key, Some("m"), Some(&table)), 0, "unsigned");
        table.insert(ATTEMPT_SIG.into(), string(&sign_attempt(&key, "m", 3)));
        assert_eq!(signed_attempt(&key, Some("m"), Some(&table)), 3);
        assert_eq!(
            signed_attempt(&key, Some("other"), Some(&table)),
            0,
            "another message"
        );
        table.insert(ATTEMPT.into(), AMQPValue::LongLongInt(99));
        assert_eq!(
            signed_attempt(&key, Some("m"), Some(&table)),
            0,
            "changed count"
        );
        let other_key = DeploymentKey::new(vec![8; 32]);
        table.insert(ATTEMPT.into(), AMQPValue::LongLongInt(3));
        assert_eq!(
            signed_attempt(&other_key, Some("m"), Some(&table)),
            0,
            "another deployment"
        );
        table.insert(
            ATTEMPT.into(),
            AMQPValue::LongLongInt(i64::from(u32::MAX) + 5),
        );
        assert_eq!(
            signed_attempt(&key, Some("m"), Some(&table)),
            0,
            "out of range"
        );
    }

    #[test]
    fn a_republished_copy_is_persistent_never_expires_and_keeps_the_ids() {
        let original = lapin::BasicProperties::default()
            .with_delivery_mode(1)
            .with_expiration("5000".into())
            .with_user_id("upstream".into())
            .with_message_id("m-1".into())
            .with_correlation_id("c-1".into())
            .with_reply_to("amq.gen-x".into())
            .with_content_type("application/json".into());
        let mut table = FieldTable::default();
        table.insert(ATTEMPT.into(), AMQPValue::LongLongInt(2));
        let copy = durable_copy(&original, table);
        assert_eq!(copy.delivery_mode(), &Some(2));
        assert_eq!(copy.expiration(), &None);
        assert_eq!(copy.user_id(), &None);
        assert_eq!(copy.message_id().as_ref().map(|v| v.as_str()), Some("m-1"));
        assert_eq!(
            copy.correlation_id().as_ref().map(|v| v.as_str()),
            Some("c-1")
        );
        assert_eq!(
            copy.reply_to().as_ref().map(|v| v.as_str()),
            Some("amq.gen-x")
        );
        assert_eq!(get_u32(copy.headers().as_ref(), ATTEMPT), Some(2));
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_strings_round_trip_and_read_back_typed() {
        let map = json!({"status": 201, "traceparent": "00-x", "ok": true})
            .as_object()
            .unwrap()
            .clone();
        let table = from_json(&map);
        assert_eq!(table_to_json(&table), map);
        assert_eq!(get_u32(Some(&table), "status"), Some(201));
        assert_eq!(
            get_str(Some(&table), "traceparent").as_deref(),
            Some("00-x")
        );
        assert_eq!(get_u32(Some(&table), "missing"), None);
    }

    #[test]
    fn attempt_counters_are_read_from_any_integer_type_or_text() {
        let mut t = FieldTable::default();
        t.insert(ATTEMPT.into(), AMQPValue::ShortShortUInt(3));
        assert_eq!(get_u32(Some(&t), ATTEMPT), Some(3));
        t.insert(ATTEMPT.into(), string("7"));
        assert_eq!(get_u32(Some(&t), ATTEMPT), Some(7));
        t.insert(ATTEMPT.into(), AMQPValue::LongLongInt(-1));
        assert_eq!(get_u32(Some(&t), ATTEMPT), None);
    }
}
