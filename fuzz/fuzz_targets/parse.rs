//! `messages::parse` on any delivery: whatever the bytes, it answers a command or a rejection
//! with a reason, and never panics.
//!
//! Input: the first byte chooses the AMQP properties (routing key among every command type and
//! a few hostile ones, and which of message_id, correlation_id, content_type and reply_to are
//! present); the rest is the body. The seeds in fuzz/seeds/parse start with 0xF0 (client.create,
//! every property set) followed by a JSON body.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use onboard::messages::{CommandType, IncomingMessage, Schemas, parse};

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(onboard::registry::schemas);

fn routing_key(selector: u8, body: &[u8]) -> String {
    let n = CommandType::ALL.len();
    match (selector & 0x0f) as usize {
        i if i < n => CommandType::ALL[i].as_str().to_string(),
        i if i == n => String::new(),
        i if i == n + 1 => "client.create\0.x".to_string(),
        // The routing key from the body's own bytes (invalid UTF-8 replaced, as AMQP gives us).
        _ => String::from_utf8_lossy(&body[..body.len().min(255)]).into_owned(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(&body[..body.len().min(64)]).into_owned();
    let msg = IncomingMessage {
        routing_key: routing_key(selector, body),
        message_id: (selector & 0x10 != 0).then(|| text.clone()),
        correlation_id: (selector & 0x20 != 0).then(|| text.clone()),
        content_type: (selector & 0x40 != 0).then(|| "application/json".to_string()),
        reply_to: (selector & 0x80 != 0).then(|| text.clone()),
        attempt: u32::from(selector),
        traceparent: None,
        body: body.to_vec(),
    };
    match parse(&msg, &SCHEMAS) {
        Ok(cmd) => {
            assert!(!cmd.meta.message_id.trim().is_empty());
            assert_eq!(cmd.meta.command_type.as_str(), msg.routing_key);
        }
        Err(rejection) => assert!(!rejection.reason.is_empty()),
    }
});
